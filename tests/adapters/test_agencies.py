"""education, civil_affairs, tax and market_regulation adapters over real databases."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from adapters.agencies import Agency
from adapters.contract import FetchResult, ProviderUnavailable, Subject, SubjectKind, SubjectNotFound
from gateway.identity.forms import spaced, to_fullwidth, to_legacy15
from tests.adapters.nativedb import AS_OF, NativeDb, employer_id, person_id

P1, P2, P3 = person_id(1), person_id(2), person_id(3)
E1, E2, E3 = employer_id(1), employer_id(2), employer_id(3)


def person(pid: str) -> Subject:
    return Subject(SubjectKind.PERSON, pid)


def employer(code: str) -> Subject:
    return Subject(SubjectKind.EMPLOYER, code)


# ---- education -----------------------------------------------------------------------------


def test_graduation_latest_record(db: NativeDb) -> None:
    db.add("graduate_record", record_id=1, cert_no=P1, education_level="41", graduation_date="2019-07-01")
    db.add(
        "graduate_record",
        record_id=2,
        cert_no=to_legacy15(P1),
        education_level="12",
        school_code="10056",
        school_name="天津大学",
        major="化学工程",
        graduation_date="2025-06-30",
    )
    db.add(
        "graduate_record", record_id=3, cert_type="2", cert_no=P1, graduation_date="2026-06-30"
    )  # passport
    adapter = db.adapter(Agency.EDUCATION)
    assert adapter.fetch("graduation", person(P1), as_of=AS_OF).values == {
        "level": "master",
        "school_code": "10056",
        "school_name": "天津大学",
        "major": "化学工程",
        "graduation_date": dt.date(2025, 6, 30),
    }
    assert adapter.evaluate("graduated_within_years", person(P1), {"years": 2}, as_of=AS_OF) is True
    assert adapter.evaluate("graduated_within_years", person(P1), {"years": 1}, as_of=AS_OF) is False
    assert (
        adapter.evaluate("graduated_within_years", person(P1), {"years": 1}, as_of=dt.date(2026, 6, 30))
        is True
    )
    assert adapter.evaluate("degree_at_least", person(P1), {"rank": 3}) is True
    assert adapter.evaluate("degree_at_least", person(P1), {"rank": 4}) is False


def test_many_subject_calls_answer_a_subject_named_twice_each_time(db: NativeDb) -> None:
    """evaluate_many / fetch_many with the same subject twice (two BatchVerify items about one
    person; two concurrent Queries in one batch) answer both: the identity lookup used to give
    a stored form to the first only, so the second was "not found" (False / None)."""
    db.add("graduate_record", record_id=1, cert_no=P1, education_level="41", graduation_date="2025-06-30")
    db.add("graduate_record", record_id=2, cert_no=to_fullwidth(P2), education_level="31")
    adapter = db.adapter(Agency.EDUCATION)
    subjects = [person(P1), person(P3), person(P1), person(P2), person(P1)]
    assert adapter.evaluate_many("graduated_within_years", subjects, {"years": 2}, as_of=AS_OF) == [
        True,
        False,
        True,
        False,
        True,
    ]
    fetched = adapter.fetch_many("graduation", subjects, ["level", "graduation_date"], as_of=AS_OF)
    one = {"level": "associate", "graduation_date": dt.date(2025, 6, 30)}
    assert [r.values if r is not None else None for r in fetched][:3] == [one, None, one]
    assert fetched[3] is not None and fetched[3].values["level"] == "bachelor"
    assert fetched[4] is not None and fetched[4].values == one
    # the same answers as one fetch per subject
    for subject, result in zip(subjects, fetched, strict=True):
        try:
            single = adapter.fetch("graduation", subject, ["level", "graduation_date"], as_of=AS_OF)
        except SubjectNotFound:
            assert result is None
        else:
            assert result == single
    assert adapter.fetch_many("graduation", [], as_of=AS_OF) == []


def _three_graduates(db: NativeDb, middle: str = "11") -> None:
    """P1 an associate (41), P2 of level code ``middle`` (11: a doctorate), P3 a bachelor (31)."""
    for record_id, subject, level in ((1, P1, "41"), (2, P2, middle), (3, P3, "31")):
        db.add(
            "graduate_record",
            record_id=record_id,
            cert_no=subject,
            education_level=level,
            graduation_date="2025-06-30",
        )


def test_many_subject_calls_fail_only_the_subject_whose_rows_are_malformed(db: NativeDb) -> None:
    """One subject's unmappable native value fails that subject alone (the error a call about it
    alone raises); the others of the same source call are answered."""
    _three_graduates(db, middle="99")  # P2's level code is unknown
    adapter = db.adapter(Agency.EDUCATION)
    with pytest.raises(ProviderUnavailable) as alone:
        adapter.fetch("graduation", person(P2), as_of=AS_OF)
    fetched = adapter.fetch_many("graduation", [person(P1), person(P2), person(P3)], ["level"], as_of=AS_OF)
    assert isinstance(fetched[1], ProviderUnavailable) and fetched[1].cause == alone.value.cause
    assert [r.values for r in (fetched[0], fetched[2]) if isinstance(r, FetchResult)] == [
        {"level": "associate"},
        {"level": "bachelor"},
    ]
    answers = adapter.evaluate_many(
        "degree_at_least", [person(P1), person(P2), person(P3)], {"rank": 2}, as_of=AS_OF
    )
    assert answers[0] is False and isinstance(answers[1], ProviderUnavailable) and answers[2] is True


def test_many_subject_fetches_fail_only_the_subject_whose_record_breaks_the_adapter(
    db: NativeDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error of the adapter's own code (a bug, here a KeyError while building one subject's
    record) fails that subject's fetch alone, with the exception a fetch of it alone raises;
    the others of the same source call are answered (it used to fail them all). A bulk
    comparison still fails as a whole: BatchVerify answers chunk by chunk."""
    _three_graduates(db)
    adapter = db.adapter(Agency.EDUCATION)
    spec = adapter._datasets["graduation"]

    def breaks_on_doctorates(conn: Any, groups: Any, day: dt.date) -> Any:
        built = spec.build(conn, groups, day)
        if any(r.model_dump()["level"] == "doctorate" for r in built.values()):
            raise KeyError("doctorate")
        return built

    broken = dataclasses.replace(spec, build=breaks_on_doctorates)
    monkeypatch.setitem(adapter._datasets, "graduation", broken)
    with pytest.raises(KeyError):
        adapter.fetch("graduation", person(P2), as_of=AS_OF)
    fetched = adapter.fetch_many("graduation", [person(P1), person(P2), person(P3)], ["level"], as_of=AS_OF)
    assert isinstance(fetched[1], KeyError)
    assert [r.values for r in (fetched[0], fetched[2]) if isinstance(r, FetchResult)] == [
        {"level": "associate"},
        {"level": "bachelor"},
    ]
    with pytest.raises(KeyError):
        adapter.evaluate_many("degree_at_least", [person(P1), person(P2)], {"rank": 2}, as_of=AS_OF)
    # batched Verify calls isolate it as fetches do
    answers = adapter.evaluate_many(
        "degree_at_least", [person(P1), person(P2), person(P3)], {"rank": 2}, as_of=AS_OF, isolate=True
    )
    assert answers[0] is False and isinstance(answers[1], KeyError) and answers[2] is True


