"""``python -m models.summary NAME [--json]``: a preset's architecture and parameter counts.

Reads only the config (no torch, no allocation), so an 8B count answers instantly.
"""

from __future__ import annotations

import argparse
import json
import sys

from models.config import preset, preset_names


def format_table(summary: dict) -> str:
    width = max(len(k) for k in summary)
    lines = []
    for key, value in summary.items():
        if key.endswith("_params"):
            value = f"{value:,} ({value / 1e9:.2f}B)" if value >= 1e8 else f"{value:,} ({value / 1e6:.2f}M)"
        lines.append(f"{key:<{width}}  {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.summary", description=__doc__)
    parser.add_argument("name", help=f"preset name, one of: {', '.join(preset_names())}")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        summary = preset(args.name).summary()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary) if args.json else format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
