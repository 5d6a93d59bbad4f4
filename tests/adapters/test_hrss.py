"""hrss adapter over real databases (SQLite and PostgreSQL): native rows -> canonical records."""

from __future__ import annotations

import datetime as dt

import pytest

from adapters.agencies import Agency
from adapters.contract import Subject, SubjectKind, SubjectNotFound
from gateway.identity.forms import spaced, to_fullwidth, to_legacy15
from tests.adapters.nativedb import AS_OF, NativeDb, employer_id, person_id

P1, P2 = person_id(1), person_id(2)
E1, E2 = employer_id(1), employer_id(2)


def person(pid: str) -> Subject:
    return Subject(SubjectKind.PERSON, pid)


def employer(code: str) -> Subject:
    return Subject(SubjectKind.EMPLOYER, code)


def test_person_insurance_open_and_closed_spells(db: NativeDb) -> None:
    db.add("ac01", aac001=1, aac002=P1)
    db.add("ab01", aab001=10, aab003=E1.lower())  # format dirt on the unit's code
    db.add("ab01", aab001=11, aab003=E2)
    db.add("ac02", aac001=1, aab001=10, aae030="202501", aae031="", aac040=6000)
    db.add("ac02", aac001=1, aab001=11, aae030="202301", aae031="202412", aac040=4000)
    db.add("ac02", aac001=1, aab001=11, aae140="310", aae030="202001", aae031="")  # not pension
    adapter = db.adapter(Agency.HRSS)
    values = adapter.fetch("person_insurance", person(P1), as_of=AS_OF).values
    # 24 months before 2026-11: 2024-11 .. 2026-10; 2025-01.. open = 22 months, 2024-11..12 = 2.
    assert values == {
        "currently_insured": True,
        "current_employer": E1,
        "insured_months_24m": 24,
        "contribution_base": 6000,
    }
    assert adapter.evaluate("currently_insured", person(P1), as_of=AS_OF) is True
    assert adapter.evaluate("insured_months_at_least", person(P1), {"months": 24}, as_of=AS_OF) is True
    assert adapter.evaluate("insured_months_at_least", person(P1), {"months": 25}, as_of=AS_OF) is False


def test_person_insurance_latest_open_spell_wins_with_id_tiebreak(db: NativeDb) -> None:
    db.add("ac01", aac001=1, aac002=P1)
    db.add("ab01", aab001=10, aab003=E1)
    db.add("ab01", aab001=11, aab003=E2)
    db.add("ac02", id=100, aac001=1, aab001=10, aae030="202503", aac040=3000)
    db.add("ac02", id=101, aac001=1, aab001=11, aae030="202503", aac040=7000)
    db.add("ac02", id=99, aac001=1, aab001=10, aae030="202401", aac040=1000)
    values = db.adapter(Agency.HRSS).fetch("person_insurance", person(P1), as_of=AS_OF).values
    assert values["current_employer"] == E2
    assert values["contribution_base"] == 7000


def test_person_without_spells_is_found_and_not_insured(db: NativeDb) -> None:
    db.add("ac01", aac001=1, aac002=P1)
    adapter = db.adapter(Agency.HRSS)
    assert adapter.fetch("person_insurance", person(P1), as_of=AS_OF).values == {
        "currently_insured": False,
        "current_employer": None,
        "insured_months_24m": 0,
        "contribution_base": None,
    }
    assert adapter.evaluate("currently_insured", person(P1)) is False


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param(lambda p: p, id="canonical"),
        pytest.param(lambda p: to_fullwidth(p), id="fullwidth"),
        pytest.param(lambda p: spaced(p), id="spaces"),
        pytest.param(lambda p: to_legacy15(p), id="legacy15"),
    ],
)
def test_person_found_by_every_stored_form(db: NativeDb, stored: object) -> None:
    assert callable(stored)
    db.add("ac01", aac001=1, aac002=stored(P1))
    adapter = db.adapter(Agency.HRSS)
    assert adapter.fetch("person_category", person(P1), as_of=AS_OF).values["veteran"] is False


def test_lower_x_form_found(db: NativeDb) -> None:
    pid = next(p for p in (person_id(n) for n in range(1000)) if p.endswith("X"))
    db.add("ac01", aac001=1, aac002=pid.lower())
    db.add("jy_rylb", aac001=1, rylb="12")
    adapter = db.adapter(Agency.HRSS)
    assert adapter.fetch("person_category", person(pid), ["returning_migrant"]).values == {
        "returning_migrant": True
    }


