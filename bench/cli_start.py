"""How long `idlehook` takes to answer: `--help`, `status` and `sessions` on an empty SQLite,
this tree against an older one (issue 20).

    git worktree add -f /work/before d04a8b1 --detach
    .venv/bin/python -m bench.cli_start --before /work/before [--runs 5]
    git worktree remove --force /work/before

Each command runs `--runs` times as a fresh process (`python -m idlehook.cli`, PYTHONPATH set to
the tree, from an empty directory so no ./idlehook.toml or checkout on sys.path interferes),
after one untimed run that migrates the tree's own empty database. The median wall time is
printed side by side, with the lines each wrote to stderr (log lines, for a command, are noise).
Figures: bench/results/cli_start.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
COMMANDS: list[list[str]] = [["--help"], ["status"], ["sessions"]]


def _env(tree: Path, work: Path) -> dict[str, str]:
    inherited = os.environ.items()  # noqa: TID251 (a child process's environment)
    env = {k: v for k, v in inherited if not k.startswith(("IDLEHOOK_", "ANTHROPIC_"))}
    env.pop("COLUMNS", None)
    env |= {
        "PYTHONPATH": str(tree),
        "IDLEHOOK_DATABASE_URL": f"sqlite:///{work / 'idlehook.db'}",
        "IDLEHOOK_CONFIG": str(work / "none.toml"),
        "IDLEHOOK_DATA_DIR": str(work / "data"),
        "IDLEHOOK_RESULTS_DIR": str(work / "results"),
    }
    return env


def _once(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, int]:
    """(wall seconds, exit code, lines on stderr)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "idlehook.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return time.perf_counter() - started, done.returncode, len(done.stderr.splitlines())


def measure(tree: Path, runs: int) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="idlehook-cli-bench-") as tmp:
        work = Path(tmp)
        env = _env(tree, work)
        _once(["db", "migrate"], env, work)  # the empty database, migrated once, untimed
        figures: dict[str, dict[str, Any]] = {}
        for args in COMMANDS:
            _once(args, env, work)  # warm the page cache, as an operator's second run
            samples = [_once(args, env, work) for _ in range(runs)]
            figures[" ".join(args)] = {
                "median_s": round(statistics.median(s[0] for s in samples), 3),
                "min_s": round(min(s[0] for s in samples), 3),
                "exit_codes": sorted({s[1] for s in samples}),
                "stderr_lines": max(s[2] for s in samples),
            }
        return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_start", description=__doc__)
    parser.add_argument("--before", type=Path, required=True, help="the older checkout")
    parser.add_argument("--after", type=Path, default=ROOT, help="this checkout (default)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    before = measure(args.before.resolve(), args.runs)
    after = measure(args.after.resolve(), args.runs)
    header = f"{'command':<18} {'before s':>9} {'after s':>8} {'x faster':>9} {'stderr lines':>13}"
    print(f"median of {args.runs} runs, wall time of `python -m idlehook.cli ...`")
    print(header)
    print("-" * len(header))
    for name in before:
        b, a = before[name], after[name]
        ratio = b["median_s"] / a["median_s"] if a["median_s"] else float("inf")
        lines = f"{b['stderr_lines']} -> {a['stderr_lines']}"
        print(
            f"idlehook {name:<9} {b['median_s']:>9.2f} {a['median_s']:>8.2f} {ratio:>8.1f}x "
            f"{lines:>13}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {
        "runs": args.runs,
        "before": {"tree": str(args.before), "figures": before},
        "after": {"tree": str(args.after), "figures": after},
    }
    (RESULTS / "cli_start.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
