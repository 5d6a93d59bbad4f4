"""The checkpoint store of a log directory: signed checkpoints written atomically, and their policy.

``checkpoints/<tree size, 20 digits>.note`` holds the C2SP signed checkpoint (origin = log id,
tree size, root hash; signed-note with the log's Ed25519 or SM2 key) of that tree size;
``checkpoints/latest`` the newest one (a hard link to its file), so that ``dsgw audit checkpoint``
prints it byte for byte. Each note is written atomically (temporary file, fsync, rename) and the
directory fsynced once per group of notes written together.
Ed25519 signatures are deterministic, so writing the checkpoint of a size again gives the same
bytes; SM2 signatures (``gm`` logs) are randomized, so a second note of a stored size with the
same checkpoint body is not a fork: the stored note is kept. A different checkpoint body for a
size already stored is refused (:class:`CheckpointConflict`), as it would be a fork.

A writer checkpoints every :attr:`CheckpointPolicy.every_entries` entries or
:attr:`CheckpointPolicy.every_seconds` seconds when something new was appended (at the first
commit after the threshold), when closed, and on demand.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from audit.checkpoint import Checkpoint, Signer, sign_checkpoint
from audit.errors import AuditError
from audit.layout import fsync_dir

__all__ = [
    "LATEST",
    "CheckpointConflict",
    "CheckpointPolicy",
    "CheckpointStore",
    "StoredCheckpoint",
    "checkpoint_name",
    "make_checkpoint",
]

LATEST = "latest"
_NAME = re.compile(r"([0-9]{20})\.note")


class CheckpointConflict(AuditError):
    """A different checkpoint of the same tree size is already stored (a fork)."""

    reason = "CHECKPOINT_CONFLICT"


@dataclass(frozen=True)
class CheckpointPolicy:
    """When a writer checkpoints: after ``every_entries`` new entries or ``every_seconds`` seconds
    with new entries (whichever comes first)."""

    every_entries: int = 1000
    every_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.every_entries < 1:
            raise ValueError("every_entries must be at least 1")
        if not self.every_seconds > 0:
            raise ValueError("every_seconds must be positive")


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint file: its name (``<size>.note`` or ``latest``), the tree size its name says
    (``None`` for ``latest``) and its path."""

    name: str
    size: int | None
    path: Path

    def read(self) -> bytes:
        return self.path.read_bytes()


def checkpoint_name(size: int) -> str:
    return f"{size:020d}.note"


def make_checkpoint(signer: Signer, origin: str, size: int, root: bytes) -> bytes:
    """The signed note of the checkpoint (origin, size, root)."""
    return sign_checkpoint(Checkpoint(origin=origin, size=size, root_hash=root), [signer])


class CheckpointStore:
    """The checkpoints directory of one log."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path_for(self, size: int) -> Path:
        return self.directory / checkpoint_name(size)

    @property
    def latest_path(self) -> Path:
        return self.directory / LATEST

    def write(self, size: int, note: bytes, *, latest: bool = True) -> Path:
        """Store the signed ``note`` of tree ``size`` and, with ``latest``, make it the latest (the
        writer's checkpoints only grow). :class:`CheckpointConflict` if another note of that size
        exists."""
        return self.write_many([(size, note)], latest=latest)[0]

    def write_many(self, notes: Sequence[tuple[int, bytes]], *, latest: bool = True) -> list[Path]:
        """Store several notes (ascending sizes), the last one becoming ``latest``, with one
        directory fsync: each note is written to a temporary file, fsynced and renamed; ``latest``
        is a hard link to the newest note (replaced by rename)."""
        paths: list[Path] = []
        for size, note in notes:
            path = self.path_for(size)
            try:
                existing = path.read_bytes()
            except FileNotFoundError:
                _write_file(path, note)
            else:
                if existing != note and _body(existing) != _body(note):
                    raise CheckpointConflict(
                        f"a different checkpoint of tree size {size} is stored ({path.name})"
                    )
            paths.append(path)
        if latest and paths:
            tmp = self.directory / f".{LATEST}.{os.getpid()}.{threading.get_ident()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.link(paths[-1], tmp)
            os.replace(tmp, self.latest_path)
        fsync_dir(self.directory)
        return paths

    def sizes(self) -> list[int]:
        """The tree sizes of the numbered checkpoint files, ascending."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        sizes = []
        for name in names:
            match = _NAME.fullmatch(name)
            if match:
                sizes.append(int(match.group(1)))
        sizes.sort()
        return sizes

    def stored(self) -> list[StoredCheckpoint]:
        """Every checkpoint file: the numbered ones by size, then ``latest`` if present."""
        files = [StoredCheckpoint(checkpoint_name(s), s, self.path_for(s)) for s in self.sizes()]
        if self.latest_path.exists():
            files.append(StoredCheckpoint(LATEST, None, self.latest_path))
        return files

    def latest(self) -> bytes | None:
        """The ``latest`` note, or ``None`` when the log has none."""
        try:
            return self.latest_path.read_bytes()
        except FileNotFoundError:
            return None

    def read(self, size: int) -> bytes:
        return self.path_for(size).read_bytes()


def _body(note: bytes) -> bytes:
    """The note text of a signed note (everything before the last blank line)."""
    split = note.rfind(b"\n\n")
    return note if split < 0 else note[: split + 1]


def _write_file(path: Path, data: bytes) -> None:
    """Write a new file atomically and durably except for the directory entry (the caller fsyncs
    the directory): temporary file, write, fsync, rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
