"""Dirt: the ways agencies' stored identifiers, names and addresses differ from the truth.

Rates are per agency (``DirtRates``; override any of them with ``--dirt FILE.json``, e.g.
``{"hrss": {"legacy15": 0.2}}``; unknown keys are an error). How each rate applies:

- ``transposed`` / ``missing_id`` (identity-breaking): drawn once per agency and *person*, and then
  every row of that person in the agency carries it, so that an agency's rows of a person are
  either all found by number or none (docs/canonical-datasets.md). ``transposed`` swaps two
  adjacent different digits among the first 17 (the check character no longer matches, so the
  stored number is invalid and belongs to nobody); ``missing_id`` stores NULL (education: a
  share ``passport`` of them store a passport number with cert_type '2' instead).
- ``legacy15`` / ``lower_x`` / ``spaces`` (format): drawn per row among rows whose identifier is
  not broken, mutually exclusive; ``legacy15`` applies only to persons born 1900-1999 and
  ``lower_x`` only to numbers ending in X (the rate is the share among those eligible).
  ``fullwidth`` is drawn independently on top of them. Every resulting form is one of
  ``gateway.identity.forms.resident_id_stored_forms``.
- ``name_spaces`` / ``traditional`` / ``homophone``: per row, mutually exclusive;
  ``traditional`` only where a character of the name has a traditional form.
- ``stale_address`` (hrss ac01 rows; civil_affairs households, recorded on the head's member row),
  ``duplicate`` (hrss: a second ac01 row for a person whose number is not broken).
- ``code_lower`` / ``code_spaces`` / ``code_fullwidth``: employer credit codes as stored
  (ab01.aab003, dj_nsrxx.nsrsbh, gs_kjmx.kjywr_nsrsbh, E_BASEINFO.UNISCID); format only, recorded
  as ``lower_x`` / ``spaces`` / ``fullwidth`` on employer rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Self

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adapters.synthetic import names as namelib
from adapters.synthetic.truth import ID_BREAKING_DIRT, ID_FORMAT_DIRT, NAME_DIRT, OTHER_DIRT
from gateway.errors import UsageError
from gateway.identity.forms import spaced, to_fullwidth, to_legacy15

Rate = Annotated[float, Field(ge=0.0, le=1.0)]

#: Every dirt kind in its canonical order and its bit in a record's dirt mask.
KINDS: tuple[str, ...] = ID_FORMAT_DIRT + ID_BREAKING_DIRT + NAME_DIRT + OTHER_DIRT
BIT: dict[str, int] = {k: 1 << i for i, k in enumerate(KINDS)}
BREAKING_MASK = BIT["transposed"] | BIT["missing_id"]
NO_BREAK, TRANSPOSED, MISSING = 0, 1, 2


class _Rates(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _exclusive_sums(self) -> Self:
        groups = (
            ("legacy15", "lower_x", "spaces"),
            ("transposed", "missing_id"),
            ("name_spaces", "traditional", "homophone"),
            ("code_lower", "code_spaces"),
        )
        for group in groups:
            present = [k for k in group if k in type(self).model_fields]
            if sum(float(getattr(self, k)) for k in present) > 1.0:
                raise ValueError(f"rates {' + '.join(present)} exceed 1")
        return self


class HrssDirt(_Rates):
    legacy15: Rate = 0.08
    lower_x: Rate = 0.30
    fullwidth: Rate = 0.01
    spaces: Rate = 0.01
    transposed: Rate = 0.005
    missing_id: Rate = 0.003
    name_spaces: Rate = 0.01
    traditional: Rate = 0.005
    homophone: Rate = 0.005
    stale_address: Rate = 0.15
    duplicate: Rate = 0.015
    code_lower: Rate = 0.02
    code_spaces: Rate = 0.01
    code_fullwidth: Rate = 0.005


class EducationDirt(_Rates):
    legacy15: Rate = 0.005
    lower_x: Rate = 0.10
    fullwidth: Rate = 0.01
    spaces: Rate = 0.005
    transposed: Rate = 0.005
    missing_id: Rate = 0.01
    passport: Rate = 0.3
    name_spaces: Rate = 0.005
    traditional: Rate = 0.003
    homophone: Rate = 0.003


class CivilAffairsDirt(_Rates):
    legacy15: Rate = 0.06
    lower_x: Rate = 0.30
    fullwidth: Rate = 0.02
    spaces: Rate = 0.03
    transposed: Rate = 0.01
    missing_id: Rate = 0.02
    name_spaces: Rate = 0.02
    traditional: Rate = 0.005
    homophone: Rate = 0.01
    stale_address: Rate = 0.2


class TaxDirt(_Rates):
    legacy15: Rate = 0.0
    lower_x: Rate = 0.05
    fullwidth: Rate = 0.005
    spaces: Rate = 0.005
    transposed: Rate = 0.003
    missing_id: Rate = 0.002
    name_spaces: Rate = 0.003
    traditional: Rate = 0.001
    homophone: Rate = 0.002
    code_lower: Rate = 0.01
    code_spaces: Rate = 0.005
    code_fullwidth: Rate = 0.003


class MarketRegulationDirt(_Rates):
    legacy15: Rate = 0.02
    lower_x: Rate = 0.10
    fullwidth: Rate = 0.01
    spaces: Rate = 0.01
    transposed: Rate = 0.005
    missing_id: Rate = 0.005
    name_spaces: Rate = 0.005
    traditional: Rate = 0.002
    homophone: Rate = 0.003
    code_lower: Rate = 0.01
    code_spaces: Rate = 0.01
    code_fullwidth: Rate = 0.005


class DirtRates(_Rates):
    """Dirt rates per agency (see the module docstring for how each applies)."""

    hrss: HrssDirt = HrssDirt()
    education: EducationDirt = EducationDirt()
    civil_affairs: CivilAffairsDirt = CivilAffairsDirt()
    tax: TaxDirt = TaxDirt()
    market_regulation: MarketRegulationDirt = MarketRegulationDirt()

    @classmethod
    def none(cls) -> DirtRates:
        """All rates zero: agencies store every identifier and name exactly."""
        zero: dict[str, Any] = {
            agency: dict.fromkeys(type(getattr(cls(), agency)).model_fields, 0.0)
            for agency in cls.model_fields
        }
        return cls.model_validate(zero)

    @classmethod
    def with_overrides(cls, overrides: Any, base: DirtRates | None = None) -> DirtRates:
        """``base`` (default: the defaults) with the rates in ``overrides`` ({agency: {kind: rate}})
        replaced; raises UsageError on unknown agencies, kinds or bad values."""
        if not isinstance(overrides, dict):
            raise UsageError("dirt overrides must be a JSON object of agencies")
        merged = (base or cls()).model_dump()
        for agency, rates in overrides.items():
            if agency not in merged:
                raise UsageError(f"unknown agency {agency!r} in dirt overrides")
            if not isinstance(rates, dict):
                raise UsageError(f"dirt overrides for {agency} must be an object of rates")
            for kind, value in rates.items():
                if kind not in merged[agency]:
                    raise UsageError(f"unknown dirt kind {kind!r} for {agency}")
                merged[agency][kind] = value
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise UsageError(f"bad dirt rate {where}: {err['msg']}") from None

    @classmethod
    def from_file(cls, path: Path) -> DirtRates:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot read dirt file {path}: {exc.strerror or exc}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"dirt file {path} is not valid JSON: {exc}".splitlines()[0]) from None
        return cls.with_overrides(data)


# ----------------------------------------------------------------------------------------------
# Applying dirt
# ----------------------------------------------------------------------------------------------

Mask = NDArray[np.int32]


def mask_strings(mask: Mask) -> list[str]:
    """Each dirt mask as the comma-separated kinds of record_link.dirt ('' if clean)."""
    if mask.size == 0:
        return []
    uniq, inverse = np.unique(mask, return_inverse=True)
    labels = np.array([",".join(k for k in KINDS if int(m) & BIT[k]) for m in uniq.tolist()], dtype=object)
    out: list[str] = labels[inverse].tolist()
    return out


def draw_breaking(rng: np.random.Generator, n: int, transposed: float, missing: float) -> NDArray[np.int8]:
    """Per subject: NO_BREAK, TRANSPOSED or MISSING."""
    u = rng.random(n)
    out = np.zeros(n, dtype=np.int8)
    out[u < transposed] = TRANSPOSED
    out[(u >= transposed) & (u < transposed + missing)] = MISSING
    return out


def transpose_digits(number: str, pick: int) -> str:
    """``number`` with two adjacent different digits among the first 17 swapped (``pick`` chooses
    the pair); the MOD 11-2 check then fails. Falls back to the first differing pair."""
    pairs = [i for i in range(16) if number[i] != number[i + 1]]
    i = pairs[pick % len(pairs)]
    return number[:i] + number[i + 1] + number[i] + number[i + 2 :]


def person_ids(
    rng: np.random.Generator,
    true_ids: Sequence[str],
    breaking: NDArray[np.int8],
    rates: Any,
) -> tuple[list[str | None], Mask]:
    """Stored forms of ``true_ids`` (one per record) given each record's breaking kind."""
    n = len(true_ids)
    mask = np.zeros(n, dtype=np.int32)
    stored: list[str | None] = list(true_ids)
    if n == 0:
        return stored, mask
    u = rng.random(n)
    f = rng.random(n)
    picks = rng.integers(0, 1 << 30, n)
    ok = breaking == NO_BREAK
    ids = np.asarray(true_ids, dtype="U18")
    born19 = np.strings.startswith(ids, "19", 6)
    ends_x = np.strings.endswith(ids, "X")
    l15, lx, sp = float(rates.legacy15), float(rates.lower_x), float(rates.spaces)
    legacy = ok & born19 & (u < l15)
    lower = ok & ends_x & (u >= l15) & (u < l15 + lx)
    space = ok & (u >= l15 + lx) & (u < l15 + lx + sp)
    full = ok & (f < float(rates.fullwidth))
    mask[legacy] |= BIT["legacy15"]
    mask[lower] |= BIT["lower_x"]
    mask[space] |= BIT["spaces"]
    mask[full] |= BIT["fullwidth"]
    mask[breaking == TRANSPOSED] |= BIT["transposed"]
    mask[breaking == MISSING] |= BIT["missing_id"]
    picks_l = picks.tolist()
    for i in np.flatnonzero(mask).tolist():
        m = int(mask[i])
        value = true_ids[i]
        if m & BIT["missing_id"]:
            stored[i] = None
            continue
        if m & BIT["transposed"]:
            stored[i] = transpose_digits(value, picks_l[i])
            continue
        if m & BIT["legacy15"]:
            value = to_legacy15(value) or value
        elif m & BIT["lower_x"]:
            value = value.lower()
        elif m & BIT["spaces"]:
            value = spaced(value)
        if m & BIT["fullwidth"]:
            value = to_fullwidth(value)
        stored[i] = value
    return stored, mask


