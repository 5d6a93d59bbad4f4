"""civil_affairs native schema: an assistance system with upper-case pinyin-initial names.

Quirks: household-centred (a family, its members); dates 'YYYY/MM/DD'; the district is stored
as its Chinese *name* ('和平区'), not its code; flags are 'Y' / 'N'; members may have no identity
number (SFZH NULL); ``GXSJ`` (更新时间) 'YYYY/MM/DD HH:MM:SS' is the watermark.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, String, Table

metadata = MetaData()

#: Assistance households (救助家庭).
T_JZ_JT = Table(
    "T_JZ_JT",
    metadata,
    Column("JTBH", String(20), primary_key=True, comment="household number"),
    Column("JTLB", String(2), nullable=False, comment="household category, see JTLB_CODES"),
    Column("QXMC", String(20), nullable=False, comment="district name (区县名称)"),
    Column("JTDZ", String(200), nullable=False, comment="address (may be stale)"),
    Column("SPRQ", String(10), nullable=False, comment="approved on YYYY/MM/DD"),
    Column("TBRQ", String(10), nullable=True, comment="left assistance on YYYY/MM/DD, NULL while assisted"),
    Column("LJYJT", String(1), nullable=False, comment="zero-employment household Y/N (零就业家庭)"),
    Column("GXSJ", String(19), nullable=False),
    Index("ix_T_JZ_JT_GXSJ", "GXSJ"),
)

#: Household members (家庭成员).
T_JZ_CY = Table(
    "T_JZ_CY",
    metadata,
    Column("CYBH", Integer, primary_key=True),
    Column("JTBH", String(20), nullable=False),
    Column("XM", String(64), nullable=False, comment="name"),
    Column("SFZH", String(32), nullable=True, comment="identity number as entered"),
    Column(
        "YHZGX", String(2), nullable=False, comment="relation to head: 01 head, 02 spouse, 03 child, 09 other"
    ),
    Column("GXSJ", String(19), nullable=False),
    Index("ix_T_JZ_CY_SFZH", "SFZH"),
    Index("ix_T_JZ_CY_JTBH", "JTBH"),
)

#: Disability subsidies (困难残疾人生活补贴 / 重度残疾人护理补贴).
T_CJ_BT = Table(
    "T_CJ_BT",
    metadata,
    Column("BTBH", Integer, primary_key=True),
    Column("SFZH", String(32), nullable=True),
    Column("XM", String(64), nullable=False),
    Column("CJLB", String(1), nullable=False, comment="disability type 1..7 (GB/T 26341)"),
    Column("CJDJ", String(1), nullable=False, comment="grade 1..4"),
    Column("KSRQ", String(10), nullable=False, comment="subsidy since YYYY/MM/DD"),
    Column("GXSJ", String(19), nullable=False),
    Index("ix_T_CJ_BT_SFZH", "SFZH"),
)

JTLB_CODES: dict[str, str] = {
    "01": "subsistence",  # 城乡低保
    "02": "near_subsistence",  # 低保边缘
    "03": "extreme_poverty",  # 特困供养
    "04": "rigid_expenditure",  # 刚性支出困难
}

CJLB_CODES: dict[str, str] = {
    "1": "visual",
    "2": "hearing",
    "3": "speech",
    "4": "physical",
    "5": "intellectual",
    "6": "mental",
    "7": "multiple",
}
