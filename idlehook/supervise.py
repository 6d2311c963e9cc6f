"""`idlehook serve`'s worker process: started, restarted with backoff, stopped, and tied to serve.

Why a process: in the receiver's process the worker's claims, completions and pacer writes took
the event loop (and the GIL) and SQLite's write lock from the webhook path, which then acked at
a fifth of its bare rate with p99 near a second while a backlog waited (bench/serve_acks.py).

The child is `idlehook worker --sweeps` with serve's own config and environment: one code path
for a worker process. Serve and the child share a pipe, `--parent-fd`:

    serve -> child   a byte now and then: new deliveries were committed, claim now (`wake`)
    EOF              serve is gone (stopped, or SIGKILLed): the child stops claiming, gives its
                     in-flight runs `ORPHAN_GRACE_SECONDS`, then exits (their leases cover them)

A supervisor thread in serve waits on the child and starts another after a pause when it dies
(growing while it keeps dying young). Stopping sends SIGTERM (in-flight runs finish, then the
worker awaits each plugin's `aclose`, handlers/api.py, up to `PLUGIN_CLOSE_SECONDS`), then
SIGKILL after `stop_seconds`. Nothing here runs on the receiver's event loop: `wake` is one
non-blocking write.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

import structlog

log = structlog.get_logger(__name__)
# After a clean exit of the child, how long to wait for serve's own stop before restarting.
STOP_GRACE_S = 2.0

# A child that dies sooner than this after starting is restarted after a pause that doubles each
# time, from the first to the last; one that lived longer is restarted at once.
HEALTHY_AFTER_SECONDS = 30.0
RESTART_PAUSES = (0.5, 30.0)
# SIGTERM, then this long for in-flight runs to finish and the plugins to close (at most
# handlers.worker.PLUGIN_CLOSE_SECONDS of it), then SIGKILL (systemd's TimeoutStopSec and k8s's
# terminationGracePeriodSeconds should be longer).
STOP_SECONDS = 20.0
# The child, once serve is gone: how long its in-flight runs (and then its plugins' `aclose`)
# get before it exits anyway; what is still open then is dropped with the process.
ORPHAN_GRACE_SECONDS = 3.0
# The child wakes its worker at most this often, however many bytes serve writes.
WAKE_SPACING_SECONDS = 0.25


def worker_argv(config: str | None, log_json: bool | None) -> list[str]:
    """`idlehook worker --sweeps` under this interpreter, with serve's global options."""
    argv = [sys.executable, "-m", "idlehook.cli"]
    if config:
        argv += ["--config", config]
    if log_json:
        argv.append("--log-json")
    return [*argv, "worker", "--sweeps"]


