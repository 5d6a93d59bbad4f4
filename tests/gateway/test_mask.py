"""Field masks (gateway.pipeline.mask) and minimisation (gateway.pipeline.minimize): a mask never
reveals more than its rule allows."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.pipeline.mask import MASKS, apply_mask, mask_text
from gateway.pipeline.minimize import minimize

texts = st.text(max_size=40)
#: Text without "*", so that every character the mask shows is one it revealed.
clear = st.text(alphabet=st.characters(blacklist_characters="*"), max_size=40)


def _revealed(masked: str) -> list[int]:
    return [i for i, c in enumerate(masked) if c != "*"]


@given(clear)
def test_last4_reveals_at_most_the_last_four(text: str) -> None:
    masked = mask_text("last4", text)
    assert len(masked) == len(text)
    shown = _revealed(masked)
    assert len(shown) <= 4
    assert all(i >= len(text) - 4 for i in shown)
    assert all(masked[i] == text[i] for i in shown)
    if len(text) <= 4:
        assert masked == "*" * len(text)  # a short value is not shown whole
    else:
        assert masked.endswith(text[-4:])


@pytest.mark.parametrize(
    ("mask", "head", "tail"), [("first3last4", 3, 4), ("first1", 1, 0), ("first2", 2, 0)]
)
@given(text=clear)
def test_keep_masks_reveal_only_their_head_and_tail(mask: str, head: int, tail: int, text: str) -> None:
    masked = mask_text(mask, text)
    assert len(masked) == len(text)
    shown = _revealed(masked)
    assert len(shown) <= head + tail
    assert all(i < head or i >= len(text) - tail for i in shown)
    assert all(masked[i] == text[i] for i in shown)
    assert len(shown) < len(text) or not text  # never the whole value


@given(texts)
def test_redact_reveals_nothing(text: str) -> None:
    assert mask_text("redact", text) == "***"


@pytest.mark.parametrize(
    ("mask", "length", "pattern"), [("year", 4, r"\d{4}"), ("year_month", 7, r"\d{4}-\d{2}")]
)
@given(text=clear)
def test_date_masks_reveal_a_date_prefix_or_nothing(mask: str, length: int, pattern: str, text: str) -> None:
    masked = mask_text(mask, text)
    if set(masked) <= {"*"}:
        assert len(masked) == len(text)
    else:
        assert re.fullmatch(pattern, masked, re.ASCII)
        assert text.startswith(masked)


@given(st.dates())
def test_date_masks_on_dates(day: dt.date) -> None:
    assert apply_mask("year", day) == f"{day.year:04d}"
    assert apply_mask("year_month", day) == f"{day.year:04d}-{day.month:02d}"


def test_date_masks_hide_text_that_is_not_a_date() -> None:
    # A 4-character name, or text shaped like "xxxx-...", is not a year: nothing is shown.
    assert apply_mask("year", "张三丰某") == "****"
    assert apply_mask("year", "abcd-secret") == "*" * 11
    assert apply_mask("year_month", "abcd-ef-gh") == "*" * 10
    assert apply_mask("year", "1990") == "1990"
    assert apply_mask("year_month", "1990-03") == "1990-03"


def test_examples() -> None:
    assert apply_mask("last4", "91120000MA05K1234X") == "**************234X"
    assert apply_mask("first1", "张三") == "张*"
    assert apply_mask("first2", "南开大学") == "南开**"
    assert apply_mask("first3last4", "110101199003071234") == "110***********1234"


@given(st.sampled_from(sorted(MASKS)), st.one_of(st.integers(), st.booleans(), st.dates(), texts))
def test_masked_value_is_a_string(mask: str, value: object) -> None:
    assert isinstance(apply_mask(mask, value), str)


def test_apply_mask_shapes() -> None:
    assert apply_mask(None, 12345) == 12345
    assert apply_mask("last4", None) is None
    assert apply_mask("redact", None) is None
    assert apply_mask("first1", ["张三", "李四"]) == ["张*", "李*"]
    assert apply_mask("first1", ("ab",)) == ["a*"]
    assert apply_mask("first1", True) == "t***"
    assert apply_mask("redact", False) == "***"


def test_minimize_keeps_only_the_fields_and_masks_them() -> None:
    values = {"name": "南开大学", "level": "bachelor", "secret": "x", "date": dt.date(2020, 6, 30)}
    out = minimize(values, ["name", "level", "date", "absent"], {"name": "first2", "date": "year"})
    assert out == {"name": "南开**", "level": "bachelor", "date": "2020", "absent": None}


@given(st.dictionaries(st.sampled_from("abcdef"), texts), st.lists(st.sampled_from("abcd"), unique=True))
def test_minimize_never_returns_other_fields(values: dict[str, str], fields: list[str]) -> None:
    out = minimize(values, fields, {"a": "redact"})
    assert list(out) == fields
    if "a" in out and values.get("a") is not None:
        assert out["a"] == "***"
