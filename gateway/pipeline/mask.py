"""Field masking (pure): what an agreement lets a caller see of a value it may read.

Masks work on the value's text form (dates as YYYY-MM-DD, lists element-wise); a masked value
is always a string, so the caller can tell it was masked. Names:

``last4``        only the last 4 characters (``**************1234``)
``first3last4``  the first 3 and the last 4 characters
``first1``       the first character (a name: ``张**``)
``first2``       the first 2 characters
``year``         a date's year only (``1990``)
``year_month``   a date's year and month (``1990-03``)
``redact``       ``***``: the caller learns only that a value exists
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MASKS", "apply_mask", "mask_text"]


def _keep(text: str, head: int, tail: int) -> str:
    if len(text) <= head + tail:
        return "*" * len(text)
    return text[:head] + "*" * (len(text) - head - tail) + (text[len(text) - tail :] if tail else "")


#: A date's text form as far as the year (``year``) and month (``year_month``) go.
_DATE_HEAD = re.compile(r"\d{4}(?:-\d{2})?", re.ASCII)


def _date_part(text: str, length: int) -> str:
    """The first ``length`` characters of a date's text; any other text is hidden whole."""
    head = text[:length]
    if len(text) >= length and text[4:5] in ("-", "") and _DATE_HEAD.fullmatch(head):
        return head
    return "*" * len(text)


MASKS: Mapping[str, Callable[[str], str]] = {
    "last4": lambda s: _keep(s, 0, 4),
    "first3last4": lambda s: _keep(s, 3, 4),
    "first1": lambda s: _keep(s, 1, 0),
    "first2": lambda s: _keep(s, 2, 0),
    "year": lambda s: _date_part(s, 4),
    "year_month": lambda s: _date_part(s, 7),
    "redact": lambda s: "***",
}


def mask_text(mask: str, text: str) -> str:
    return MASKS[mask](text)


def apply_mask(mask: str | None, value: Any) -> Any:
    """``value`` masked by ``mask`` (None: unchanged). None stays None; a list is masked item by
    item; anything else is masked in its text form."""
    if mask is None or value is None:
        return value
    if isinstance(value, list | tuple):
        return [apply_mask(mask, v) for v in value]
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dt.date):
        text = value.isoformat()
    else:
        text = str(value)
    return mask_text(mask, text)
