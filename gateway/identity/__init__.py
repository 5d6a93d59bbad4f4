"""Identifiers of persons (GB 11643-1999) and employers (GB 32100-2015): pure validation,
normalization and generation."""

from gateway.identity.credit_code import (
    CreditCode,
    make_credit_code,
    normalize_credit_code,
    parse_credit_code,
)
from gateway.identity.divisions import PROVINCES, TIANJIN_DISTRICTS, division_known, division_name
from gateway.identity.errors import IdentifierProblem, InvalidIdentifier
from gateway.identity.resident_id import (
    ResidentId,
    make_resident_id,
    normalize_resident_id,
    parse_resident_id,
)

__all__ = [
    "PROVINCES",
    "TIANJIN_DISTRICTS",
    "CreditCode",
    "IdentifierProblem",
    "InvalidIdentifier",
    "ResidentId",
    "division_known",
    "division_name",
    "make_credit_code",
    "make_resident_id",
    "normalize_credit_code",
    "normalize_resident_id",
    "parse_credit_code",
    "parse_resident_id",
]
