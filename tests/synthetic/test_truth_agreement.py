"""The generator's native databases and its truth agree as docs/canonical-datasets.md says.

A small reference reading of every canonical dataset straight from the native tables (found by the
stored forms of gateway.identity.forms, as an adapter finds them) is compared with the truth, for
every person and employer of a generated city with heavy dirt.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.civil_affairs.schema import CJLB_CODES, JTLB_CODES
from adapters.education.schema import LEVEL_CODES
from adapters.hrss.schema import KNLB_CODES, RYLB_CODES
from adapters.market_regulation.schema import ENTTYPE_KIND, REGSTATE_CODES, SCALE_CODES
from adapters.synthetic.dirt import DirtRates
from adapters.synthetic.generate import GenerateConfig, generate
from adapters.synthetic.truth import ID_FORMAT_DIRT
from gateway.identity import InvalidIdentifier, normalize_credit_code, normalize_resident_id
from gateway.identity.checksums import clean_identifier
from gateway.identity.forms import credit_code_stored_forms, resident_id_stored_forms

HEAVY = {
    agency: {"transposed": 0.04, "missing_id": 0.04, "fullwidth": 0.05, "spaces": 0.05}
    for agency in ("hrss", "education", "civil_affairs", "tax", "market_regulation")
}
HEAVY["hrss"].update(duplicate=0.1, legacy15=0.2, stale_address=0.2)
HEAVY["education"].update(passport=0.5)
for _a in ("hrss", "tax", "market_regulation"):
    HEAVY[_a].update(code_lower=0.1, code_spaces=0.1, code_fullwidth=0.1)

PERSON_TABLES = {  # table -> (agency, key column, id column, name column)
    "ac01": ("hrss", "aac001", "aac002", "aac003"),
    "graduate_record": ("education", "record_id", "cert_no", "student_name"),
    "T_JZ_CY": ("civil_affairs", "CYBH", "SFZH", "XM"),
    "T_CJ_BT": ("civil_affairs", "BTBH", "SFZH", "XM"),
    "gs_kjmx": ("tax", "id", "zzhm", "xm"),
    "E_BASEINFO": ("market_regulation", "PRIPID", "OPER_CERNO", "OPER_NAME"),
}
EMPLOYER_TABLES = {
    "ab01": ("hrss", "aab001", "aab003", "aab004"),
    "dj_nsrxx": ("tax", "djxh", "nsrsbh", "nsrmc"),
    "E_BASEINFO": ("market_regulation", "PRIPID", "UNISCID", "ENTNAME"),
}
CYRS = {"1": "0-9", "2": "10-19", "3": "20-99", "4": "100-299", "5": "300-999", "6": "1000+"}
YYSR = {"1": "0-99", "2": "100-499", "3": "500-1999", "4": "2000-19999", "5": "20000-39999", "6": "40000+"}
BAND_BOUNDS = {
    "0-9": (0, 9),
    "10-19": (10, 19),
    "20-99": (20, 99),
    "100-299": (100, 299),
    "300-999": (300, 999),
    "1000+": (1000, 10**9),
}
RANK = {"associate": 1, "bachelor": 2, "master": 3, "doctorate": 4}


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("city")
    rates = DirtRates.with_overrides(HEAVY)
    generate(GenerateConfig(persons=4000, employers=400, seed=20261101, out=out, dirt=rates, workers=2))
    return out


def _connect(city: Path, name: str) -> sqlite3.Connection:
    conn = sqlite3.connect(city / f"{name}.sqlite")
    conn.row_factory = sqlite3.Row
    return conn


def _month(text: str) -> int:
    digits = text.replace("-", "").replace("/", "")
    return int(digits[:4]) * 12 + int(digits[4:6]) - 1


def _iso(text: str) -> str:
    """'YYYYMMDD' / 'YYYY/MM/DD' / 'YYYY-MM-DD' as ISO."""
    digits = text.replace("-", "").replace("/", "")
    return f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}"


def _in(column: str, values: list[str]) -> tuple[str, list[str]]:
    return f"{column} IN ({','.join('?' * len(values))})", values


def _months(spans: Iterator[tuple[int, int]], lo: int, hi: int) -> int:
    covered: set[int] = set()
    for a, b in spans:
        covered.update(range(max(a, lo), min(b, hi) + 1))
    return len(covered)


class Truth:
    def __init__(self, city: Path) -> None:
        self.db = _connect(city, "truth")
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        self.as_of = dt.date.fromisoformat(meta["as_of"])
        self.m0 = self.as_of.year * 12 + self.as_of.month - 1
        self.persons = {r["person_id"]: dict(r) for r in self.db.execute("SELECT * FROM person")}
        self.employers = {r["credit_code"]: dict(r) for r in self.db.execute("SELECT * FROM employer")}
        self.households = {r["household_id"]: dict(r) for r in self.db.execute("SELECT * FROM household")}
        self.jobs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.staff: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in self.db.execute("SELECT * FROM employment ORDER BY id"):
            self.jobs[r["person_id"]].append(dict(r))
            self.staff[r["credit_code"]].append(dict(r))
        self.links = [dict(r) for r in self.db.execute("SELECT * FROM record_link")]
        self.found: dict[tuple[str, str], set[str]] = defaultdict(set)  # (agency, table) -> subjects
        self.linked: dict[tuple[str, str], set[str]] = defaultdict(set)
        for link in self.links:
            key = (link["agency"], link["table_name"])
            self.linked[key].add(link["subject_id"])
            if link["id_recoverable"]:
                self.found[key].add(link["subject_id"])

    def end_month(self, job: dict[str, Any]) -> int:
        return _month(job["end_date"]) if job["end_date"] else self.m0 - 1


def test_every_native_row_is_linked_and_every_link_points_at_a_row(city: Path) -> None:
    truth = Truth(city)
    by_table: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for link in truth.links:
        key = (link["agency"], link["table_name"], link["subject_kind"])
        assert link["native_key"] not in by_table[key], f"two links for one row of {key}"
        by_table[key][link["native_key"]] = link
        subjects = truth.persons if link["subject_kind"] == "person" else truth.employers
        assert link["subject_id"] in subjects
    for kind, tables in (("person", PERSON_TABLES), ("employer", EMPLOYER_TABLES)):
        for table, (agency, key, id_col, name_col) in tables.items():
            db = _connect(city, agency)
            where = " WHERE ENTTYPE = '9600'" if table == "E_BASEINFO" and kind == "person" else ""
            rows = db.execute(f'SELECT "{key}", "{id_col}", "{name_col}" FROM "{table}"{where}').fetchall()
            links = by_table[(agency, table, kind)]
            assert len(rows) == len(links) > 0, table
            for k, stored, name in rows:
                link = links[str(k)]
                assert link["stored_id"] == stored
                assert link["stored_name"] == name


def test_identifiers_valid_and_dirt_as_recorded(city: Path) -> None:
    truth = Truth(city)
    for pid, p in truth.persons.items():
        assert normalize_resident_id(pid, today=truth.as_of) == pid
        assert int(pid[16]) % 2 == (p["gender"] == "M")
        assert _iso(pid[6:14]) == p["birth_date"]
    for code in truth.employers:
        assert normalize_credit_code(code) == code
    all_forms = {f for pid in truth.persons for f in resident_id_stored_forms(pid)}
    kinds: Counter[str] = Counter()
    for link in truth.links:
        stored, subject, dirt = (
            link["stored_id"],
            link["subject_id"],
            set(filter(None, link["dirt"].split(","))),
        )
        kinds.update(dirt)
        if link["subject_kind"] == "employer":
            assert link["id_recoverable"] == 1
            assert dirt <= {"lower_x", "fullwidth", "spaces"}
            assert stored in credit_code_stored_forms(subject)
            assert normalize_credit_code(stored) == subject
            continue
        if link["id_recoverable"]:
            assert stored in resident_id_stored_forms(subject)
            assert normalize_resident_id(stored, today=truth.as_of) == subject
            assert ("legacy15" in dirt) == (len(clean_identifier(stored)) == 15)
            assert ("lower_x" in dirt) == stored.endswith(("x", "ｘ"))
            assert ("fullwidth" in dirt) == (not stored.isascii())
            assert ("spaces" in dirt) == (len(stored.split()) > 1)
        else:
            assert dirt & {"transposed", "missing_id"} and not dirt & set(ID_FORMAT_DIRT)
            assert stored not in all_forms  # found by nobody's number
            if "missing_id" in dirt:
                assert stored is None or link["table_name"] == "graduate_record"
            else:
                with pytest.raises(InvalidIdentifier):
                    normalize_resident_id(stored, today=truth.as_of)
    assert {"legacy15", "lower_x", "fullwidth", "spaces", "transposed", "missing_id", "duplicate"} <= set(
        kinds
    )
    assert {"name_spaces", "homophone", "stale_address"} <= set(kinds)


def test_generator_guarantees(city: Path) -> None:
    truth = Truth(city)
    recoverable: dict[tuple[str, str], set[int]] = defaultdict(set)
    for link in truth.links:
        if link["subject_kind"] == "person":
            recoverable[(link["agency"], link["subject_id"])].add(link["id_recoverable"])
        if "duplicate" in link["dirt"]:
            assert link["agency"] == "hrss" and link["id_recoverable"] == 1
    assert all(len(v) == 1 for v in recoverable.values()), "a person's rows in an agency: all found or none"
    hrss = _connect(city, "hrss")
    numbers: dict[str, list[int]] = defaultdict(list)
    for link in truth.links:
        if link["table_name"] == "ac01":
            numbers[link["subject_id"]].append(int(link["native_key"]))
    dups = {pid: nos for pid, nos in numbers.items() if len(nos) > 1}
    assert dups and all(len(nos) == 2 for nos in dups.values())
    split = 0
    for nos in dups.values():
        used = {r[0] for r in hrss.execute(f"SELECT aac001 FROM ac02 WHERE aac001 IN ({nos[0]}, {nos[1]})")}
        split += len(used) == 2
    assert split > 0, "spells of duplicated persons are split between their numbers"
    for table in ("ac02", "jy_djxx", "jy_knry", "sy_dyff", "jy_rylb"):
        orphans = hrss.execute(f"SELECT COUNT(*) FROM {table} WHERE aac001 NOT IN (SELECT aac001 FROM ac01)")
        assert orphans.fetchone()[0] == 0
    assert (
        hrss.execute("SELECT COUNT(*) FROM ac02 WHERE aab001 NOT IN (SELECT aab001 FROM ab01)").fetchone()[0]
        == 0
    )
    tax = _connect(city, "tax")
    for (agent,) in tax.execute("SELECT DISTINCT kjywr_nsrsbh FROM gs_kjmx"):
        assert normalize_credit_code(agent) in truth.employers
    # Open relations only at active employers; closed ones only while the employer was registered.
    for code, jobs in truth.staff.items():
        employer = truth.employers[code]
        for job in jobs:
            assert job["start_date"] >= employer["registered_on"]
            if job["end_date"] is None:
                assert employer["status"] == "active"
    open_jobs = Counter(pid for pid, jobs in truth.jobs.items() for j in jobs if j["end_date"] is None)
    assert max(open_jobs.values()) <= 2 and sum(v == 2 for v in open_jobs.values()) < 0.1 * len(open_jobs)


def test_hrss_datasets_agree(city: Path) -> None:
    truth = Truth(city)
    db = _connect(city, "hrss")
    m0 = truth.m0
    units = {r["aab001"]: normalize_credit_code(r["aab003"]) for r in db.execute("SELECT * FROM ab01")}
    checked = 0
    for pid, person in truth.persons.items():
        clause, args = _in("aac002", resident_id_stored_forms(pid))
        numbers = [r[0] for r in db.execute(f"SELECT aac001 FROM ac01 WHERE {clause}", args)]
        assert bool(numbers) == (pid in truth.found[("hrss", "ac01")])
        jobs = [j for j in truth.jobs[pid] if j["insured"]]
        if not numbers:
            facts = [
                person[k]
                for k in (
                    "registered_unemployed",
                    "flexible_worker",
                    "hard_to_employ",
                    "unemployment_benefit",
                    "veteran",
                    "returning_migrant",
                    "poverty_lifted",
                )
            ]
            if jobs or any(facts):
                assert pid in truth.linked[("hrss", "ac01")]  # held, but under a broken number
            continue
        checked += 1
        keys = ",".join(map(str, numbers))
        spells = db.execute(f"SELECT * FROM ac02 WHERE aac001 IN ({keys}) ORDER BY id").fetchall()
        open_spells = [s for s in spells if s["aae031"] == ""]
        open_jobs = [j for j in jobs if j["end_date"] is None]
        assert len(spells) == len(jobs) and len(open_spells) == len(open_jobs)
        if open_jobs:
            latest_spell = max(open_spells, key=lambda s: (s["aae030"], s["id"]))
            latest_job = max(open_jobs, key=lambda j: (j["start_date"], j["id"]))
            assert units[latest_spell["aab001"]] == latest_job["credit_code"]
            assert latest_spell["aac040"] == latest_job["monthly_wage"]
        native_months = _months(
            ((_month(s["aae030"]), _month(s["aae031"]) if s["aae031"] else m0 - 1) for s in spells),
            m0 - 24,
            m0 - 1,
        )
        true_months = _months(((_month(j["start_date"]), truth.end_month(j)) for j in jobs), m0 - 24, m0 - 1)
        assert native_months == true_months
        regs = db.execute(f"SELECT * FROM jy_djxx WHERE aac001 IN ({keys}) AND zxrq = ''").fetchall()
        for djlx, flag, since in (
            ("SY", "registered_unemployed", "unemployed_since"),
            ("LH", "flexible_worker", "flexible_since"),
        ):
            valid = [r for r in regs if r["djlx"] == djlx]
            assert bool(valid) == bool(person[flag])
            if valid:
                assert _iso(max(r["djrq"] for r in valid)) == person[since]
        certs = db.execute(f"SELECT * FROM jy_knry WHERE aac001 IN ({keys}) AND tcrq = ''").fetchall()
        assert bool(certs) == bool(person["hard_to_employ"])
        if certs:
            latest = max(certs, key=lambda r: r["rdrq"])
            assert KNLB_CODES[latest["knlb"]] == person["hard_to_employ_category"]
            assert _iso(latest["rdrq"]) == person["hard_to_employ_since"]
        month = f"{m0 // 12:04d}{m0 % 12 + 1:02d}"
        paid = db.execute(
            f"SELECT COUNT(*) FROM sy_dyff WHERE aac001 IN ({keys}) AND ksny <= ? AND jsny >= ?",
            (month, month),
        ).fetchone()[0]
        assert bool(paid) == bool(person["unemployment_benefit"])
        cats = {RYLB_CODES[r[0]] for r in db.execute(f"SELECT rylb FROM jy_rylb WHERE aac001 IN ({keys})")}
        for cat in ("veteran", "returning_migrant", "poverty_lifted"):
            assert (cat in cats) == bool(person[cat])
    assert checked > 1000
    for code in truth.employers:
        clause, args = _in("aab003", credit_code_stored_forms(code))
        rows = db.execute(f"SELECT aab001 FROM ab01 WHERE {clause}", args).fetchall()
        jobs = [j for j in truth.staff[code] if j["insured"]]
        if not rows:
            assert not jobs
            continue
        spells = db.execute("SELECT * FROM ac02 WHERE aab001 = ?", (rows[0][0],)).fetchall()
        assert sum(s["aae031"] == "" for s in spells) == sum(j["end_date"] is None for j in jobs)
        window = range(m0 - 12, m0)
        assert sum(_month(s["aae030"]) in window for s in spells) == sum(
            _month(j["start_date"]) in window for j in jobs
        )
        assert sum(bool(s["aae031"]) and _month(s["aae031"]) in window for s in spells) == sum(
            bool(j["end_date"]) and _month(j["end_date"]) in window for j in jobs
        )


def test_education_and_civil_affairs_agree(city: Path) -> None:
    truth = Truth(city)
    edu = _connect(city, "education")
    civil = _connect(city, "civil_affairs")
    recent = 0
    for pid, person in truth.persons.items():
        clause, args = _in("cert_no", resident_id_stored_forms(pid))
        records = edu.execute(
            f"SELECT * FROM graduate_record WHERE cert_type = '1' AND {clause}", args
        ).fetchall()
        assert bool(records) == (pid in truth.found[("education", "graduate_record")])
        if records:
            latest = max(records, key=lambda r: (r["graduation_date"], r["record_id"]))
            assert LEVEL_CODES[latest["education_level"]] == person["education_level"]
            assert latest["school_code"] == person["school_code"]
            assert latest["major"] == person["major"]
            assert latest["graduation_date"] == person["graduation_date"]
            assert RANK[person["education_level"]] >= 1
            recent += person["graduation_date"] >= f"{truth.as_of.year - 5}"
        elif person["education_level"]:
            assert pid in truth.linked[("education", "graduate_record")]

        clause, args = _in("SFZH", resident_id_stored_forms(pid))
        members = civil.execute(
            f"SELECT m.JTBH, j.* FROM T_JZ_CY m JOIN T_JZ_JT j ON j.JTBH = m.JTBH WHERE m.{clause}", args
        ).fetchall()
        current = [m for m in members if m["TBRQ"] is None]
        found = pid in truth.found[("civil_affairs", "T_JZ_CY")]
        if current:
            household = truth.households[person["household_id"]]
            (row,) = current
            assert JTLB_CODES[row["JTLB"]] == household["category"]
            assert _iso(row["SPRQ"]) == household["approved_on"]
            assert (row["LJYJT"] == "Y") == bool(household["zero_employment"])
            size = civil.execute("SELECT COUNT(*) FROM T_JZ_CY WHERE JTBH = ?", (row["JTBH"],)).fetchone()[0]
            assert size == household["size"]
        elif found:
            assert person["household_id"] is None  # found only in a former household
        elif person["household_id"]:
            assert pid in truth.linked[("civil_affairs", "T_JZ_CY")]
        subsidies = civil.execute(f"SELECT * FROM T_CJ_BT WHERE {clause}", args).fetchall()
        if subsidies:
            (row,) = subsidies
            assert CJLB_CODES[row["CJLB"]] == person["disability_type"]
            assert int(row["CJDJ"]) == person["disability_grade"]
            assert _iso(row["KSRQ"]) == person["disability_since"]
        elif person["disability_type"]:
            assert pid in truth.linked[("civil_affairs", "T_CJ_BT")]
    assert recent > 50
    sizes = Counter(h["size"] for h in truth.households.values())
    assert set(sizes) <= {1, 2, 3, 4, 5} and len(sizes) >= 3


def test_tax_and_market_regulation_agree(city: Path) -> None:
    truth = Truth(city)
    tax = _connect(city, "tax")
    market = _connect(city, "market_regulation")
    m0 = truth.m0
    for code, employer in truth.employers.items():
        clause, args = _in("nsrsbh", credit_code_stored_forms(code))
        payer = tax.execute(f"SELECT * FROM dj_nsrxx WHERE {clause}", args).fetchall()
        if payer:
            assert CYRS[payer[0]["cyrs_dm"]] == employer["headcount_band"]
            assert YYSR[payer[0]["yysr_dm"]] == employer["revenue_band"]
        headcount = sum(j["end_date"] is None for j in truth.staff[code])
        lo, hi = BAND_BOUNDS[employer["headcount_band"]]
        assert lo <= headcount <= hi
        clause, args = _in("UNISCID", credit_code_stored_forms(code))
        (reg,) = market.execute(f"SELECT * FROM E_BASEINFO WHERE {clause}", args).fetchall()
        assert reg["ENTNAME"] == employer["name"]
        assert ENTTYPE_KIND[reg["ENTTYPE"]] == employer["entity_type"]
        assert SCALE_CODES[reg["SCALE"]] == employer["size_class"]
        assert REGSTATE_CODES[reg["REGSTATE"]] == employer["status"]
        assert _iso(str(reg["ESTDATE"])) == employer["registered_on"]
        assert reg["REGORG"] == employer["district_code"]
        assert reg["INDUSTRYPHY"] == employer["industry"]
        if employer["entity_type"] == "individual_business":
            assert employer["size_class"] == "micro" and employer["operator_person_id"]
    operated: dict[str, list[str]] = defaultdict(list)
    for code, employer in truth.employers.items():
        if employer["operator_person_id"]:
            operated[employer["operator_person_id"]].append(code)
    for pid in truth.persons:
        forms = resident_id_stored_forms(pid)
        clause, args = _in("zzhm", forms)
        rows = tax.execute(f"SELECT * FROM gs_kjmx WHERE zzlx = '201' AND {clause}", args).fetchall()
        jobs = [j for j in truth.jobs[pid] if j["taxed"]]
        assert bool(rows) == (pid in truth.found[("tax", "gs_kjmx")])
        if rows:
            assert len(rows) == len(jobs)
            agents = sorted(
                {
                    normalize_credit_code(r["kjywr_nsrsbh"])
                    for r in rows
                    if _month(r["sssq_q"]) <= m0 - 1 <= _month(r["sssq_z"])
                }
            )
            true_agents = sorted(
                {j["credit_code"] for j in jobs if _month(j["start_date"]) <= m0 - 1 <= truth.end_month(j)}
            )
            assert agents == true_agents
            native = _months(((_month(r["sssq_q"]), _month(r["sssq_z"])) for r in rows), m0 - 12, m0 - 1)
            true = _months(((_month(j["start_date"]), truth.end_month(j)) for j in jobs), m0 - 12, m0 - 1)
            assert native == true
            assert {r["ysre"] for r in rows} == {j["monthly_wage"] * 100 for j in jobs}
        clause, args = _in("OPER_CERNO", forms)
        businesses = market.execute(f"SELECT * FROM E_BASEINFO WHERE {clause}", args).fetchall()
        if businesses:
            active = sorted(
                normalize_credit_code(b["UNISCID"])
                for b in businesses
                if b["ENTTYPE"] == "9600" and b["REGSTATE"] == "1"
            )
            assert active == sorted(c for c in operated[pid] if truth.employers[c]["status"] == "active")
        elif operated[pid]:
            assert pid in truth.linked[("market_regulation", "E_BASEINFO")]
