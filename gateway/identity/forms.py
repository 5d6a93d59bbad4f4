"""The forms in which agencies commonly *store* a valid identifier, so that an adapter can find a
subject's records with an indexed ``IN (...)`` lookup instead of scanning and normalising a table.

These are the format-only dirt kinds of the synthetic sources (adapters.synthetic.truth
ID_FORMAT_DIRT). Identifiers broken in other ways (transposed digits, missing) are not found by
number; identity linkage resolves them.
"""

from __future__ import annotations

_FULLWIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)})


def to_fullwidth(text: str) -> str:
    """ASCII printable characters to their full-width forms (as an IME in full-width mode types)."""
    return text.translate(_FULLWIDTH)


def to_legacy15(number18: str) -> str | None:
    """The first-generation 15-digit form of an 18-digit number (century and check dropped), or None
    for persons born outside 1900-1999, who never had one."""
    if number18[6:8] != "19":
        return None
    return number18[:6] + number18[8:17]


def spaced(identifier: str) -> str:
    """The 6-8-4 grouping printed on forms: ``120101 19900307 123X``."""
    return f"{identifier[:6]} {identifier[6:14]} {identifier[14:]}"


def resident_id_stored_forms(number18: str) -> list[str]:
    """Every stored form of a canonical 18-digit number: itself, lowercase x, 6-8-4 spaced,
    legacy 15-digit, and the full-width form of each, without repeats, canonical first.

    The lower-case and spaced full-width forms are cut from one translation of the number (the
    space is not translated): batch lookups make these for every subject."""
    wide = to_fullwidth(number18)
    lower = number18.lower()
    forms = [number18, lower, spaced(number18)]
    wides = [wide, wide[:-1] + to_fullwidth(lower[-1]), spaced(wide)]
    legacy = to_legacy15(number18)
    if legacy is not None:
        forms.append(legacy)
        wides.append(to_fullwidth(legacy))
    return list(dict.fromkeys(forms + wides))


def credit_code_stored_forms(code: str) -> list[str]:
    """Every stored form of a canonical credit code: itself, lower-case, full-width, spaced."""
    forms = [code, code.lower(), spaced(code)]
    forms += [to_fullwidth(f) for f in list(forms)]
    return list(dict.fromkeys(forms))
