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
    assert numbers["session_creates_seen_by_api"] == numbers["sessions_launched"] == 7
    assert numbers["event_streams_opened"] == 0
    assert numbers["deliveries_reconciled"] == 1
    assert numbers["sessions_deleted"] == 6
    # What the summary claims is on disk is on disk.
    archived = [s for s in report["sessions"] if s["archived"]]
    assert len(archived) == 6
    for row in archived:
        folder = tmp_path / "results" / row["session_id"]
        assert (folder / "result.json").exists()
        assert (folder / "events.jsonl").read_text().count("\n") > 3
