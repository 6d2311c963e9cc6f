"""The local journal: where a verified delivery goes when the store cannot commit it.

Anthropic retries a webhook a few times and then drops it, and disables an endpoint after
enough failed deliveries in a row; a receiver that answered 503 through a database outage
would lose events and then its endpoint. So when the store cannot commit a verified delivery,
the receiver appends it here, fsyncs, and acknowledges it; a drainer (store/journal_drain.py)
moves it into the store once the store is back. Only a delivery the journal cannot take
either (over `max_bytes`, disk full, unwritable) is a 503. The journal is touched only on a
store failure: the usual path never sees it.

Layout: one directory (`[journal] path`, default `<data_dir>/journal`), shared by the receivers
on one machine or volume. Each receiver process appends to segment files of its own,
`<store>-<pid>-<random>-<seq>.journal` (records framed by store/journal_frames.py; `<store>`
names the database, so a receiver never drains another database's journal into its own, even
in a directory two deployments share), and holds an
exclusive `flock` on every segment it has not yet drained. The kernel drops that lock when the
process dies, `kill -9` included, so a segment whose lock is free is an orphan, and any
receiver's drainer takes the lock and drains it. A segment is created under a temporary name,
locked, then renamed, so no other process can find it before its owner holds its lock.
Appends are grouped: everything that arrives during one write+fdatasync goes in the next, the
way the inbox groups commits.
"""

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
import structlog

from store import journal_frames as frames
from store import journal_records as records
from store.engine import normalise_url
from store.journal_records import BadRecord, Record

log = structlog.get_logger(__name__)

SUFFIX = ".journal"
TMP_SUFFIX = ".journal-tmp"
DEFAULT_MAX_BYTES = 64 << 20
# Below this much free space the journal says it cannot take writes (readiness), before a
# write finds out.
MIN_FREE_BYTES = 1 << 20
# A failed append makes the journal report itself unwritable for this long (then it is tried
# again: the disk may have been freed).
FAILURE_HOLD_SECONDS = 10.0


