"""market_regulation native schema: a registration system with SAMR-style upper-case English names.

Quirks: dates are INTEGER yyyymmdd; the registration authority ``REGORG`` is a 6-digit division
code; enterprise type ``ENTTYPE`` follows the SAMR code list (ENTTYPE_KIND maps it); the size class
``SCALE`` is 'L' / 'M' / 'S' / 'XS'; individual businesses record their operator's identity number
(``OPER_CERNO``); ``S_EXT_TIMESTAMP`` is a unix epoch in seconds and the watermark.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table

metadata = MetaData()

E_BASEINFO = Table(
    "E_BASEINFO",
    metadata,
    Column("PRIPID", String(36), primary_key=True, comment="internal entity id"),
    Column("UNISCID", String(32), nullable=False, comment="unified social credit code as entered"),
    Column("ENTNAME", String(200), nullable=False),
    Column("ENTTYPE", String(4), nullable=False),
    Column("ESTDATE", Integer, nullable=False, comment="established yyyymmdd"),
    Column("REGSTATE", String(1), nullable=False, comment="see REGSTATE_CODES"),
    Column("REGORG", String(6), nullable=False, comment="registering district code"),
    Column("DOM", String(200), nullable=False, comment="registered address"),
    Column("INDUSTRYPHY", String(1), nullable=False, comment="GB/T 4754 section letter"),
    Column("SCALE", String(2), nullable=False),
    Column("OPER_NAME", String(64), nullable=True, comment="operator (individual businesses)"),
    Column("OPER_CERNO", String(32), nullable=True, comment="operator's identity number as entered"),
    Column("S_EXT_TIMESTAMP", BigInteger, nullable=False),
    Index("ix_E_BASEINFO_UNISCID", "UNISCID"),
    Index("ix_E_BASEINFO_OPER_CERNO", "OPER_CERNO"),
    Index("ix_E_BASEINFO_TS", "S_EXT_TIMESTAMP"),
)

ENTTYPE_KIND: dict[str, str] = {
    "1100": "enterprise",  # 有限责任公司
    "1200": "enterprise",  # 股份有限公司
    "4000": "enterprise",  # 非公司企业法人
    "5100": "enterprise",  # 外商投资企业
    "9600": "individual_business",  # 个体工商户
}

REGSTATE_CODES: dict[str, str] = {
    "1": "active",  # 存续(在营、开业、在册)
    "2": "revoked",  # 吊销
    "3": "cancelled",  # 注销
}

SCALE_CODES: dict[str, str] = {"L": "large", "M": "medium", "S": "small", "XS": "micro"}
