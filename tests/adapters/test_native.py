"""Native formats and mappings as pure functions: dates, months, open ends, flags, code lists,
bands, windows, and each agency's rows -> canonical record."""

from __future__ import annotations

import datetime as dt

import pytest

from adapters import base
from adapters.base import NativeDataError
from adapters.civil_affairs import adapter as civil
from adapters.contract import SubjectKind
from adapters.education import adapter as education
from adapters.hrss import adapter as hrss
from adapters.market_regulation import adapter as market
from adapters.tax import adapter as tax
from adapters.tax.schema import CYRS_DM, YYSR_DM
from tests.adapters.nativedb import employer_id, person_id

D = dt.date
AS_OF = D(2026, 11, 1)
M = base.month_index


# ---- dates and months ----------------------------------------------------------------------


def test_parse_yyyymmdd() -> None:
    assert base.parse_yyyymmdd("20240229") == D(2024, 2, 29)
    for bad in ("20230229", "2024-02-29", "2024022", "", None, 20240229, "２０２４０２２９"):
        with pytest.raises(NativeDataError):
            base.parse_yyyymmdd(bad, "ac01.aac006")


def test_parse_iso_and_slash_dates() -> None:
    assert base.parse_iso_date("2025-06-30") == D(2025, 6, 30)
    assert base.parse_slash_date("2025/06/30") == D(2025, 6, 30)
    bad: object
    for bad in ("2025/06/30", "2025-6-30", "2025-06-31", "20250630", None):
        with pytest.raises(NativeDataError):
            base.parse_iso_date(bad)
    for bad in ("2025-06-30", "2025/13/01", "2025/06/3", 20250630):
        with pytest.raises(NativeDataError):
            base.parse_slash_date(bad)


def test_parse_int_yyyymmdd() -> None:
    assert base.parse_int_yyyymmdd(20180315) == D(2018, 3, 15)
    for bad in (2018031, 20181315, "20180315", True, None, 20180230):
        with pytest.raises(NativeDataError):
            base.parse_int_yyyymmdd(bad)


def test_months() -> None:
    assert base.parse_yyyymm("202401") == M(2024, 1) == 2024 * 12
    assert base.parse_dash_month("2024-12") == M(2024, 12)
    assert base.month_of(D(2026, 11, 30)) - base.parse_yyyymm("202512") == 11
    for bad in ("202413", "2024-01", "24011", ""):
        with pytest.raises(NativeDataError):
            base.parse_yyyymm(bad)
    for bad in ("202401", "2024/01", "2024-00"):
        with pytest.raises(NativeDataError):
            base.parse_dash_month(bad)


def test_open_ends_empty_string_and_null() -> None:
    assert base.is_open("") and base.is_open(None) and base.is_open("  ")
    assert not base.is_open("20240101")
    assert base.open_end_month("") is None
    assert base.open_end_month("202403") == M(2024, 3)


def test_flags_codes_and_bands() -> None:
    assert base.parse_yn("Y") is True and base.parse_yn("N") is False
    with pytest.raises(NativeDataError):
        base.parse_yn("y")
    assert base.decode({"01": "a"}, "01", "col") == "a"
    with pytest.raises(NativeDataError, match="col: unknown code"):
        base.decode({"01": "a"}, "1", "col")
    assert base.band_label((10, 19)) == "10-19" and base.band_label((1000, None)) == "1000+"
    assert base.band_upper("10-19") == 19 and base.band_upper("40000+") is None
    assert tax.band(CYRS_DM, "6", "c") == "1000+" and tax.band(YYSR_DM, "4", "c") == "2000-19999"
    with pytest.raises(NativeDataError):
        tax.band(CYRS_DM, "7", "c")


