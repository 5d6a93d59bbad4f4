"""The one error of the identifier library: which identifier, and what is wrong with it."""

from __future__ import annotations

from enum import StrEnum

from gateway.errors import UsageError


class IdentifierProblem(StrEnum):
    """Machine-readable reason an identifier is invalid."""

    EMPTY = "EMPTY"
    LENGTH = "LENGTH"
    CHARACTER = "CHARACTER"
    CHECK_CHARACTER = "CHECK_CHARACTER"
    IMPOSSIBLE_DATE = "IMPOSSIBLE_DATE"
    UNKNOWN_DIVISION = "UNKNOWN_DIVISION"
    ORGANIZATION_CODE_CHECK = "ORGANIZATION_CODE_CHECK"
    UNKNOWN_REGISTRATION_AUTHORITY = "UNKNOWN_REGISTRATION_AUTHORITY"


class InvalidIdentifier(UsageError, ValueError):
    """An invalid identity number or credit code. The message is one line, names the problem and
    never contains the identifier itself (at most one character and its position)."""

    reason: IdentifierProblem

    def __init__(self, kind: str, reason: IdentifierProblem, detail: str) -> None:
        super().__init__(f"invalid {kind}: {detail}")
        self.kind = kind
        self.reason = reason
        self.detail = detail
