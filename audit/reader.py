"""Reading a log directory without writing to it: frames, leaf hashes, proofs, checkpoints, entries.

A :class:`LogReader` never modifies the directory and needs no key to read the structure; to
read entries it needs a keyring that can unwrap data keys (the auditor's private key). It can run
while the writer appends: it sees a prefix of the log (an incomplete frame at the very end is an
append in progress and is not part of what it reads).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from audit.checkpoint import Checkpoint, Verifier, open_note
from audit.checkpoints import CheckpointStore
from audit.entry import AuditEntry, decode
from audit.errors import AuditError, VerificationError
from audit.index import AuditIndex, IndexError_
from audit.keys import KeyProvider, Keyring
from audit.layout import LogMeta, LogPaths
from audit.merkle import LEAF_PREFIX, TILE_LEVEL, TILE_WIDTH, MerkleProver
from audit.seal import DataKeySource, open_sealed
from audit.segment import (
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    FRAME_OVERHEAD,
    HEADER_SIZE,
    MAX_RECORD,
    check_header,
    frame_problem,
    list_segments,
    parse_frames,
    segment_name,
)
from audit.suites import Suite, get_suite

__all__ = ["Frame", "LogReader", "ReadError"]


class ReadError(AuditError):
    """The log cannot be read as asked: an entry that does not exist, or a damaged structure
    (``dsgw audit verify`` says exactly what)."""

    reason = "READ"


@dataclass(frozen=True, slots=True)
class Frame:
    """One entry as stored: its index, segment (first index) and offset, its terms section and
    its sealed entry (the Merkle leaf data)."""

    index: int
    segment: int
    offset: int
    terms: bytes
    sealed: bytes


def sealed_of(record: bytes) -> bytes:
    """The sealed entry of a frame record (after the self-delimiting terms section)."""
    return record[7 + 17 * record[6] :]


class _IndexLeaves(Sequence[bytes]):
    """The leaf hashes ``[0, size)`` of an index, read a 256-leaf tile at a time when asked for
    (a prover with every tile's hash asks for one or two tiles)."""

    def __init__(self, path: Path, log_id: str, size: int) -> None:
        self._path = path
        self._log_id = log_id
        self._size = size
        self._tiles: dict[int, list[bytes]] = {}

    def __len__(self) -> int:
        return self._size

    def _tile(self, number: int) -> list[bytes]:
        cached = self._tiles.get(number)
        if cached is not None:
            return cached
        start = number << TILE_LEVEL
        stop = min(start + TILE_WIDTH, self._size)
        try:
            index = AuditIndex.open(self._path, log_id=self._log_id, readonly=True)
        except IndexError_ as exc:
            raise ReadError(f"the index cannot be read: {exc}") from None
        try:
            leaves = index.leaves(start, stop)
        except IndexError_ as exc:  # damaged: a row missing, or unreadable
            raise ReadError(f"the index cannot be read: {exc}") from None
        finally:
            index.close()
        if len(leaves) != stop - start:
            raise ReadError(f"the index lacks leaf hashes of entries {start} to {stop - 1}")
        self._tiles[number] = leaves
        return leaves

    @overload
    def __getitem__(self, item: int) -> bytes: ...

    @overload
    def __getitem__(self, item: slice) -> list[bytes]: ...

    def __getitem__(self, item: int | slice) -> bytes | list[bytes]:
        if isinstance(item, slice):
            start, stop, step = item.indices(self._size)
            if step != 1:
                raise ValueError("only contiguous slices of leaf hashes are supported")
            out: list[bytes] = []
            at = start
            while at < stop:
                tile = self._tile(at >> TILE_LEVEL)
                offset = at & (TILE_WIDTH - 1)
                take = min(stop - at, len(tile) - offset)
                out.extend(tile[offset : offset + take])
                at += take
            return out
        if item < 0:
            item += self._size
        if not 0 <= item < self._size:
            raise IndexError(item)
        return self._tile(item >> TILE_LEVEL)[item & (TILE_WIDTH - 1)]


class LogReader:
    """Read access to one log directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.paths = LogPaths(Path(directory))
        self.meta = LogMeta.load(self.paths.root)
        self.suite: Suite = get_suite(self.meta.suite)
        self.hash_fn = self.suite.hash_fn
        self.checkpoints = CheckpointStore(self.paths.checkpoints)

    @property
    def log_id(self) -> str:
        return self.meta.log_id

    def leaf_hash(self, sealed: bytes) -> bytes:
        return self.hash_fn(LEAF_PREFIX + sealed)

    # -- files ------------------------------------------------------------------------------------

    def segments(self) -> list[tuple[int, Path]]:
        """The segment files (first index, path), in order."""
        return list_segments(self.paths.segments)

    def index(self) -> AuditIndex | None:
        """The index, read-only, or ``None`` if it is missing or unreadable."""
        try:
            return AuditIndex.open(self.paths.index, log_id=self.meta.log_id, readonly=True)
        except IndexError_:
            return None

    # -- frames -----------------------------------------------------------------------------------

    def frames(self, start: int = 0) -> Iterator[Frame]:
        """The frames from entry ``start`` on, in order. Stops quietly at an incomplete frame at the
        very end of the log; raises :class:`ReadError` at any other damage."""
        segments = self.segments()
        expected: int | None = None
        for number, (first, path) in enumerate(segments):
            following = segments[number + 1][0] if number + 1 < len(segments) else None
            if following is not None and following <= start:
                continue
            data = path.read_bytes()
            problem = check_header(data, first)
            if problem is not None:
                raise ReadError(f"segment {path.name}: {problem}")
            if expected is None:
                expected = first
            if first != expected:
                raise ReadError(f"segment {path.name} starts at entry {first}, expected {expected}")
            parsed = parse_frames(data, HEADER_SIZE, expected)
            for idx, off, record in zip(parsed.indices, parsed.offsets, parsed.records, strict=True):
                if idx != expected:
                    raise ReadError(f"segment {path.name}: entry {expected} has index {idx}")
                expected += 1
                if idx >= start:
                    sealed = sealed_of(record)
                    yield Frame(idx, first, off, record[: len(record) - len(sealed)], sealed)
            if parsed.bad is not None:
                if following is None and parsed.bad.torn_tail:
                    return
                raise ReadError(f"segment {path.name} offset {parsed.bad.offset}: {parsed.bad.problem}")

    def frame(self, index: int) -> Frame:
        """The frame of entry ``index`` (through the index when it has it, else by scanning)."""
        if index < 0:
            raise ReadError(f"there is no entry {index}")
        located = None
        idx = self.index()
        if idx is not None:
            try:
                located = idx.location(index)
            finally:
                idx.close()
        if located is not None:
            frame = self._read_at(*located, index)
            if frame is not None:
                return frame
        for frame in self.frames(index):
            return frame
        raise ReadError(f"the log has no entry {index}")

    def frames_at(self, indices: Sequence[int]) -> list[Frame]:
        """The frames of the given entries (e.g. a subject's postings), located through one index
        connection; entries the index does not locate are read by scanning."""
        idx = self.index()
        found: list[Frame] = []
        try:
            for index in indices:
                located = idx.location(index) if idx is not None else None
                frame = self._read_at(*located, index) if located is not None else None
                found.append(frame if frame is not None else self.frame(index))
        finally:
            if idx is not None:
                idx.close()
        return found

    def _read_at(self, segment: int, offset: int, index: int) -> Frame | None:
        path = self.paths.segments / segment_name(segment)
        try:
            with open(path, "rb") as handle:
                head = os.pread(handle.fileno(), FRAME_HEAD_SIZE, offset)
                if len(head) < FRAME_HEAD_SIZE:
                    return None
                length, claimed = FRAME_HEAD.unpack(head)
                if claimed != index or not 0 < length <= MAX_RECORD:
                    return None
                data = head + os.pread(
                    handle.fileno(), length + FRAME_OVERHEAD - FRAME_HEAD_SIZE, offset + 12
                )
        except FileNotFoundError:
            return None
        if frame_problem(data, 0) is not None:
            return None
        record = data[FRAME_HEAD_SIZE : FRAME_HEAD_SIZE + length]
        sealed = sealed_of(record)
        return Frame(index, segment, offset, record[: len(record) - len(sealed)], sealed)

    def size(self) -> int:
        """The number of entries readable now."""
        count = 0
        for _ in self.frames(self._last_segment_first()):
            count += 1
        return self._last_segment_first() + count

    def _last_segment_first(self) -> int:
        segments = self.segments()
        return segments[-1][0] if segments else 0

    def leaf_hashes(self, size: int) -> list[bytes]:
        """The leaf hashes of entries ``[0, size)``: from the index when it covers them, else
        computed from the segments. :class:`ReadError` if the log has fewer entries."""
        idx = self.index()
        if idx is not None:
            try:
                if idx.size >= size:
                    leaves = idx.leaves(0, size)
                    if len(leaves) == size:
                        return leaves
            except IndexError_:  # a damaged index: the segments give them
                pass
            finally:
                idx.close()
        leaves = []
        for frame in self.frames():
            if frame.index >= size:
                break
            leaves.append(self.leaf_hash(frame.sealed))
        if len(leaves) < size:
            raise ReadError(f"the log has {len(leaves)} entries, fewer than {size}")
        return leaves

    def prover(self, size: int) -> MerkleProver:
        """An RFC 9162 prover over entries ``[0, size)``.

        When the index covers ``size`` and holds the hash of every complete 256-leaf tile below it,
        the prover combines those (about 4,000 at a million entries) and reads the leaves of only
        the tiles a proof descends into, from the index: milliseconds instead of rehashing every
        leaf. Otherwise it works from all the leaf hashes (:meth:`leaf_hashes`). Either way the
        caller checks the root against a signed checkpoint: the index is not trusted."""
        idx = self.index()
        if idx is not None:
            try:
                full = size >> TILE_LEVEL
                if idx.size >= size and full > 0:
                    tiles = idx.tiles(0, full)
                    if len(tiles) == full:
                        return MerkleProver(
                            _IndexLeaves(self.paths.index, self.log_id, size), self.hash_fn, tiles=tiles
                        )
            finally:
                idx.close()
        return MerkleProver(self.leaf_hashes(size), self.hash_fn)

    def index_prover(self, index: AuditIndex, size: int) -> MerkleProver:
        """A prover over entries ``[0, size)`` from ``index`` alone (e.g. one rebuilt aside, not
        yet the log's): its tile hashes, and its leaf hashes where a root or proof needs them.
        :class:`ReadError` if it holds fewer than ``size`` entries."""
        if index.size < size:
            raise ReadError(f"the index has {index.size} entries, fewer than {size}")
        tiles = index.tiles(0, size >> TILE_LEVEL)
        return MerkleProver(_IndexLeaves(index.path, self.log_id, size), self.hash_fn, tiles=tiles)

    # -- checkpoints ------------------------------------------------------------------------------

    def latest_checkpoint(self, verifiers: Sequence[Verifier] | None = None) -> tuple[Checkpoint, bytes]:
        """The latest stored checkpoint, its signature checked (with ``verifiers``, default the
        log's own key): (checkpoint, signed note bytes). :class:`ReadError` if there is none;
        the :class:`~audit.errors.VerificationError` of :func:`~audit.checkpoint.open_note` if it
        does not verify (its message naming the ``latest`` file)."""
        store = self.checkpoints
        note, path = store.latest(), store.latest_path
        if note is None:  # ``latest`` lost (a crash between files, or removed): the newest numbered
            sizes = store.sizes()
            if not sizes:
                raise ReadError(f"the log {self.log_id} has no checkpoint")
            path = store.path_for(max(sizes))
            note = path.read_bytes()
        try:
            checkpoint, _ = open_note(
                note, list(verifiers or [self.meta.verifier]), hash_size=self.suite.digest_size
            )
        except VerificationError as exc:  # the same error, naming the file
            exc.args = (f"{path}: {exc}",)
            raise
        if checkpoint.origin != self.log_id:
            raise ReadError(f"the latest checkpoint is of another log ({checkpoint.origin})")
        return checkpoint, note

    # -- entries ----------------------------------------------------------------------------------

    def keyring(self, provider: KeyProvider) -> Keyring:
        """The log's keyring with ``provider`` (an auditor's private key opens data keys)."""
        return Keyring.open(self.paths.keyring, provider, log_id=self.log_id)

    def open_frame(self, frame: Frame, keys: DataKeySource) -> bytes:
        """The plaintext payload of a frame (raises the :mod:`audit.seal` errors)."""
        return open_sealed(
            frame.sealed, keyring_or_dek=keys, log_id=self.log_id, index=frame.index, suite=self.suite
        )

    def entry(self, index: int, keys: DataKeySource) -> AuditEntry:
        """The decrypted, validated entry ``index``."""
        return decode(self.open_frame(self.frame(index), keys))