def test_windows_and_years() -> None:
    assert base.months_covered(M(2024, 1), M(2024, 3), (M(2024, 2), M(2024, 12))) == {M(2024, 2), M(2024, 3)}
    assert base.months_covered(M(2026, 9), None, (M(2025, 11), M(2026, 10))) == {M(2026, 9), M(2026, 10)}
    assert base.months_covered(M(2027, 1), None, (M(2025, 11), M(2026, 10))) == set()
    assert base.years_before(D(2028, 2, 29), 1) == D(2027, 2, 28)
    assert base.years_before(D(2026, 11, 1), 0) == D(2026, 11, 1)
    assert hrss.window(AS_OF, 24) == (M(2024, 11), M(2026, 10))


def test_identifier_normalisation_and_forms() -> None:
    p, e = person_id(5), employer_id(5)
    assert base.normalize_person_id(f" {p[:6]} {p[6:14]} {p[14:]}") == p
    assert base.normalize_person_id(p[:6] + p[8:17]) == p  # legacy 15 digits
    assert base.normalize_person_id(p[:16] + ("1" if p[16] != "1" else "2") + p[17]) is None
    assert base.normalize_person_id(None) is None and base.normalize_person_id("") is None
    assert base.normalize_employer_id(e.lower()) == e and base.normalize_employer_id("x") is None
    assert p in base.stored_forms(SubjectKind.PERSON, p)


# ---- hrss ----------------------------------------------------------------------------------


def spell(i: int, first: str, last: str = "", base_: int = 5000, unit: str | None = None) -> hrss.Spell:
    return hrss.spell_from_row(i, first, last, base_, unit)


def test_hrss_person_insurance_mapping() -> None:
    e1, e2 = employer_id(1), employer_id(2)
    record = hrss.person_insurance(
        [
            spell(1, "202001", "202412", 3000, e1),  # closed: 2 months of the window
            spell(2, "202502", "", 4000, e1.lower()),  # open, older start
            spell(3, "202605", "", 8000, e2),  # open, latest start: current
        ],
        AS_OF,
    )
    assert record.model_dump() == {
        "currently_insured": True,
        "current_employer": e2,
        "insured_months_24m": 2 + 21,  # 2025-02 .. 2026-10 (overlap counted once)
        "contribution_base": 8000,
    }
    none = hrss.person_insurance([], AS_OF)
    assert (none.currently_insured, none.current_employer, none.contribution_base) == (False, None, None)
    unreadable = hrss.person_insurance([spell(1, "202502", "", 4000, "garbage")], AS_OF)
    assert unreadable.currently_insured and unreadable.current_employer is None
    with pytest.raises(NativeDataError, match=r"ac02\.aae030"):
        spell(1, "2025-02")


def test_hrss_employer_insurance_mapping() -> None:
    record = hrss.employer_insurance(
        [spell(1, "202511"), spell(2, "202510"), spell(3, "202101", "202610"), spell(4, "202101", "202511")],
        AS_OF,
    )
    # window 2025-11 .. 2026-10: hires 202511 (spell 1); departures 202610, 202511
    assert record.model_dump() == {"insured_headcount": 2, "hires_12m": 1, "departures_12m": 2}


def test_hrss_employment_status_mapping() -> None:
    regs = [
        hrss.Registration(1, "SY", D(2025, 1, 1), cancelled=True),
        hrss.Registration(2, "LH", D(2025, 5, 1), cancelled=False),
        hrss.Registration(3, "LH", D(2024, 5, 1), cancelled=False),
    ]
    certs = [
        hrss.Certification(1, "05", D(2025, 1, 1), exited=False),
        hrss.Certification(2, "03", D(2025, 1, 1), False),
    ]
    benefits = [hrss.Benefit(M(2026, 1), M(2026, 10))]
    record = hrss.employment_status(regs, certs, benefits, AS_OF)
    assert record.model_dump() == {
        "registered_unemployed": False,
        "unemployed_since": None,
        "flexible_employment": True,
        "flexible_since": D(2025, 5, 1),
        "hard_to_employ": True,
        "hard_to_employ_category": "disabled",  # same date: the larger id
        "hard_to_employ_since": D(2025, 1, 1),
        "receiving_unemployment_benefit": False,  # paid through 2026-10, as_of month 2026-11
    }
    with pytest.raises(NativeDataError, match="knlb"):
        hrss.employment_status([], [hrss.Certification(1, "99", D(2025, 1, 1), False)], [], AS_OF)


