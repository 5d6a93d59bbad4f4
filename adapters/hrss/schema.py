"""hrss native schema: a social-insurance system in the MOHRSS style.

Quirks, as in the real systems: table and column names are the ministry's data-dictionary codes
(ac01, aac002, ...); dates are TEXT 'YYYYMMDD'; months are TEXT 'YYYYMM'; an open end is the empty
string, never NULL; gender is the GB/T 2261.1 code '1' male / '2' female; every row carries
aae036, the 'handled at' timestamp 'YYYY-MM-DD HH:MM:SS', which is the change watermark.
The same person may hold two aac001 numbers (duplicate registration); both belong to them.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, String, Table

metadata = MetaData()

#: Person master (个人基本信息).
ac01 = Table(
    "ac01",
    metadata,
    Column("aac001", Integer, primary_key=True, comment="personal number (个人编号)"),
    Column("aac002", String(32), nullable=True, comment="identity number as entered (公民身份号码)"),
    Column("aac003", String(64), nullable=False, comment="name (姓名)"),
    Column("aac004", String(1), nullable=False, comment="gender: 1 male, 2 female"),
    Column("aac006", String(8), nullable=False, comment="birth date YYYYMMDD"),
    Column("aab301", String(6), nullable=False, comment="administrative division of residence"),
    Column("aae006", String(200), nullable=False, comment="address (may be stale)"),
    Column(
        "aac008",
        String(1),
        nullable=False,
        comment="insured status: 1 contributing, 2 suspended, 4 terminated",
    ),
    Column("aae036", String(19), nullable=False, comment="handled at, YYYY-MM-DD HH:MM:SS"),
    Index("ix_ac01_aac002", "aac002"),
    Index("ix_ac01_aae036", "aae036"),
)

#: Employer registered for social insurance (单位基本信息).
ab01 = Table(
    "ab01",
    metadata,
    Column("aab001", Integer, primary_key=True, comment="unit number (单位编号)"),
    Column("aab003", String(32), nullable=True, comment="unified social credit code as entered"),
    Column("aab004", String(200), nullable=False, comment="unit name"),
    Column("aab301", String(6), nullable=False, comment="district"),
    Column("aae036", String(19), nullable=False),
    Index("ix_ab01_aab003", "aab003"),
)

#: Insurance spells (个人参保信息): one row per person, unit and continuous spell of pension insurance.
ac02 = Table(
    "ac02",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("aac001", Integer, nullable=False),
    Column("aab001", Integer, nullable=False),
    Column("aae140", String(3), nullable=False, comment="insurance type: 110 pension"),
    Column("aae030", String(6), nullable=False, comment="first contributed month YYYYMM"),
    Column("aae031", String(6), nullable=False, comment="last contributed month YYYYMM, '' while open"),
    Column("aac040", Integer, nullable=False, comment="monthly contribution base, yuan"),
    Column("aae036", String(19), nullable=False),
    Index("ix_ac02_aac001", "aac001"),
    Index("ix_ac02_aab001", "aab001"),
)

#: Employment and unemployment registration (就业失业登记).
jy_djxx = Table(
    "jy_djxx",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("aac001", Integer, nullable=False),
    Column("djlx", String(2), nullable=False, comment="SY unemployed, LH flexible employment"),
    Column("djrq", String(8), nullable=False, comment="registered on YYYYMMDD"),
    Column("zxrq", String(8), nullable=False, comment="cancelled on YYYYMMDD, '' while valid"),
    Column("aae036", String(19), nullable=False),
    Index("ix_jy_djxx_aac001", "aac001"),
)

#: Hard-to-employ certification (就业困难人员认定).
jy_knry = Table(
    "jy_knry",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("aac001", Integer, nullable=False),
    Column("knlb", String(2), nullable=False, comment="category code, see KNLB_CODES"),
    Column("rdrq", String(8), nullable=False, comment="certified on YYYYMMDD"),
    Column("tcrq", String(8), nullable=False, comment="exited on YYYYMMDD, '' while certified"),
    Column("aae036", String(19), nullable=False),
    Index("ix_jy_knry_aac001", "aac001"),
)

#: Unemployment insurance benefit payments (失业保险金发放).
sy_dyff = Table(
    "sy_dyff",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("aac001", Integer, nullable=False),
    Column("ksny", String(6), nullable=False, comment="first month paid YYYYMM"),
    Column("jsny", String(6), nullable=False, comment="last month entitled YYYYMM"),
    Column("ffje", Integer, nullable=False, comment="monthly amount, yuan"),
    Column("aae036", String(19), nullable=False),
    Index("ix_sy_dyff_aac001", "aac001"),
)

#: Person categories recorded at registration (人员类别).
jy_rylb = Table(
    "jy_rylb",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("aac001", Integer, nullable=False),
    Column("rylb", String(2), nullable=False, comment="category code, see RYLB_CODES"),
    Column("aae036", String(19), nullable=False),
    Index("ix_jy_rylb_aac001", "aac001"),
)

#: jy_knry.knlb: hard-to-employ categories (Tianjin's certification standard, abridged).
KNLB_CODES: dict[str, str] = {
    "01": "long_term_unemployed",  # 长期失业人员
    "02": "older_worker",  # 大龄失业人员 (women 40+, men 50+)
    "03": "disabled",  # 残疾人
    "04": "low_income_household",  # 低保家庭成员
    "05": "zero_employment_household",  # 零就业家庭成员
    "06": "other",
}

#: jy_rylb.rylb: person categories.
RYLB_CODES: dict[str, str] = {
    "11": "veteran",  # 退役军人
    "12": "returning_migrant",  # 返乡入乡农民工
    "13": "poverty_lifted",  # 脱贫人口
}

#: jy_djxx.djlx
DJLX_UNEMPLOYED = "SY"
DJLX_FLEXIBLE = "LH"
