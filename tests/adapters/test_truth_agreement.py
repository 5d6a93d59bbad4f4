"""The acceptance test: the five adapters over a generated population agree with the generator's
ground truth, for every canonical dataset and predicate, per docs/canonical-datasets.md.

One population (5,000 persons, 500 employers, seed 7) is generated once per session, to SQLite
files and (the same seed, so the same content) to PostgreSQL schemas. The expected records are
computed here from ``truth.sqlite`` alone (person, household, employer, employment, record_link),
independently of the adapters' code. On SQLite every person and employer of the population is
fetched from every dataset (found and not found) and every predicate is evaluated for all of
them; on PostgreSQL a deterministic sample of each; bulk extracts are compared in full on both.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import text

from adapters.agencies import Agency
from adapters.contract import Adapter, Subject, SubjectKind, SubjectNotFound
from adapters.registry import close_adapters, open_adapters
from adapters.sources import SourceConfig, make_engine, server_sources, sqlite_sources

PERSONS, EMPLOYERS, SEED = 5000, 500, 7
#: (persons, employers) fetched per dataset on PostgreSQL (SQLite: everyone).
PG_FETCH_SAMPLE = (600, 150)
#: (persons, employers, extra truth-positive persons) evaluated per predicate case.
PREDICATE_SAMPLE = {"sqlite": (1500, EMPLOYERS, 500), "postgres": (300, 150, 100)}

# ---- the truth, read independently of the adapters ------------------------------------------


def _date(value: str | None) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


def _month(day: dt.date) -> int:
    return day.year * 12 + day.month - 1


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


@dataclass
class Truth:
    as_of: dt.date
    persons: dict[str, dict[str, Any]]
    households: dict[str, dict[str, Any]]
    employers: dict[str, dict[str, Any]]
    relations_of_person: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    relations_of_employer: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    #: (agency, table, subject_kind) -> subjects with a row found by number (id_recoverable)
    found: dict[tuple[str, str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    #: employer credit code -> its operator's id (individual businesses)
    operated: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    @property
    def m0(self) -> int:
        return _month(self.as_of)

    def months(self, relation: dict[str, Any]) -> tuple[int, int]:
        """A relation's months, start to end inclusive (open: to M0-1)."""
        start = _month(relation["start"])
        end = _month(relation["end"]) if relation["end"] is not None else self.m0 - 1
        return start, end


