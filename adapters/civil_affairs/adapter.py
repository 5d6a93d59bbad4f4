"""civil_affairs adapter: the social-assistance system (adapters.civil_affairs.schema) as the
canonical datasets assistance and disability (docs/canonical-datasets.md).

assistance: a person is found by a member row (``T_JZ_CY.SFZH``) of a household currently assisted
(``T_JZ_JT.TBRQ`` NULL, or the empty string some clerks type); the household size counts all of
its member rows, with or without an identity number. disability: ``T_CJ_BT.SFZH``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, or_, select, union
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
    all_keys,
    decode,
    group_rows,
    in_keys,
    parse_slash_date,
    parse_yn,
    predicate,
    records_by_group,
    rows_for_keys,
    rows_of_group,
)
from adapters.civil_affairs.schema import CJLB_CODES, JTLB_CODES, T_CJ_BT, T_JZ_CY, T_JZ_JT
from adapters.contract import Assistance, Disability, SubjectKind, dataset

AGENCY = Agency.CIVIL_AFFAIRS

CY = T_JZ_CY.c
JT = T_JZ_JT.c
BT = T_CJ_BT.c


@dataclass(frozen=True, slots=True)
class Household:
    number: str  # JTBH
    category_code: str  # JTLB
    approved: str  # SPRQ YYYY/MM/DD
    zero_employment: str  # LJYJT Y/N
    size: int  # member rows


def assistance(households: Sequence[Household]) -> Assistance | None:
    """The subject's current household's assistance (several: the latest approved, tie: the larger
    household number); None without any."""
    if not households:
        return None
    dated = [(parse_slash_date(h.approved, "T_JZ_JT.SPRQ"), h.number, h) for h in households]
    approved, _, h = max(dated, key=lambda t: (t[0], t[1]))
    category: Any = decode(JTLB_CODES, h.category_code, "T_JZ_JT.JTLB")
    return Assistance(
        household_category=category,
        approved_on=approved,
        zero_employment_household=parse_yn(h.zero_employment, "T_JZ_JT.LJYJT"),
        household_size=h.size,
    )


@dataclass(frozen=True, slots=True)
class Subsidy:
    number: int  # BTBH
    type_code: str  # CJLB
    grade: str  # CJDJ
    since: str  # KSRQ YYYY/MM/DD


def parse_grade(value: object) -> int:
    """CJDJ '1'..'4' -> 1..4."""
    if isinstance(value, str) and value in ("1", "2", "3", "4"):
        return int(value)
    raise NativeDataError("T_CJ_BT.CJDJ: not a grade 1-4")


def disability(subsidies: Sequence[Subsidy]) -> Disability | None:
    """The subject's latest disability subsidy (tie: larger BTBH); None without any."""
    if not subsidies:
        return None
    dated = [(parse_slash_date(s.since, "T_CJ_BT.KSRQ"), s.number, s) for s in subsidies]
    since, _, s = max(dated, key=lambda t: (t[0], t[1]))
    return Disability(
        disability_type=decode(CJLB_CODES, s.type_code, "T_CJ_BT.CJLB"),
        disability_grade=parse_grade(s.grade),
        subsidy_since=since,
    )


CURRENT = or_(JT.TBRQ.is_(None), JT.TBRQ == "")

MEMBER = Anchor(
    source=T_JZ_CY.join(T_JZ_JT, CY.JTBH == JT.JTBH),
    key=CY.CYBH,
    stored_id=CY.SFZH,
    name=CY.XM,
    where=CURRENT,
)
SUBSIDY = Anchor(source=T_CJ_BT, key=BT.BTBH, stored_id=BT.SFZH, name=BT.XM)


