"""Segment files: the on-disk frame format of the audit log, and parsing it.

A segment ``segments/<first index, 20 digits>.seg`` is append-only::

    header:  magic "DSGWAUD1" (8 bytes) | first index (u64)
    frames:  length (u32) | index (u64) | terms section | sealed entry | crc (u32)

all integers big-endian. ``length`` counts the terms section and the sealed entry together; the
terms section is self-delimiting (:mod:`audit.record`), the sealed entry is the rest
(:mod:`audit.seal`, whose associated data binds the log id and the index). ``crc`` is CRC-32
(zlib) over length, index, terms and sealed entry: it tells a torn write from a complete frame.
It is not a security check; the Merkle tree is. The Merkle leaf of an entry is
``leaf_hash(sealed entry)`` (RFC 9162, the suite's hash).

:func:`parse_frames` reads as many good frames as it can and stops at the first bad one,
describing it (:class:`BadFrame`), including whether it is a *torn tail*: no good frame of a
later index follows it in the buffer, so it can only be the remains of an interrupted write.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from audit.record import RecordError, terms_size

__all__ = [
    "FRAME_OVERHEAD",
    "HEADER_SIZE",
    "MAX_RECORD",
    "SEGMENT_MAGIC",
    "BadFrame",
    "Parsed",
    "encode_frame",
    "list_segments",
    "parse_frames",
    "parse_segment_name",
    "segment_header",
    "segment_name",
    "split_record",
]

SEGMENT_MAGIC = b"DSGWAUD1"
_HEADER = struct.Struct(">8sQ")
HEADER_SIZE = _HEADER.size
FRAME_HEAD = struct.Struct(">IQ")
FRAME_HEAD_SIZE = FRAME_HEAD.size
_CRC = struct.Struct(">I")
FRAME_OVERHEAD = FRAME_HEAD_SIZE + _CRC.size
MAX_RECORD = 1 << 20
"""The largest terms section + sealed entry a frame may carry (1 MiB)."""

_NAME = re.compile(r"([0-9]{20})\.seg")
_U64 = struct.Struct(">Q")


def segment_name(first: int) -> str:
    return f"{first:020d}.seg"


def parse_segment_name(name: str) -> int | None:
    match = _NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def segment_header(first: int) -> bytes:
    return _HEADER.pack(SEGMENT_MAGIC, first)


def check_header(data: bytes, first: int) -> str | None:
    """``None`` if ``data`` starts with the header of the segment of ``first``, else the problem."""
    if len(data) < HEADER_SIZE:
        return f"the header is truncated ({len(data)} of {HEADER_SIZE} bytes)"
    magic, claimed = _HEADER.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        return "the header's magic is not DSGWAUD1"
    if claimed != first:
        return f"the header says the first index is {claimed}, the file name says {first}"
    return None


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """The segment files of a segments directory, by first index (other files are ignored)."""
    found = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        first = parse_segment_name(name)
        if first is not None:
            found.append((first, directory / name))
    found.sort()
    return found


def encode_frame(index: int, terms: bytes, sealed: bytes) -> bytes:
    """One frame (see the module docstring)."""
    record_len = len(terms) + len(sealed)
    if record_len > MAX_RECORD:
        raise ValueError(f"a frame carries at most {MAX_RECORD} bytes, got {record_len}")
    head = FRAME_HEAD.pack(record_len, index)
    crc = zlib.crc32(sealed, zlib.crc32(terms, zlib.crc32(head)))
    return head + terms + sealed + _CRC.pack(crc)


def split_record(record: bytes) -> tuple[bytes, bytes]:
    """``(terms section, sealed entry)`` of a frame's record; :class:`RecordError` if malformed."""
    size = terms_size(record)
    if size > len(record):
        raise RecordError("terms section runs past the end of the record")
    return record[:size], record[size:]


