"""`python -m azexport_assets.warehouse init | describe | maintain`: set up and look after the
warehouse that $AZEXPORT_WAREHOUSE names (see docs/deploy.md)."""

from __future__ import annotations

import argparse
import sys

from azexport_assets.warehouse import LakeWarehouse, open_warehouse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m azexport_assets.warehouse")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("describe", help="print which warehouse the configuration opens")
    commands.add_parser("init", help="create the catalog and schemas (idempotent)")
    maintain = commands.add_parser(
        "maintain", help="DuckLake: merge small files, expire old snapshots, delete old files"
    )
    maintain.add_argument(
        "--older-than-days",
        type=float,
        default=7.0,
        help="keep snapshots (time travel) and files of this many days (default 7)",
    )
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, RuntimeError) as error:  # configuration, connection: said plainly
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ValueError) else 1


def _run(args: argparse.Namespace) -> int:
    warehouse = open_warehouse()
    print(warehouse.describe(), flush=True)
    if args.command == "init":
        created = warehouse.init()
        print(f"created schemas: {', '.join(created)}" if created else "already set up")
    elif args.command == "maintain":
        if not isinstance(warehouse, LakeWarehouse):
            print("maintain applies to a DuckLake warehouse only", file=sys.stderr)
            return 2
        done = warehouse.maintain(args.older_than_days)
        print(", ".join(f"{name}: {count}" for name, count in done.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
