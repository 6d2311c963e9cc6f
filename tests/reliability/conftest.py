"""Faults the reliability tests inflict on real storage: a private PostgreSQL cluster to stop,
and tmpfs mounts to fill up or turn read-only (both need root; the tests skip without it)."""

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.support import free_port

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


@dataclass
class Cluster:
    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                f"{PG_BIN[-1]}/pg_ctl",
                "-D",
                str(self.root / "data"),
                *args,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c fsync=off -c listen_addresses=127.0.0.1"
        self.ctl("-o", opts, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self.ctl("-m", "immediate", "-w", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not PG_BIN or os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root, runuser and PostgreSQL server binaries for a private cluster")
    root = Path(tempfile.mkdtemp(prefix="idlehook-pg-"))
    shutil.chown(root, "postgres")
    os.chmod(root, 0o700)
    try:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                f"{PG_BIN[-1]}/initdb",
                "-D",
                str(root / "data"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        c = Cluster(root, free_port())
        c.start()
        try:
            yield c
        finally:
            with contextlib.suppress(subprocess.SubprocessError):
                c.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Tmpfs:
    root: Path

    def remount(self, *options: str) -> None:
        subprocess.run(
            ["mount", "-o", ",".join(["remount", *options]), str(self.root)],
            check=True,
            capture_output=True,
            timeout=30,
        )


@contextlib.contextmanager
def tmpfs(size: str, prefix: str) -> Iterator[Tmpfs]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)],
        capture_output=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        root.rmdir()
        pytest.skip("cannot mount a tmpfs here: " + mounted.stderr.decode()[:200])
    try:
        yield Tmpfs(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True, timeout=30)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    with tmpfs("1m", "idlehook-full-") as mount:
        yield mount.root
