"""tax native schema: a tax-administration system with lower-case pinyin-initial names.

Quirks: employers are taxpayers keyed by ``nsrsbh`` (taxpayer id = unified social credit code);
periods are 'YYYY-MM' (税款所属期); money is integer fen; certificate type ``zzlx`` '201' is the
resident identity card; ``lrrq`` (录入日期) is a unix epoch in seconds and the watermark.
Withholding is summarised per person, agent and continuous run of periods.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table

metadata = MetaData()

#: Taxpayer register (纳税人登记).
dj_nsrxx = Table(
    "dj_nsrxx",
    metadata,
    Column("djxh", BigInteger, primary_key=True, comment="registration serial"),
    Column("nsrsbh", String(32), nullable=False, comment="taxpayer id as entered"),
    Column("nsrmc", String(200), nullable=False),
    Column("nsrlx", String(1), nullable=False, comment="1 enterprise, 2 individual business"),
    Column("cyrs_dm", String(1), nullable=False, comment="headcount band, see CYRS_DM"),
    Column("yysr_dm", String(1), nullable=False, comment="annual revenue band, see YYSR_DM"),
    Column("lrrq", BigInteger, nullable=False),
    Index("ix_dj_nsrxx_nsrsbh", "nsrsbh"),
    Index("ix_dj_nsrxx_lrrq", "lrrq"),
)

#: Individual income tax withholding (个人所得税扣缴明细, summarised).
gs_kjmx = Table(
    "gs_kjmx",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("kjywr_nsrsbh", String(32), nullable=False, comment="withholding agent's taxpayer id"),
    Column("zzlx", String(3), nullable=False, comment="certificate type: 201 resident identity card"),
    Column("zzhm", String(32), nullable=True, comment="certificate number as entered"),
    Column("xm", String(64), nullable=False),
    Column("sssq_q", String(7), nullable=False, comment="first period YYYY-MM"),
    Column("sssq_z", String(7), nullable=False, comment="last period YYYY-MM"),
    Column("ysre", Integer, nullable=False, comment="monthly taxable income, fen"),
    Column("lrrq", BigInteger, nullable=False),
    Index("ix_gs_kjmx_zzhm", "zzhm"),
    Index("ix_gs_kjmx_agent", "kjywr_nsrsbh"),
)

#: cyrs_dm: headcount bands.
CYRS_DM: dict[str, tuple[int, int | None]] = {
    "1": (0, 9),
    "2": (10, 19),
    "3": (20, 99),
    "4": (100, 299),
    "5": (300, 999),
    "6": (1000, None),
}

#: yysr_dm: annual revenue bands, in 10,000 yuan.
YYSR_DM: dict[str, tuple[int, int | None]] = {
    "1": (0, 99),
    "2": (100, 499),
    "3": (500, 1999),
    "4": (2000, 19999),
    "5": (20000, 39999),
    "6": (40000, None),
}

ZZLX_RESIDENT_ID = "201"