class JournalUnavailable(Exception):
    """The journal cannot take the record either: the delivery is answered 503."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)  # compared by identity: one per file
class Segment:
    """One journal file this process holds the lock on, and what is left in it to drain."""

    path: Path
    fd: int  # open for as long as it is held: the flock lives on it
    size: int = 0  # bytes written (and synced)
    depth: int = 0  # records not yet moved to the store
    oldest: float | None = None  # received_at of the oldest of them (epoch seconds)
    offset: int = 0  # bytes already moved to the store
    owned: bool = True  # written by this process; False: adopted from a dead one
    broken: bool = False  # a failed write could not be cut off: append no more here


@dataclass(frozen=True)
class JournalStats:
    depth: int  # records waiting to be moved into the store
    oldest: float | None  # epoch seconds of the oldest of them
    bytes: int
    files: int
    orphaned: int = 0  # files left by processes that are gone (`scan_directory` only)
    other_stores: int = 0  # files of receivers of another database, in the same directory

    def oldest_seconds(self, now: float) -> float | None:
        return None if self.oldest is None else max(0.0, now - self.oldest)


@dataclass(frozen=True)
class Batch:
    """Records read from a segment, from its offset on."""

    records: list[Record]
    bad: list[bytes]  # payloads that are no record this version reads: quarantined
    end: int  # the offset after what was read
    skipped: int  # bytes that were no valid frame (a torn tail, a corrupt record)
    next_oldest: float | None  # received_at of the first record after this batch

    @property
    def count(self) -> int:
        return len(self.records) + len(self.bad)


@dataclass
class _Append:
    frame: bytes
    record: Record
    future: "asyncio.Future[None]"


def store_key(database_url: str) -> str:
    """A short, stable name for a database (its URL without the password, hashed)."""
    url = sa.engine.make_url(normalise_url(database_url)).render_as_string(hide_password=True)
    return hashlib.sha256(url.encode()).hexdigest()[:12]


class Journal:
    def __init__(
        self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES, *, store: str = "local"
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        # Whose deliveries these are (`store_key`): only that database's journals are adopted.
        self.store = store
        # Unique per process even where pids are not (containers sharing a volume).
        self.owner = f"{store}-{os.getpid()}-{secrets.token_hex(4)}"
        self._seq = 0
        self._active: Segment | None = None
        # No longer appended to and not yet drained, own and adopted, oldest first.
        self._sealed: list[Segment] = []
        self._queue: list[_Append] = []
        self._queued_bytes = 0
        self._flushing: asyncio.Task[None] | None = None
        self._io: asyncio.Lock | None = None
        self._io_loop: asyncio.AbstractEventLoop | None = None
        self.failure: str | None = None  # why the last append failed, until one succeeds
        self._failed_at = 0.0

    # -- appending (the webhook path, only when the store failed) ---------------------------

    async def append(self, record: Record) -> None:
        """Return once `record` is on disk (fdatasync'd); raise JournalUnavailable if it
        cannot be."""
        frame = frames.encode(records.encode(record))
        if self._used() + len(frame) > self.max_bytes:
            self._fail("journal_full")
            raise JournalUnavailable("journal_full")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.append(_Append(frame, record, future))
        self._queued_bytes += len(frame)
        if self._flushing is None or self._flushing.done():
            self._flushing = loop.create_task(self._flush())
        # Shielded: a client that hangs up must not cancel the write others share.
        await asyncio.shield(future)

    async def _flush(self) -> None:
        async with self._lock():
            while self._queue:
                batch, self._queue = self._queue, []
                size = sum(len(a.frame) for a in batch)
                keys = [records.key(a.record) for a in batch]
                try:
                    data = b"".join(a.frame for a in batch)
                    times = [records.received_at(a.record) for a in batch]
                    segment = await asyncio.to_thread(self._write, data, times)
                except OSError as exc:
                    reason = _reason(exc)
                    self._fail(reason)
                    log.error("journal.append_failed", reason=reason, error=str(exc), keys=keys)
                    if self._active is not None and self._active.broken:
                        self._sealed.append(self._active)
                        self._active = None
                    _settle(batch, JournalUnavailable(reason))
                    continue
                finally:
                    self._queued_bytes -= size
                if self.failure != "journal_full":  # that one holds until bytes are freed
                    self.failure = None
                _settle(batch, None)
                # One line per fsync naming every delivery in it: "did event X arrive?" stays
                # a grep while the store is down.
                log.warning("journal.appended", keys=keys, file=segment.path.name)

    def _write(self, data: bytes, times: list[float]) -> Segment:
        segment = self._active
        if segment is None:
            segment = self._active = self._create()
        start = segment.size
        try:
            _write_all(segment.fd, data)
            os.fdatasync(segment.fd)
        except OSError:
            self._cut(segment, start)
            raise
        segment.size = start + len(data)
        segment.depth += len(times)
        if segment.oldest is None:
            segment.oldest = min(times)
        return segment

    def _cut(self, segment: Segment, size: int) -> None:
        """Take a failed write back off the end, so the next append follows a whole frame."""
        try:
            os.ftruncate(segment.fd, size)
            os.fdatasync(segment.fd)
        except OSError:
            # The reader skips a bad frame anyway; appending after it would be fine too, but a
            # file that cannot be truncated is not one to trust with more.
            segment.broken = True

    def _create(self) -> Segment:
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True, exist_ok=True)
            _sync_directory(self.directory.parent)
        self._seq += 1
        name = f"{self.owner}-{self._seq:06d}"
        temporary = self.directory / (name + TMP_SUFFIX)
        final = self.directory / (name + SUFFIX)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(temporary, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(temporary, final)
            _sync_directory(self.directory)  # the new name survives a crash
        except BaseException:
            os.close(fd)
            for path in (temporary, final):
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        log.warning("journal.segment_created", file=final.name)
        return Segment(final, fd)

    # -- draining (store/journal_drain.py) --------------------------------------------------

    def drainable(self) -> list[Segment]:
        """Segments no longer appended to, oldest first: this process's and adopted ones."""
        return list(self._sealed)

    def active_depth(self) -> int:
        return self._active.depth if self._active is not None else 0

    async def seal(self) -> None:
        """Stop appending to the active segment, so the drainer can move all of it; the next
        append starts a new one."""
        async with self._lock():
            segment, self._active = self._active, None
        if segment is None:
            return
        if segment.depth:
            self._sealed.append(segment)
        else:
            await asyncio.to_thread(self._unlink, segment)
            _release(segment)

    def adopt_orphans(self) -> list[Segment]:
        """Lock every segment whose writer is gone (its lock is free) and count what it holds.
        Off the event loop; the caller hands the result to `adopted` on it."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        known = {s.path.name for s in self._segments()}
        found: list[Segment] = []
        for name in names:
            if _ours(name, self.store) and name not in known:
                segment = _adopt(self.directory / name)
                if segment is not None:
                    found.append(segment)
        return found

    def adopted(self, segments: list[Segment]) -> None:
        for segment in segments:
            log.warning("journal.orphan_adopted", file=segment.path.name, depth=segment.depth)
        self._sealed.extend(segments)

    def read(self, segment: Segment, limit: int) -> Batch:
        """Up to `limit` records from the segment's offset on (off the event loop)."""
        size = os.fstat(segment.fd).st_size
        if segment.offset >= size:
            return Batch([], [], size, 0, None)
        got: list[Record] = []
        bad: list[bytes] = []
        skipped = 0
        end = segment.offset
        next_oldest: float | None = None
        with mmap.mmap(segment.fd, size, prot=mmap.PROT_READ) as view:
            for item in frames.scan(view, segment.offset):
                if isinstance(item, frames.Gap):
                    skipped += item.end - item.start
                    end = item.end
                    continue
                if len(got) + len(bad) >= limit:
                    next_oldest = _received_at(item.payload)
                    break
                try:
                    got.append(records.decode(item.payload))
                except BadRecord:
                    bad.append(item.payload)
                end = item.end
        return Batch(got, bad, end, skipped, next_oldest)

    def advance(self, segment: Segment, batch: Batch) -> None:
        """`batch` is in the store: move past it."""
        segment.offset = batch.end
        segment.depth = max(0, segment.depth - batch.count)
        segment.oldest = batch.next_oldest if segment.depth else None

    async def retire(self, segment: Segment) -> None:
        """Everything in `segment` is in the store: delete it and let go of its lock."""
        await asyncio.to_thread(self._unlink, segment)
        # Let go of the lock on the loop, not in the thread: a stop that cancels this must not
        # leave `close()` closing a descriptor number already closed (and maybe reused).
        _release(segment)
        with contextlib.suppress(ValueError):
            self._sealed.remove(segment)
        if segment.owned and self.failure == "journal_full":
            self.failure = None  # room again

    def quarantine(self, payloads: list[bytes]) -> Path:
        """Keep records the store refuses (or this version cannot read) aside, for a person:
        in `rejected/`, which no drainer reads. Off the event loop."""
        folder = self.directory / "rejected"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.owner}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, b"".join(frames.encode(p) for p in payloads))
            os.fdatasync(fd)
        finally:
            os.close(fd)
        _sync_directory(folder)
        return path

    def _unlink(self, segment: Segment) -> None:
        # While still holding the lock: no other drainer can take it in between.
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        with contextlib.suppress(OSError):
            _sync_directory(self.directory)

    # -- health -----------------------------------------------------------------------------

    def stats(self) -> JournalStats:
        segments = list(self._segments())
        waiting = [s for s in segments if s.depth]
        return JournalStats(
            depth=sum(s.depth for s in waiting),
            oldest=min((s.oldest for s in waiting if s.oldest is not None), default=None),
            bytes=sum(s.size - s.offset for s in segments),
            files=len(segments),
        )

    def unwritable(self) -> str | None:
        """None if an append would be tried now; else why it would fail (for readiness)."""
        if self._used() >= self.max_bytes:
            return "journal_full"
        if self.failure is not None and time.monotonic() - self._failed_at < FAILURE_HOLD_SECONDS:
            return self.failure
        probe = self.directory if self.directory.is_dir() else self.directory.parent
        try:
            disk = os.statvfs(probe)
        except OSError:
            return "journal_unwritable"
        if disk.f_bavail * disk.f_frsize < MIN_FREE_BYTES:
            return "disk_full"
        if not os.access(probe, os.W_OK):
            return "journal_unwritable"
        return None

    def close(self) -> None:
        """Let go of every segment (their locks with them); what is in them stays on disk for
        the next receiver to drain."""
        for segment in self._segments():
            _release(segment)
        self._active = None
        self._sealed = []

    # -- internals --------------------------------------------------------------------------

    def _segments(self) -> Iterator[Segment]:
        if self._active is not None:
            yield self._active
        yield from list(self._sealed)

    def _used(self) -> int:
        """Bytes of this process's own segments still on disk, and bytes about to be."""
        own = sum(s.size for s in self._segments() if s.owned)
        return own + self._queued_bytes

    def _fail(self, reason: str) -> None:
        self.failure = reason
        self._failed_at = time.monotonic()

    def _lock(self) -> asyncio.Lock:
        # One lock per loop: a receiver has one loop, tests make many in turn.
        loop = asyncio.get_running_loop()
        if self._io is None or self._io_loop is not loop:
            self._io, self._io_loop = asyncio.Lock(), loop
        return self._io


