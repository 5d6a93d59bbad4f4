"""Check characters of the national identifiers: pure functions over strings.

- Resident identity number (GB 11643-1999): ISO 7064 MOD 11-2 over the first 17 digits.
- Unified social credit code (GB 32100-2015): weighted mod 31 over the first 17 characters of
  the 31-character set (digits and upper-case letters without I, O, Z, S, V).
- Organization code (GB 11714-1997), embedded at positions 9-17 of a credit code: weighted
  mod 11 over 8 characters, check '0'-'9' or 'X'.
"""

from __future__ import annotations

RESIDENT_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))  # 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2
RESIDENT_CHECK = "10X98765432"

CREDIT_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_VALUES = {c: i for i, c in enumerate(CREDIT_CHARSET)}
CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def resident_check_char(first17: str) -> str:
    """The check character of an 18-digit resident identity number, from its first 17 digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("need 17 ASCII digits")
    total = sum(int(d) * w for d, w in zip(first17, RESIDENT_WEIGHTS, strict=True))
    return RESIDENT_CHECK[total % 11]


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
    total = sum(org_code_value(c) * w for c, w in zip(first8, ORG_WEIGHTS, strict=True))
    c = 11 - total % 11
    return "X" if c == 10 else "0" if c == 11 else str(c)


def credit_check_char(first17: str) -> str:
    """The check character of a GB 32100 unified social credit code, from its first 17 characters."""
    if len(first17) != 17:
        raise ValueError("need 17 characters")
    total = sum(CREDIT_VALUES[c] * w for c, w in zip(first17, CREDIT_WEIGHTS, strict=True))
    return CREDIT_CHARSET[(31 - total % 31) % 31]