def load_truth(path: Path) -> Truth:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    meta = {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM meta")}
    truth = Truth(
        as_of=dt.date.fromisoformat(meta["as_of"]),
        persons={r["person_id"]: dict(r) for r in conn.execute("SELECT * FROM person")},
        households={r["household_id"]: dict(r) for r in conn.execute("SELECT * FROM household")},
        employers={r["credit_code"]: dict(r) for r in conn.execute("SELECT * FROM employer")},
    )
    for r in conn.execute("SELECT * FROM employment"):
        rel = dict(r)
        rel["start"], rel["end"] = _date(rel["start_date"]), _date(rel["end_date"])
        truth.relations_of_person[rel["person_id"]].append(rel)
        truth.relations_of_employer[rel["credit_code"]].append(rel)
    for r in conn.execute(
        "SELECT DISTINCT agency, table_name, subject_kind, subject_id FROM record_link"
        " WHERE id_recoverable = 1"
    ):
        truth.found[(r["agency"], r["table_name"], r["subject_kind"])].add(r["subject_id"])
    for e in truth.employers.values():
        if e["operator_person_id"]:
            truth.operated[e["operator_person_id"]].append(e)
    conn.close()
    return truth


# ---- expected canonical records, per docs/canonical-datasets.md -------------------------------


def _covered(truth: Truth, relations: list[dict[str, Any]], months_back: int) -> int:
    lo, hi = truth.m0 - months_back, truth.m0 - 1
    covered: set[int] = set()
    for rel in relations:
        start, end = truth.months(rel)
        covered |= set(range(max(start, lo), min(end, hi) + 1))
    return len(covered)


def expect_person_insurance(t: Truth, pid: str) -> dict[str, Any] | None:
    if pid not in t.found[("hrss", "ac01", "person")]:
        return None
    insured = [r for r in t.relations_of_person[pid] if r["insured"]]
    open_ = [r for r in insured if r["end"] is None]
    current = max(open_, key=lambda r: (r["start"], r["id"]), default=None)
    return {
        "currently_insured": current is not None,
        "current_employer": current["credit_code"] if current else None,
        "insured_months_24m": _covered(t, insured, 24),
        "contribution_base": current["monthly_wage"] if current else None,
    }


def expect_employment_status(t: Truth, pid: str) -> dict[str, Any] | None:
    if pid not in t.found[("hrss", "ac01", "person")]:
        return None
    p = t.persons[pid]
    return {
        "registered_unemployed": bool(p["registered_unemployed"]),
        "unemployed_since": _date(p["unemployed_since"]),
        "flexible_employment": bool(p["flexible_worker"]),
        "flexible_since": _date(p["flexible_since"]),
        "hard_to_employ": bool(p["hard_to_employ"]),
        "hard_to_employ_category": p["hard_to_employ_category"],
        "hard_to_employ_since": _date(p["hard_to_employ_since"]),
        "receiving_unemployment_benefit": bool(p["unemployment_benefit"]),
    }


def expect_person_category(t: Truth, pid: str) -> dict[str, Any] | None:
    if pid not in t.found[("hrss", "ac01", "person")]:
        return None
    p = t.persons[pid]
    return {k: bool(p[k]) for k in ("veteran", "returning_migrant", "poverty_lifted")}


def expect_employer_insurance(t: Truth, code: str) -> dict[str, Any] | None:
    if code not in t.found[("hrss", "ab01", "employer")]:
        return None
    insured = [r for r in t.relations_of_employer[code] if r["insured"]]
    lo, hi = t.m0 - 12, t.m0 - 1
    return {
        "insured_headcount": sum(1 for r in insured if r["end"] is None),
        "hires_12m": sum(1 for r in insured if lo <= _month(r["start"]) <= hi),
        "departures_12m": sum(1 for r in insured if r["end"] is not None and lo <= _month(r["end"]) <= hi),
    }


def expect_graduation(t: Truth, pid: str) -> dict[str, Any] | None:
    if pid not in t.found[("education", "graduate_record", "person")]:
        return None
    p = t.persons[pid]
    # school_name is not in the truth: compared for presence only
    return {
        "level": p["education_level"],
        "school_code": p["school_code"],
        "major": p["major"],
        "graduation_date": _date(p["graduation_date"]),
    }


def expect_assistance(t: Truth, pid: str) -> dict[str, Any] | None:
    household_id = t.persons[pid]["household_id"]
    if household_id is None or pid not in t.found[("civil_affairs", "T_JZ_CY", "person")]:
        return None
    h = t.households[household_id]
    return {
        "household_category": h["category"],
        "approved_on": _date(h["approved_on"]),
        "zero_employment_household": bool(h["zero_employment"]),
        "household_size": h["size"],
    }


def expect_disability(t: Truth, pid: str) -> dict[str, Any] | None:
    if pid not in t.found[("civil_affairs", "T_CJ_BT", "person")]:
        return None
    p = t.persons[pid]
    return {
        "disability_type": p["disability_type"],
        "disability_grade": p["disability_grade"],
        "subsidy_since": _date(p["disability_since"]),
    }


def expect_employer_tax(t: Truth, code: str) -> dict[str, Any] | None:
    if code not in t.found[("tax", "dj_nsrxx", "employer")]:
        return None
    e = t.employers[code]
    return {"headcount_band": e["headcount_band"], "revenue_band": e["revenue_band"]}


def expect_income_withholding(t: Truth, pid: str) -> dict[str, Any] | None:
    if pid not in t.found[("tax", "gs_kjmx", "person")]:
        return None
    taxed = [r for r in t.relations_of_person[pid] if r["taxed"]]
    previous = t.m0 - 1
    agents = sorted({r["credit_code"] for r in taxed if t.months(r)[0] <= previous <= t.months(r)[1]})
    return {"current_withholding_agents": agents, "months_withheld_12m": _covered(t, taxed, 12)}


def expect_business_registration(t: Truth, code: str) -> dict[str, Any] | None:
    if code not in t.found[("market_regulation", "E_BASEINFO", "employer")]:
        return None
    e = t.employers[code]
    return {
        "name": e["name"],
        "entity_type": e["entity_type"],
        "size_class": e["size_class"],
        "status": e["status"],
        "registered_on": _date(e["registered_on"]),
        "district_code": e["district_code"],
        "industry": e["industry"],
    }


def expect_person_business(t: Truth, pid: str) -> dict[str, Any] | None:
    if pid not in t.found[("market_regulation", "E_BASEINFO", "person")]:
        return None
    active = sorted(
        e["credit_code"]
        for e in t.operated[pid]
        if e["entity_type"] == "individual_business" and e["status"] == "active"
    )
    return {"individual_businesses": active}


Expect = Callable[[Truth, str], "dict[str, Any] | None"]
DATASETS: dict[tuple[Agency, str], tuple[SubjectKind, Expect]] = {
    (Agency.HRSS, "person_insurance"): (SubjectKind.PERSON, expect_person_insurance),
    (Agency.HRSS, "employment_status"): (SubjectKind.PERSON, expect_employment_status),
    (Agency.HRSS, "person_category"): (SubjectKind.PERSON, expect_person_category),
    (Agency.HRSS, "employer_insurance"): (SubjectKind.EMPLOYER, expect_employer_insurance),
    (Agency.EDUCATION, "graduation"): (SubjectKind.PERSON, expect_graduation),
    (Agency.CIVIL_AFFAIRS, "assistance"): (SubjectKind.PERSON, expect_assistance),
    (Agency.CIVIL_AFFAIRS, "disability"): (SubjectKind.PERSON, expect_disability),
    (Agency.TAX, "employer_tax"): (SubjectKind.EMPLOYER, expect_employer_tax),
    (Agency.TAX, "income_withholding"): (SubjectKind.PERSON, expect_income_withholding),
    (Agency.MARKET_REGULATION, "business_registration"): (SubjectKind.EMPLOYER, expect_business_registration),
    (Agency.MARKET_REGULATION, "person_business"): (SubjectKind.PERSON, expect_person_business),
}

RANK = {"associate": 1, "bachelor": 2, "master": 3, "doctorate": 4}
UPPER = {"0-9": 9, "10-19": 19, "20-99": 99, "100-299": 299, "300-999": 999, "1000+": None}


#: expected predicate value from the expected record, the evaluation date and the parameters
Test = Callable[[dict[str, Any], dt.date, dict[str, int]], bool]


@dataclass(frozen=True)
class PredicateCase:
    agency: Agency
    name: str
    dataset: str
    params: dict[str, int]
    #: expected value from the expected record (None: absent), or "not_found"
    expect: Test
    absent_means_false: bool = True


def _case(agency: Agency, name: str, dataset: str, expect: Test, **kw: Any) -> list[PredicateCase]:
    params_list: list[dict[str, int]] = kw.pop("params_list", [{}])
    return [PredicateCase(agency, name, dataset, params, expect, **kw) for params in params_list]


def _bool(key: str) -> Test:
    return lambda r, _d, _p: bool(r[key])


H, ED, CA, TX, MR = Agency.HRSS, Agency.EDUCATION, Agency.CIVIL_AFFAIRS, Agency.TAX, Agency.MARKET_REGULATION
PREDICATES: list[PredicateCase] = [
    *_case(H, "currently_insured", "person_insurance", _bool("currently_insured")),
    *_case(
        H,
        "insured_months_at_least",
        "person_insurance",
        lambda r, _d, p: r["insured_months_24m"] >= p["months"],
        params_list=[{"months": m} for m in (1, 12, 24)],
    ),
    *_case(H, "registered_unemployed", "employment_status", _bool("registered_unemployed")),
    *_case(H, "flexible_employment", "employment_status", _bool("flexible_employment")),
    *_case(H, "hard_to_employ", "employment_status", _bool("hard_to_employ")),
    *_case(H, "receives_unemployment_benefit", "employment_status", _bool("receiving_unemployment_benefit")),
    *_case(H, "veteran", "person_category", _bool("veteran")),
    *_case(H, "returning_migrant", "person_category", _bool("returning_migrant")),
    *_case(H, "poverty_lifted", "person_category", _bool("poverty_lifted")),
    *_case(
        H,
        "employer_insured_headcount_at_least",
        "employer_insurance",
        lambda r, _d, p: r["insured_headcount"] >= p["n"],
        params_list=[{"n": n} for n in (1, 5)],
    ),
    *_case(
        ED,
        "graduated_within_years",
        "graduation",
        lambda r, d, p: r["graduation_date"] >= _years_before(d, p["years"]),
        params_list=[{"years": y} for y in (1, 3)],
    ),
    *_case(
        ED,
        "degree_at_least",
        "graduation",
        lambda r, _d, p: RANK[r["level"]] >= p["rank"],
        params_list=[{"rank": k} for k in (2, 3)],
    ),
    *_case(
        CA,
        "receives_subsistence_allowance",
        "assistance",
        lambda r, _d, _p: r["household_category"] == "subsistence",
    ),
    *_case(
        CA, "near_subsistence", "assistance", lambda r, _d, _p: r["household_category"] == "near_subsistence"
    ),
    *_case(CA, "zero_employment_household", "assistance", _bool("zero_employment_household")),
    *_case(CA, "has_disability", "disability", lambda _r, _d, _p: True),
    *_case(
        TX,
        "withheld_by_employer",
        "income_withholding",
        lambda r, _d, _p: bool(r["current_withholding_agents"]),
    ),
    *_case(
        TX,
        "employer_headcount_at_most",
        "employer_tax",
        lambda r, _d, p: (u := UPPER[r["headcount_band"]]) is not None and u <= p["n"],
        params_list=[{"n": n} for n in (9, 99, 999)],
        absent_means_false=False,
    ),
    *_case(
        MR,
        "enterprise_is_small_or_micro",
        "business_registration",
        lambda r, _d, _p: r["entity_type"] == "enterprise" and r["size_class"] in ("small", "micro"),
        absent_means_false=False,
    ),
    *_case(
        MR,
        "is_individual_business",
        "business_registration",
        lambda r, _d, _p: r["entity_type"] == "individual_business",
        absent_means_false=False,
    ),
    *_case(
        MR,
        "is_active",
        "business_registration",
        lambda r, _d, _p: r["status"] == "active",
        absent_means_false=False,
    ),
    *_case(
        MR,
        "registered_within_years",
        "business_registration",
        lambda r, d, p: r["registered_on"] >= _years_before(d, p["years"]),
        params_list=[{"years": y} for y in (3, 10)],
        absent_means_false=False,
    ),
    *_case(
        MR,
        "operates_individual_business",
        "person_business",
        lambda r, _d, _p: bool(r["individual_businesses"]),
    ),
]


# ---- the generated population on both backends ------------------------------------------------


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    """Thousands of calls: keep the per-call debug events out of the captured output."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adapters.synthetic.generate import GenerateConfig, generate

    out = tmp_path_factory.mktemp("population")
    generate(GenerateConfig(persons=PERSONS, employers=EMPLOYERS, seed=SEED, out=out))
    return out


@pytest.fixture(scope="session")
def truth(population: Path) -> Truth:
    return load_truth(population / "truth.sqlite")


@pytest.fixture(scope="session")
def pg_population(pg_url: str, pg_prefix: str) -> str:
    """The same population (same seed) in PostgreSQL schemas ``<prefix>pop_<agency>``."""
    from adapters.synthetic.generate import GenerateConfig, generate

    prefix = f"{pg_prefix}pop_"
    generate(
        GenerateConfig(persons=PERSONS, employers=EMPLOYERS, seed=SEED, url=pg_url, schema_prefix=prefix)
    )
    return prefix


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], scope="module")
def backend(request: pytest.FixtureRequest, population: Path) -> Iterator[tuple[str, dict[Agency, Adapter]]]:
    if request.param == "sqlite":
        sources = sqlite_sources(population)
    else:
        prefix = request.getfixturevalue("pg_population")
        sources = server_sources(request.getfixturevalue("pg_url"), prefix)
    # generous per-call timeout: this is a correctness test on a shared 2-core machine
    sources = {k: v.model_copy(update={"call_timeout_s": 30.0}) for k, v in sources.items()}
    adapters = open_adapters(sources)
    yield request.param, adapters
    close_adapters(adapters)


def subjects(truth: Truth, kind: SubjectKind, backend_name: str) -> list[str]:
    """Subjects to fetch: everyone on SQLite, a deterministic sample on PostgreSQL."""
    everyone = sorted(truth.persons if kind is SubjectKind.PERSON else truth.employers)
    if backend_name == "sqlite":
        return everyone
    k = PG_FETCH_SAMPLE[0] if kind is SubjectKind.PERSON else PG_FETCH_SAMPLE[1]
    return sorted(random.Random(SEED).sample(everyone, min(k, len(everyone))))


def predicate_subjects(truth: Truth, case: PredicateCase, kind: SubjectKind, backend_name: str) -> list[str]:
    """A deterministic sample of the population (found and not found) plus subjects for whom the
    truth says yes, so that rare predicates (veterans, benefits) are exercised both ways."""
    persons, employers, positives = PREDICATE_SAMPLE[backend_name]
    everyone = sorted(truth.persons if kind is SubjectKind.PERSON else truth.employers)
    rng = random.Random(f"{SEED}-{case.name}-{case.params}")
    chosen = set(
        rng.sample(everyone, min(persons if kind is SubjectKind.PERSON else employers, len(everyone)))
    )
    _, expect = DATASETS[(case.agency, case.dataset)]
    yes = [
        s
        for s in everyone
        if (r := expect(truth, s)) is not None and case.expect(r, truth.as_of, case.params)
    ]
    chosen.update(rng.sample(yes, min(positives, len(yes))))
    return sorted(chosen)


def _report(problems: list[str], what: str) -> str:
    return f"{len(problems)} disagreements on {what}; first ones:\n" + "\n".join(problems[:12])


# ---- the checks ----------------------------------------------------------------------------------


def test_population_is_large_and_dirty(truth: Truth) -> None:
    assert len(truth.persons) == PERSONS and len(truth.employers) == EMPLOYERS
    for (agency, table, kind), ids in truth.found.items():
        assert ids, (agency, table, kind)


@pytest.mark.parametrize(("agency", "dataset"), list(DATASETS), ids=[f"{a.value}.{d}" for a, d in DATASETS])
def test_fetch_agrees_with_truth(
    backend: tuple[str, dict[Agency, Adapter]], truth: Truth, agency: Agency, dataset: str
) -> None:
    name, adapters = backend
    kind, expect = DATASETS[(agency, dataset)]
    adapter = adapters[agency]
    problems: list[str] = []
    found = 0
    for sid in subjects(truth, kind, name):
        expected = expect(truth, sid)
        try:
            got: dict[str, Any] | None = dict(
                adapter.fetch(dataset, Subject(kind, sid), as_of=truth.as_of).values
            )
        except SubjectNotFound:
            got = None
        if got is not None and dataset == "graduation":
            assert got.pop("school_name")
        if got != expected:
            problems.append(f"{sid}: adapter {got} != truth {expected}")
        found += got is not None
    assert not problems, _report(problems, f"{agency.value}.{dataset} ({name})")
    assert found > 0


@pytest.mark.parametrize(
    "case",
    PREDICATES,
    ids=[f"{c.agency.value}.{c.name}{''.join(f'-{v}' for v in c.params.values())}" for c in PREDICATES],
)
def test_predicates_agree_with_truth(
    backend: tuple[str, dict[Agency, Adapter]], truth: Truth, case: PredicateCase
) -> None:
    name, adapters = backend
    kind, expect = DATASETS[(case.agency, case.dataset)]
    adapter = adapters[case.agency]
    descriptor = adapter.describe().predicate(case.name)
    assert descriptor.absent_means_false is case.absent_means_false
    problems: list[str] = []
    outcomes: dict[object, int] = defaultdict(int)
    for sid in predicate_subjects(truth, case, kind, name):
        record = expect(truth, sid)
        want: object = (
            case.expect(record, truth.as_of, case.params)
            if record is not None
            else (False if case.absent_means_false else "not_found")
        )
        try:
            got: object = adapter.evaluate(case.name, Subject(kind, sid), case.params, as_of=truth.as_of)
        except SubjectNotFound:
            got = "not_found"
        if got != want:
            problems.append(f"{sid}: adapter {got} != truth {want}")
        outcomes[got] += 1
    assert not problems, _report(problems, f"{case.agency.value}.{case.name}{case.params} ({name})")
    assert len(outcomes) > 1 or name != "sqlite", f"degenerate: every subject gives {dict(outcomes)}"


@pytest.mark.parametrize(("agency", "dataset"), list(DATASETS), ids=[f"{a.value}.{d}" for a, d in DATASETS])
def test_extract_agrees_with_truth(
    backend: tuple[str, dict[Agency, Adapter]], truth: Truth, agency: Agency, dataset: str
) -> None:
    """Every subject found by number comes exactly once, with its truth record; the others come
    with subject_id None and their raw identifier."""
    _, adapters = backend
    kind, expect = DATASETS[(agency, dataset)]
    everyone = truth.persons if kind is SubjectKind.PERSON else truth.employers
    seen: dict[str, int] = defaultdict(int)
    problems: list[str] = []
    watermarks = set()
    unlinked = 0
    for chunk in adapters[agency].extract(dataset, chunk_size=700, as_of=truth.as_of):
        watermarks.add(chunk.watermark)
        assert len(chunk.records) <= 700
        for r in chunk.records:
            if r.subject_id is None:
                unlinked += 1
                continue
            seen[r.subject_id] += 1
            got = r.record.model_dump()
            if dataset == "graduation":
                got.pop("school_name")
            expected = expect(truth, r.subject_id) if r.subject_id in everyone else None
            if got != expected:
                problems.append(f"{r.subject_id} (native {r.native_key}): extract {got} != truth {expected}")
    assert len(watermarks) == 1 and watermarks != {""}
    expected_found = {sid for sid in everyone if expect(truth, sid) is not None}
    problems += [f"{sid}: missing from the extract" for sid in sorted(expected_found - set(seen))]
    problems += [f"{sid}: extracted {n} times" for sid, n in seen.items() if n != 1]
    assert not problems, _report(problems, f"{agency.value}.{dataset} extract")


def test_incremental_extract_on_generated_data(population: Path, truth: Truth) -> None:
    """A full extract's watermark yields nothing new; an earlier one yields exactly the subjects
    whose rows changed after it (checked against the rows themselves)."""
    adapters = open_adapters(sqlite_sources(population), agencies=[Agency.HRSS])
    try:
        hrss = adapters[Agency.HRSS]
        full = list(hrss.extract("person_category", as_of=truth.as_of))
        watermark = full[0].watermark
        assert next(hrss.extract("person_category", since=watermark)).records == ()
        engine = make_engine(SourceConfig(url=f"sqlite:///{population / 'hrss.sqlite'}"))
        with engine.connect() as conn:
            cut = conn.execute(
                text("SELECT aae036 FROM ac01 ORDER BY aae036 LIMIT 1 OFFSET 3000")
            ).scalar_one()
            changed = set(
                conn.execute(
                    text(
                        "SELECT aac001 FROM ac01 WHERE aae036 > :w"
                        " UNION SELECT aac001 FROM jy_rylb WHERE aae036 > :w"
                    ),
                    {"w": cut},
                ).scalars()
            )
        engine.dispose()
        later = [r for c in hrss.extract("person_category", since=cut, as_of=truth.as_of) for r in c.records]
        assert later and {int(r.native_key) for r in later} <= changed
        by_subject = {r.subject_id: r.record for c in full for r in c.records if r.subject_id}
        for r in later:
            if r.subject_id is not None:
                assert r.record == by_subject[r.subject_id]
    finally:
        close_adapters(adapters)
