"""The contract's request checks, common to every adapter: unknown names, bad parameters, wrong
subject kinds, absent subjects; all raised before any I/O."""

from __future__ import annotations

import pytest

from adapters.agencies import Agency
from adapters.base import SqlAdapter, check_params
from adapters.contract import (
    Adapter,
    InvalidRequest,
    PredicateDescriptor,
    Subject,
    SubjectKind,
    SubjectNotFound,
)
from adapters.registry import ADAPTER_CLASSES, open_adapter, open_adapters
from adapters.sources import SourceConfig, sqlite_sources
from tests.adapters.nativedb import NativeDb, employer_id, person_id

P1 = Subject(SubjectKind.PERSON, person_id(1))
E1 = Subject(SubjectKind.EMPLOYER, employer_id(1))
EVERYWHERE = "sqlite:////nonexistent/dir/never.sqlite"  # any I/O would fail: checks come first


def offline(agency: Agency) -> SqlAdapter:
    return open_adapter(agency, SourceConfig(url=EVERYWHERE))


def test_every_agency_has_an_adapter_satisfying_the_protocol() -> None:
    assert set(ADAPTER_CLASSES) == set(Agency)
    for agency, cls in ADAPTER_CLASSES.items():
        adapter = offline(agency)
        assert isinstance(adapter, Adapter)
        assert cls.agency is agency
        d = adapter.describe()
        assert d.agency is agency and d.datasets and d.predicates
        for p in d.predicates:
            assert d.dataset(p.dataset).subject_kind is p.subject_kind


def test_catalogue_matches_the_spec() -> None:
    names = {
        a: (
            sorted(d.name for d in offline(a).describe().datasets),
            sorted(p.name for p in offline(a).describe().predicates),
        )
        for a in Agency
    }
    assert names[Agency.HRSS] == (
        ["employer_insurance", "employment_status", "person_category", "person_insurance"],
        sorted(
            [
                "currently_insured",
                "insured_months_at_least",
                "registered_unemployed",
                "flexible_employment",
                "hard_to_employ",
                "receives_unemployment_benefit",
                "veteran",
                "returning_migrant",
                "poverty_lifted",
                "employer_insured_headcount_at_least",
            ]
        ),
    )
    assert names[Agency.EDUCATION] == (["graduation"], ["degree_at_least", "graduated_within_years"])
    assert names[Agency.CIVIL_AFFAIRS] == (
        ["assistance", "disability"],
        ["has_disability", "near_subsistence", "receives_subsistence_allowance", "zero_employment_household"],
    )
    assert names[Agency.TAX] == (
        ["employer_tax", "income_withholding"],
        ["employer_headcount_at_most", "withheld_by_employer"],
    )
    assert names[Agency.MARKET_REGULATION] == (
        ["business_registration", "person_business"],
        sorted(
            [
                "enterprise_is_small_or_micro",
                "is_individual_business",
                "is_active",
                "registered_within_years",
                "operates_individual_business",
            ]
        ),
    )
    absent_raises = {
        p.name for a in Agency for p in offline(a).describe().predicates if not p.absent_means_false
    }
    assert absent_raises == {
        "employer_headcount_at_most",
        "enterprise_is_small_or_micro",
        "is_individual_business",
        "is_active",
        "registered_within_years",
    }


