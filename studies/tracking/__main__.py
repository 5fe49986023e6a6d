"""``python -m studies.tracking sync RUN_DIR...``: replay the buffered metrics of run folders into MLflow."""

from __future__ import annotations

import sys

from studies.tracking.sync import sync


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m studies.tracking")
    commands = parser.add_subparsers(dest="command", required=True)
    sync_parser = commands.add_parser("sync", help="replay buffered metrics of run folders into MLflow")
    sync_parser.add_argument("run_dirs", nargs="+")
    args = parser.parse_args(argv)
    return sync(args.run_dirs)


if __name__ == "__main__":
    sys.exit(main())
