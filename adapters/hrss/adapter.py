"""hrss adapter: the social-insurance and employment-service system (adapters.hrss.schema) as the
canonical datasets person_insurance, employment_status, person_category and employer_insurance
(docs/canonical-datasets.md).

A person is found by ``ac01.aac002``, an employer by ``ab01.aab003`` (stored forms, indexed). A
person with two ``aac001`` (duplicate registration) is one subject: the spells, registrations and
categories of both numbers are merged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, or_, select
from sqlalchemy.sql.elements import ColumnElement

from adapters.agencies import Agency
from adapters.base import (
    Anchor,
    DatasetSpec,
    GroupKey,
    Key,
    Params,
    PredicateSpec,
    Since,
    SqlAdapter,
    all_keys,
    decode,
    group_rows,
    in_keys,
    is_open,
    month_of,
    months_covered,
    normalize_employer_id,
    open_end_month,
    parse_yyyymm,
    parse_yyyymmdd,
    predicate,
    records_by_group,
    rows_for_keys,
    rows_of_group,
)
from adapters.contract import (
    EmployerInsurance,
    EmploymentStatus,
    PersonCategory,
    PersonInsurance,
    SubjectKind,
    dataset,
)
from adapters.hrss.schema import (
    DJLX_FLEXIBLE,
    DJLX_UNEMPLOYED,
    KNLB_CODES,
    RYLB_CODES,
    ab01,
    ac01,
    ac02,
    jy_djxx,
    jy_knry,
    jy_rylb,
    sy_dyff,
)

AGENCY = Agency.HRSS
PENSION = "110"  # ac02.aae140

# --------------------------------------------------------------------------------------------
# Native rows -> canonical records: pure functions over plain values.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spell:
    """One ``ac02`` pension spell: months as indexes (adapters.base.month_index)."""

    id: int
    first: int
    last: int | None  # None while open
    base: int
    employer: str | None  # normalised ab01.aab003 of the unit


def spell_from_row(spell_id: int, aae030: object, aae031: object, aac040: object, aab003: object) -> Spell:
    return Spell(
        id=spell_id,
        first=parse_yyyymm(aae030, "ac02.aae030"),
        last=open_end_month(aae031, "ac02.aae031"),
        base=int(aac040) if isinstance(aac040, int) else 0,
        employer=normalize_employer_id(aab003),
    )


def window(as_of: dt.date, months: int) -> tuple[int, int]:
    """The months ``M0-months .. M0-1`` as an inclusive index range."""
    m0 = month_of(as_of)
    return m0 - months, m0 - 1


def person_insurance(spells: Sequence[Spell], as_of: dt.date) -> PersonInsurance:
    open_spells = [s for s in spells if s.last is None]
    current = max(open_spells, key=lambda s: (s.first, s.id), default=None)
    covered: set[int] = set()
    w24 = window(as_of, 24)
    for s in spells:
        covered |= months_covered(s.first, s.last, w24)
    return PersonInsurance(
        currently_insured=current is not None,
        current_employer=current.employer if current is not None else None,
        insured_months_24m=len(covered),
        contribution_base=current.base if current is not None else None,
    )


def employer_insurance(spells: Sequence[Spell], as_of: dt.date) -> EmployerInsurance:
    lo, hi = window(as_of, 12)
    return EmployerInsurance(
        insured_headcount=sum(1 for s in spells if s.last is None),
        hires_12m=sum(1 for s in spells if lo <= s.first <= hi),
        departures_12m=sum(1 for s in spells if s.last is not None and lo <= s.last <= hi),
    )


@dataclass(frozen=True, slots=True)
class Registration:
    """``jy_djxx``: kind 'SY' / 'LH', registered on, cancelled (False while valid)."""

    id: int
    kind: str
    registered: dt.date
    cancelled: bool


@dataclass(frozen=True, slots=True)
class Certification:
    """``jy_knry``: category (decoded lazily), certified on, exited."""

    id: int
    category_code: str
    certified: dt.date
    exited: bool


@dataclass(frozen=True, slots=True)
class Benefit:
    """``sy_dyff``: first and last month of the payment run."""

    first: int
    last: int


def _latest_valid(regs: Iterable[Registration], kind: str) -> dt.date | None:
    dates = [(r.registered, r.id) for r in regs if r.kind == kind and not r.cancelled]
    return max(dates)[0] if dates else None


def employment_status(
    registrations: Sequence[Registration],
    certifications: Sequence[Certification],
    benefits: Sequence[Benefit],
    as_of: dt.date,
) -> EmploymentStatus:
    unemployed_since = _latest_valid(registrations, DJLX_UNEMPLOYED)
    flexible_since = _latest_valid(registrations, DJLX_FLEXIBLE)
    valid = [c for c in certifications if not c.exited]
    latest = max(valid, key=lambda c: (c.certified, c.id), default=None)
    m0 = month_of(as_of)
    return EmploymentStatus(
        registered_unemployed=unemployed_since is not None,
        unemployed_since=unemployed_since,
        flexible_employment=flexible_since is not None,
        flexible_since=flexible_since,
        hard_to_employ=latest is not None,
        hard_to_employ_category=decode(KNLB_CODES, latest.category_code, "jy_knry.knlb") if latest else None,
        hard_to_employ_since=latest.certified if latest else None,
        receiving_unemployment_benefit=any(b.first <= m0 <= b.last for b in benefits),
    )


def person_category(codes: Iterable[str]) -> PersonCategory:
    """Categories from ``jy_rylb.rylb`` codes (codes outside RYLB_CODES are ignored)."""
    held = {RYLB_CODES[c] for c in codes if c in RYLB_CODES}
    return PersonCategory(
        veteran="veteran" in held,
        returning_migrant="returning_migrant" in held,
        poverty_lifted="poverty_lifted" in held,
    )


# --------------------------------------------------------------------------------------------
# SQL: read the rows of a batch of anchor keys, then map per subject.
# --------------------------------------------------------------------------------------------

PERSON = Anchor(
    source=ac01,
    key=ac01.c.aac001,
    stored_id=ac01.c.aac002,
    name=ac01.c.aac003,
    birth_date=ac01.c.aac006,
    parse_birth=lambda v: parse_yyyymmdd(v, "ac01.aac006"),
)
EMPLOYER = Anchor(source=ab01, key=ab01.c.aab001, stored_id=ab01.c.aab003, name=ab01.c.aab004)


def _spells_by(by: ColumnElement[Any]) -> Select[Any]:
    return (
        select(by, ac02.c.id, ac02.c.aae030, ac02.c.aae031, ac02.c.aac040, ab01.c.aab003)
        .select_from(ac02.outerjoin(ab01, ac02.c.aab001 == ab01.c.aab001))
        .where(in_keys(by), ac02.c.aae140 == PENSION)
    )


SPELLS_OF_PERSONS = _spells_by(ac02.c.aac001)
SPELLS_OF_UNITS = _spells_by(ac02.c.aab001)
REGISTRATIONS = select(jy_djxx.c.aac001, jy_djxx.c.id, jy_djxx.c.djlx, jy_djxx.c.djrq, jy_djxx.c.zxrq).where(
    in_keys(jy_djxx.c.aac001)
)
CERTIFICATIONS = select(jy_knry.c.aac001, jy_knry.c.id, jy_knry.c.knlb, jy_knry.c.rdrq, jy_knry.c.tcrq).where(
    in_keys(jy_knry.c.aac001)
)
BENEFITS = select(sy_dyff.c.aac001, sy_dyff.c.ksny, sy_dyff.c.jsny).where(in_keys(sy_dyff.c.aac001))
CATEGORIES = select(jy_rylb.c.aac001, jy_rylb.c.rylb).where(in_keys(jy_rylb.c.aac001))


def build_person_insurance(
    conn: Connection, groups: Mapping[GroupKey, Sequence[Key]], as_of: dt.date
) -> dict[GroupKey, PersonInsurance]:
    return records_by_group(
        conn,
        SPELLS_OF_PERSONS,
        groups,
        lambda rows: person_insurance([spell_from_row(*r[1:]) for r in rows], as_of),
    )


def build_employer_insurance(
    conn: Connection, groups: Mapping[GroupKey, Sequence[Key]], as_of: dt.date
) -> dict[GroupKey, EmployerInsurance]:
    return records_by_group(
        conn,
        SPELLS_OF_UNITS,
        groups,
        lambda rows: employer_insurance([spell_from_row(*r[1:]) for r in rows], as_of),
    )


def build_employment_status(
    conn: Connection, groups: Mapping[GroupKey, Sequence[Key]], as_of: dt.date
) -> dict[GroupKey, EmploymentStatus]:
    keys = all_keys(groups)
    regs = group_rows(rows_for_keys(conn, REGISTRATIONS, keys))
    certs = group_rows(rows_for_keys(conn, CERTIFICATIONS, keys))
    pays = group_rows(rows_for_keys(conn, BENEFITS, keys))
    out: dict[GroupKey, EmploymentStatus] = {}
    for g, ks in groups.items():
        registrations = [
            Registration(r.id, r.djlx, parse_yyyymmdd(r.djrq, "jy_djxx.djrq"), not is_open(r.zxrq))
            for r in rows_of_group(regs, ks)
        ]
        certifications = [
            Certification(r.id, r.knlb, parse_yyyymmdd(r.rdrq, "jy_knry.rdrq"), not is_open(r.tcrq))
            for r in rows_of_group(certs, ks)
        ]
        benefits = [
            Benefit(parse_yyyymm(r.ksny, "sy_dyff.ksny"), parse_yyyymm(r.jsny, "sy_dyff.jsny"))
            for r in rows_of_group(pays, ks)
        ]
        out[g] = employment_status(registrations, certifications, benefits, as_of)
    return out


def build_person_category(
    conn: Connection, groups: Mapping[GroupKey, Sequence[Key]], as_of: dt.date
) -> dict[GroupKey, PersonCategory]:
    return records_by_group(conn, CATEGORIES, groups, lambda rows: person_category(r.rylb for r in rows))


# ---- incremental extracts: which anchor rows changed after ``since`` ------------------------


def _person_changed(*children: Any) -> Any:
    def clause(since: Since) -> ColumnElement[bool]:
        parts: list[ColumnElement[bool]] = [ac01.c.aae036 > since]
        for child in children:
            parts.append(ac01.c.aac001.in_(select(child.c.aac001).where(child.c.aae036 > since)))
        return or_(*parts)

    return clause


def _insurance_changed(since: Since) -> ColumnElement[bool]:
    unit_changed = (
        select(ac02.c.aac001)
        .select_from(ac02.join(ab01, ac02.c.aab001 == ab01.c.aab001))
        .where(ab01.c.aae036 > since)
    )
    return or_(_person_changed(ac02)(since), ac01.c.aac001.in_(unit_changed))


def _employer_changed(since: Since) -> ColumnElement[bool]:
    return or_(ab01.c.aae036 > since, ab01.c.aab001.in_(select(ac02.c.aab001).where(ac02.c.aae036 > since)))


PERSON_INSURANCE: DatasetSpec[PersonInsurance] = DatasetSpec(
    dataset(AGENCY, "person_insurance", SubjectKind.PERSON, PersonInsurance),
    PERSON,
    build_person_insurance,
    _insurance_changed,
    (ac01.c.aae036, ac02.c.aae036, ab01.c.aae036),
)
EMPLOYMENT_STATUS: DatasetSpec[EmploymentStatus] = DatasetSpec(
    dataset(AGENCY, "employment_status", SubjectKind.PERSON, EmploymentStatus),
    PERSON,
    build_employment_status,
    _person_changed(jy_djxx, jy_knry, sy_dyff),
    (ac01.c.aae036, jy_djxx.c.aae036, jy_knry.c.aae036, sy_dyff.c.aae036),
)
PERSON_CATEGORY: DatasetSpec[PersonCategory] = DatasetSpec(
    dataset(AGENCY, "person_category", SubjectKind.PERSON, PersonCategory),
    PERSON,
    build_person_category,
    _person_changed(jy_rylb),
    (ac01.c.aae036, jy_rylb.c.aae036),
)
EMPLOYER_INSURANCE: DatasetSpec[EmployerInsurance] = DatasetSpec(
    dataset(AGENCY, "employer_insurance", SubjectKind.EMPLOYER, EmployerInsurance),
    EMPLOYER,
    build_employer_insurance,
    _employer_changed,
    (ab01.c.aae036, ac02.c.aae036),
)


def _flag(name: str) -> Any:
    def test(record: Any, _params: Params, _as_of: dt.date) -> bool:
        return bool(getattr(record, name))

    return test


PREDICATES: tuple[PredicateSpec, ...] = (
    predicate(
        PERSON_INSURANCE,
        "currently_insured",
        "has an open pension-insurance spell",
        _flag("currently_insured"),
        reads=("currently_insured",),
    ),
    predicate(
        PERSON_INSURANCE,
        "insured_months_at_least",
        "at least `months` insured months in the 24 months before as_of",
        lambda r, p, _d: r.insured_months_24m >= p["months"],
        reads=("insured_months_24m",),
        parameters=("months",),
    ),
    predicate(
        EMPLOYMENT_STATUS,
        "registered_unemployed",
        "holds a valid unemployment registration",
        _flag("registered_unemployed"),
        reads=("registered_unemployed",),
    ),
    predicate(
        EMPLOYMENT_STATUS,
        "flexible_employment",
        "holds a valid flexible-employment registration",
        _flag("flexible_employment"),
        reads=("flexible_employment",),
    ),
    predicate(
        EMPLOYMENT_STATUS,
        "hard_to_employ",
        "currently certified hard-to-employ",
        _flag("hard_to_employ"),
        reads=("hard_to_employ",),
    ),
    predicate(
        EMPLOYMENT_STATUS,
        "receives_unemployment_benefit",
        "unemployment benefit paid for the as_of month",
        _flag("receiving_unemployment_benefit"),
        reads=("receiving_unemployment_benefit",),
    ),
    predicate(PERSON_CATEGORY, "veteran", "退役军人", _flag("veteran"), reads=("veteran",)),
    predicate(
        PERSON_CATEGORY,
        "returning_migrant",
        "返乡入乡农民工",
        _flag("returning_migrant"),
        reads=("returning_migrant",),
    ),
    predicate(
        PERSON_CATEGORY, "poverty_lifted", "脱贫人口", _flag("poverty_lifted"), reads=("poverty_lifted",)
    ),
    predicate(
        EMPLOYER_INSURANCE,
        "employer_insured_headcount_at_least",
        "at least `n` persons with an open spell at the unit",
        lambda r, p, _d: r.insured_headcount >= p["n"],
        reads=("insured_headcount",),
        parameters=("n",),
    ),
)


class HrssAdapter(SqlAdapter):
    """人力资源和社会保障局: social insurance and the employment service."""

    agency = AGENCY
    DATASETS = (PERSON_INSURANCE, EMPLOYMENT_STATUS, PERSON_CATEGORY, EMPLOYER_INSURANCE)
    PREDICATES = PREDICATES
    WATERMARK_FORMAT = "%Y-%m-%d %H:%M:%S"


ADAPTER_CLASS = HrssAdapter
