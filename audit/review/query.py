"""Searching one or several audit logs without decrypting them, then reading only what matched.

A search turns its criteria into blind-index terms (:mod:`audit.blind_index`) under each log's
own blind-index key, asks each log's SQLite index (:mod:`audit.index`) for the entry indices
carrying them (the subject through the postings table, caller / purpose / decision / provider
through the entries table's term columns, kind and UTC day in clear), and only then opens the
matching entries with the auditor key (:func:`audit.seal.open_sealed`). Finding the entries about
one person therefore decrypts exactly those entries.

Every decrypted entry is checked against the criteria again (exact time range, and each field):
the index is derived data, not evidence, so an entry the index wrongly points at is dropped, and
a report about one person never shows another's entry.

Keys (:class:`AuditorKeys`): the auditor's key provider (X25519 private key) unwraps each log's
data keys from its keyring and, unless the blind-index key is given as a file, the log's
blind-index key, which the keyring keeps wrapped for the auditors. With a blind-index key alone,
:meth:`LogReader.candidates` still finds entry indices, but nothing can be read.

Assumptions about the log (from :mod:`audit.layout`, :mod:`audit.index`, :mod:`audit.segment`):
``log.json`` names the log id (= checkpoint origin), suite and checkpoint key; the index row of an
entry gives its segment and frame offset; a frame is ``length | index | terms | sealed | crc``;
the Merkle leaf is the suite's leaf hash of the sealed entry; ``checkpoints/latest`` is the
newest signed checkpoint. The index is written by the log's writer only: a reader never changes
a log directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.agencies import Agency
from audit.blind_index import BlindIndexer
from audit.checkpoint import Checkpoint, Signer, Sm2PrivateKey, open_note
from audit.checkpoints import CheckpointStore
from audit.entry import Access, AuditEntry, Decision, Subject, decode
from audit.errors import AuditError, InclusionProofError, VerificationError
from audit.index import AuditIndex, IndexError_
from audit.keys import KeyProvider, KeyProviderError, Keyring, KeyringError, blind_index_key_id
from audit.layout import LogMeta, LogPaths
from audit.merkle import LEAF_PREFIX, MerkleProver, verify_inclusion
from audit.reader import LogReader as LogFiles
from audit.reader import ReadError
from audit.record import RecordError, parse_terms
from audit.review import (
    EARLIEST,
    LATEST,
    EntryRef,
    LocatedEntry,
    ShreddedEntry,
    shredded_summary,
    utc_or_bound,
)
from audit.review.export import ExportEntry, ExportLog, Shredded, build_bundle
from audit.seal import KeyShredded, SealError, open_sealed, parse_header
from audit.segment import (
    FRAME_HEAD,
    FRAME_OVERHEAD,
    HEADER_SIZE,
    MAX_RECORD,
    list_segments,
    parse_frames,
    segment_name,
    split_record,
)
from audit.suites import Suite, get_suite

__all__ = [
    "KINDS",
    "AuditorKeys",
    "Criteria",
    "LogCorrupted",
    "LogReader",
    "LogSet",
    "LogStats",
    "ReviewError",
    "SearchResult",
    "parse_signer_key",
]

KINDS = ("access", "consent_change", "push_notification")

_UNINDEXED = "the segments hold entries its index does not"
_CATCH_UP = (
    "a running writer indexes them within about a second; if none runs (one stopped before "
    "indexing them), run dsgw audit reindex --log {directory} or open the log"
)


class ReviewError(AuditError):
    """A review cannot proceed: a missing key, an unknown log or entry, a log without checkpoint.
    The CLI reports it as a usage or input error (exit 2)."""

    reason = "REVIEW"


class LogCorrupted(VerificationError):
    """What the review read from a log does not hold together (a frame that is not the entry the
    index names, a sealed entry that does not open, leaves that do not lead to the signed root):
    run ``dsgw audit verify``. ``origin`` and ``index`` name the log and entry when known."""

    reason = "LOG_CORRUPTED"

    def __init__(self, message: str, *, origin: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.origin = origin
        self.index = index


# --- criteria ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Criteria:
    """What to look for; every criterion given must hold. ``since`` is inclusive and ``until``
    exclusive (aware datetimes)."""

    subject: Subject | None = None
    caller: Agency | None = None
    provider: Agency | None = None
    purpose: str | None = None
    decision: Decision | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"unknown entry kind {self.kind!r}; one of {', '.join(KINDS)}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be time-zone aware")
            if value is not None:
                object.__setattr__(self, name, _clamped(value))
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError("the time range ends before it starts")
        if (self.provider is not None or self.decision is not None) and self.kind not in (None, "access"):
            raise ValueError("provider and decision are criteria of access entries only")

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__dataclass_fields__)

    def matches(self, entry: AuditEntry) -> bool:
        """Whether a decrypted entry meets every criterion."""
        if self.subject is not None and entry.subject != self.subject:
            return False
        if self.caller is not None and entry.caller != self.caller:
            return False
        if self.purpose is not None and entry.purpose != self.purpose:
            return False
        if self.kind is not None and entry.body.kind != self.kind:
            return False
        if self.since is not None and entry.time < self.since:
            return False
        if self.until is not None and entry.time >= self.until:
            return False
        body = entry.body
        if self.provider is not None or self.decision is not None:
            if not isinstance(body, Access):
                return False
            if self.provider is not None and body.provider != self.provider:
                return False
            if self.decision is not None and body.decision != self.decision:
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        """The criteria, with a subject's identifier masked (criteria end up in outputs)."""
        out: dict[str, Any] = {}
        if self.subject is not None:
            out["subject"] = f"{self.subject.kind.value}:***{self.subject.id[-4:]}"
        for name in ("caller", "provider", "decision"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.value
        for name in ("purpose", "kind"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.astimezone(UTC).isoformat()
        return out


def _clamped(when: datetime) -> datetime:
    """``when``, or the first or last UTC instant when it lies beyond what a UTC time can hold
    (the first day of year 1 in a zone east of UTC, the last of year 9999 west of it): a search
    from 0001-01-01 or until 9999-12-31 means from or to the end of the log."""
    bound = utc_or_bound(when)
    return bound if bound in (EARLIEST, LATEST) else when


def _utc_day(when: datetime) -> str:
    return when.astimezone(UTC).date().isoformat()


# --- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditorKeys:
    """The reader's keys: the auditor key provider (``None``: cannot decrypt) and blind-index keys
    given directly (each log uses the one whose key id its ``log.json`` names)."""

    provider: KeyProvider | None = None
    blind_keys: tuple[bytes, ...] = ()


# --- one log ----------------------------------------------------------------------------------


@dataclass
class LogStats:
    """What one log contributed to a search."""

    origin: str
    directory: str
    indexed: int
    checkpoint_size: int
    candidates: int = 0
    opened: int = 0
    """Entries decrypted (shredded entries are not: they cannot be)."""
    matched: int = 0
    shredded: int = 0
    """Candidates whose data key was shredded at retention and whose clear fields match."""
    unindexed: bool = False
    """The segments hold entries the index does not (:meth:`LogReader.unindexed`)."""

    @property
    def warning(self) -> str | None:
        """Why this log's results may be incomplete (one line), if they may be."""
        if self.unindexed:
            covers = f"covers {self.indexed:,} entries"
            if self.indexed < self.checkpoint_size:
                covers += f" of {self.checkpoint_size:,} checkpointed"
            return (
                f"log {self.origin}: {_UNINDEXED} (the index {covers}); results may be incomplete: "
                + _CATCH_UP.format(directory=self.directory)
            )
        if self.indexed < self.checkpoint_size:
            return (
                f"log {self.origin}: the index covers {self.indexed} of {self.checkpoint_size} "
                f"checkpointed entries; results may be incomplete: run dsgw audit reindex --log "
                f"{self.directory} (or open the log)"
            )
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "log": self.origin,
            "directory": self.directory,
            "indexed": self.indexed,
            "checkpoint_size": self.checkpoint_size,
            "unindexed": self.unindexed,
            "candidates": self.candidates,
            "opened": self.opened,
            "matched": self.matched,
            "shredded": self.shredded,
        }


class LogReader:
    """The read side of one log directory for an auditor. Opens the index read-only; never writes
    to the log directory. Use :meth:`open` and :meth:`close` (or ``with``)."""

    def __init__(self, directory: Path, meta: LogMeta, keys: AuditorKeys) -> None:
        self.directory = directory
        self.paths = LogPaths(directory)
        self.meta = meta
        self.suite: Suite = get_suite(meta.suite)
        self._keys = keys
        self._index: AuditIndex | None = None
        self._keyring: Keyring | None = None
        self._indexer: BlindIndexer | None = None
        self._fds: dict[int, int] = {}
        self._checkpoint: tuple[bytes, Checkpoint] | None = None

    @classmethod
    def open(cls, directory: str | os.PathLike[str], keys: AuditorKeys) -> LogReader:
        """The reader of the log in ``directory`` (:class:`~audit.layout.LogLayoutError` if it is
        not a log)."""
        root = Path(directory)
        return cls(root, LogMeta.load(root), keys)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._index is not None:
            self._index.close()
            self._index = None
        if self._keyring is not None:
            self._keyring.forget()

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def origin(self) -> str:
        return self.meta.log_id

    # -- parts, opened on first use ----------------------------------------------------------------

    @property
    def index(self) -> AuditIndex:
        if self._index is None:
            try:
                self._index = AuditIndex.open(self.paths.index, log_id=self.meta.log_id, readonly=True)
            except IndexError_ as exc:
                raise ReviewError(
                    f"log {self.origin}: its search index cannot be read ({exc}); "
                    f"rebuild it with dsgw audit reindex --log {self.directory}"
                ) from None
        return self._index

    @property
    def keyring(self) -> Keyring:
        if self._keyring is None:
            provider = self._keys.provider
            if provider is None:
                raise ReviewError("reading entries needs the auditor key (--auditor-key or --home)")
            if provider.kek_id != self.meta.kek_id:
                raise ReviewError(
                    f"log {self.origin} is encrypted for auditor key {self.meta.kek_id}, "
                    f"not the key given ({provider.kek_id})"
                )
            self._keyring = Keyring.open(self.paths.keyring, provider, log_id=self.meta.log_id)
        return self._keyring

    @property
    def indexer(self) -> BlindIndexer:
        if self._indexer is None:
            wanted = self.meta.blind_index_key_id
            key = next((k for k in self._keys.blind_keys if blind_index_key_id(k).hex() == wanted), None)
            if key is None:
                if self._keys.provider is None:
                    raise ReviewError(
                        f"log {self.origin}: searching needs its blind-index key {wanted} "
                        "or the auditor key, which unwraps it"
                    )
                try:
                    key = self.keyring.blind_index_key()
                except (KeyringError, KeyProviderError) as exc:
                    raise ReviewError(
                        f"log {self.origin}: cannot unwrap the blind-index key ({exc})"
                    ) from None
            self._indexer = BlindIndexer.for_suite(key, self.suite)
        return self._indexer

    # -- searching --------------------------------------------------------------------------------

    def candidates(self, criteria: Criteria) -> list[int]:
        """Indices of the entries whose index terms match ``criteria`` (days of the time range,
        not its exact bounds). No entry is decrypted."""
        index = self.index
        term = self.indexer.term
        if criteria.until is not None and criteria.until <= EARLIEST:
            return []  # nothing is before the first instant
        day_from = _utc_day(criteria.since) if criteria.since is not None else None
        day_to = _utc_day(criteria.until - timedelta(microseconds=1)) if criteria.until is not None else None
        caller = term("caller", criteria.caller.value) if criteria.caller else None
        purpose = term("purpose", criteria.purpose) if criteria.purpose else None
        decision = term("decision", criteria.decision.value) if criteria.decision else None
        provider = term("provider", criteria.provider.value) if criteria.provider else None
        kind = "access" if criteria.provider or criteria.decision else criteria.kind

        def select(start: int = 0, stop: int | None = None) -> list[int]:
            return index.select(
                kind=kind,
                day_from=day_from,
                day_to=day_to,
                caller=caller,
                purpose=purpose,
                decision=decision,
                provider=provider,
                start=start,
                stop=stop,
            )

        if criteria.subject is None:
            return select()
        posted = index.postings(self.indexer.subject_term(criteria.subject.kind, criteria.subject.id))
        narrowing = (kind, day_from, day_to, caller, purpose, decision, provider)
        if not posted or all(value is None for value in narrowing):
            return posted
        selected = set(select(posted[0], posted[-1] + 1))
        return [i for i in posted if i in selected]

    def unindexed(self) -> bool:
        """Whether the segments hold entries the index does not (a writer that stopped before
        indexing what it appended: the index catches up when the log is opened or reindexed).
        Cheap: each segment file's size is compared with the byte length the index covers of
        it, and where the file is longer, the frame head that follows is read: a complete frame
        there is an entry the index lacks (an incomplete one is an append that never finished)."""
        covered = self.index.state().segments
        for first, path in list_segments(self.paths.segments):
            start = covered.get(first, HEADER_SIZE)
            try:
                size = path.stat().st_size
                if size - start < FRAME_OVERHEAD:
                    continue
                with open(path, "rb") as handle:
                    head = os.pread(handle.fileno(), FRAME_HEAD.size, start)
            except OSError:
                continue  # a segment that cannot be read: reading the entries says so
            if len(head) < FRAME_HEAD.size:
                continue  # cut meanwhile (a writer's recovery)
            length, _ = FRAME_HEAD.unpack(head)
            if 0 < length <= MAX_RECORD and start + length + FRAME_OVERHEAD <= size:
                return True
        return False

    def no_entry(self, idx: int) -> ReviewError:
        """The error for entry ``idx``, which the index does not have: not indexed yet when the
        segments hold it, else not in the log."""
        if self.unindexed():
            try:
                held: int | None = LogFiles(self.directory).size()
            except (ReadError, OSError):
                held = None  # damaged: verify says where; the index is behind anyway
            if held is None or idx < held:
                return ReviewError(
                    f"log {self.origin}: entry {idx} is not in its index yet: {_UNINDEXED}; "
                    + _CATCH_UP.format(directory=self.directory)
                )
        return ReviewError(f"log {self.origin} has no entry {idx}")

    # -- reading ----------------------------------------------------------------------------------

    def _fd(self, first: int) -> int:
        fd = self._fds.get(first)
        if fd is None:
            try:
                fd = os.open(self.paths.segments / segment_name(first), os.O_RDONLY)
            except FileNotFoundError:
                raise LogCorrupted(
                    f"log {self.origin}: segment {segment_name(first)} is missing", origin=self.origin
                ) from None
            self._fds[first] = fd
        return fd

    def sealed(self, idx: int) -> bytes:
        """The sealed bytes of entry ``idx``, read from its frame (located through the index)."""
        return self.frame(idx)[1]

    def frame(self, idx: int) -> tuple[bytes, bytes]:
        """The clear terms section and the sealed bytes of entry ``idx``, read from its frame
        (located through the index)."""
        where = self.index.location(idx)
        if where is None:
            raise self.no_entry(idx)
        first, offset = where
        fd = self._fd(first)
        head = os.pread(fd, FRAME_HEAD.size, offset)
        if len(head) != FRAME_HEAD.size:
            raise LogCorrupted(
                f"log {self.origin} entry {idx}: its frame is cut short", origin=self.origin, index=idx
            )
        length, _ = FRAME_HEAD.unpack(head)
        frame = os.pread(fd, length + FRAME_OVERHEAD, offset)
        parsed = parse_frames(frame, 0, idx)
        if parsed.bad is not None or parsed.indices != [idx]:
            raise LogCorrupted(
                f"log {self.origin} entry {idx}: its frame is damaged or is another entry's",
                origin=self.origin,
                index=idx,
            )
        return split_record(parsed.records[0])

    def payload(self, idx: int, sealed: bytes | None = None) -> bytes:
        """The decrypted payload of entry ``idx`` (needs the auditor key). Raises
        :class:`~audit.seal.KeyShredded` for an entry whose data key was destroyed, and
        :class:`LogCorrupted` for one that does not open."""
        blob = self.sealed(idx) if sealed is None else sealed
        try:
            return open_sealed(
                blob, keyring_or_dek=self.keyring, log_id=self.meta.log_id, index=idx, suite=self.suite
            )
        except KeyShredded:
            raise
        except SealError as exc:
            raise LogCorrupted(f"log {self.origin}: {exc}", origin=self.origin, index=idx) from None
        except KeyProviderError as exc:
            raise ReviewError(f"log {self.origin} entry {idx}: cannot unwrap its data key ({exc})") from None

    def entry(self, idx: int) -> AuditEntry:
        return decode(self.payload(idx))

    def read(
        self,
        indices: Iterable[int],
        criteria: Criteria,
        stats: LogStats,
        shredded: list[ShreddedEntry] | None = None,
    ) -> Iterator[LocatedEntry]:
        """Open the entries ``indices`` and yield those that really match ``criteria``. An entry
        whose data key was shredded is not yielded: when its clear fields (kind, UTC day and blind
        terms, kept in its frame) match ``criteria``, it is counted in ``stats.shredded`` and
        appended to ``shredded``."""
        for idx in indices:
            terms, sealed = self.frame(idx)
            try:
                entry = decode(self.payload(idx, sealed))
            except KeyShredded as exc:
                found = self._shredded(idx, terms, criteria, exc)
                if found is not None:
                    stats.shredded += 1
                    if shredded is not None:
                        shredded.append(found)
                continue
            stats.opened += 1
            if criteria.matches(entry):
                stats.matched += 1
                yield LocatedEntry(self.origin, idx, entry)

    def _shredded(
        self, idx: int, section: bytes, criteria: Criteria, exc: KeyShredded
    ) -> ShreddedEntry | None:
        """The shredded entry ``idx`` if its clear fields match ``criteria`` (``None`` if they do
        not: the index named it wrongly). The time range is judged by the entry's UTC day only:
        a day only partly inside the range gives an uncertain match."""
        try:
            terms = parse_terms(section)
        except RecordError as exc2:
            raise LogCorrupted(
                f"log {self.origin} entry {idx}: {exc2}", origin=self.origin, index=idx
            ) from None
        kind = "access" if criteria.provider or criteria.decision else criteria.kind
        if kind is not None and terms.kind != kind:
            return None
        term = self.indexer.term
        wanted: list[tuple[str, bytes]] = []
        if criteria.subject is not None:
            wanted.append(("subject", self.indexer.subject_term(criteria.subject.kind, criteria.subject.id)))
        for name in ("caller", "provider", "decision"):
            value = getattr(criteria, name)
            if value is not None:
                wanted.append((name, term(name, value.value)))
        if criteria.purpose is not None:
            wanted.append(("purpose", term("purpose", criteria.purpose)))
        if any(terms.get(name) != value for name, value in wanted):
            return None
        day = date(1970, 1, 1) + timedelta(days=terms.day)
        located = ShreddedEntry(self.origin, idx, day, terms.kind, exc.period, exc.shredded_at)
        return located.within(criteria.since, criteria.until)

    def shredded_key(self, sealed: bytes, idx: int) -> Shredded | None:
        """Whether the data key of the sealed entry ``idx`` was shredded (from the keyring's
        tombstones: nothing is decrypted)."""
        tomb = self.keyring.tombstone(parse_header(sealed, index=idx).key_id)
        return None if tomb is None else Shredded(tomb.period, tomb.shredded_at)

    # -- checkpoints and proofs -------------------------------------------------------------------

    def checkpoint(self) -> tuple[bytes, Checkpoint]:
        """The latest signed checkpoint, verified under the log's own key."""
        if self._checkpoint is None:
            note = CheckpointStore(self.paths.checkpoints).latest()
            if note is None:
                raise ReviewError(f"log {self.origin} has no checkpoint")
            try:
                checkpoint, _ = open_note(note, [self.meta.verifier], hash_size=self.suite.digest_size)
            except VerificationError as exc:
                raise LogCorrupted(
                    f"log {self.origin}: its latest checkpoint does not verify ({exc})", origin=self.origin
                ) from None
            if checkpoint.origin != self.origin:
                raise LogCorrupted(
                    f"log {self.origin}: its latest checkpoint is of another log", origin=self.origin
                )
            self._checkpoint = (note, checkpoint)
        return self._checkpoint

    def _prover(self, size: int) -> MerkleProver:
        """A prover over entries ``[0, size)``: from the index's tile hashes when it has them
        (milliseconds at millions of entries), else from every leaf hash."""
        try:
            return LogFiles(self.directory).prover(size)
        except ReadError as exc:
            raise LogCorrupted(f"log {self.origin}: {exc}", origin=self.origin) from None

    def export_section(self, indices: Sequence[int], *, decrypt: bool) -> ExportLog:
        """This log's part of an export bundle: the latest checkpoint and, per entry, its sealed
        bytes, leaf hash and inclusion proof (plus the decrypted payload when ``decrypt``). No
        data key of the log goes into a bundle: one covers a whole retention period, so it would
        open entries the bundle does not contain (and resurrect them after a shredding). An entry
        whose data key was shredded is exported without payload, marked ``shredded``. Entries
        beyond the latest checkpoint cannot be proved: :class:`ReviewError`."""
        note, checkpoint = self.checkpoint()
        late = [i for i in indices if i >= checkpoint.size]
        missing = [i for i in late if self.index.location(i) is None]
        if missing:
            raise self.no_entry(missing[0])
        if late:
            raise ReviewError(
                f"log {self.origin}: entry {late[0]} is after its latest checkpoint (tree size "
                f"{checkpoint.size}); export it once the log has checkpointed it"
            )
        prover = self._prover(checkpoint.size)
        if prover.root() != checkpoint.root_hash:
            raise LogCorrupted(
                f"log {self.origin}: its leaves do not lead to its checkpoint's root", origin=self.origin
            )
        hash_fn = self.suite.hash_fn
        entries = []
        for idx in sorted(set(indices)):
            sealed = self.sealed(idx)
            leaf = hash_fn(LEAF_PREFIX + sealed)
            proof = tuple(prover.inclusion_proof(idx, checkpoint.size))
            try:  # what the inspector will check offline, checked here first
                verify_inclusion(idx, checkpoint.size, leaf, proof, checkpoint.root_hash, hash_fn)
            except InclusionProofError:
                raise LogCorrupted(
                    f"log {self.origin} entry {idx}: its sealed bytes do not lead to its checkpoint's root",
                    origin=self.origin,
                    index=idx,
                ) from None
            payload = None
            shredded = self.shredded_key(sealed, idx)
            if decrypt and shredded is None:
                try:
                    payload = self.payload(idx, sealed)
                except KeyShredded as exc:  # shredded by another process meanwhile
                    shredded = Shredded(exc.period, exc.shredded_at)
            entries.append(
                ExportEntry(
                    index=idx,
                    sealed=sealed,
                    leaf_hash=leaf,
                    proof=proof,
                    payload=payload,
                    shredded=shredded,
                )
            )
        return ExportLog(
            origin=self.origin,
            log_id=self.meta.log_id,
            suite=self.suite.name,
            vkey=self.meta.vkey,
            checkpoint=note,
            entries=tuple(entries),
        )

    def stats(self) -> LogStats:
        size = self.checkpoint()[1].size if CheckpointStore(self.paths.checkpoints).latest() else 0
        stats = LogStats(self.origin, str(self.directory), self.index.size, size)
        stats.unindexed = self.unindexed()
        return stats


# --- several logs -----------------------------------------------------------------------------


@dataclass
class SearchResult:
    """Matched entries of every log, ordered by time (then log and index), and per-log counts."""

    criteria: Criteria
    entries: list[LocatedEntry]
    logs: list[LogStats] = field(default_factory=list)
    truncated: bool = False
    shredded: list[ShreddedEntry] = field(default_factory=list)
    """Matching entries whose data key was shredded at retention (by their clear fields)."""

    @property
    def warnings(self) -> list[str]:
        """Why the results may be incomplete (an index behind its log), one line per log."""
        return [s.warning for s in self.logs if s.warning is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "criteria": self.criteria.to_json(),
            "count": len(self.entries),
            "truncated": self.truncated,
            "warnings": self.warnings,
            "shredded": shredded_summary(self.shredded),
            "logs": [s.to_json() for s in self.logs],
            "entries": [
                {"log": e.origin, "index": e.index, "entry": e.entry.model_dump(mode="json")}
                for e in self.entries
            ],
        }


class LogSet:
    """Several logs read together (each gateway replica keeps its own)."""

    def __init__(self, readers: Sequence[LogReader]) -> None:
        origins = [r.origin for r in readers]
        if len(set(origins)) != len(origins):
            raise ReviewError("the same log is given twice")
        self.readers = list(readers)

    @classmethod
    def open(cls, directories: Sequence[str | os.PathLike[str]], keys: AuditorKeys) -> LogSet:
        if not directories:
            raise ReviewError("no log given (--log DIR)")
        readers: list[LogReader] = []
        try:
            for directory in directories:
                readers.append(LogReader.open(directory, keys))
            return cls(readers)
        except BaseException:
            for reader in readers:
                reader.close()
            raise

    def close(self) -> None:
        for reader in self.readers:
            reader.close()

    def __enter__(self) -> LogSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reader(self, name: str) -> LogReader:
        """The log called ``name``: its origin, or the directory it was opened from."""
        for reader in self.readers:
            if name in (reader.origin, str(reader.directory)) or (
                Path(name).exists() and Path(name).resolve() == reader.directory.resolve()
            ):
                return reader
        raise ReviewError(f"no log {name!r} among the logs given")

    def search(self, criteria: Criteria, *, limit: int | None = None) -> SearchResult:
        """Entries of every log matching ``criteria``, decrypting only the index's candidates."""
        found: list[LocatedEntry] = []
        stats: list[LogStats] = []
        shredded: list[ShreddedEntry] = []
        for reader in self.readers:
            stat = reader.stats()
            indices = reader.candidates(criteria)
            stat.candidates = len(indices)
            found.extend(reader.read(indices, criteria, stat, shredded))
            stats.append(stat)
        found.sort(key=lambda e: (e.entry.time, e.origin, e.index))
        truncated = limit is not None and len(found) > limit
        if limit is not None:
            found = found[:limit]
        return SearchResult(criteria, found, stats, truncated, shredded)

    def warnings(self, origins: Iterable[str] | None = None) -> list[str]:
        """Why what is read from the logs (those of ``origins``, default all) may be incomplete:
        :attr:`LogStats.warning` of each."""
        wanted = None if origins is None else set(origins)
        found = []
        for reader in self.readers:
            if wanted is None or reader.origin in wanted:
                warning = reader.stats().warning
                if warning is not None:
                    found.append(warning)
        return found

    def read(self, refs: Iterable[EntryRef]) -> list[LocatedEntry]:
        """The entries named by ``refs`` (log origin or directory, and index)."""
        out = []
        for ref in refs:
            reader = self.reader(ref.origin)
            out.append(LocatedEntry(reader.origin, ref.index, reader.entry(ref.index)))
        return out

    def export(
        self,
        refs: Iterable[EntryRef],
        signer: Signer,
        *,
        decrypt: bool = False,
        note: str = "",
        created: datetime | None = None,
    ) -> dict[str, Any]:
        """A signed bundle of the entries ``refs`` (see :mod:`audit.review.export`); sections in
        the order the logs were given."""
        wanted: dict[str, set[int]] = {}
        for ref in refs:
            wanted.setdefault(self.reader(ref.origin).origin, set()).add(ref.index)
        if not wanted:
            raise ReviewError("nothing to export: no entry selected")
        sections = [
            reader.export_section(sorted(wanted[reader.origin]), decrypt=decrypt)
            for reader in self.readers
            if reader.origin in wanted
        ]
        return build_bundle(sections, signer, created=created, note=note)

    def signer(
        self, key: Ed25519PrivateKey | Sm2PrivateKey, name: str, *, prefer: Iterable[str] = ()
    ) -> Signer:
        """The bundle signer for ``key`` (Ed25519 or SM2): named after a log whose checkpoint key
        it is (one of ``prefer`` first, e.g. the logs in the bundle), so that the log's own vkey
        verifies the bundle; else called ``name``."""
        payload = Signer(name, key).verifier().key_payload
        preferred = set(prefer)
        matching = [r for r in self.readers if r.meta.verifier.key_payload == payload]
        matching.sort(key=lambda r: r.origin not in preferred)
        return Signer(matching[0].origin if matching else name, key)

    def origins(self, refs: Iterable[EntryRef]) -> list[str]:
        """The origins of the logs ``refs`` name (by origin or directory)."""
        return sorted({self.reader(ref.origin).origin for ref in refs})


def parse_signer_key(text: str) -> tuple[str, Ed25519PrivateKey | Sm2PrivateKey]:
    """The name and private key of a signed-note signer key string
    (``PRIVATE+KEY+<name>+<hex id>+<base64(type || key)>``, Ed25519 or SM2);
    :class:`~audit.errors.KeyFormatError` if malformed (the message never shows key material)."""
    signer = Signer.from_key_string(text.strip())
    return signer.name, signer.private_key
