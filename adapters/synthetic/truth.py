"""The ground-truth database (``truth.sqlite`` beside the agency databases).

It holds the latent population the agency sources were derived from, and for every native
agency record the true subject it belongs to and the dirt injected into it. Dates are ISO
'YYYY-MM-DD' TEXT; booleans are INTEGER 0/1. Tests and the matching/push evaluations score
against it; the gateway never reads it.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

#: key/value: generator_version, seed, as_of (ISO date), persons, employers, dirt (JSON of rates).
meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

person = Table(
    "person",
    metadata,
    Column("person_id", String(18), primary_key=True, comment="true canonical identity number"),
    Column("name", String(32), nullable=False),
    Column("gender", String(1), nullable=False, comment="M/F"),
    Column("birth_date", String(10), nullable=False),
    Column("district_code", String(6), nullable=False, comment="current residence"),
    Column("address", String(200), nullable=False, comment="current address"),
    Column("household_id", String(20), nullable=True, comment="assistance household, if any"),
    # education (latest graduation)
    Column("education_level", String(12), nullable=True),
    Column("school_code", String(5), nullable=True),
    Column("major", String(100), nullable=True),
    Column("graduation_date", String(10), nullable=True),
    # employment service
    Column("registered_unemployed", Integer, nullable=False),
    Column("unemployed_since", String(10), nullable=True),
    Column("flexible_worker", Integer, nullable=False),
    Column("flexible_since", String(10), nullable=True),
    Column("hard_to_employ", Integer, nullable=False),
    Column("hard_to_employ_category", String(32), nullable=True),
    Column("hard_to_employ_since", String(10), nullable=True),
    Column("unemployment_benefit", Integer, nullable=False, comment="benefit paid for the as_of month"),
    Column("veteran", Integer, nullable=False),
    Column("returning_migrant", Integer, nullable=False),
    Column("poverty_lifted", Integer, nullable=False),
    # civil affairs
    Column("disability_type", String(16), nullable=True),
    Column("disability_grade", Integer, nullable=True),
    Column("disability_since", String(10), nullable=True),
)

household = Table(
    "household",
    metadata,
    Column("household_id", String(20), primary_key=True),
    Column("category", String(20), nullable=False, comment="HouseholdCategory"),
    Column("approved_on", String(10), nullable=False),
    Column("zero_employment", Integer, nullable=False),
    Column("district_code", String(6), nullable=False),
    Column("size", Integer, nullable=False),
)

employer = Table(
    "employer",
    metadata,
    Column("credit_code", String(18), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("entity_type", String(24), nullable=False, comment="EntityType"),
    Column("size_class", String(8), nullable=False, comment="SizeClass"),
    Column("status", String(10), nullable=False, comment="RegistrationStatus"),
    Column("registered_on", String(10), nullable=False),
    Column("district_code", String(6), nullable=False),
    Column("industry", String(1), nullable=False),
    Column("headcount_band", String(12), nullable=False, comment="HeadcountBand"),
    Column("revenue_band", String(12), nullable=False, comment="RevenueBand"),
    Column("operator_person_id", String(18), nullable=True, comment="individual businesses"),
)

#: Employment relations over the last 24 months (and the open ones that started earlier).
employment = Table(
    "employment",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("person_id", String(18), nullable=False),
    Column("credit_code", String(18), nullable=False),
    Column("start_date", String(10), nullable=False),
    Column("end_date", String(10), nullable=True, comment="NULL while employed"),
    Column("insured", Integer, nullable=False, comment="the employer contributes pension insurance"),
    Column("taxed", Integer, nullable=False, comment="the employer withholds income tax"),
    Column("monthly_wage", Integer, nullable=False, comment="yuan"),
    Index("ix_employment_person", "person_id"),
    Index("ix_employment_employer", "credit_code"),
)

#: One row per native record in an agency source.
record_link = Table(
    "record_link",
    metadata,
    Column("agency", String(20), nullable=False),
    Column("table_name", String(20), nullable=False),
    Column("native_key", String(40), nullable=False),
    Column("subject_kind", String(8), nullable=False, comment="person/employer"),
    Column("subject_id", String(18), nullable=False, comment="true canonical identifier"),
    Column("stored_id", String(40), nullable=True, comment="identifier as stored, NULL if missing"),
    Column("stored_name", String(200), nullable=True),
    Column("dirt", String(200), nullable=False, comment="comma-separated dirt kinds, '' if clean"),
    Column(
        "id_recoverable",
        Integer,
        nullable=False,
        comment="1 if normalising stored_id gives subject_id (format dirt only)",
    ),
    Index("ix_record_link_subject", "subject_id"),
    Index("ix_record_link_native", "agency", "table_name", "native_key"),
)

#: Dirt kinds written to record_link.dirt.
ID_FORMAT_DIRT = ("legacy15", "lower_x", "fullwidth", "spaces")  # normalisation recovers these
ID_BREAKING_DIRT = ("transposed", "missing_id")  # only identity linkage recovers these
NAME_DIRT = ("name_spaces", "traditional", "homophone")
OTHER_DIRT = ("stale_address", "duplicate")
