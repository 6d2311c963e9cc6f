"""The README's run command: `idlehook demo` exits 0 only when every check held."""

import json
import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_whole_job_and_its_numbers_come_from_the_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "idlehook.cli", "demo", "--json", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert all(check["ok"] for check in report["checks"]), report["checks"]
    numbers = report["numbers"]
    assert numbers["session_creates_seen_by_api"] == numbers["sessions_launched"] == 9
    assert numbers["event_streams_opened"] == 0
    assert numbers["deliveries_reconciled"] == 1
    # Billing as documented: the runaway's interrupt is the saving, read from the ledger;
    # deleting idle sessions is clean-up and saves nothing.
    assert numbers["billing_model"] == "running"
    assert numbers["runaway_runs_interrupted"] == 1
    assert numbers["runaway_runtime_avoided_hours"] > 1.0
    assert numbers["runaway_usd_avoided"] > 0
    assert numbers["idle_sessions_deleted_as_cleanup"] == 8
    assert numbers["usd_per_hour_saved_by_deleting_idle_sessions"] == 0
    # What the summary claims is on disk is on disk.
    archived = [s for s in report["sessions"] if s["archived"]]
    assert len(archived) == 8
    outcomes = {s["case"]: s["outcome"] for s in report["sessions"]}
    assert outcomes["runaway"] == "interrupted"
    assert outcomes["refused"] == "refusal"
    assert outcomes["stopped on its budget"] == "budget_reached"
    for row in archived:
        folder = tmp_path / "results" / row["session_id"]
        assert (folder / "result.json").exists()
        assert (folder / "events.jsonl").read_text().count("\n") > 3
