"""Review tools over one or several audit logs: search, reports, a citizen's view, signed exports.

* :mod:`audit.review.query`: search criteria -> blind-index terms -> matching entry indices, across
  several logs, decrypting only the matched entries (needs the auditor key);
* :mod:`audit.review.report`: volumes, denials and anomaly rules over decoded entries (pure);
* :mod:`audit.review.subject_report`: what one citizen may see about their own data (pure);
* :mod:`audit.review.export`: signed bundles of selected entries with inclusion proofs, and their
  offline verification;
* :mod:`audit.review.render`: human-readable tables.

An entry found in a log is a :class:`LocatedEntry`: the entry plus where it is (the log's origin
and the entry's index), so that every finding points back at evidence that can be proved.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.entry import AuditEntry

__all__ = ["EntryRef", "LocatedEntry"]


@dataclass(frozen=True, slots=True, order=True)
class EntryRef:
    """Where an entry is: the origin (name) of its log and its index there."""

    origin: str
    index: int

    def __str__(self) -> str:
        return f"{self.origin}#{self.index}"

    def to_json(self) -> dict[str, str | int]:
        return {"log": self.origin, "index": self.index}


@dataclass(frozen=True, slots=True)
class LocatedEntry:
    """A decoded entry and where it is."""

    origin: str
    index: int
    entry: AuditEntry

    @property
    def ref(self) -> EntryRef:
        return EntryRef(self.origin, self.index)