def test_sensitivity_in_descriptors() -> None:
    hrss = offline(Agency.HRSS).describe()
    fields = {f.name: f.sensitivity.value for f in hrss.dataset("employment_status").fields}
    assert fields["hard_to_employ"] == "sensitive"
    assert fields["registered_unemployed"] == "personal"
    assert hrss.dataset("employer_insurance").fields[0].sensitivity.value == "public"
    assert offline(Agency.CIVIL_AFFAIRS).describe().dataset("assistance").sensitive


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a: a.fetch("nope", P1), "no dataset"),
        (lambda a: a.fetch("person_insurance", P1, ["nope"]), "no field"),
        (lambda a: a.fetch("person_insurance", P1, []), "no fields"),
        (lambda a: a.fetch("person_insurance", E1), "not a employer"),
        (lambda a: a.fetch("employer_insurance", P1), "not a person"),
        (lambda a: a.evaluate("nope", P1), "no predicate"),
        (lambda a: a.evaluate("currently_insured", E1), "about a person"),
        (lambda a: a.evaluate("insured_months_at_least", P1), "needs parameter"),
        (lambda a: a.evaluate("insured_months_at_least", P1, {}), "needs parameter"),
        (lambda a: a.evaluate("insured_months_at_least", P1, {"months": 3, "n": 1}), "takes no parameter"),
        (lambda a: a.evaluate("currently_insured", P1, {"months": 3}), "takes no parameter"),
        (lambda a: a.evaluate("insured_months_at_least", P1, {"months": -1}), "negative"),
        (lambda a: a.evaluate("insured_months_at_least", P1, {"months": "3"}), "integer"),
        (lambda a: a.evaluate("insured_months_at_least", P1, {"months": True}), "integer"),
        (lambda a: a.evaluate("insured_months_at_least", P1, {"months": 2.5}), "integer"),
        (lambda a: a.extract("nope"), "no dataset"),
        (lambda a: a.extract("person_insurance", chunk_size=0), "chunk_size"),
        (lambda a: a.extract("person_insurance", since="yesterday"), "watermarks"),
        (lambda a: a.fetch("person_insurance", P1, timeout=0), "timeout"),
    ],
)
def test_invalid_requests_fail_before_io(call: object, message: str) -> None:
    adapter = offline(Agency.HRSS)
    assert callable(call)
    with pytest.raises(InvalidRequest, match=message):
        call(adapter)
    assert adapter.source.circuit.failures == 0  # nothing was attempted


def test_integer_watermarks_checked() -> None:
    with pytest.raises(InvalidRequest, match="integer"):
        offline(Agency.TAX).extract("employer_tax", since="2026-01-01")


def test_check_params_pure() -> None:
    d = PredicateDescriptor(Agency.HRSS, "p", SubjectKind.PERSON, "ds", "", ("a", "b"))
    assert check_params(d, {"a": 0, "b": 7}) == {"a": 0, "b": 7}
    with pytest.raises(InvalidRequest, match="b"):
        check_params(d, {"a": 1})
    assert check_params(PredicateDescriptor(Agency.HRSS, "q", SubjectKind.PERSON, "ds", ""), None) == {}


def test_fetch_subset_of_fields_in_requested_order(db: NativeDb) -> None:
    db.add("ac01", aac001=1, aac002=P1.id)
    adapter = db.adapter(Agency.HRSS)
    result = adapter.fetch(
        "person_insurance", P1, ["contribution_base", "currently_insured", "contribution_base"]
    )
    assert list(result.values) == ["contribution_base", "currently_insured"]
    assert result.agency is Agency.HRSS and result.dataset == "person_insurance"


def test_absent_means_false_or_not_found(db: NativeDb) -> None:
    db.add("E_BASEINFO", UNISCID=employer_id(2))
    adapter = db.adapter(Agency.MARKET_REGULATION)
    with pytest.raises(SubjectNotFound) as info:
        adapter.evaluate("registered_within_years", E1, {"years": 3})
    assert "market_regulation holds no business_registration record" in str(info.value)
    assert employer_id(1) not in str(info.value)
    assert adapter.evaluate("operates_individual_business", P1) is False


def test_open_adapters_from_sources(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    adapters = open_adapters(sqlite_sources(tmp_path))  # the truth source is ignored
    assert set(adapters) == set(Agency)
    only = open_adapters(sqlite_sources(tmp_path), agencies=["tax"])
    assert list(only) == [Agency.TAX]
    with pytest.raises(LookupError):
        open_adapters({}, agencies=["tax"])
    with pytest.raises(LookupError):
        open_adapter("police", SourceConfig(url=EVERYWHERE))
    for a in [*adapters.values(), *only.values()]:
        a.close()
