"""``python -m loadtest run ...`` / ``python -m loadtest compare ...``: fedctl loadtest without fedctl."""

from __future__ import annotations

import argparse
import sys

from loadtest.command import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register(sub)
    args = parser.parse_args(["loadtest", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
