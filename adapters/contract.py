"""The adapter contract: canonical models, descriptors, typed errors and the Adapter protocol.

Every agency adapter maps its native schema to the canonical datasets declared here. The gateway
sees nothing else of an agency: not its table names, date formats or code lists.

Operations (all synchronous, all bounded by a timeout, see adapters.resilience):

- ``describe()``: datasets, their fields with sensitivity, and the predicates offered;
- ``fetch(dataset, subject, fields)``: the named fields of one subject's canonical record;
  ``SubjectNotFound`` when the agency holds no record of the subject, never an empty record;
- ``evaluate(predicate, subject, params)``: a yes/no computed inside the adapter; the underlying
  data never leaves it;
- ``extract(dataset, since=watermark)``: every subject's canonical record as a chunked stream,
  each chunk carrying the watermark to resume from (incremental runs);
- ``health()``: reachability and latency of the source.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import UnionType
from typing import Any, Literal, Protocol, Union, get_args, get_origin, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from adapters.agencies import Agency

# --------------------------------------------------------------------------------------------
# Errors: one small hierarchy, mapped to gRPC codes at the gateway's edge.
# --------------------------------------------------------------------------------------------


MAX_PARAMETER = 2**31 - 1
"""The largest predicate parameter (years, months, counts): what every provider's arithmetic and
database takes."""


class AdapterError(Exception):
    """Base class of every error an adapter raises. Messages never carry personal data."""

    reason: str = "ADAPTER_ERROR"


class SubjectNotFound(AdapterError):
    """The agency holds no record of this subject for this dataset."""

    reason = "SUBJECT_NOT_FOUND"

    def __init__(self, agency: Agency, dataset: str) -> None:
        super().__init__(f"{agency.value} holds no {dataset} record for this subject")
        self.agency = agency
        self.dataset = dataset


class ProviderUnavailable(AdapterError):
    """The agency's source cannot be reached or did not answer in time. ``cause`` says why."""

    reason = "PROVIDER_UNAVAILABLE"

    def __init__(
        self, agency: Agency, cause: str, *, circuit_open: bool = False, timed_out: bool = False
    ) -> None:
        super().__init__(f"{agency.value} unavailable: {cause}")
        self.agency = agency
        self.cause = cause
        self.circuit_open = circuit_open
        self.timed_out = timed_out


class InvalidRequest(AdapterError):
    """The request names an unknown dataset, field or predicate, or carries bad parameters."""

    reason = "INVALID_REQUEST"


# --------------------------------------------------------------------------------------------
# Subjects
# --------------------------------------------------------------------------------------------


class SubjectKind(StrEnum):
    PERSON = "person"
    EMPLOYER = "employer"


@dataclass(frozen=True, slots=True)
class Subject:
    """A subject by its canonical identifier: an 18-character resident identity number (upper-case X)
    or an 18-character unified social credit code. The gateway normalises and validates before it
    builds one (gateway.identity); adapters trust it."""

    kind: SubjectKind
    id: str

    def __repr__(self) -> str:  # never print an identity number in clear
        return f"Subject({self.kind.value}, ***{self.id[-2:]})"


# --------------------------------------------------------------------------------------------
# Canonical datasets
# --------------------------------------------------------------------------------------------


class Sensitivity(StrEnum):
    PUBLIC = "public"
    PERSONAL = "personal"
    SENSITIVE = "sensitive"


def _field(description: str, sensitivity: Sensitivity = Sensitivity.PERSONAL, **kw: Any) -> Any:
    return Field(description=description, json_schema_extra={"sensitivity": sensitivity.value}, **kw)


class CanonicalRecord(BaseModel):
    """Base of every canonical dataset record: immutable, no extra keys, plain JSON types."""

    model_config = ConfigDict(frozen=True, extra="forbid")


EducationLevel = Literal["doctorate", "master", "bachelor", "associate"]
HouseholdCategory = Literal["subsistence", "near_subsistence", "extreme_poverty", "rigid_expenditure"]
EntityType = Literal["enterprise", "individual_business"]
SizeClass = Literal["large", "medium", "small", "micro"]
RegistrationStatus = Literal["active", "revoked", "cancelled"]
HeadcountBand = Literal["0-9", "10-19", "20-99", "100-299", "300-999", "1000+"]
RevenueBand = Literal["0-99", "100-499", "500-1999", "2000-19999", "20000-39999", "40000+"]  # 10k yuan


# ---- hrss ----------------------------------------------------------------------------------


class PersonInsurance(CanonicalRecord):
    """hrss.person_insurance: pension insurance as of the evaluation date."""

    currently_insured: bool = _field("has an open pension-insurance spell")
    current_employer: str | None = _field("credit code of the unit of the open spell (latest if several)")
    insured_months_24m: int = _field("distinct months with contributions in the 24 months before as_of")
    contribution_base: int | None = _field("monthly contribution base of the open spell, yuan")