def scan_directory(directory: Path, store: str | None = None) -> JournalStats:
    """What a journal directory holds, as another process sees it (`idlehook status`): every
    segment's valid records counted, and the ones no live process holds counted as orphaned.
    With `store`, only that database's segments (the others are counted as other_stores)."""
    try:
        every = sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX))
    except FileNotFoundError:
        return JournalStats(0, None, 0, 0)
    names = [n for n in every if store is None or _ours(n, store)]
    depth, size, files, orphaned = 0, 0, 0, 0
    oldest: float | None = None
    for name in names:
        try:
            fd = os.open(Path(directory) / name, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # drained meanwhile
        try:
            try:
                # Shared and let go at once: free means nobody is writing or draining it.
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                orphaned += 1
            except BlockingIOError:
                pass
            count, first, length = _count(fd)
        finally:
            os.close(fd)
        files += 1
        depth += count
        size += length
        if first is not None:
            oldest = first if oldest is None else min(oldest, first)
    return JournalStats(depth, oldest, size, files, orphaned, len(every) - len(names))


def _ours(name: str, store: str) -> bool:
    return name.startswith(store + "-") and name.endswith(SUFFIX)


def _adopt(path: Path) -> Segment | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # drained by someone else meanwhile
    except OSError as exc:
        log.error("journal.orphan_unreadable", file=path.name, error=str(exc))
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None  # its writer is alive, or another drainer has it
    if os.fstat(fd).st_nlink == 0:
        os.close(fd)
        return None  # drained and deleted between our open and our lock
    depth, oldest, size = _count(fd)
    return Segment(path, fd, size=size, depth=depth, oldest=oldest, owned=False)


def _count(fd: int) -> tuple[int, float | None, int]:
    """(valid records, received_at of the first, file size)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, None, 0
    count = 0
    first: float | None = None
    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as view:
        for item in frames.scan(view):
            if isinstance(item, frames.Frame):
                count += 1
                if first is None:
                    first = _received_at(item.payload)
    return count, first, size


def _received_at(payload: bytes) -> float | None:
    try:
        return records.received_at(records.decode(payload))
    except BadRecord:
        return None


def _release(segment: Segment) -> None:
    if segment.fd >= 0:
        fd, segment.fd = segment.fd, -1
        with contextlib.suppress(OSError):
            os.close(fd)


def _settle(batch: list[_Append], error: Exception | None) -> None:
    for item in batch:
        if item.future.done():
            continue
        if error is None:
            item.future.set_result(None)
        else:
            item.future.set_exception(error)
        # Nobody may be left to look (its request gave up): don't warn about that.
        item.future.add_done_callback(lambda f: f.cancelled() or f.exception())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk_full"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "journal_unwritable"
    return "journal_io_error"
