"""Unified social credit codes (GB 32100-2015)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.identity import (
    PROVINCES,
    CreditCode,
    IdentifierProblem,
    InvalidIdentifier,
    make_credit_code,
    normalize_credit_code,
    parse_credit_code,
)
from gateway.identity.checksums import CREDIT_CHARSET, CREDIT_WEIGHTS, credit_check_char, org_code_check_char
from gateway.identity.credit_code import AUTHORITIES, CATEGORIES
from gateway.identity.forms import credit_code_stored_forms

VALID = "91350100M000100Y43"


def reason_of(raw: str) -> IdentifierProblem:
    with pytest.raises(InvalidIdentifier) as info:
        parse_credit_code(raw)
    return info.value.reason


def with_check(first17: str) -> str:
    return first17 + credit_check_char(first17)


def test_known_valid_code() -> None:
    assert parse_credit_code(VALID) == CreditCode(
        code=VALID,
        registration_authority="9",
        entity_category="1",
        division_code="350100",
        organization_code="M000100Y4",
    )
    parsed = parse_credit_code(VALID)
    assert (parsed.authority_name, parsed.category_name, parsed.division_name) == (
        "工商（市场监管）",
        "企业",
        "福建省",
    )
    assert normalize_credit_code(VALID) == VALID


def test_make_credit_code() -> None:
    assert make_credit_code("91", "350100", "M000100Y") == VALID
    code = make_credit_code("52", "120116", "MJ0000AB")
    parsed = parse_credit_code(code)
    assert (parsed.authority_name, parsed.category_name, parsed.division_name) == (
        "民政",
        "民办非企业单位",
        "滨海新区",
    )


@pytest.mark.parametrize(
    "raw",
    [
        "91350100m000100y43",
        "９１３５０１００Ｍ０００１００Ｙ４３",
        "９１３５０１００ｍ０００１００ｙ４３",
        "913501 00M00010 0Y43",
        "\t91350100\u3000M000100Y43\xa0\n",
    ],
)
def test_format_variants_normalize(raw: str) -> None:
    assert normalize_credit_code(raw) == VALID


def test_authority_table() -> None:
    assert set(AUTHORITIES) == set("123456789ANY")
    assert {key[0] for key in CATEGORIES} == set(AUTHORITIES)
    assert CATEGORIES["Y1"] == "其他" and "Y2" not in CATEGORIES
    assert CATEGORIES["92"] == "个体工商户" and "94" not in CATEGORIES


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", IdentifierProblem.EMPTY),
        ("\u3000 ", IdentifierProblem.EMPTY),
        ("91350100M000100Y4", IdentifierProblem.LENGTH),
        ("91350100M000100Y430", IdentifierProblem.LENGTH),
        ("91350100I000100Y43", IdentifierProblem.CHARACTER),
        ("91350100O000100Y43", IdentifierProblem.CHARACTER),
        ("9135010OZ000100Y43", IdentifierProblem.CHARACTER),
        ("91350100M000100S43", IdentifierProblem.CHARACTER),
        ("91350100M000100V43", IdentifierProblem.CHARACTER),
        ("91350100M000100Y4-", IdentifierProblem.CHARACTER),
        ("91350100M000100Y44", IdentifierProblem.CHECK_CHARACTER),
        (with_check("94350100M000100Y4"), IdentifierProblem.UNKNOWN_REGISTRATION_AUTHORITY),
        (with_check("B1350100M000100Y4"), IdentifierProblem.UNKNOWN_REGISTRATION_AUTHORITY),
        (with_check("Y2350100M000100Y4"), IdentifierProblem.UNKNOWN_REGISTRATION_AUTHORITY),
        (with_check("91990100M000100Y4"), IdentifierProblem.UNKNOWN_DIVISION),
        (with_check("913501A0M000100Y4"), IdentifierProblem.UNKNOWN_DIVISION),
        (with_check("91350100M000100Y5"), IdentifierProblem.ORGANIZATION_CODE_CHECK),
        (with_check("91350100M000100YA"), IdentifierProblem.ORGANIZATION_CODE_CHECK),
    ],
)
def test_each_reason(raw: str, reason: IdentifierProblem) -> None:
    assert reason_of(raw) == reason
    with pytest.raises(InvalidIdentifier):
        normalize_credit_code(raw)


def test_messages() -> None:
    with pytest.raises(InvalidIdentifier) as info:
        parse_credit_code("91350100M000100Y44")
    assert str(info.value) == "invalid credit code: check character is 4, expected 3"
    with pytest.raises(InvalidIdentifier) as info:
        parse_credit_code(with_check("91350100M000100Y5"))
    assert str(info.value) == "invalid credit code: organization code check character is 5, expected 4"
    for raw in ("91350100I000100Y43", with_check("91990100M000100Y4"), "91350100M000100Y4"):
        with pytest.raises(InvalidIdentifier) as info:
            parse_credit_code(raw)
        assert "M000100" not in str(info.value) and "\n" not in str(info.value)


def test_make_rejects_bad_arguments() -> None:
    for args in (
        ("94", "350100", "M000100Y"),
        ("91", "990100", "M000100Y"),
        ("91", "35010", "M000100Y"),
        ("91", "350100", "M000100I"),
        ("91", "350100", "m000100y"),
        ("91", "350100", "M000100"),
    ):
        with pytest.raises(ValueError):
            make_credit_code(*args)


# ---------------------------------------------------------------------------- properties


def test_mod31_detects_every_substitution_and_adjacent_transposition() -> None:
    """Weights (check character weight 1 appended) are non-zero mod 31 and neighbours differ; as
    31 is prime and character values differ by 1..30, every single substitution within the set
    and every adjacent transposition of different characters changes the weighted sum mod 31."""
    weights = (*CREDIT_WEIGHTS, 1)
    assert tuple(pow(3, i, 31) for i in range(17)) == CREDIT_WEIGHTS
    for value_diff in range(1, 31):
        assert all(value_diff * w % 31 for w in weights)
        assert all(value_diff * (a - b) % 31 for a, b in itertools.pairwise(weights))


def test_org_code_check_vector() -> None:
    assert org_code_check_char("M000100Y") == "4"


categories = st.sampled_from(sorted(CATEGORIES))
divisions = st.builds(
    lambda p, rest: f"{p}{rest:04d}", st.sampled_from(sorted(PROVINCES)), st.integers(0, 9999)
)
org_bodies = st.text(alphabet=CREDIT_CHARSET, min_size=8, max_size=8)
valid_codes = st.builds(make_credit_code, categories, divisions, org_bodies)


@given(categories, divisions, org_bodies)
def test_generated_codes_parse_back(category: str, division: str, body: str) -> None:
    code = make_credit_code(category, division, body)
    parsed = parse_credit_code(code)
    assert parsed.code == code
    assert parsed.registration_authority + parsed.entity_category == category
    assert parsed.division_code == division
    assert parsed.organization_code[:8] == body


@given(valid_codes)
def test_stored_forms_round_trip(code: str) -> None:
    forms = credit_code_stored_forms(code)
    assert forms[0] == code
    for form in forms:
        assert normalize_credit_code(form) == code


@given(valid_codes)
def test_every_single_substitution_is_rejected(code: str) -> None:
    for i in range(18):
        for ch in CREDIT_CHARSET:
            if ch != code[i]:
                assert reason_of(code[:i] + ch + code[i + 1 :]) == IdentifierProblem.CHECK_CHARACTER


@given(valid_codes)
def test_every_adjacent_transposition_is_rejected(code: str) -> None:
    for i in range(17):
        a, b = code[i], code[i + 1]
        if a != b:
            assert reason_of(code[:i] + b + a + code[i + 2 :]) == IdentifierProblem.CHECK_CHARACTER
