"""market_regulation adapter: the business-registration system (adapters.market_regulation.schema)
as the canonical datasets business_registration and person_business (docs/canonical-datasets.md).

An entity is found by ``E_BASEINFO.UNISCID``; a person by ``OPER_CERNO`` (the operator of an
individual business). Dates are INTEGER yyyymmdd; the watermark ``S_EXT_TIMESTAMP`` is epoch seconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.sql.elements import ColumnElement

from adapters.agencies import Agency
from adapters.base import (
    Anchor,
    DatasetSpec,
    GroupKey,
    Key,
    NativeDataError,
    PredicateSpec,
    Since,
    SqlAdapter,
    decode,
    in_keys,
    normalize_employer_id,
    parse_int_yyyymmdd,
    predicate,
    records_by_group,
    years_before,
)
from adapters.contract import BusinessRegistration, PersonBusiness, SubjectKind, dataset
from adapters.market_regulation.schema import E_BASEINFO, ENTTYPE_KIND, REGSTATE_CODES, SCALE_CODES

AGENCY = Agency.MARKET_REGULATION
E = E_BASEINFO.c
INDIVIDUAL_BUSINESS = "9600"
ACTIVE = "1"


def parse_district(value: object) -> str:
    """REGORG: a 6-digit division code."""
    if isinstance(value, str) and len(value) == 6 and value.isascii() and value.isdigit():
        return value
    raise NativeDataError("E_BASEINFO.REGORG: not a 6-digit division code")


def parse_industry(value: object) -> str:
    """INDUSTRYPHY: a GB/T 4754 section letter A-T."""
    if isinstance(value, str) and len(value) == 1 and "A" <= value <= "T":
        return value
    raise NativeDataError("E_BASEINFO.INDUSTRYPHY: not a GB/T 4754 section letter")


@dataclass(frozen=True, slots=True)
class Entity:
    pripid: str
    uniscid: str
    entname: str
    enttype: str
    estdate: int
    regstate: str
    regorg: str
    industryphy: str
    scale: str
    timestamp: int


def business_registration(rows: Sequence[Entity]) -> BusinessRegistration | None:
    """The entity's registration (several rows: the latest extracted, tie: larger PRIPID)."""
    if not rows:
        return None
    e = max(rows, key=lambda r: (r.timestamp, r.pripid))
    entity_type: Any = decode(ENTTYPE_KIND, e.enttype, "E_BASEINFO.ENTTYPE")
    size_class: Any = decode(SCALE_CODES, e.scale, "E_BASEINFO.SCALE")
    status: Any = decode(REGSTATE_CODES, e.regstate, "E_BASEINFO.REGSTATE")
    return BusinessRegistration(
        name=e.entname,
        entity_type=entity_type,
        size_class=size_class,
        status=status,
        registered_on=parse_int_yyyymmdd(e.estdate, "E_BASEINFO.ESTDATE"),
        district_code=parse_district(e.regorg),
        industry=parse_industry(e.industryphy),
    )


def person_business(rows: Sequence[tuple[object, str, str]]) -> PersonBusiness | None:
    """From (UNISCID, ENTTYPE, REGSTATE) of the entities a person operates: the sorted, normalised
    credit codes of active individual businesses; None when they operate none at all."""
    if not rows:
        return None
    codes = {
        code
        for uniscid, enttype, regstate in rows
        if enttype == INDIVIDUAL_BUSINESS and regstate == ACTIVE
        for code in [normalize_employer_id(uniscid)]
        if code is not None
    }
    return PersonBusiness(individual_businesses=sorted(codes))


ENTITY = Anchor(source=E_BASEINFO, key=E.PRIPID, stored_id=E.UNISCID, name=E.ENTNAME)
OPERATOR = Anchor(
    source=E_BASEINFO, key=E.PRIPID, stored_id=E.OPER_CERNO, name=E.OPER_NAME, where=E.OPER_CERNO.is_not(None)
)


ENTITY_ROWS = select(
    E.PRIPID,
    E.PRIPID,
    E.UNISCID,
    E.ENTNAME,
    E.ENTTYPE,
    E.ESTDATE,
    E.REGSTATE,
    E.REGORG,
    E.INDUSTRYPHY,
    E.SCALE,
    E.S_EXT_TIMESTAMP,
).where(in_keys(E.PRIPID))
OPERATED_ROWS = select(E.PRIPID, E.UNISCID, E.ENTTYPE, E.REGSTATE).where(in_keys(E.PRIPID))


def build_business_registration(
    conn: Connection, groups: Mapping[GroupKey, Sequence[Key]], as_of: dt.date
) -> dict[GroupKey, BusinessRegistration]:
    return records_by_group(
        conn, ENTITY_ROWS, groups, lambda rows: business_registration([Entity(*r[1:]) for r in rows])
    )


def build_person_business(
    conn: Connection, groups: Mapping[GroupKey, Sequence[Key]], as_of: dt.date
) -> dict[GroupKey, PersonBusiness]:
    return records_by_group(
        conn, OPERATED_ROWS, groups, lambda rows: person_business([(r[1], r[2], r[3]) for r in rows])
    )


def _changed(since: Since) -> ColumnElement[bool]:
    return since < E.S_EXT_TIMESTAMP


BUSINESS_REGISTRATION: DatasetSpec[BusinessRegistration] = DatasetSpec(
    dataset(AGENCY, "business_registration", SubjectKind.EMPLOYER, BusinessRegistration),
    ENTITY,
    build_business_registration,
    _changed,
    (E.S_EXT_TIMESTAMP,),
)
PERSON_BUSINESS: DatasetSpec[PersonBusiness] = DatasetSpec(
    dataset(AGENCY, "person_business", SubjectKind.PERSON, PersonBusiness),
    OPERATOR,
    build_person_business,
    _changed,
    (E.S_EXT_TIMESTAMP,),
)

PREDICATES: tuple[PredicateSpec, ...] = (
    predicate(
        BUSINESS_REGISTRATION,
        "enterprise_is_small_or_micro",
        "an enterprise of size class small or micro",
        lambda r, _p, _d: r.entity_type == "enterprise" and r.size_class in ("small", "micro"),
        reads=("entity_type", "size_class"),
        absent_means_false=False,
    ),
    predicate(
        BUSINESS_REGISTRATION,
        "is_individual_business",
        "an individual business (个体工商户)",
        lambda r, _p, _d: r.entity_type == "individual_business",
        reads=("entity_type",),
        absent_means_false=False,
    ),
    predicate(
        BUSINESS_REGISTRATION,
        "is_active",
        "registration status active",
        lambda r, _p, _d: r.status == "active",
        reads=("status",),
        absent_means_false=False,
    ),
    predicate(
        BUSINESS_REGISTRATION,
        "registered_within_years",
        "established at most `years` calendar years before as_of",
        lambda r, p, as_of: r.registered_on >= years_before(as_of, p["years"]),
        reads=("registered_on",),
        parameters=("years",),
        absent_means_false=False,
    ),
    predicate(
        PERSON_BUSINESS,
        "operates_individual_business",
        "operates an active individual business",
        lambda r, _p, _d: bool(r.individual_businesses),
        reads=("individual_businesses",),
    ),
)


class MarketRegulationAdapter(SqlAdapter):
    """市场监管委: business registration."""

    agency = AGENCY
    DATASETS = (BUSINESS_REGISTRATION, PERSON_BUSINESS)
    PREDICATES = PREDICATES
    WATERMARK_FORMAT = None


ADAPTER_CLASS = MarketRegulationAdapter
