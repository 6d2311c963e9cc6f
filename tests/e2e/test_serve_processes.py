"""`idlehook serve` and its worker process, as real processes: the worker runs in a process of
its own (handlers run there, not in the receiver), is restarted when it dies, stops when serve
stops, and does not outlive a serve killed with SIGKILL."""

import os
import signal
from pathlib import Path

import httpx

from tests.reliability.support import (
    JOURNAL_ROUTES,
    PATH,
    Proc,
    base_env,
    done_lines,
    emulator,
    event,
    launcher,
    processes,
    signed,
    wait_for,
)


def worker_pids(serve_pid: int) -> list[int]:
    """The children of `serve_pid` running `idlehook worker --sweeps` (the inbox writer is one
    too, but not this)."""
    found: list[int] = []
    for task in Path(f"/proc/{serve_pid}/task").iterdir():
        try:
            pids = [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
        found += [pid for pid in pids if is_worker(pid)]
    return found


def is_worker(pid: int) -> bool:
    """A live (not zombie) `idlehook worker --sweeps` process with this pid."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return b"worker" in argv and b"--sweeps" in argv and state != "Z"


def one_worker(serve: Proc) -> int:
    pids: list[int] = wait_for(lambda: worker_pids(serve.pid), timeout=60)
    assert len(pids) == 1, pids
    return pids[0]


def post(url: str, event_id: str, session_id: str) -> None:
    body, headers = signed(event(event_id, session_id))
    response = httpx.post(url + PATH, content=body, headers=headers, timeout=10)
    assert response.status_code == 204


def test_the_worker_process_runs_the_handlers_and_is_restarted_when_killed(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "journal.jsonl"
    with emulator() as (emu, api_url), processes(tmp_path) as procs:
        env = base_env(tmp_path, db_url, base_url=api_url, journal=log, routes=JOURNAL_ROUTES)
        serve = procs.serve("serve", env, worker=True)
        worker = one_worker(serve)
        assert worker != serve.pid

        # A session the emulator runs to its end: its signed webhook, stored by the receiver,
        # is handled in the worker process.
        assert serve.url is not None
        emu.apply_config({"webhook_urls": [serve.url + PATH]})
        launcher(api_url, "serve-processes")(1)
        first = wait_for(lambda: done_lines(log), timeout=60)
        assert [line["pid"] for line in first] == [worker]

        os.kill(worker, signal.SIGKILL)
        restarted = wait_for(lambda: [p for p in worker_pids(serve.pid) if p != worker], 60)
        assert len(restarted) == 1
        post(serve.url, "wevt_after_restart", "sesn_after_restart")

        def handled_after_restart() -> list[dict[str, object]]:
            return [r for r in done_lines(log) if r["event_id"] == "wevt_after_restart"]

        done = wait_for(handled_after_restart, timeout=60)
        assert [line["pid"] for line in done] == restarted
        assert serve.alive()


def test_sigterm_to_serve_stops_its_worker_process_too(sqlite_url: str, tmp_path: Path) -> None:
    with processes(tmp_path) as procs:
        serve = procs.serve("serve", base_env(tmp_path, sqlite_url), worker=True)
        worker = one_worker(serve)
        wait_for(lambda: '"worker.started"' in serve.log.read_text(), timeout=60)
        os.kill(serve.pid, signal.SIGTERM)  # serve alone: it stops its worker itself
        # uvicorn re-raises the SIGTERM it caught once it has shut down.
        assert serve.popen.wait(timeout=60) in (0, -signal.SIGTERM)
        assert not is_worker(worker)
        log = serve.log.read_text()
        assert '"serve.worker_started"' in log
        assert '"worker.stopped"' in log


def test_a_worker_stopped_alone_comes_back(sqlite_url: str, tmp_path: Path) -> None:
    """A stray SIGTERM to the worker process alone (it exits 0, as when serve stops it) must not
    leave serve acknowledging webhooks with nothing to handle them."""
    with processes(tmp_path) as procs:
        serve = procs.serve("serve", base_env(tmp_path, sqlite_url), worker=True)
        worker = one_worker(serve)
        wait_for(lambda: '"worker.started"' in serve.log.read_text(), timeout=60)
        os.kill(worker, signal.SIGTERM)
        restarted = wait_for(lambda: [p for p in worker_pids(serve.pid) if p != worker], 60)
        assert len(restarted) == 1
        assert serve.alive()
        assert '"serve.worker_stopped_alone"' in serve.log.read_text()


def test_a_serve_killed_with_sigkill_leaves_no_worker_process(
    sqlite_url: str, tmp_path: Path
) -> None:
    with processes(tmp_path) as procs:
        serve = procs.serve("serve", base_env(tmp_path, sqlite_url), worker=True)
        worker = one_worker(serve)
        serve.kill9()
        # Orphaned, the worker sees its pipe from serve close and exits within its grace.
        wait_for(lambda: not is_worker(worker), timeout=30)
