"""Resident identity numbers (GB 11643-1999) and division codes."""

from __future__ import annotations

import itertools
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import UsageError
from gateway.identity import (
    PROVINCES,
    TIANJIN_DISTRICTS,
    IdentifierProblem,
    InvalidIdentifier,
    division_known,
    division_name,
    make_resident_id,
    normalize_resident_id,
    parse_resident_id,
)
from gateway.identity.checksums import RESIDENT_CHECK, RESIDENT_WEIGHTS, resident_check_char
from gateway.identity.divisions import TIANJIN_CODES
from gateway.identity.forms import resident_id_stored_forms, spaced, to_fullwidth, to_legacy15

VALID = "11010519491231002X"
LEGACY = "110105491231002"
DIGITS = "0123456789"


def reason_of(raw: str, **kw: date) -> IdentifierProblem:
    with pytest.raises(InvalidIdentifier) as info:
        parse_resident_id(raw, **kw)
    return info.value.reason


def with_check(first17: str) -> str:
    return first17 + resident_check_char(first17)


# ---------------------------------------------------------------------------- known vectors


def test_known_valid_number() -> None:
    rid = parse_resident_id(VALID)
    assert rid.number == VALID
    assert rid.division_code == "110105"
    assert rid.division_name == "北京市"
    assert rid.birth_date == date(1949, 12, 31)
    assert rid.gender == "F"
    assert rid.sequence == 2
    assert normalize_resident_id(VALID) == VALID


def test_tianjin_number_and_gender() -> None:
    man = make_resident_id("120116", date(1990, 3, 7), 123)
    assert man == with_check("12011619900307123")
    rid = parse_resident_id(man)
    assert (rid.gender, rid.sequence, rid.division_name) == ("M", 123, "滨海新区")
    assert parse_resident_id(make_resident_id("120107", date(1990, 3, 7), 124)).gender == "F"


def test_repr_hides_number() -> None:
    rid = parse_resident_id(VALID)
    assert VALID not in repr(rid) and "1949" not in repr(rid)


def test_legacy_15_is_converted() -> None:
    assert normalize_resident_id(LEGACY) == VALID
    assert parse_resident_id(" 110105 491231 002 ").number == VALID


@pytest.mark.parametrize(
    "raw",
    [
        "11010519491231002x",
        "１１０１０５１９４９１２３１００２Ｘ",
        "１１０１０５１９４９１２３１００２ｘ",
        "110105 19491231 002X",
        "\t110105\u300019491231\xa0002X \n",
        "110105\u200b19491231002X",
        "１１０１０５ ４９１２３１ ００２",
    ],
)
def test_format_variants_normalize(raw: str) -> None:
    assert normalize_resident_id(raw) == VALID


def test_leap_day() -> None:
    assert parse_resident_id(make_resident_id("110105", date(2000, 2, 29), 1)).birth_date == date(2000, 2, 29)


def test_birth_today_is_valid_but_tomorrow_is_not() -> None:
    number = make_resident_id("120101", date(2024, 6, 1), 5)
    assert parse_resident_id(number, today=date(2024, 6, 1)).birth_date == date(2024, 6, 1)
    assert reason_of(number, today=date(2024, 5, 31)) == IdentifierProblem.IMPOSSIBLE_DATE


def test_default_today_rejects_future() -> None:
    assert reason_of(with_check("12010130000101001")) == IdentifierProblem.IMPOSSIBLE_DATE


# ---------------------------------------------------------------------------- every reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", IdentifierProblem.EMPTY),
        (" \u3000\t", IdentifierProblem.EMPTY),
        ("1101051949123100", IdentifierProblem.LENGTH),
        ("11010519491231002X0", IdentifierProblem.LENGTH),
        ("11010519491231002A", IdentifierProblem.CHARACTER),
        ("1101051949123100X2", IdentifierProblem.CHARACTER),
        ("11010549123100X", IdentifierProblem.CHARACTER),
        ("11010519491231002-", IdentifierProblem.CHARACTER),
        ("110105194912310023", IdentifierProblem.CHECK_CHARACTER),
        (with_check("11010518991231002"), IdentifierProblem.IMPOSSIBLE_DATE),
        (with_check("11010519000229002"), IdentifierProblem.IMPOSSIBLE_DATE),
        (with_check("11010519490229002"), IdentifierProblem.IMPOSSIBLE_DATE),
        (with_check("11010519491301002"), IdentifierProblem.IMPOSSIBLE_DATE),
        (with_check("11010519491200002"), IdentifierProblem.IMPOSSIBLE_DATE),
        ("110105490229002", IdentifierProblem.IMPOSSIBLE_DATE),
        (with_check("99010519491231002"), IdentifierProblem.UNKNOWN_DIVISION),
        (with_check("12012019491231002"), IdentifierProblem.UNKNOWN_DIVISION),
        (with_check("11000519491231002"), IdentifierProblem.UNKNOWN_DIVISION),
        ("990105491231002", IdentifierProblem.UNKNOWN_DIVISION),
    ],
)
def test_each_reason(raw: str, reason: IdentifierProblem) -> None:
    assert reason_of(raw) == reason
    with pytest.raises(InvalidIdentifier):
        normalize_resident_id(raw)


def test_error_is_usage_and_value_error_with_one_line_message() -> None:
    with pytest.raises(InvalidIdentifier) as info:
        parse_resident_id("110105194912310023")
    exc = info.value
    assert isinstance(exc, UsageError) and isinstance(exc, ValueError)
    assert str(exc) == "invalid identity number: check character is 3, expected X"
    assert exc.reason == "CHECK_CHARACTER"