def test_duplicate_aac001_merged(db: NativeDb) -> None:
    """Two aac001 for one person (the second stored as legacy 15 digits): spells, registrations
    and categories of both belong to the person."""
    db.add("ac01", aac001=1, aac002=P1)
    db.add("ac01", aac001=2, aac002=to_legacy15(P1))
    db.add("ab01", aab001=10, aab003=E1)
    db.add("ac02", aac001=1, aab001=10, aae030="202410", aae031="202412")
    db.add("ac02", aac001=2, aab001=10, aae030="202601", aac040=5500)
    db.add("jy_rylb", aac001=1, rylb="11")
    db.add("jy_rylb", aac001=2, rylb="13")
    db.add("jy_djxx", aac001=2, djlx="LH", djrq="20260105")
    adapter = db.adapter(Agency.HRSS)
    ins = adapter.fetch("person_insurance", person(P1), as_of=AS_OF).values
    assert ins["currently_insured"] is True and ins["contribution_base"] == 5500
    assert ins["insured_months_24m"] == 2 + 10  # 2024-11..12 and 2026-01..10
    cat = adapter.fetch("person_category", person(P1), as_of=AS_OF).values
    assert cat == {"veteran": True, "returning_migrant": False, "poverty_lifted": True}
    status = adapter.fetch("employment_status", person(P1), ["flexible_employment", "flexible_since"]).values
    assert status == {"flexible_employment": True, "flexible_since": dt.date(2026, 1, 5)}


def test_employment_status(db: NativeDb) -> None:
    db.add("ac01", aac001=1, aac002=P1)
    db.add("jy_djxx", aac001=1, djlx="SY", djrq="20250301", zxrq="20250601")  # cancelled
    db.add("jy_djxx", aac001=1, djlx="SY", djrq="20260201")
    db.add("jy_djxx", aac001=1, djlx="SY", djrq="20260110")
    db.add("jy_knry", aac001=1, knlb="02", rdrq="20250101", tcrq="20250901")  # exited
    db.add("jy_knry", aac001=1, knlb="04", rdrq="20260301")
    db.add("sy_dyff", aac001=1, ksny="202603", jsny="202611")
    adapter = db.adapter(Agency.HRSS)
    values = adapter.fetch("employment_status", person(P1), as_of=AS_OF).values
    assert values == {
        "registered_unemployed": True,
        "unemployed_since": dt.date(2026, 2, 1),
        "flexible_employment": False,
        "flexible_since": None,
        "hard_to_employ": True,
        "hard_to_employ_category": "low_income_household",
        "hard_to_employ_since": dt.date(2026, 3, 1),
        "receiving_unemployment_benefit": True,
    }
    assert adapter.evaluate("receives_unemployment_benefit", person(P1), as_of=AS_OF) is True
    assert adapter.evaluate("receives_unemployment_benefit", person(P1), as_of=dt.date(2026, 12, 1)) is False
    assert adapter.evaluate("hard_to_employ", person(P1)) is True
    assert adapter.evaluate("flexible_employment", person(P1)) is False
    assert adapter.evaluate("registered_unemployed", person(P1)) is True


def test_employer_insurance(db: NativeDb) -> None:
    db.add("ab01", aab001=10, aab003=spaced(E1))
    db.add("ac01", aac001=1, aac002=P1)
    db.add("ac01", aac001=2, aac002=P2)
    db.add("ac02", aac001=1, aab001=10, aae030="202601")  # open, hired in window
    db.add("ac02", aac001=2, aab001=10, aae030="202001")  # open, hired long ago
    db.add("ac02", aac001=2, aab001=10, aae030="201801", aae031="202512")  # left in window
    db.add("ac02", aac001=1, aab001=10, aae030="202511", aae031="202511")  # hired and left
    db.add("ac02", aac001=1, aab001=10, aae030="202511", aae031="202611")  # left in M0: outside
    adapter = db.adapter(Agency.HRSS)
    values = adapter.fetch("employer_insurance", employer(E1), as_of=AS_OF).values
    assert values == {"insured_headcount": 2, "hires_12m": 3, "departures_12m": 2}
    assert adapter.evaluate("employer_insured_headcount_at_least", employer(E1), {"n": 2}) is True
    assert adapter.evaluate("employer_insured_headcount_at_least", employer(E1), {"n": 3}) is False


def test_absent_subject(db: NativeDb) -> None:
    db.add("ac01", aac001=1, aac002=P1)
    adapter = db.adapter(Agency.HRSS)
    with pytest.raises(SubjectNotFound):
        adapter.fetch("person_insurance", person(P2))
    with pytest.raises(SubjectNotFound):
        adapter.fetch("employer_insurance", employer(E1))
    for name in ("currently_insured", "veteran", "hard_to_employ"):
        assert adapter.evaluate(name, person(P2)) is False
    assert adapter.evaluate("employer_insured_headcount_at_least", employer(E1), {"n": 0}) is False


def test_broken_identifier_is_not_found(db: NativeDb) -> None:
    """A transposed or missing number is not found by lookup (identity linkage resolves those)."""
    transposed = P1[:3] + P1[4] + P1[3] + P1[5:] if P1[3] != P1[4] else P1[:5] + P1[6] + P1[5] + P1[7:]
    db.add("ac01", aac001=1, aac002=transposed)
    db.add("ac01", aac001=2, aac002=None)
    adapter = db.adapter(Agency.HRSS)
    with pytest.raises(SubjectNotFound):
        adapter.fetch("person_category", person(P1))
