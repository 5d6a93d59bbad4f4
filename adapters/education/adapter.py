"""education adapter: the student-records system (adapters.education.schema) as the canonical
dataset graduation (docs/canonical-datasets.md).

A person is found by a ``graduate_record`` whose ``cert_type`` is '1' (resident identity card)
and whose ``cert_no`` is a stored form of their number; passports and permits are other documents
and never match. The latest graduation wins (tie: the larger record_id).
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
    PredicateSpec,
    Since,
    SqlAdapter,
    decode,
    in_keys,
    parse_iso_date,
    predicate,
    records_by_group,
    years_before,
)
from adapters.contract import EducationLevel, Graduation, SubjectKind, dataset
from adapters.education.schema import CERT_TYPE_RESIDENT_ID, LEVEL_CODES, graduate_record

AGENCY = Agency.EDUCATION

#: degree_at_least(rank): associate 1, bachelor 2, master 3, doctorate 4.
LEVEL_RANK: dict[str, int] = {"associate": 1, "bachelor": 2, "master": 3, "doctorate": 4}


@dataclass(frozen=True, slots=True)
class GraduateRow:
    record_id: int
    education_level: str
    school_code: str
    school_name: str
    major: str
    graduation_date: str


def graduation(rows: Sequence[GraduateRow]) -> Graduation | None:
    """The latest graduation of a subject's records (tie: larger record_id); None without any."""
    if not rows:
        return None
    parsed = [
        (parse_iso_date(r.graduation_date, "graduate_record.graduation_date"), r.record_id, r) for r in rows
    ]
    day, _, latest = max(parsed, key=lambda t: (t[0], t[1]))
    level: Any = decode(LEVEL_CODES, latest.education_level, "graduate_record.education_level")
    chosen: EducationLevel = level
    return Graduation(
        level=chosen,
        school_code=latest.school_code,
        school_name=latest.school_name,
        major=latest.major,
        graduation_date=day,
    )


GRADUATE = Anchor(
    source=graduate_record,
    key=graduate_record.c.record_id,
    stored_id=graduate_record.c.cert_no,
    name=graduate_record.c.student_name,
    birth_date=graduate_record.c.birth_date,
    parse_birth=lambda v: parse_iso_date(v, "graduate_record.birth_date"),
    where=graduate_record.c.cert_type == CERT_TYPE_RESIDENT_ID,
)


_G = graduate_record.c
GRADUATE_ROWS = select(
    _G.record_id,
    _G.record_id,
    _G.education_level,
    _G.school_code,
    _G.school_name,
    _G.major,
    _G.graduation_date,
).where(in_keys(_G.record_id))


def build_graduation(
    conn: Connection, groups: Mapping[GroupKey, Sequence[Key]], as_of: dt.date
) -> dict[GroupKey, Graduation]:
    return records_by_group(
        conn, GRADUATE_ROWS, groups, lambda rows: graduation([GraduateRow(*r[1:]) for r in rows])
    )


def _changed(since: Since) -> ColumnElement[bool]:
    return graduate_record.c.updated_at > since


GRADUATION: DatasetSpec[Graduation] = DatasetSpec(
    dataset(AGENCY, "graduation", SubjectKind.PERSON, Graduation),
    GRADUATE,
    build_graduation,
    _changed,
    (graduate_record.c.updated_at,),
)

PREDICATES: tuple[PredicateSpec, ...] = (
    predicate(
        GRADUATION,
        "graduated_within_years",
        "the latest graduation is at most `years` calendar years before as_of",
        lambda r, p, as_of: r.graduation_date >= years_before(as_of, p["years"]),
        reads=("graduation_date",),
        parameters=("years",),
    ),
    predicate(
        GRADUATION,
        "degree_at_least",
        "education level rank (associate 1, bachelor 2, master 3, doctorate 4) at least `rank`",
        lambda r, p, _d: LEVEL_RANK[r.level] >= p["rank"],
        reads=("level",),
        parameters=("rank",),
    ),
)


class EducationAdapter(SqlAdapter):
    """教育委员会: higher-education graduation records."""

    agency = AGENCY
    DATASETS = (GRADUATION,)
    PREDICATES = PREDICATES
    WATERMARK_FORMAT = "%Y-%m-%dT%H:%M:%S"


ADAPTER_CLASS = EducationAdapter