def test_hrss_person_category_mapping() -> None:
    assert hrss.person_category(["13", "99", "11"]).model_dump() == {
        "veteran": True,
        "returning_migrant": False,
        "poverty_lifted": True,
    }


# ---- education, civil affairs, tax, market regulation ----------------------------------------


def test_education_mapping() -> None:
    rows = [
        education.GraduateRow(5, "31", "10055", "南开大学", "数学", "2020-06-30"),
        education.GraduateRow(4, "12", "10056", "天津大学", "力学", "2023-06-30"),
    ]
    record = education.graduation(rows)
    assert record is not None and record.level == "master" and record.graduation_date == D(2023, 6, 30)
    assert education.graduation([]) is None
    with pytest.raises(NativeDataError, match="education_level"):
        education.graduation([education.GraduateRow(1, "21", "1", "s", "m", "2020-06-30")])
    assert education.LEVEL_RANK == {"associate": 1, "bachelor": 2, "master": 3, "doctorate": 4}


def test_civil_affairs_mapping() -> None:
    record = civil.assistance(
        [civil.Household("H1", "03", "2024/01/02", "N", 2), civil.Household("H2", "04", "2025/01/02", "Y", 5)]
    )
    assert record is not None
    assert record.model_dump() == {
        "household_category": "rigid_expenditure",
        "approved_on": D(2025, 1, 2),
        "zero_employment_household": True,
        "household_size": 5,
    }
    assert civil.assistance([]) is None
    with pytest.raises(NativeDataError, match="LJYJT"):
        civil.assistance([civil.Household("H1", "01", "2024/01/02", "?", 1)])
    d = civil.disability([civil.Subsidy(1, "7", "4", "2019/09/09")])
    assert d is not None and d.model_dump() == {
        "disability_type": "multiple",
        "disability_grade": 4,
        "subsidy_since": D(2019, 9, 9),
    }
    with pytest.raises(NativeDataError, match="CJDJ"):
        civil.parse_grade("5")


def test_tax_mapping() -> None:
    assert tax.employer_tax([]) is None
    t = tax.employer_tax([tax.Taxpayer(1, "1", "1", 100), tax.Taxpayer(2, "5", "3", 200)])
    assert t is not None and t.model_dump() == {"headcount_band": "300-999", "revenue_band": "500-1999"}
    assert tax.headcount_at_most(t, 999) and not tax.headcount_at_most(t, 998)
    e1, e2 = employer_id(1), employer_id(2)
    w = tax.income_withholding(
        [
            tax.Withholding(e2, M(2026, 1), M(2026, 10)),
            tax.Withholding(e1, M(2025, 6), M(2026, 10)),
            tax.Withholding(e1, M(2025, 1), M(2025, 3)),
            tax.Withholding(None, M(2026, 10), M(2026, 10)),  # agent code does not normalise
        ],
        AS_OF,
    )
    assert w is not None and w.model_dump() == {
        "current_withholding_agents": [e1, e2],
        "months_withheld_12m": 12,
    }


def test_market_regulation_mapping() -> None:
    e1 = employer_id(1)
    row = market.Entity("P1", e1, "某公司", "5100", 20200101, "3", "120116", "C", "M", 5)
    newer = market.Entity("P0", e1, "某公司(更名)", "5100", 20200101, "1", "120116", "C", "L", 9)
    record = market.business_registration([row, newer])
    assert record is not None and record.name == "某公司(更名)" and record.status == "active"
    assert record.size_class == "large" and record.entity_type == "enterprise"
    with pytest.raises(NativeDataError, match="REGORG"):
        market.parse_district("和平区")
    with pytest.raises(NativeDataError, match="INDUSTRYPHY"):
        market.parse_industry("Z")
    pb = market.person_business(
        [(e1.lower(), "9600", "1"), (employer_id(2), "9600", "2"), (employer_id(3), "1100", "1")]
    )
    assert pb is not None and pb.individual_businesses == [e1]
    assert market.person_business([]) is None
