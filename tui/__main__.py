"""``python -m tui``: the TUI without fedctl (same flags as ``fedctl tui``)."""

from __future__ import annotations

import argparse
import os
import sys

from federation.errors import FederationError
from tui.app import run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tui", description="The federation's health in the terminal.")
    p.add_argument(
        "--router",
        default=os.environ.get("FED_ROUTER", "tcp://127.0.0.1:5555"),
        help="ZeroMQ endpoint of the router [FED_ROUTER]",
    )
    p.add_argument("--refresh", type=float, default=None, help="seconds between refreshes (default 2)")
    p.add_argument("--readonly", action="store_true", help="hide every action that changes the federation")
    p.add_argument("--config", default=os.environ.get("FED_CONFIG"), help="TOML file with a [tui] table")
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds per call before the router counts as down"
    )
    p.add_argument("--replay", default=None, help="show a recorded capture instead of a live router")
    p.add_argument("--record", default=None, help="record every call and answer to this capture file")
    args = p.parse_args(argv)
    try:
        return run(
            args.router,
            args.refresh,
            args.readonly,
            config_path=args.config,
            timeout=args.timeout,
            replay=args.replay,
            record=args.record,
        )
    except FederationError as e:
        print(f"fedctl tui: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
