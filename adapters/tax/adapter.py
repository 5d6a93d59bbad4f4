"""tax adapter: the tax-administration system (adapters.tax.schema) as the canonical datasets
employer_tax and income_withholding (docs/canonical-datasets.md).

An employer is found by ``dj_nsrxx.nsrsbh``; a person by ``gs_kjmx.zzhm`` on rows whose
certificate type ``zzlx`` is '201' (resident identity card). Periods are 'YYYY-MM'; the change
watermark ``lrrq`` is integer epoch seconds.
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
    band_label,
    band_upper,
    in_keys,
    month_of,
    months_covered,
    normalize_employer_id,
    parse_dash_month,
    predicate,
    records_by_group,
)
from adapters.contract import EmployerTax, IncomeWithholding, SubjectKind, dataset
from adapters.tax.schema import CYRS_DM, YYSR_DM, ZZLX_RESIDENT_ID, dj_nsrxx, gs_kjmx

AGENCY = Agency.TAX

NSR = dj_nsrxx.c
KJ = gs_kjmx.c


def band(codes: Mapping[str, tuple[int, int | None]], value: object, column: str) -> str:
    """A band code ('3') -> its label ('20-99')."""
    if isinstance(value, str) and value in codes:
        return band_label(codes[value])
    raise NativeDataError(f"{column}: unknown band code")


@dataclass(frozen=True, slots=True)
class Taxpayer:
    djxh: int
    cyrs_dm: str
    yysr_dm: str
    lrrq: int


def employer_tax(rows: Sequence[Taxpayer]) -> EmployerTax | None:
    """The taxpayer's bands (several registrations: the latest entered, tie: larger djxh)."""
    if not rows:
        return None
    t = max(rows, key=lambda r: (r.lrrq, r.djxh))
    headcount: Any = band(CYRS_DM, t.cyrs_dm, "dj_nsrxx.cyrs_dm")
    revenue: Any = band(YYSR_DM, t.yysr_dm, "dj_nsrxx.yysr_dm")
    return EmployerTax(headcount_band=headcount, revenue_band=revenue)


@dataclass(frozen=True, slots=True)
class Withholding:
    agent: str | None  # normalised kjywr_nsrsbh (None: does not normalise)
    first: int  # month index of sssq_q
    last: int  # month index of sssq_z


def income_withholding(rows: Sequence[Withholding], as_of: dt.date) -> IncomeWithholding | None:
    """Agents withholding for ``M0-1`` and the months of ``M0-12..M0-1`` withheld; None without rows."""
    if not rows:
        return None
    m0 = month_of(as_of)
    previous = m0 - 1
    agents = sorted({r.agent for r in rows if r.agent is not None and r.first <= previous <= r.last})
    covered: set[int] = set()
    for r in rows:
        covered |= months_covered(r.first, r.last, (m0 - 12, m0 - 1))
    return IncomeWithholding(current_withholding_agents=agents, months_withheld_12m=len(covered))


TAXPAYER = Anchor(source=dj_nsrxx, key=NSR.djxh, stored_id=NSR.nsrsbh, name=NSR.nsrmc)
WITHHELD = Anchor(source=gs_kjmx, key=KJ.id, stored_id=KJ.zzhm, name=KJ.xm, where=KJ.zzlx == ZZLX_RESIDENT_ID)


TAXPAYER_ROWS = select(NSR.djxh, NSR.djxh, NSR.cyrs_dm, NSR.yysr_dm, NSR.lrrq).where(in_keys(NSR.djxh))
WITHHOLDING_ROWS = select(KJ.id, KJ.kjywr_nsrsbh, KJ.sssq_q, KJ.sssq_z).where(in_keys(KJ.id))


def build_employer_tax(
    conn: Connection, groups: Mapping[GroupKey, Sequence[Key]], as_of: dt.date
) -> dict[GroupKey, EmployerTax]:
    return records_by_group(
        conn, TAXPAYER_ROWS, groups, lambda rows: employer_tax([Taxpayer(*r[1:]) for r in rows])
    )


def build_income_withholding(
    conn: Connection, groups: Mapping[GroupKey, Sequence[Key]], as_of: dt.date
) -> dict[GroupKey, IncomeWithholding]:
    def make(rows: list[Any]) -> IncomeWithholding | None:
        items = [
            Withholding(
                normalize_employer_id(r.kjywr_nsrsbh),
                parse_dash_month(r.sssq_q, "gs_kjmx.sssq_q"),
                parse_dash_month(r.sssq_z, "gs_kjmx.sssq_z"),
            )
            for r in rows
        ]
        return income_withholding(items, as_of)

    return records_by_group(conn, WITHHOLDING_ROWS, groups, make)


def _taxpayer_changed(since: Since) -> ColumnElement[bool]:
    return NSR.lrrq > since


def _withholding_changed(since: Since) -> ColumnElement[bool]:
    return KJ.lrrq > since


EMPLOYER_TAX: DatasetSpec[EmployerTax] = DatasetSpec(
    dataset(AGENCY, "employer_tax", SubjectKind.EMPLOYER, EmployerTax),
    TAXPAYER,
    build_employer_tax,
    _taxpayer_changed,
    (NSR.lrrq,),
)
INCOME_WITHHOLDING: DatasetSpec[IncomeWithholding] = DatasetSpec(
    dataset(AGENCY, "income_withholding", SubjectKind.PERSON, IncomeWithholding),
    WITHHELD,
    build_income_withholding,
    _withholding_changed,
    (KJ.lrrq,),
)


def headcount_at_most(record: EmployerTax, n: int) -> bool:
    upper = band_upper(record.headcount_band)
    return upper is not None and upper <= n


PREDICATES: tuple[PredicateSpec, ...] = (
    predicate(
        INCOME_WITHHOLDING,
        "withheld_by_employer",
        "some employer withholds the person's income tax for the month before as_of",
        lambda r, _p, _d: bool(r.current_withholding_agents),
        reads=("current_withholding_agents",),
    ),
    predicate(
        EMPLOYER_TAX,
        "employer_headcount_at_most",
        "the headcount band's upper bound is at most `n`",
        lambda r, p, _d: headcount_at_most(r, p["n"]),
        reads=("headcount_band",),
        parameters=("n",),
        absent_means_false=False,
    ),
)


class TaxAdapter(SqlAdapter):
    """税务局: taxpayer register and income tax withholding."""

    agency = AGENCY
    DATASETS = (EMPLOYER_TAX, INCOME_WITHHOLDING)
    PREDICATES = PREDICATES
    WATERMARK_FORMAT = None


ADAPTER_CLASS = TaxAdapter
