"""Where `archive` keeps a session's folder: a local directory (`results_dir`), or any URL
`fsspec` knows (`[archive] url`: `s3://bucket/prefix`, `gs://...`, `file:///abs/path`,
`memory://`), shared by every worker of a cluster.

Keys are relative POSIX paths under the store's root (`sess_x/events.jsonl`). Every object is
written whole: a PUT on an object store, a temporary name moved over the old one on a
filesystem, so a reader never sees half an object. On a URL store a folder is trusted only once
its marker (`_COMPLETE.json`, written last) exists and every file it lists has the size it
says: a crash between the objects and the marker leaves the folder unarchived, and the retry
completes it. `complete()` checks sizes only (cheap, for readers); the writer
(archive.save, which also says what concurrent writers can and cannot do to a folder) checks
result.json against its turn's file byte for byte before it trusts its own marker. The local
directory keeps what it always wrote (no marker): each file there is
renamed into place whole, and folders written before the marker existed still read.

Every call here blocks (fsspec's sync API): the async handler runs them in `asyncio.to_thread`.
"""

import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

MARKER = "_COMPLETE.json"
MARKER_FORMAT = "idlehook.archive/1"
# The extras that install each object store's fsspec backend (pyproject.toml).
EXTRAS = {"s3": "s3", "s3a": "s3"}


class ArchiveStore(Protocol):
    """The archive's storage: whole objects under keys, and where each is (for pointers)."""

    # True: a folder counts only with a matching marker (URL stores). False: the local
    # directory, whose files are each renamed into place and never had a marker.
    marked: bool

    def address(self, key: str) -> str:
        """The path or URL of `key` (what `idlehook show` and published messages carry)."""
        ...

    def write(self, key: str, data: bytes) -> None:
        """Replace `key` with `data` whole: a reader sees the old object or the new one."""
        ...

    def read(self, key: str) -> bytes | None:
        """The object, or None when there is none."""
        ...

    def size(self, key: str) -> int | None:
        """Its size in bytes, or None when there is none."""
        ...

    def keys(self, prefix: str) -> list[str]:
        """Every key under the folder `prefix`, sorted."""
        ...


def write_atomic(path: Path, lines: Iterable[str]) -> None:
    """The local directory's write: a temporary file, fsync'd, renamed over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for line in lines:
                out.write(line)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStore:
    """`results_dir` on this machine's filesystem: the default, exactly as before URLs."""

    marked = False

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / key

    def address(self, key: str) -> str:
        return str(self.path(key)) if key else str(self.root)

    def write(self, key: str, data: bytes) -> None:
        write_atomic(self.path(key), [data.decode("utf-8")])

    def read(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def size(self, key: str) -> int | None:
        path = self.path(key)
        return path.stat().st_size if path.is_file() else None

    def keys(self, prefix: str) -> list[str]:
        folder = self.path(prefix)
        if not folder.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in folder.rglob("*") if p.is_file())


class FsspecStore:
    """Any fsspec URL. Credentials come from the backend's own configuration (AWS_* variables,
    ~/.aws, GOOGLE_APPLICATION_CREDENTIALS) or `storage_options`; neither is ever logged."""

    marked = True

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        # Here, not at import: `idlehook --help` and the local default never load it.
        import fsspec  # type: ignore[import-untyped]

        self.url = url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url, **dict(storage_options or {}))
        self.root = root.rstrip("/")
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        # A filesystem has no atomic whole-object PUT: write a temporary name and move it.
        self.renames = bool({"file", "local"} & set(protocols))

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def address(self, key: str) -> str:
        return f"{self.url}/{key}" if key else self.url

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if not self.renames:
            self.fs.pipe_file(path, data)  # one PUT: the object appears whole or not at all
            return
        parent, _, name = path.rpartition("/")
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm_file(tmp)
            raise

    def read(self, key: str) -> bytes | None:
        path = self._path(key)
        self.fs.invalidate_cache(path)  # another worker may have written it since
        try:
            data: bytes = self.fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError):
            return None
        return data

    def size(self, key: str) -> int | None:
        path = self._path(key)
        self.fs.invalidate_cache(path)
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return None
        return int(info["size"]) if info.get("type") == "file" else None

    def keys(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        self.fs.invalidate_cache(folder)
        try:
            found = self.fs.find(folder)
        except FileNotFoundError:
            return []
        return sorted(_relative(str(p), self.root) for p in found)


def _relative(path: str, root: str) -> str:
    # fsspec returns paths without the protocol; memory:// ones may or may not lead with "/".
    path, root = path.lstrip("/"), root.lstrip("/")
    return path[len(root) + 1 :] if root else path


def open_store(
    results_dir: Path, url: str | None = None, storage_options: Mapping[str, Any] | None = None
) -> ArchiveStore:
    """The archive's store: `url` when set, else the local `results_dir`."""
    return FsspecStore(url, storage_options) if url else LocalStore(results_dir)


def check_url(url: str) -> str | None:
    """Why `url` cannot be an archive (one line), or None: an fsspec scheme whose backend is
    installed, and no password in it (those go in the environment or `storage_options`)."""
    import fsspec  # type: ignore[import-untyped]

    parts = urlsplit(url)
    if parts.password:
        return "[archive] url: no password in the URL (use the environment or storage_options)"
    scheme = parts.scheme or "file"
    try:
        fsspec.get_filesystem_class(scheme)
    except ValueError:
        return f"[archive] url: {scheme}:// is not a scheme fsspec knows"
    except ImportError as exc:
        extra = EXTRAS.get(scheme)
        package = _missing_package(str(exc)) or "its backend"
        hint = f"pip install 'idlehook[{extra}]'" if extra else f"pip install {package}"
        return f"[archive] url: {scheme}:// needs {package}: {hint}"
    return None


def _missing_package(message: str) -> str | None:
    # fsspec says e.g. "Install s3fs to access S3"; take the word after "Install".
    words = message.replace("`", " ").split()
    for i, word in enumerate(words[:-1]):
        if word.lower() == "install":
            return words[i + 1].strip("'\".,")
    return None


# -- the marker -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Marker:
    """What a complete folder holds: written last, read first."""

    session_id: str
    turn: int
    events: int
    files: dict[str, int]  # key under the session's folder -> size in bytes

    def encode(self) -> bytes:
        body = {
            "format": MARKER_FORMAT,
            "session_id": self.session_id,
            "turn": self.turn,
            "events": self.events,
            "files": dict(sorted(self.files.items())),
        }
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> "Marker | None":
        try:
            body = json.loads(data)
            if body.get("format") != MARKER_FORMAT:
                return None
            files = {str(k): int(v) for k, v in body["files"].items()}
            return cls(str(body["session_id"]), int(body["turn"]), int(body["events"]), files)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def read_marker(store: ArchiveStore, session_id: str) -> Marker | None:
    data = store.read(f"{session_id}/{MARKER}")
    return None if data is None else Marker.decode(data)


def matches(store: ArchiveStore, marker: Marker) -> bool:
    """Every file the marker lists is there at the size it says."""
    folder = marker.session_id
    return all(store.size(f"{folder}/{name}") == size for name, size in marker.files.items())


def complete(store: ArchiveStore, session_id: str) -> Marker | None:
    """The folder's marker when the folder is whole (exists and matches); else None."""
    marker = read_marker(store, session_id)
    return marker if marker is not None and matches(store, marker) else None