def test_batched_evaluations_fail_only_the_subject_whose_answer_breaks_the_predicate(
    db: NativeDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A predicate's own test failing on one subject's record (a bug) fails that subject's
    answer alone with ``isolate`` (batched Verify calls), as an evaluation of it alone fails;
    without, the whole call fails (a bulk comparison); a source error is never isolated."""
    _three_graduates(db)
    adapter = db.adapter(Agency.EDUCATION)
    pspec = adapter._predicates["degree_at_least"]

    def breaks_on_doctorates(record: Any, params: Any, day: dt.date) -> bool:
        if record.level == "doctorate":
            raise KeyError("doctorate")
        return bool(pspec.test(record, params, day))

    monkeypatch.setitem(
        adapter._predicates, "degree_at_least", dataclasses.replace(pspec, test=breaks_on_doctorates)
    )
    subjects = [person(P1), person(P2), person(P3)]
    with pytest.raises(KeyError):
        adapter.evaluate("degree_at_least", person(P2), {"rank": 2}, as_of=AS_OF)
    with pytest.raises(KeyError):
        adapter.evaluate_many("degree_at_least", subjects, {"rank": 2}, as_of=AS_OF)
    answers = adapter.evaluate_many("degree_at_least", subjects, {"rank": 2}, as_of=AS_OF, isolate=True)
    assert answers[0] is False and isinstance(answers[1], KeyError) and answers[2] is True

    def source_fails(record: Any, params: Any, day: dt.date) -> bool:
        raise OSError("the source went away")

    monkeypatch.setitem(adapter._predicates, "degree_at_least", dataclasses.replace(pspec, test=source_fails))
    with pytest.raises(ProviderUnavailable):
        adapter.evaluate_many("degree_at_least", subjects, {"rank": 2}, as_of=AS_OF, isolate=True)


def test_graduation_tie_on_date_takes_larger_record_id(db: NativeDb) -> None:
    db.add("graduate_record", record_id=7, cert_no=P1, education_level="31", graduation_date="2024-06-30")
    db.add("graduate_record", record_id=8, cert_no=P1, education_level="11", graduation_date="2024-06-30")
    assert db.adapter(Agency.EDUCATION).fetch("graduation", person(P1), ["level"]).values == {
        "level": "doctorate"
    }


def test_graduation_only_passport_record_is_not_found(db: NativeDb) -> None:
    db.add("graduate_record", cert_type="2", cert_no=P1)
    db.add("graduate_record", cert_type="1", cert_no=None)
    adapter = db.adapter(Agency.EDUCATION)
    with pytest.raises(SubjectNotFound):
        adapter.fetch("graduation", person(P1))
    assert adapter.evaluate("degree_at_least", person(P1), {"rank": 1}) is False


# ---- civil affairs -------------------------------------------------------------------------


def test_assistance_current_household(db: NativeDb) -> None:
    db.add("T_JZ_JT", JTBH="H1", JTLB="02", SPRQ="2025/04/01", LJYJT="Y")
    db.add("T_JZ_CY", JTBH="H1", SFZH=spaced(P1))
    db.add("T_JZ_CY", JTBH="H1", SFZH=P2, YHZGX="02")
    db.add("T_JZ_CY", JTBH="H1", SFZH=None, YHZGX="03")  # a child without a number still counts
    db.add("T_JZ_JT", JTBH="H0", JTLB="01", SPRQ="2019/01/01", TBRQ="2021/01/01")  # former household
    db.add("T_JZ_CY", JTBH="H0", SFZH=P3)
    adapter = db.adapter(Agency.CIVIL_AFFAIRS)
    assert adapter.fetch("assistance", person(P1), as_of=AS_OF).values == {
        "household_category": "near_subsistence",
        "approved_on": dt.date(2025, 4, 1),
        "zero_employment_household": True,
        "household_size": 3,
    }
    assert adapter.evaluate("near_subsistence", person(P2)) is True
    assert adapter.evaluate("receives_subsistence_allowance", person(P2)) is False
    assert adapter.evaluate("zero_employment_household", person(P1)) is True
    with pytest.raises(SubjectNotFound):
        adapter.fetch("assistance", person(P3))  # only a former household
    assert adapter.evaluate("receives_subsistence_allowance", person(P3)) is False


def test_assistance_empty_string_leave_date_means_current(db: NativeDb) -> None:
    db.add("T_JZ_JT", JTBH="H1", JTLB="01", TBRQ="")
    db.add("T_JZ_CY", JTBH="H1", SFZH=P1)
    adapter = db.adapter(Agency.CIVIL_AFFAIRS)
    assert adapter.evaluate("receives_subsistence_allowance", person(P1)) is True


def test_disability(db: NativeDb) -> None:
    db.add("T_CJ_BT", BTBH=1, SFZH=to_fullwidth(P1), CJLB="1", CJDJ="3", KSRQ="2020/02/29")
    db.add("T_CJ_BT", BTBH=2, SFZH=P1, CJLB="6", CJDJ="1", KSRQ="2023/11/30")
    adapter = db.adapter(Agency.CIVIL_AFFAIRS)
    assert adapter.fetch("disability", person(P1)).values == {
        "disability_type": "mental",
        "disability_grade": 1,
        "subsidy_since": dt.date(2023, 11, 30),
    }
    assert adapter.evaluate("has_disability", person(P1)) is True
    assert adapter.evaluate("has_disability", person(P2)) is False


# ---- tax -----------------------------------------------------------------------------------


def test_employer_tax(db: NativeDb) -> None:
    db.add("dj_nsrxx", djxh=1, nsrsbh=E1.lower(), cyrs_dm="2", yysr_dm="6")
    db.add("dj_nsrxx", djxh=2, nsrsbh=E2, cyrs_dm="6", yysr_dm="1")
    adapter = db.adapter(Agency.TAX)
    assert adapter.fetch("employer_tax", employer(E1)).values == {
        "headcount_band": "10-19",
        "revenue_band": "40000+",
    }
    assert adapter.evaluate("employer_headcount_at_most", employer(E1), {"n": 19}) is True
    assert adapter.evaluate("employer_headcount_at_most", employer(E1), {"n": 18}) is False
    assert adapter.evaluate("employer_headcount_at_most", employer(E2), {"n": 100000}) is False  # 1000+
    with pytest.raises(SubjectNotFound):
        adapter.evaluate("employer_headcount_at_most", employer(E3), {"n": 10})  # absent raises


def test_income_withholding(db: NativeDb) -> None:
    # M0 = 2026-11: current period 2026-10, window 2025-11 .. 2026-10.
    db.add("gs_kjmx", zzhm=P1, kjywr_nsrsbh=spaced(E2), sssq_q="2026-03", sssq_z="2026-10")
    db.add("gs_kjmx", zzhm=P1, kjywr_nsrsbh=E1.lower(), sssq_q="2025-01", sssq_z="2026-10")
    db.add("gs_kjmx", zzhm=P1, kjywr_nsrsbh=E3, sssq_q="2024-01", sssq_z="2024-12")
    db.add(
        "gs_kjmx", zzlx="208", zzhm=P2, kjywr_nsrsbh=E3, sssq_q="2026-01", sssq_z="2026-10"
    )  # not an ID card
    adapter = db.adapter(Agency.TAX)
    assert adapter.fetch("income_withholding", person(P1), as_of=AS_OF).values == {
        "current_withholding_agents": sorted([E1, E2]),
        "months_withheld_12m": 12,
    }
    assert adapter.evaluate("withheld_by_employer", person(P1), as_of=AS_OF) is True
    assert adapter.evaluate("withheld_by_employer", person(P1), as_of=dt.date(2027, 6, 1)) is False
    assert adapter.evaluate("withheld_by_employer", person(P2)) is False
    with pytest.raises(SubjectNotFound):
        adapter.fetch("income_withholding", person(P2))


# ---- market regulation ---------------------------------------------------------------------


def test_business_registration(db: NativeDb) -> None:
    db.add("E_BASEINFO", PRIPID="A1", UNISCID=to_fullwidth(E1), ENTTYPE="1200", SCALE="XS", ESTDATE=20230415)
    db.add(
        "E_BASEINFO",
        PRIPID="A2",
        UNISCID=E2,
        ENTTYPE="9600",
        SCALE="XS",
        REGSTATE="2",
        REGORG="120104",
        INDUSTRYPHY="F",
        ENTNAME="南开区某某便利店",
        ESTDATE=20100101,
    )
    adapter = db.adapter(Agency.MARKET_REGULATION)
    assert adapter.fetch("business_registration", employer(E2), as_of=AS_OF).values == {
        "name": "南开区某某便利店",
        "entity_type": "individual_business",
        "size_class": "micro",
        "status": "revoked",
        "registered_on": dt.date(2010, 1, 1),
        "district_code": "120104",
        "industry": "F",
    }
    ev = adapter.evaluate
    assert ev("enterprise_is_small_or_micro", employer(E1)) is True
    assert ev("enterprise_is_small_or_micro", employer(E2)) is False
    assert ev("is_individual_business", employer(E2)) is True
    assert ev("is_active", employer(E1)) is True and ev("is_active", employer(E2)) is False
    assert ev("registered_within_years", employer(E1), {"years": 3}, as_of=dt.date(2026, 4, 15)) is True
    assert ev("registered_within_years", employer(E1), {"years": 3}, as_of=dt.date(2026, 4, 16)) is False
    with pytest.raises(SubjectNotFound):
        ev("is_active", employer(E3))


def test_person_business(db: NativeDb) -> None:
    db.add("E_BASEINFO", UNISCID=E1, ENTTYPE="9600", OPER_CERNO=P1, OPER_NAME="孙七")
    db.add("E_BASEINFO", UNISCID=E2.lower(), ENTTYPE="9600", OPER_CERNO=spaced(P1))
    db.add("E_BASEINFO", UNISCID=E3, ENTTYPE="9600", OPER_CERNO=P1, REGSTATE="3")  # cancelled
    db.add("E_BASEINFO", UNISCID=employer_id(4), ENTTYPE="9600", OPER_CERNO=P2, REGSTATE="3")
    adapter = db.adapter(Agency.MARKET_REGULATION)
    assert adapter.fetch("person_business", person(P1)).values == {"individual_businesses": sorted([E1, E2])}
    assert adapter.evaluate("operates_individual_business", person(P1)) is True
    # operates a business, none active: found, empty list, predicate false
    assert adapter.fetch("person_business", person(P2)).values == {"individual_businesses": []}
    assert adapter.evaluate("operates_individual_business", person(P2)) is False
    assert adapter.evaluate("operates_individual_business", person(P3)) is False
    with pytest.raises(SubjectNotFound):
        adapter.fetch("person_business", person(P3))
