"""``python -m fedctl ...``: the same as the ``fedctl`` console script."""

from __future__ import annotations

import sys

from fedctl.cli import main

if __name__ == "__main__":
    sys.exit(main())
