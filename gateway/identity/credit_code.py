"""Unified social credit codes (GB 32100-2015): normalize, parse, make.

Layout of the 18 characters: registration authority (1), entity category (2), division of the
registering office (3-8), organization code (9-17, GB 11714, its own check at 17), check
character (18, weighted mod 31). Characters: digits and upper-case letters without I O Z S V.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gateway.identity.checksums import (
    CREDIT_CHARSET,
    clean_identifier,
    credit_check_char,
    org_code_check_char,
)
from gateway.identity.divisions import PROVINCES, division_name
from gateway.identity.errors import IdentifierProblem, InvalidIdentifier

KIND = "credit code"
_CHARSET = frozenset(CREDIT_CHARSET)
_DIGITS = frozenset("0123456789")

AUTHORITIES: Mapping[str, str] = MappingProxyType(
    {
        "1": "机构编制",
        "2": "外交",
        "3": "司法行政",
        "4": "文化",
        "5": "民政",
        "6": "旅游",
        "7": "宗教",
        "8": "工会",
        "9": "工商（市场监管）",
        "A": "中央军委改革和编制办公室",
        "N": "农业",
        "Y": "其他",
    }
)
"""Registration authority (1st character) -> name, GB 32100-2015 table 1."""

CATEGORIES: Mapping[str, str] = MappingProxyType(
    {
        "11": "机关",
        "12": "事业单位",
        "13": "中央编办直接管理机构编制的群众团体",
        "19": "其他",
        "21": "外国常驻新闻机构",
        "29": "其他",
        "31": "律师执业机构",
        "32": "公证处",
        "33": "基层法律服务所",
        "34": "司法鉴定机构",
        "35": "仲裁委员会",
        "39": "其他",
        "41": "外国在华文化中心",
        "49": "其他",
        "51": "社会团体",
        "52": "民办非企业单位",
        "53": "基金会",
        "59": "其他",
        "61": "外国旅游部门常驻代表机构",
        "62": "港澳台地区旅游部门常驻内地（大陆）代表机构",
        "69": "其他",
        "71": "宗教活动场所",
        "72": "宗教院校",
        "79": "其他",
        "81": "基层工会",
        "89": "其他",
        "91": "企业",
        "92": "个体工商户",
        "93": "农民专业合作社",
        "A1": "军队事业单位",
        "A9": "其他",
        "N1": "组级集体经济组织",
        "N2": "村级集体经济组织",
        "N3": "乡镇级集体经济组织",
        "N9": "其他",
        "Y1": "其他",
    }
)
"""Registration authority + entity category (1st and 2nd characters) -> category name."""


@dataclass(frozen=True, slots=True)
class CreditCode:
    """A valid unified social credit code and its parts."""

    code: str
    registration_authority: str
    entity_category: str
    division_code: str
    organization_code: str

    @property
    def authority_name(self) -> str:
        return AUTHORITIES[self.registration_authority]

    @property
    def category_name(self) -> str:
        return CATEGORIES[self.registration_authority + self.entity_category]

    @property
    def division_name(self) -> str:
        """The division's name as far as known (the province's at least)."""
        return division_name(self.division_code) or PROVINCES[self.division_code[:2]]


def _invalid(reason: IdentifierProblem, detail: str) -> InvalidIdentifier:
    return InvalidIdentifier(KIND, reason, detail)


def _validated(raw: str) -> str:
    code = clean_identifier(raw)
    if not code:
        raise _invalid(IdentifierProblem.EMPTY, "empty")
    if len(code) != 18:
        raise _invalid(
            IdentifierProblem.LENGTH, f"{len(code)} character{'' if len(code) == 1 else 's'}, expected 18"
        )
    if not _CHARSET.issuperset(code):
        i, ch = next((i, ch) for i, ch in enumerate(code) if ch not in _CHARSET)
        raise _invalid(IdentifierProblem.CHARACTER, f"character {ch!r} at position {i + 1} is not allowed")
    expected = credit_check_char(code[:17])
    if code[17] != expected:
        raise _invalid(
            IdentifierProblem.CHECK_CHARACTER, f"check character is {code[17]}, expected {expected}"
        )
    if code[:2] not in CATEGORIES:
        raise _invalid(
            IdentifierProblem.UNKNOWN_REGISTRATION_AUTHORITY,
            f"registration authority and category {code[:2]} are not in GB 32100",
        )
    if not _DIGITS.issuperset(code[2:8]) or code[2:4] not in PROVINCES:
        raise _invalid(IdentifierProblem.UNKNOWN_DIVISION, "unknown administrative division (positions 3-8)")
    org_expected = org_code_check_char(code[8:16])
    if code[16] != org_expected:
        raise _invalid(
            IdentifierProblem.ORGANIZATION_CODE_CHECK,
            f"organization code check character is {code[16]}, expected {org_expected}",
        )
    return code


def normalize_credit_code(raw: str) -> str:
    """The canonical form (ASCII, upper-case, no whitespace) of a valid credit code. Validates
    exactly as ``parse_credit_code`` does; raises InvalidIdentifier."""
    return _validated(raw)


def parse_credit_code(raw: str) -> CreditCode:
    """Validate and split a unified social credit code (any form ``normalize_credit_code`` takes)."""
    code = _validated(raw)
    return CreditCode(
        code=code,
        registration_authority=code[0],
        entity_category=code[1],
        division_code=code[2:8],
        organization_code=code[8:17],
    )


def make_credit_code(authority_category: str, division_code: str, org_body: str) -> str:
    """A valid credit code from its authority and category (e.g. '91'), a 6-digit division and the
    8-character organization-code body (from the credit code's 31 characters). Raises ValueError."""
    if authority_category not in CATEGORIES:
        raise ValueError("unknown registration authority and category")
    if len(division_code) != 6 or not _DIGITS.issuperset(division_code) or division_code[:2] not in PROVINCES:
        raise ValueError("division code must be 6 digits of a known province")
    if len(org_body) != 8 or not _CHARSET.issuperset(org_body):
        raise ValueError("organization code body must be 8 characters of 0-9 A-Z without I O Z S V")
    first17 = authority_category + division_code + org_body + org_code_check_char(org_body)
    return first17 + credit_check_char(first17)