@dataclass(frozen=True, slots=True)
class BadFrame:
    """The first frame that does not parse: where, why, the index its header claims (if it has
    one) and whether it is a torn tail (nothing good after it)."""

    offset: int
    problem: str
    claimed_index: int | None
    torn_tail: bool


@dataclass(slots=True)
class Parsed:
    """Good frames of a buffer, in file order: their index fields, offsets and records (terms
    section + sealed entry); ``end`` is the offset after the last good frame; ``bad`` describes
    the frame that stopped parsing, if any."""

    indices: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    records: list[bytes] = field(default_factory=list)
    end: int = 0
    bad: BadFrame | None = None


def frame_problem(data: bytes, pos: int) -> tuple[str, int | None] | None:
    """``None`` if a good frame starts at ``pos``, else (problem, claimed index or None)."""
    size = len(data)
    if size - pos < FRAME_OVERHEAD:
        return f"a frame header is cut short ({size - pos} bytes left)", None
    length, index = FRAME_HEAD.unpack_from(data, pos)
    if length == 0 or length > MAX_RECORD:
        return f"the frame length {length} is impossible", index
    stop = pos + FRAME_HEAD_SIZE + length
    if stop + 4 > size:
        return f"the frame is cut short ({size - pos} of {length + FRAME_OVERHEAD} bytes)", index
    if zlib.crc32(memoryview(data)[pos:stop]) != _CRC.unpack_from(data, stop)[0]:
        return "the frame's CRC does not match its bytes", index
    try:
        if terms_size(data, pos + FRAME_HEAD_SIZE) >= length:
            return "the frame's terms section leaves no sealed entry", index
    except RecordError as exc:
        return f"the frame's terms section is malformed ({exc})", index
    return None


def _good_frame_after(data: bytes, pos: int, expected: int) -> bool:
    """Whether a good frame with an index >= ``expected`` starts anywhere after ``pos``: found by
    searching for the big-endian index bytes of the next few indices and checking the frame."""
    for index in range(expected, expected + 4):
        needle = _U64.pack(index)
        at = data.find(needle, pos + 1)
        while at >= 0:
            start = at - 4
            if start > pos and frame_problem(data, start) is None:
                return True
            at = data.find(needle, at + 1)
    return False


def parse_frames(data: bytes, start: int, expected: int, limit: int | None = None) -> Parsed:
    """Parse the frames of ``data`` from offset ``start``; ``expected`` is the index the first
    frame should have (used only to decide whether a bad frame is a torn tail; the caller checks
    the index sequence). Stops at the first bad frame, or after ``limit`` frames."""
    parsed = Parsed(end=start)
    indices, offsets, records = parsed.indices, parsed.offsets, parsed.records
    size = len(data)
    view = memoryview(data)
    unpack = FRAME_HEAD.unpack_from
    crc_unpack = _CRC.unpack_from
    crc32 = zlib.crc32
    pos = start
    remaining = -1 if limit is None else limit
    while pos < size and remaining != 0:
        remaining -= 1
        if size - pos >= FRAME_OVERHEAD:
            length, index = unpack(data, pos)
            stop = pos + FRAME_HEAD_SIZE + length
            if (
                0 < length <= MAX_RECORD
                and stop + 4 <= size
                and crc32(view[pos:stop]) == crc_unpack(data, stop)[0]
            ):
                try:
                    ok = terms_size(data, pos + FRAME_HEAD_SIZE) < length
                except RecordError:
                    ok = False
                if ok:
                    indices.append(index)
                    offsets.append(pos)
                    records.append(data[pos + FRAME_HEAD_SIZE : stop])
                    pos = stop + 4
                    continue
        problem = frame_problem(data, pos)
        assert problem is not None
        message, claimed = problem
        next_index = expected + len(indices)
        parsed.bad = BadFrame(pos, message, claimed, not _good_frame_after(data, pos, next_index))
        break
    parsed.end = pos
    return parsed
