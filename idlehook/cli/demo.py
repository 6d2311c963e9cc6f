"""`idlehook demo`: emulator + receiver + worker + reconciler + reaper, end to end, on SQLite."""

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo", help="the whole job end to end against the local emulator (under a minute)"
    )
    demo.add_argument(
        "--data-dir",
        default=None,
        help="keep the database and archived results here (default: a temporary directory)",
    )
    demo.add_argument("--json", action="store_true", help="print the report as JSON")
    demo.add_argument("--speed", type=float, default=40.0, help="emulator time multiplier")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from rich.console import Console

    from idlehook.demo import render, run_demo
    from idlehook.logs import configure_logging

    # The demo narrates through rich; handler log lines would drown it (-v brings them back).
    configure_logging(json=bool(args.log_json), level=getattr(args, "log_level", None) or "WARNING")
    console = Console(quiet=args.json)
    keep = args.data_dir is not None
    data_dir = Path(args.data_dir) if keep else Path(tempfile.mkdtemp(prefix="idlehook-demo-"))
    try:
        report = asyncio.run(run_demo(data_dir, console, speed=args.speed))
        if args.json:
            print(json.dumps(report.as_dict(), indent=2, default=str))
        else:
            render(report, console)
            if keep:
                console.print(f"results and database kept in {data_dir}")
    finally:
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0 if report.ok else 1
