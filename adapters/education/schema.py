"""education native schema: a student-records system with English snake_case names.

Quirks: ISO dates 'YYYY-MM-DD'; gender 'M' / 'F'; the identity number column ``cert_no`` holds
other documents too (``cert_type`` '1' resident identity card, '2' passport, '3' Hong Kong/Macao
permit) and may be NULL for old records; education level uses the ministry's codes
(LEVEL_CODES); ``updated_at`` is an ISO timestamp 'YYYY-MM-DDTHH:MM:SS' and is the watermark.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, String, Table

metadata = MetaData()

graduate_record = Table(
    "graduate_record",
    metadata,
    Column("record_id", Integer, primary_key=True),
    Column("cert_type", String(1), nullable=False),
    Column("cert_no", String(32), nullable=True),
    Column("student_name", String(64), nullable=False),
    Column("gender", String(1), nullable=False),
    Column("birth_date", String(10), nullable=False),
    Column("school_code", String(5), nullable=False),
    Column("school_name", String(100), nullable=False),
    Column("education_level", String(2), nullable=False),
    Column("major", String(100), nullable=False),
    Column("enrol_date", String(10), nullable=False),
    Column("graduation_date", String(10), nullable=False),
    Column("diploma_no", String(20), nullable=False),
    Column("updated_at", String(19), nullable=False),
    Index("ix_graduate_record_cert_no", "cert_no"),
    Index("ix_graduate_record_updated_at", "updated_at"),
)

#: education_level codes (学历层次).
LEVEL_CODES: dict[str, str] = {
    "11": "doctorate",  # 博士研究生
    "12": "master",  # 硕士研究生
    "31": "bachelor",  # 本科
    "41": "associate",  # 专科 (高职)
}

CERT_TYPE_RESIDENT_ID = "1"