class Supervisor:
    """One child process kept running until `stop()`; `--parent-fd N` is added to its argv."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str = "worker",
        stop_seconds: float = STOP_SECONDS,
        healthy_after: float = HEALTHY_AFTER_SECONDS,
        pauses: tuple[float, float] = RESTART_PAUSES,
    ) -> None:
        self.argv = list(argv)
        self.name = name
        self.stop_seconds = stop_seconds
        self.healthy_after = healthy_after
        self.pauses = pauses
        self._lock = threading.Lock()  # over _popen and _wake_fd, swapped on each start
        self._popen: subprocess.Popen[bytes] | None = None
        self._wake_fd: int | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        popen = self._popen
        return popen.pid if popen is not None else None

    def start(self) -> int:
        """Start the child now (its pid), and the thread that keeps one running."""
        popen = self._spawn()
        self._thread = threading.Thread(
            target=self._supervise, args=(popen,), name=f"supervise-{self.name}", daemon=True
        )
        self._thread.start()
        return popen.pid

    def wake(self) -> None:
        """Tell the child new work is stored. Never blocks: a full pipe already says so."""
        # Under the lock: a child's pipe is closed when the next one starts, and its number,
        # reused by a new socket, must never get this byte.
        with self._lock, contextlib.suppress(OSError):  # full (EAGAIN), child gone (EPIPE)
            if self._wake_fd is not None:
                os.write(self._wake_fd, b"\x01")

    def stop(self) -> int | None:
        """SIGTERM the child, wait up to `stop_seconds`, then SIGKILL; its exit code."""
        self._stopping.set()
        with self._lock:
            popen = self._popen
        code = self._terminate(popen) if popen is not None else None
        if self._thread is not None:
            self._thread.join(timeout=self.stop_seconds + 5)
        self._close_wake()
        return code

    # -- the thread --------------------------------------------------------------------------

    def _spawn(self) -> "subprocess.Popen[bytes]":
        read_fd, write_fd = os.pipe()  # both non-inheritable; the child gets read_fd alone
        try:
            popen = subprocess.Popen(  # noqa: S603 (this interpreter, our own command, an fd number)
                [*self.argv, "--parent-fd", str(read_fd)], pass_fds=(read_fd,)
            )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        os.set_blocking(write_fd, False)
        with self._lock:
            if self._wake_fd is not None:
                os.close(self._wake_fd)
            self._wake_fd, self._popen = write_fd, popen
        log.info(f"serve.{self.name}_started", pid=popen.pid, restarts=self.restarts)
        return popen

    def _supervise(self, popen: "subprocess.Popen[bytes]") -> None:
        pause = self.pauses[0]
        while True:
            started = time.monotonic()
            code = popen.wait()
            if self._stopping.is_set():
                return
            if code == 0:
                # Asked to stop. From systemd or a terminal the signal reaches serve too, which
                # is then stopping within moments; a signal to the child alone (a stray `kill`)
                # must not leave serve acking webhooks with no worker, so it comes back.
                if self._stopping.wait(STOP_GRACE_S):
                    return
                log.warning(f"serve.{self.name}_stopped_alone", pid=popen.pid)
                pause = self.pauses[0]
            if time.monotonic() - started >= self.healthy_after:
                pause, wait = self.pauses[0], 0.0
            else:
                wait, pause = pause, min(pause * 2, self.pauses[1])
            log.warning(
                f"serve.{self.name}_exited", pid=popen.pid, code=code, restart_in=round(wait, 2)
            )
            if self._stopping.wait(wait):
                return
            self.restarts += 1
            try:
                popen = self._spawn()
            except OSError as exc:  # out of processes or memory: try again later
                log.error(f"serve.{self.name}_start_failed", error=repr(exc))
                if self._stopping.wait(self.pauses[1]):
                    return
                continue
            if self._stopping.is_set():
                # stop() came while it started and may have seen the old one: stop this one.
                self._terminate(popen)
                return

    def _terminate(self, popen: "subprocess.Popen[bytes]") -> int:
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(signal.SIGTERM)
        try:
            return popen.wait(timeout=self.stop_seconds)
        except subprocess.TimeoutExpired:
            log.warning(f"serve.{self.name}_killed", pid=popen.pid, after=self.stop_seconds)
            popen.kill()
            return popen.wait()

    def _close_wake(self) -> None:
        with self._lock:
            if self._wake_fd is not None:
                os.close(self._wake_fd)
            self._wake_fd = None


def watch_parent(fd: int, on_wake: Callable[[], None], on_gone: Callable[[], None]) -> None:
    """In the child: `on_wake` per wake-up from serve (spaced), `on_gone` once serve is gone.

    Runs in a daemon thread; both callbacks must be thread-safe."""

    def run() -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                on_gone()
                return
            on_wake()
            time.sleep(WAKE_SPACING_SECONDS)

    threading.Thread(target=run, name="watch-parent", daemon=True).start()


def exit_after(seconds: float, code: int = 1) -> None:
    """In the child: leave after `seconds` whatever is still running (a daemon timer)."""
    timer = threading.Timer(seconds, os._exit, args=(code,))
    timer.daemon = True
    timer.start()