class EmploymentStatus(CanonicalRecord):
    """hrss.employment_status: registrations and certifications held by the employment service."""

    registered_unemployed: bool = _field("holds a valid unemployment registration")
    unemployed_since: dt.date | None = _field("date of the valid unemployment registration")
    flexible_employment: bool = _field("holds a valid flexible-employment registration")
    flexible_since: dt.date | None = _field("date of the valid flexible-employment registration")
    hard_to_employ: bool = _field("currently certified hard-to-employ (就业困难人员)", Sensitivity.SENSITIVE)
    hard_to_employ_category: str | None = _field("certification category", Sensitivity.SENSITIVE)
    hard_to_employ_since: dt.date | None = _field("certification date", Sensitivity.SENSITIVE)
    receiving_unemployment_benefit: bool = _field("unemployment benefit paid for the as_of month")


class PersonCategory(CanonicalRecord):
    """hrss.person_category: categories recorded at registration."""

    veteran: bool = _field("退役军人")
    returning_migrant: bool = _field("返乡入乡农民工")
    poverty_lifted: bool = _field("脱贫人口", Sensitivity.SENSITIVE)


class EmployerInsurance(CanonicalRecord):
    """hrss.employer_insurance: a unit's insured workforce."""

    insured_headcount: int = _field("persons with an open spell at the unit", Sensitivity.PUBLIC)
    hires_12m: int = _field("spells started in the 12 months before as_of", Sensitivity.PUBLIC)
    departures_12m: int = _field("spells ended in the 12 months before as_of", Sensitivity.PUBLIC)


# ---- education -----------------------------------------------------------------------------


class Graduation(CanonicalRecord):
    """education.graduation: the subject's latest higher-education graduation."""

    level: EducationLevel = _field("education level of the latest graduation")
    school_code: str = _field("ministry school code", Sensitivity.PUBLIC)
    school_name: str = _field("school name", Sensitivity.PUBLIC)
    major: str = _field("major")
    graduation_date: dt.date = _field("graduation date")


# ---- civil_affairs -------------------------------------------------------------------------


class Assistance(CanonicalRecord):
    """civil_affairs.assistance: the subject's household's current social assistance."""

    household_category: HouseholdCategory = _field("assistance category", Sensitivity.SENSITIVE)
    approved_on: dt.date = _field("date assistance was approved", Sensitivity.SENSITIVE)
    zero_employment_household: bool = _field("零就业家庭", Sensitivity.SENSITIVE)
    household_size: int = _field("members recorded in the household", Sensitivity.SENSITIVE)


class Disability(CanonicalRecord):
    """civil_affairs.disability: disability subsidy records."""

    disability_type: str = _field("type (GB/T 26341)", Sensitivity.SENSITIVE)
    disability_grade: int = _field("grade 1 (most severe) to 4", Sensitivity.SENSITIVE)
    subsidy_since: dt.date = _field("subsidy since", Sensitivity.SENSITIVE)


# ---- tax -----------------------------------------------------------------------------------


class EmployerTax(CanonicalRecord):
    """tax.employer_tax: a taxpayer's bands."""

    headcount_band: HeadcountBand = _field("employees band", Sensitivity.PUBLIC)
    revenue_band: RevenueBand = _field("annual revenue band, 10k yuan", Sensitivity.PERSONAL)


class IncomeWithholding(CanonicalRecord):
    """tax.income_withholding: who withholds the person's income tax."""

    current_withholding_agents: list[str] = _field("credit codes withholding for the month before as_of")
    months_withheld_12m: int = _field("distinct months with withholding in the 12 months before as_of")


# ---- market_regulation ---------------------------------------------------------------------


class BusinessRegistration(CanonicalRecord):
    """market_regulation.business_registration: an entity's registration."""

    name: str = _field("registered name", Sensitivity.PUBLIC)
    entity_type: EntityType = _field("enterprise or individual business", Sensitivity.PUBLIC)
    size_class: SizeClass = _field("size class", Sensitivity.PUBLIC)
    status: RegistrationStatus = _field("registration status", Sensitivity.PUBLIC)
    registered_on: dt.date = _field("date established", Sensitivity.PUBLIC)
    district_code: str = _field("registering district", Sensitivity.PUBLIC)
    industry: str = _field("GB/T 4754 section letter", Sensitivity.PUBLIC)


class PersonBusiness(CanonicalRecord):
    """market_regulation.person_business: individual businesses a person operates."""

    individual_businesses: list[str] = _field("credit codes of active individual businesses operated")


# --------------------------------------------------------------------------------------------
# Descriptors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldDescriptor:
    name: str
    type: str
    sensitivity: Sensitivity
    description: str


