"""Hand-made agency databases for adapter tests: rows written with the native schema tables, on
SQLite files in tmp_path or in per-test schemas of the real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Executable, MetaData, Table

from adapters.agencies import Agency
from adapters.base import SqlAdapter
from adapters.civil_affairs import schema as civil_schema
from adapters.education import schema as education_schema
from adapters.hrss import schema as hrss_schema
from adapters.market_regulation import schema as market_schema
from adapters.registry import ADAPTER_CLASSES
from adapters.resilience import DEFAULT_POLICY, ResiliencePolicy
from adapters.sources import SourceConfig, make_engine
from adapters.tax import schema as tax_schema
from gateway.identity.credit_code import make_credit_code
from gateway.identity.resident_id import make_resident_id

AS_OF = dt.date(2026, 11, 1)

METADATA: dict[Agency, MetaData] = {
    Agency.HRSS: hrss_schema.metadata,
    Agency.EDUCATION: education_schema.metadata,
    Agency.CIVIL_AFFAIRS: civil_schema.metadata,
    Agency.TAX: tax_schema.metadata,
    Agency.MARKET_REGULATION: market_schema.metadata,
}

TS = "2026-01-01 00:00:00"
DEFAULTS: dict[str, dict[str, Any]] = {
    # hrss
    "ac01": {
        "aac003": "张三",
        "aac004": "1",
        "aac006": "19900101",
        "aab301": "120101",
        "aae006": "天津市和平区",
        "aac008": "1",
        "aae036": TS,
    },
    "ab01": {"aab004": "天津某公司", "aab301": "120101", "aae036": TS},
    "ac02": {"aae140": "110", "aae031": "", "aac040": 5000, "aae036": TS},
    "jy_djxx": {"zxrq": "", "aae036": TS},
    "jy_knry": {"knlb": "01", "tcrq": "", "aae036": TS},
    "sy_dyff": {"ffje": 1800, "aae036": TS},
    "jy_rylb": {"aae036": TS},
    # education
    "graduate_record": {
        "cert_type": "1",
        "student_name": "李四",
        "gender": "M",
        "birth_date": "2000-01-01",
        "school_code": "10055",
        "school_name": "南开大学",
        "education_level": "31",
        "major": "计算机科学与技术",
        "enrol_date": "2020-09-01",
        "graduation_date": "2024-06-30",
        "diploma_no": "100551202405000001",
        "updated_at": "2026-01-01T00:00:00",
    },
    # civil affairs
    "T_JZ_JT": {
        "JTLB": "01",
        "QXMC": "和平区",
        "JTDZ": "天津市和平区某路1号",
        "SPRQ": "2025/03/15",
        "TBRQ": None,
        "LJYJT": "N",
        "GXSJ": "2026/01/01 00:00:00",
    },
    "T_JZ_CY": {"XM": "王五", "YHZGX": "01", "GXSJ": "2026/01/01 00:00:00"},
    "T_CJ_BT": {"XM": "赵六", "CJLB": "4", "CJDJ": "2", "KSRQ": "2024/05/01", "GXSJ": "2026/01/01 00:00:00"},
    # tax
    "dj_nsrxx": {"nsrmc": "天津某公司", "nsrlx": "1", "cyrs_dm": "3", "yysr_dm": "2", "lrrq": 1_767_225_600},
    "gs_kjmx": {"zzlx": "201", "xm": "孙七", "ysre": 800_000, "lrrq": 1_767_225_600},
    # market regulation
    "E_BASEINFO": {
        "ENTNAME": "天津某某科技有限公司",
        "ENTTYPE": "1100",
        "ESTDATE": 20180315,
        "REGSTATE": "1",
        "REGORG": "120116",
        "DOM": "天津市滨海新区某路2号",
        "INDUSTRYPHY": "I",
        "SCALE": "S",
        "OPER_NAME": None,
        "OPER_CERNO": None,
        "S_EXT_TIMESTAMP": 1_767_225_600,
    },
}

TABLE_AGENCY: dict[str, Agency] = {name: agency for agency, md in METADATA.items() for name in md.tables}


def person_id(n: int, *, year: int = 1990) -> str:
    """A valid identity number, distinct for each n < 365 * 1000."""
    born = dt.date(year, 1, 1) + dt.timedelta(days=n % 365)
    return make_resident_id("120101", born, n // 365 % 1000)


def employer_id(n: int) -> str:
    """A valid credit code, distinct for each n."""
    return make_credit_code("91", "120116", f"{n:08d}")


@dataclass
class NativeDb:
    """The five agencies' sources of one test, filled with ``add`` and opened with ``adapter``."""

    backend: str
    sources: dict[str, SourceConfig]
    pending: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    created: set[Agency] = field(default_factory=set)
    engines: dict[Agency, Engine] = field(default_factory=dict)
    adapters: list[SqlAdapter] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def add(self, table: str, **values: Any) -> dict[str, Any]:
        """Queue one native row (defaults fill the columns not given); returns it."""
        row = {**DEFAULTS[table], **values}
        pk = self.table(table).primary_key.columns.values()[0].name
        if pk not in row:
            row[pk] = next(self._ids) if pk != "PRIPID" else f"P{next(self._ids):06d}"
        self.pending.setdefault(table, []).append(row)
        return row

    def table(self, name: str) -> Table:
        return METADATA[TABLE_AGENCY[name]].tables[name]

    def engine(self, agency: Agency) -> Engine:
        if agency not in self.engines:
            self.engines[agency] = make_engine(self.sources[agency.value], create=True)
        if agency not in self.created:
            METADATA[agency].create_all(self.engines[agency])
            self.created.add(agency)
        return self.engines[agency]

    def flush(self) -> None:
        for name, rows in self.pending.items():
            agency = TABLE_AGENCY[name]
            with self.engine(agency).begin() as conn:
                conn.execute(self.table(name).insert(), rows)
        self.pending.clear()

    def execute(self, agency: Agency, statement: Executable) -> None:
        """Run a Core statement (schema-translated on PostgreSQL) on the agency's database."""
        self.flush()
        with self.engine(agency).begin() as conn:
            conn.execute(statement)

    def adapter(
        self, agency: Agency, policy: ResiliencePolicy = DEFAULT_POLICY, **source_changes: Any
    ) -> SqlAdapter:
        """The agency's adapter over this database (created, with the queued rows, first)."""
        self.engine(agency)
        self.flush()
        source = self.sources[agency.value].model_copy(update=source_changes)
        adapter = ADAPTER_CLASSES[agency](source, policy)
        self.adapters.append(adapter)
        return adapter

    def close(self) -> None:
        for adapter in self.adapters:
            adapter.close()
        for engine in self.engines.values():
            engine.dispose()