def employer_codes(rng: np.random.Generator, codes: Sequence[str], rates: Any) -> tuple[list[str], Mask]:
    """Stored forms of credit codes (format dirt only)."""
    n = len(codes)
    mask = np.zeros(n, dtype=np.int32)
    stored = list(codes)
    if n == 0:
        return stored, mask
    u = rng.random(n)
    f = rng.random(n)
    arr = np.asarray(codes, dtype="U18")
    has_letter = np.strings.upper(arr) != np.strings.lower(arr)
    lo, sp = float(rates.code_lower), float(rates.code_spaces)
    mask[has_letter & (u < lo)] |= BIT["lower_x"]
    mask[(u >= lo) & (u < lo + sp)] |= BIT["spaces"]
    mask[f < float(rates.code_fullwidth)] |= BIT["fullwidth"]
    for i in np.flatnonzero(mask).tolist():
        m = int(mask[i])
        value = codes[i]
        if m & BIT["lower_x"]:
            value = value.lower()
        elif m & BIT["spaces"]:
            value = spaced(value)
        if m & BIT["fullwidth"]:
            value = to_fullwidth(value)
        stored[i] = value
    return stored, mask


def person_names(rng: np.random.Generator, true_names: Sequence[str], rates: Any) -> tuple[list[str], Mask]:
    """Stored forms of names (one per record)."""
    n = len(true_names)
    mask = np.zeros(n, dtype=np.int32)
    stored = list(true_names)
    if n == 0:
        return stored, mask
    u = rng.random(n)
    picks = rng.integers(0, 1 << 30, n).tolist()
    a, b, c = float(rates.name_spaces), float(rates.traditional), float(rates.homophone)
    for i in np.flatnonzero(u < a + b + c).tolist():
        x = float(u[i])
        name = true_names[i]
        if x < a:
            stored[i] = namelib.spaced_name(name, picks[i])
            mask[i] = BIT["name_spaces"]
        elif x < a + b:
            variant = namelib.traditional_variant(name)
            if variant is not None:
                stored[i] = variant
                mask[i] = BIT["traditional"]
        else:
            variant = namelib.homophone_variant(name, picks[i])
            if variant is not None:
                stored[i] = variant
                mask[i] = BIT["homophone"]
    return stored, mask
