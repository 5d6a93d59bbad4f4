"""Check characters of the national identifiers: pure functions over strings.

- Resident identity number (GB 11643-1999): ISO 7064 MOD 11-2 over the first 17 digits.
- Unified social credit code (GB 32100-2015): weighted mod 31 over the first 17 characters of
  the 31-character set (digits and upper-case letters without I, O, Z, S, V).
- Organization code (GB 11714-1997), embedded at positions 9-17 of a credit code: weighted
  mod 11 over 8 characters, check '0'-'9' or 'X'.

Also the character clean-up both identifiers share (``clean_identifier``).
"""

from __future__ import annotations

from operator import mul

RESIDENT_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))  # 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2
RESIDENT_CHECK = "10X98765432"

CREDIT_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_VALUES = {c: i for i, c in enumerate(CREDIT_CHARSET)}
CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)

# Full-width ASCII (U+FF01-U+FF5E) to ASCII; zero-width characters dropped.
_TO_ASCII: dict[int, int | None] = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}
_TO_ASCII.update(dict.fromkeys((0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF)))
_RESIDENT_OFFSET = ord("0") * sum(RESIDENT_WEIGHTS)
_ORG_VALUES = {c: int(c, 36) for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def clean_identifier(raw: str) -> str:
    """``raw`` with full-width characters made ASCII, all whitespace (including U+3000 and NBSP)
    and zero-width characters removed, and letters upper-cased. Checks nothing."""
    if raw.isascii() and raw.isalnum():
        return raw.upper()
    return "".join(raw.translate(_TO_ASCII).split()).upper()


def resident_check_char(first17: str) -> str:
    """The check character of an 18-digit resident identity number, from its first 17 digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("need 17 ASCII digits")
    return resident_check_of(first17)


def resident_check_of(number: str) -> str:
    """The check character for the first 17 characters of ``number``, which the caller has made
    sure are ASCII digits (the hot path: nothing is checked)."""
    return RESIDENT_CHECK[(sum(map(mul, number.encode(), RESIDENT_WEIGHTS)) - _RESIDENT_OFFSET) % 11]


def org_code_value(ch: str) -> int:
    """Value of an organization-code character: digits 0-9, letters A-Z 10-35."""
    if ch.isdigit() and ch.isascii():
        return int(ch)
    if "A" <= ch <= "Z":
        return ord(ch) - ord("A") + 10
    raise ValueError(f"character {ch!r} not allowed in an organization code")


def org_code_check_char(first8: str) -> str:
    """The check character of a GB 11714 organization code, from its first 8 characters."""
    if len(first8) != 8:
        raise ValueError("need 8 characters")
    try:
        total = sum(map(mul, map(_ORG_VALUES.__getitem__, first8), ORG_WEIGHTS))
    except KeyError as exc:
        raise ValueError(f"character {exc.args[0]!r} not allowed in an organization code") from None
    c = 11 - total % 11
    return "X" if c == 10 else "0" if c == 11 else str(c)


def credit_check_char(first17: str) -> str:
    """The check character of a GB 32100 unified social credit code, from its first 17 characters."""
    if len(first17) != 17:
        raise ValueError("need 17 characters")
    try:
        total = sum(map(mul, map(CREDIT_VALUES.__getitem__, first17), CREDIT_WEIGHTS))
    except KeyError as exc:
        raise ValueError(f"character {exc.args[0]!r} not allowed in a credit code") from None
    return CREDIT_CHARSET[(31 - total % 31) % 31]


_SEPARATORS = str.maketrans("", "", "-_./")


def looks_like_resident_id(raw: str) -> bool:
    """Whether an identifier that parses as neither kind was meant as a resident identity number
    (to report that kind's problem): empty, 15 characters (the legacy form), or digits before the
    check character once separators such as ``-`` are set aside. Anything else is reported as a
    credit code."""
    text = clean_identifier(raw).translate(_SEPARATORS)
    return not text or len(text) == 15 or text[:17].isdigit()