@dataclass(frozen=True, slots=True)
class DatasetDescriptor:
    agency: Agency
    name: str
    subject_kind: SubjectKind
    model: type[CanonicalRecord]
    description: str
    fields: tuple[FieldDescriptor, ...] = field(default=())

    @property
    def sensitive(self) -> bool:
        return any(f.sensitivity is Sensitivity.SENSITIVE for f in self.fields)

    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


@dataclass(frozen=True, slots=True)
class PredicateDescriptor:
    agency: Agency
    name: str
    subject_kind: SubjectKind
    dataset: str
    description: str
    parameters: tuple[str, ...] = ()
    #: True: a subject the agency holds no record of gets False (the agency is authoritative, e.g.
    #: "graduated within N years"). False: such a subject raises SubjectNotFound.
    absent_means_false: bool = True
    #: The fields of ``dataset`` the predicate reads: what a consent must cover for a Verify
    #: (a test checks that each predicate reads no other field).
    fields: tuple[str, ...] = ()


def _type_name(annotation: Any) -> str:
    """A reader's name for a field type: ``str``, ``date``, ``list[str]``, ``str?`` (nullable),
    ``enum(a|b)`` (a closed code list)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "enum(" + "|".join(str(a) for a in args) + ")"
    if origin in (Union, UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return _type_name(rest[0]) + "?" if len(rest) == 1 else "|".join(_type_name(a) for a in rest) + "?"
    if origin is list:
        return f"list[{_type_name(args[0])}]" if args else "list"
    return str(getattr(annotation, "__name__", annotation))


def dataset(
    agency: Agency, name: str, subject_kind: SubjectKind, model: type[CanonicalRecord]
) -> DatasetDescriptor:
    """Describe a canonical dataset from its model: field names, types, sensitivity, descriptions."""
    fields = []
    for fname, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        sens = Sensitivity(str(extra.get("sensitivity", Sensitivity.PERSONAL.value)))
        fields.append(FieldDescriptor(fname, _type_name(info.annotation), sens, info.description or ""))
    doc = (model.__doc__ or "").strip().splitlines()[0]
    return DatasetDescriptor(agency, name, subject_kind, model, doc, tuple(fields))


@dataclass(frozen=True, slots=True)
class ProviderDescription:
    agency: Agency
    datasets: tuple[DatasetDescriptor, ...]
    predicates: tuple[PredicateDescriptor, ...]

    def dataset(self, name: str) -> DatasetDescriptor:
        for d in self.datasets:
            if d.name == name:
                return d
        raise InvalidRequest(f"{self.agency.value} offers no dataset {name!r}")

    def predicate(self, name: str) -> PredicateDescriptor:
        for p in self.predicates:
            if p.name == name:
                return p
        raise InvalidRequest(f"{self.agency.value} offers no predicate {name!r}")


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The requested fields of one subject's canonical record (values are plain JSON-able types,
    dates as datetime.date)."""

    agency: Agency
    dataset: str
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ExtractedRecord:
    """One subject's canonical record from a bulk extract.

    ``subject_id`` is the canonical identifier when the stored one normalises to a valid number,
    else None (the record still travels, with ``raw_id``, ``name`` and ``birth_date`` where the
    agency has them, for identity linkage)."""

    native_key: str
    subject_id: str | None
    raw_id: str | None
    name: str | None
    birth_date: dt.date | None
    record: CanonicalRecord


@dataclass(frozen=True, slots=True)
class ExtractChunk:
    records: tuple[ExtractedRecord, ...]
    #: Resume point: pass it as ``since`` to get only what changed after this chunk.
    watermark: str


class HealthState(StrEnum):
    UP = "up"
    DOWN = "down"
    CIRCUIT_OPEN = "circuit_open"


@dataclass(frozen=True, slots=True)
class Health:
    agency: Agency
    state: HealthState
    latency_ms: float
    detail: str = ""


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------


@runtime_checkable
class Adapter(Protocol):
    """What the gateway needs of an agency. Every call has a timeout (seconds, None: the adapter's
    configured default); ``as_of`` is the evaluation date (None: today)."""

    agency: Agency

    def describe(self) -> ProviderDescription: ...

    def fetch(
        self,
        dataset: str,
        subject: Subject,
        fields: Sequence[str] | None = None,
        *,
        as_of: dt.date | None = None,
        timeout: float | None = None,
    ) -> FetchResult: ...

    def evaluate(
        self,
        predicate: str,
        subject: Subject,
        params: Mapping[str, int] | None = None,
        *,
        as_of: dt.date | None = None,
        timeout: float | None = None,
    ) -> bool: ...

    def extract(
        self,
        dataset: str,
        *,
        since: str | None = None,
        chunk_size: int = 5000,
        as_of: dt.date | None = None,
    ) -> Iterator[ExtractChunk]: ...

    def health(self, *, timeout: float | None = None) -> Health: ...

    def close(self) -> None: ...
