"""Resident identity numbers (GB 11643-1999): normalize, parse, make.

Layout of the 18 characters: division (1-6), birth date YYYYMMDD (7-14), sequence (15-17, odd
last digit for men), check character (18, ISO 7064 MOD 11-2, '0'-'9' or 'X'). The first-generation
15-digit form lacks the century '19' and the check character.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Literal

from gateway.identity.checksums import clean_identifier, resident_check_char, resident_check_of
from gateway.identity.divisions import division_known, division_name
from gateway.identity.errors import IdentifierProblem, InvalidIdentifier

KIND = "identity number"
_CHECK_CHARS = frozenset("0123456789X")
_DIGITS = frozenset("0123456789")
_IMPORT_YEAR = date.today().year  # a birth year before this is never in the future
_division_known = lru_cache(maxsize=4096)(division_known)

Gender = Literal["M", "F"]


@dataclass(frozen=True, slots=True)
class ResidentId:
    """A valid resident identity number and what it encodes."""

    number: str
    division_code: str
    birth_date: date
    gender: Gender
    sequence: int

    @property
    def division_name(self) -> str | None:
        return division_name(self.division_code)

    def __repr__(self) -> str:  # never print an identity number in clear
        return f"ResidentId(***{self.number[-2:]})"


def _characters(n: int) -> str:
    return "1 character" if n == 1 else f"{n} characters"


def _invalid(reason: IdentifierProblem, detail: str) -> InvalidIdentifier:
    return InvalidIdentifier(KIND, reason, detail)


def _canonical(raw: str) -> str:
    """The 18-character form of a cleaned-up 18- or 15-character number; checks characters only."""
    text = clean_identifier(raw)
    if not text:
        raise _invalid(IdentifierProblem.EMPTY, "empty")
    if len(text) not in (15, 18):
        raise _invalid(IdentifierProblem.LENGTH, f"{_characters(len(text))}, expected 18 (or 15)")
    for i, ch in enumerate(text):
        if ch not in _DIGITS and not (ch == "X" and i == 17):
            raise _invalid(
                IdentifierProblem.CHARACTER, f"character {ch!r} at position {i + 1} is not allowed"
            )
    if len(text) == 15:
        first17 = f"{text[:6]}19{text[6:]}"
        return first17 + resident_check_char(first17)
    return text


def _validated(raw: str, today: date | None) -> tuple[str, date]:
    if len(raw) == 18 and raw.isascii() and raw[:17].isdigit() and raw[17] in _CHECK_CHARS:
        number = raw  # fast path: already canonical in form
    else:
        number = _canonical(raw)
    expected = resident_check_of(number)
    if number[17] != expected:
        raise _invalid(
            IdentifierProblem.CHECK_CHARACTER, f"check character is {number[17]}, expected {expected}"
        )
    year = int(number[6:10])
    if year < 1900:
        raise _invalid(IdentifierProblem.IMPOSSIBLE_DATE, "birth year before 1900")
    try:
        born = date.fromisoformat(number[6:14])  # YYYYMMDD
    except ValueError:
        raise _invalid(IdentifierProblem.IMPOSSIBLE_DATE, "birth date is not a calendar date") from None
    if today is None and year >= _IMPORT_YEAR:
        today = date.today()
    if today is not None and born > today:
        raise _invalid(IdentifierProblem.IMPOSSIBLE_DATE, "birth date is in the future")
    if not _division_known(number[:6]):
        raise _invalid(IdentifierProblem.UNKNOWN_DIVISION, "unknown administrative division (positions 1-6)")
    return number, born


def normalize_resident_id(raw: str, *, today: date | None = None) -> str:
    """The canonical 18-character form (ASCII digits, upper-case X) of a valid number, accepting
    full-width characters, lower-case x, stray whitespace and the legacy 15-digit form.
    Validates exactly as ``parse_resident_id`` does; raises InvalidIdentifier."""
    return _validated(raw, today)[0]


def parse_resident_id(raw: str, *, today: date | None = None) -> ResidentId:
    """Validate and decode a resident identity number (any form ``normalize_resident_id`` takes).
    ``today`` (default: the current date) bounds the birth date."""
    number, born = _validated(raw, today)
    return ResidentId(
        number=number,
        division_code=number[:6],
        birth_date=born,
        gender="M" if int(number[16]) % 2 else "F",
        sequence=int(number[14:17]),
    )


def make_resident_id(division_code: str, birth_date: date, sequence: int) -> str:
    """A valid 18-character number: ``sequence`` 0-999 (odd for a man), birth year from 1900.
    Raises ValueError for arguments no valid number has."""
    if len(division_code) != 6 or not division_known(division_code):
        raise ValueError("unknown 6-digit division code")
    if not 0 <= sequence <= 999:
        raise ValueError("sequence must be 0-999")
    if birth_date.year < 1900:
        raise ValueError("birth year before 1900")
    first17 = f"{division_code}{birth_date.year:04d}{birth_date.month:02d}{birth_date.day:02d}{sequence:03d}"
    return first17 + resident_check_char(first17)
