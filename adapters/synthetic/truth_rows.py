"""The truth database's rows: the latent world as adapters.synthetic.truth's tables."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from numpy.typing import NDArray

from adapters.civil_affairs.schema import CJLB_CODES, JTLB_CODES
from adapters.hrss.schema import KNLB_CODES
from adapters.market_regulation.schema import SCALE_CODES
from adapters.synthetic import dates, truth
from adapters.synthetic.education import LEVELS
from adapters.synthetic.employers import STATUS_NAMES
from adapters.synthetic.geography import UNIVERSITIES
from adapters.synthetic.native import Column, TableRows
from adapters.synthetic.population import DISTRICT_CODES_INT
from adapters.synthetic.world import World
from adapters.tax.schema import CYRS_DM, YYSR_DM

GENERATOR_VERSION = "1"
HEADCOUNT_BANDS = ("0-9", "10-19", "20-99", "100-299", "300-999", "1000+")
REVENUE_BANDS = ("0-99", "100-499", "500-1999", "2000-19999", "20000-39999", "40000+")
assert len(CYRS_DM) == len(HEADCOUNT_BANDS) and len(YYSR_DM) == len(REVENUE_BANDS)


def _optional(n: int, present: NDArray[np.bool_], values: Any) -> NDArray[Any]:
    """A column of ``n`` values: ``values`` (one per True of ``present``) there, None elsewhere."""
    out = np.full(n, None, dtype=object)
    out[present] = np.asarray(values, dtype=object)
    return out


def _by_key(columns: list[NDArray[Any]]) -> list[Column]:
    """The columns as lists, rows sorted by the first (the primary key: SQLite then appends to its
    index instead of inserting at random places)."""
    order = np.argsort(columns[0], kind="stable")
    return [np.asarray(c)[order].tolist() for c in columns]


def build_truth(world: World, dirt_json: str) -> list[TableRows]:
    pop, hh, dis, g = world.population, world.households, world.disability, world.graduations
    emp, em = world.employers, world.employment
    n = pop.n

    meta = TableRows(
        truth.meta,
        [
            ["generator_version", "seed", "as_of", "persons", "employers", "dirt"],
            [GENERATOR_VERSION, str(world.seed), world.as_of.isoformat(), str(n), str(emp.m), dirt_json],
        ],
    )

    has_hh = hh.current >= 0
    latest = g.latest
    has_grad = latest >= 0
    gl = latest[has_grad]
    level_names = np.array([lv[1] for lv in LEVELS])
    school_codes = np.array([u[0] for u in UNIVERSITIES])
    unemployed = em.unemployed_since >= 0
    flexible = em.flexible_since >= 0
    hard = em.hard_to_employ
    knlb_names = np.array(list(KNLB_CODES.values()))
    cjlb_names = np.array(list(CJLB_CODES.values()))
    dis_kind = np.full(n, -1, dtype=np.int64)
    dis_grade = np.zeros(n, dtype=np.int64)
    dis_since = np.zeros(n, dtype=np.int64)
    dis_kind[dis.person] = dis.kind
    dis_grade[dis.person] = dis.grade
    dis_since[dis.person] = dis.since
    has_dis = dis_kind >= 0
    person = TableRows(
        truth.person,
        _by_key(
            [
                pop.ids,
                pop.names,
                np.where(pop.male, "M", "F"),
                dates.format_days(pop.birth, "%Y-%m-%d"),
                DISTRICT_CODES_INT[pop.district].astype("U6"),
                pop.address,
                _optional(n, has_hh, hh.number[hh.current[has_hh]]),
                _optional(n, has_grad, level_names[g.level[gl]]),
                _optional(n, has_grad, school_codes[g.school[gl]]),
                _optional(n, has_grad, g.major[gl]),
                _optional(n, has_grad, dates.format_days(g.graduation[gl], "%Y-%m-%d")),
                unemployed.astype(np.int64),
                _optional(n, unemployed, dates.format_days(em.unemployed_since[unemployed], "%Y-%m-%d")),
                flexible.astype(np.int64),
                _optional(n, flexible, dates.format_days(em.flexible_since[flexible], "%Y-%m-%d")),
                hard.astype(np.int64),
                _optional(n, hard, knlb_names[em.hard_category[hard]]),
                _optional(n, hard, dates.format_days(em.hard_since[hard], "%Y-%m-%d")),
                em.benefit_now.astype(np.int64),
                em.veteran.astype(np.int64),
                em.returning_migrant.astype(np.int64),
                em.poverty_lifted.astype(np.int64),
                _optional(n, has_dis, cjlb_names[dis_kind[has_dis]]),
                _optional(n, has_dis, dis_grade[has_dis]),
                _optional(n, has_dis, dates.format_days(dis_since[has_dis], "%Y-%m-%d")),
            ]
        ),
    )

    cur = np.flatnonzero(hh.left < 0)
    household = TableRows(
        truth.household,
        _by_key(
            [
                hh.number[cur],
                np.array(list(JTLB_CODES.values()))[hh.category[cur]],
                dates.format_days(hh.approved[cur], "%Y-%m-%d"),
                hh.zero_employment[cur].astype(np.int64),
                DISTRICT_CODES_INT[hh.district[cur]].astype("U6"),
                hh.size[cur],
            ]
        ),
    )

    is_op = emp.operator >= 0
    employer = TableRows(
        truth.employer,
        _by_key(
            [
                emp.codes,
                emp.names,
                np.where(emp.individual, "individual_business", "enterprise"),
                np.array([SCALE_CODES[c] for c in ("L", "M", "S", "XS")])[
                    np.searchsorted(["L", "M", "S", "XS"], emp.size_class)
                ],
                np.array(STATUS_NAMES)[emp.status],
                dates.format_days(emp.registered, "%Y-%m-%d"),
                DISTRICT_CODES_INT[emp.district].astype("U6"),
                emp.industry,
                np.array(HEADCOUNT_BANDS)[emp.headcount_band],
                np.array(REVENUE_BANDS)[emp.revenue_band],
                _optional(emp.m, is_op, pop.ids[emp.operator[is_op]]),
            ]
        ),
    )

    rel = em.relations
    r = len(rel.person)
    closed = rel.end >= 0
    employment = TableRows(
        truth.employment,
        [
            np.arange(1, r + 1).tolist(),
            pop.ids[rel.person].tolist(),
            emp.codes[rel.employer].tolist(),
            dates.format_days(rel.start, "%Y-%m-%d").tolist(),
            _optional(r, closed, dates.format_days(rel.end[closed], "%Y-%m-%d")).tolist(),
            rel.insured.astype(np.int64).tolist(),
            rel.taxed.astype(np.int64).tolist(),
            rel.wage.tolist(),
        ],
    )
    return [meta, person, household, employer, employment]


def dirt_json(rates: Any) -> str:
    return json.dumps(rates.model_dump(), sort_keys=True, separators=(",", ":"))