@pytest.mark.parametrize(
    "raw",
    [
        "110105194912310023",
        "11010519491231002A",
        "1101051949123100",
        with_check("11010519490229002"),
        with_check("99010519491231002"),
        "１１０１０５１９４９１２３１００２Ａ",
    ],
)
def test_messages_do_not_echo_the_number(raw: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        parse_resident_id(raw)
    message = str(info.value)
    assert "\n" not in message
    for part in ("19491231", "491231", "110105", "0229"):
        assert part not in message


def test_make_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_resident_id("990101", date(1990, 1, 1), 1)
    with pytest.raises(ValueError):
        make_resident_id("12", date(1990, 1, 1), 1)
    with pytest.raises(ValueError):
        make_resident_id("120101", date(1990, 1, 1), 1000)
    with pytest.raises(ValueError):
        make_resident_id("120101", date(1899, 12, 31), 1)


# ---------------------------------------------------------------------------- divisions


def test_division_tables() -> None:
    assert len(PROVINCES) == 34
    assert (PROVINCES["11"], PROVINCES["12"], PROVINCES["71"], PROVINCES["82"]) == (
        "北京市",
        "天津市",
        "台湾省",
        "澳门特别行政区",
    )
    assert len(TIANJIN_DISTRICTS) == 16
    assert TIANJIN_DISTRICTS["120116"] == "滨海新区"
    assert TIANJIN_DISTRICTS["120119"] == "蓟州区"


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("120101", "和平区"),
        ("120107", "塘沽区"),
        ("120225", "蓟县"),
        ("120000", "天津市"),
        ("120100", "天津市市辖区"),
        ("110105", "北京市"),
        ("350100", "福建省"),
        ("440000", "广东省"),
        ("12", "天津市"),
        ("120120", None),
        ("120200", None),
        ("990000", None),
        ("110005", None),
        ("11010", None),
        ("11010A", None),
        ("１１０１０５", None),
    ],
)
def test_division_name_and_known(code: str, name: str | None) -> None:
    assert division_name(code) == name
    assert division_known(code) == (name is not None)


# ---------------------------------------------------------------------------- properties


def test_mod11_2_detects_every_substitution_and_adjacent_transposition() -> None:
    """With the check character's weight 1 appended, every weight is non-zero mod 11 and
    neighbours differ mod 11; as 11 is prime and |a - b| <= 10, every single substitution and
    every adjacent transposition of different characters changes the weighted sum mod 11."""
    weights = (*RESIDENT_WEIGHTS, 1)
    for value_diff in range(1, 11):
        assert all(value_diff * w % 11 for w in weights)
        assert all(value_diff * (a - b) % 11 for a, b in itertools.pairwise(weights))
    # The check value makes weighted sum + check value == 1 (mod 11):
    assert "".join("0123456789X"[(1 - total) % 11] for total in range(11)) == RESIDENT_CHECK


_NON_TIANJIN = [p for p in PROVINCES if p != "12"]

divisions = st.one_of(
    st.sampled_from(sorted(TIANJIN_CODES)),
    st.builds(
        lambda p, pref, county: f"{p}{pref:02d}{county:02d}",
        st.sampled_from(_NON_TIANJIN),
        st.integers(1, 99),
        st.integers(0, 99),
    ),
    st.sampled_from(_NON_TIANJIN).map(lambda p: p + "0000"),
)
birth_dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31))
valid_numbers = st.builds(make_resident_id, divisions, birth_dates, st.integers(0, 999))


@given(divisions, birth_dates, st.integers(0, 999))
def test_generated_numbers_parse_back(division: str, born: date, sequence: int) -> None:
    number = make_resident_id(division, born, sequence)
    rid = parse_resident_id(number)
    assert (rid.number, rid.division_code, rid.birth_date, rid.sequence) == (number, division, born, sequence)
    assert rid.gender == ("M" if sequence % 2 else "F")


def reference_stored_forms(number18: str) -> list[str]:
    """The forms by their definition, each translated on its own (the oracle)."""
    forms = [number18, number18.lower(), spaced(number18)]
    legacy = to_legacy15(number18)
    if legacy is not None:
        forms.append(legacy)
    forms += [to_fullwidth(f) for f in list(forms)]
    return list(dict.fromkeys(forms))


@given(valid_numbers)
def test_stored_forms_round_trip(number: str) -> None:
    forms = resident_id_stored_forms(number)
    assert forms == reference_stored_forms(number)
    assert forms[0] == number
    for form in forms:
        assert normalize_resident_id(form) == number
        assert parse_resident_id(form).number == number


@given(valid_numbers)
def test_every_single_substitution_is_rejected(number: str) -> None:
    for i in range(18):
        for ch in DIGITS + "X":
            if ch == number[i]:
                continue
            changed = number[:i] + ch + number[i + 1 :]
            expected = (
                IdentifierProblem.CHARACTER if ch == "X" and i < 17 else IdentifierProblem.CHECK_CHARACTER
            )
            assert reason_of(changed) == expected


@given(valid_numbers)
def test_every_adjacent_transposition_is_rejected(number: str) -> None:
    for i in range(17):
        a, b = number[i], number[i + 1]
        if a == b:
            continue
        swapped = number[:i] + b + a + number[i + 2 :]
        expected = IdentifierProblem.CHARACTER if b == "X" else IdentifierProblem.CHECK_CHARACTER
        assert reason_of(swapped) == expected