MEMBER_HOUSEHOLDS = (
    select(CY.CYBH, JT.JTBH, JT.JTLB, JT.SPRQ, JT.LJYJT)
    .select_from(MEMBER.source)
    .where(in_keys(CY.CYBH), CURRENT)
)
HOUSEHOLD_SIZES = select(CY.JTBH, func.count()).where(in_keys(CY.JTBH)).group_by(CY.JTBH)
SUBSIDY_ROWS = select(BT.BTBH, BT.BTBH, BT.CJLB, BT.CJDJ, BT.KSRQ).where(in_keys(BT.BTBH))


def build_assistance(
    conn: Connection, groups: Mapping[GroupKey, Sequence[Key]], as_of: dt.date
) -> dict[GroupKey, Assistance]:
    rows = rows_for_keys(conn, MEMBER_HOUSEHOLDS, all_keys(groups))
    numbers = sorted({r.JTBH for r in rows})
    sizes: dict[str, int] = {}
    sizes.update({n: int(c) for n, c in rows_for_keys(conn, HOUSEHOLD_SIZES, numbers)})
    by_key = group_rows(rows)
    out: dict[GroupKey, Assistance] = {}
    for group, keys in groups.items():
        households = {
            r.JTBH: Household(r.JTBH, r.JTLB, r.SPRQ, r.LJYJT, sizes.get(r.JTBH, 0))
            for r in rows_of_group(by_key, keys)
        }
        record = assistance(list(households.values()))
        if record is not None:
            out[group] = record
    return out


def build_disability(
    conn: Connection, groups: Mapping[GroupKey, Sequence[Key]], as_of: dt.date
) -> dict[GroupKey, Disability]:
    return records_by_group(
        conn, SUBSIDY_ROWS, groups, lambda rows: disability([Subsidy(*r[1:]) for r in rows])
    )


def _assistance_changed(since: Since) -> ColumnElement[bool]:
    households = union(
        select(JT.JTBH).where(since < JT.GXSJ),
        select(CY.JTBH).where(since < CY.GXSJ),
    )
    return CY.JTBH.in_(households)


def _disability_changed(since: Since) -> ColumnElement[bool]:
    return since < BT.GXSJ


ASSISTANCE: DatasetSpec[Assistance] = DatasetSpec(
    dataset(AGENCY, "assistance", SubjectKind.PERSON, Assistance),
    MEMBER,
    build_assistance,
    _assistance_changed,
    (JT.GXSJ, CY.GXSJ),
)
DISABILITY: DatasetSpec[Disability] = DatasetSpec(
    dataset(AGENCY, "disability", SubjectKind.PERSON, Disability),
    SUBSIDY,
    build_disability,
    _disability_changed,
    (BT.GXSJ,),
)

PREDICATES: tuple[PredicateSpec, ...] = (
    predicate(
        ASSISTANCE,
        "receives_subsistence_allowance",
        "the household receives the subsistence allowance (低保)",
        lambda r, _p, _d: r.household_category == "subsistence",
        reads=("household_category",),
    ),
    predicate(
        ASSISTANCE,
        "near_subsistence",
        "the household is near-subsistence (低保边缘)",
        lambda r, _p, _d: r.household_category == "near_subsistence",
        reads=("household_category",),
    ),
    predicate(
        ASSISTANCE,
        "zero_employment_household",
        "the household is a zero-employment household (零就业家庭)",
        lambda r, _p, _d: r.zero_employment_household,
        reads=("zero_employment_household",),
    ),
    predicate(
        DISABILITY,
        "has_disability",
        "receives a disability subsidy",
        lambda _r, _p, _d: True,  # a record is the fact; its subsidy date records it
        reads=("subsidy_since",),
    ),
)


class CivilAffairsAdapter(SqlAdapter):
    """民政局: social assistance and disability subsidies."""

    agency = AGENCY
    DATASETS = (ASSISTANCE, DISABILITY)
    PREDICATES = PREDICATES
    WATERMARK_FORMAT = "%Y/%m/%d %H:%M:%S"


ADAPTER_CLASS = CivilAffairsAdapter
