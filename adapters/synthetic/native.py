"""Per-agency row builders: the latent world as each agency's native tables, with dirt, plus the
record_link rows (one per person/employer-keyed native row) that say whose each row truly is.

Rows are built as column arrays; they become Python lists (``tolist``) only for the writer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Table

from adapters.civil_affairs import schema as ca
from adapters.education import schema as ed
from adapters.hrss import schema as hr
from adapters.market_regulation import schema as mr
from adapters.synthetic import dates, dirt
from adapters.synthetic.dirt import (
    BIT,
    NO_BREAK,
    CivilAffairsDirt,
    EducationDirt,
    HrssDirt,
    MarketRegulationDirt,
    Mask,
    TaxDirt,
)
from adapters.synthetic.education import LEVELS
from adapters.synthetic.employers import ACTIVE, REGSTATE
from adapters.synthetic.employment import KNLB, RYLB
from adapters.synthetic.geography import UNIVERSITIES
from adapters.synthetic.population import DISTRICT_CODES_INT, DISTRICT_NAMES, stale_addresses
from adapters.synthetic.sampling import zfill
from adapters.synthetic.world import World
from adapters.tax import schema as tx

I64 = NDArray[np.int64]
Bools = NDArray[np.bool_]
Column = Sequence[Any]


@dataclass
class TableRows:
    table: Table
    columns: list[Column]  # in the table's column order

    @property
    def count(self) -> int:
        return len(self.columns[0]) if self.columns else 0


@dataclass
class Links:
    """record_link rows, column by column."""

    agency: str
    table_name: list[str] = field(default_factory=list)
    native_key: list[str] = field(default_factory=list)
    subject_kind: list[str] = field(default_factory=list)
    subject_id: list[str] = field(default_factory=list)
    stored_id: list[str | None] = field(default_factory=list)
    stored_name: list[str | None] = field(default_factory=list)
    dirt: list[str] = field(default_factory=list)
    id_recoverable: list[int] = field(default_factory=list)

    def add(
        self,
        table: str,
        keys: Sequence[Any],
        kind: str,
        subject_ids: Sequence[str],
        stored_ids: Sequence[str | None],
        stored_names: Sequence[str | None],
        mask: Mask,
    ) -> None:
        k = len(keys)
        self.table_name += [table] * k
        self.native_key += [str(x) for x in keys]
        self.subject_kind += [kind] * k
        self.subject_id += list(subject_ids)
        self.stored_id += list(stored_ids)
        self.stored_name += list(stored_names)
        self.dirt += dirt.mask_strings(mask)
        self.id_recoverable += ((mask & dirt.BREAKING_MASK) == 0).astype(np.int64).tolist()

    def columns(self) -> list[Column]:
        k = len(self.table_name)
        return [
            [self.agency] * k,
            self.table_name,
            self.native_key,
            self.subject_kind,
            self.subject_id,
            self.stored_id,
            self.stored_name,
            self.dirt,
            self.id_recoverable,
        ]


def stamps(rng: np.random.Generator, event: I64, as_of: int, within_days: int = 30) -> I64:
    """Epoch seconds when a row was handled: within ``within_days`` after its event day, before as_of."""
    event = np.minimum(event, as_of - 1)
    span = np.clip(as_of - event, 1, within_days) * 86400
    out: I64 = event * 86400 + np.floor(rng.random(len(event)) * span).astype(np.int64)
    return out


def _breaking_by_person(rng: np.random.Generator, persons: I64, n: int, rates: Any) -> NDArray[np.int8]:
    """The identity-breaking kind of each person (indexed by person), drawn for ``persons``."""
    out = np.zeros(n, dtype=np.int8)
    out[persons] = dirt.draw_breaking(rng, len(persons), float(rates.transposed), float(rates.missing_id))
    return out


def _ids(world: World, persons: I64) -> list[str]:
    out: list[str] = world.population.ids[persons].tolist()
    return out


def _names(world: World, persons: I64) -> list[str]:
    out: list[str] = world.population.names[persons].tolist()
    return out


# ----------------------------------------------------------------------------------------------
# hrss
# ----------------------------------------------------------------------------------------------


def build_hrss(world: World, rates: HrssDirt, rng: np.random.Generator) -> tuple[list[TableRows], Links]:
    pop, em, emp = world.population, world.employment, world.employers
    n, as_of = pop.n, pop.as_of
    links = Links("hrss")
    persons = np.flatnonzero(em.in_hrss).astype(np.int64)
    k = len(persons)
    breaking = dirt.draw_breaking(rng, k, float(rates.transposed), float(rates.missing_id))
    dup = (breaking == NO_BREAK) & (rng.random(k) < float(rates.duplicate))
    number = np.empty(k, dtype=np.int64)
    number[rng.permutation(k)] = 12_000_001 + np.arange(k)
    n_dup = int(dup.sum())
    dup_number = 12_000_001 + k + np.arange(n_dup)
    primary_of = np.full(n, -1, dtype=np.int64)
    primary_of[persons] = number
    dup_of = np.full(n, -1, dtype=np.int64)
    dup_of[persons[dup]] = dup_number

    row_person = np.concatenate([persons, persons[dup]])
    row_number = np.concatenate([number, dup_number])
    row_break = np.concatenate([breaking, breaking[dup]])
    row_dup = np.concatenate([np.zeros(k, bool), np.ones(n_dup, bool)])
    order = np.argsort(row_number, kind="stable")
    row_person, row_number, row_break, row_dup = (
        row_person[order],
        row_number[order],
        row_break[order],
        row_dup[order],
    )
    r = len(row_person)
    true_ids = _ids(world, row_person)
    stored, idmask = dirt.person_ids(rng, true_ids, row_break, rates)
    stored_names, namemask = dirt.person_names(rng, _names(world, row_person), rates)
    stale = rng.random(r) < float(rates.stale_address)
    district = pop.district[row_person].copy()
    address = pop.address[row_person].copy()
    old_d, old_a = stale_addresses(rng, district[stale])
    district[stale] = old_d
    address[stale] = old_a
    mask = idmask | namemask
    mask[stale] |= BIT["stale_address"]
    mask[row_dup] |= BIT["duplicate"]

    rel = em.relations
    insured_open = np.zeros(n, dtype=bool)
    insured_open[rel.person[rel.insured & (rel.end < 0)]] = True
    aac008 = np.where(insured_open[row_person], "1", np.where(pop.age[row_person] >= 60, "4", "2"))
    last_change = as_of - 1 - np.floor(rng.exponential(500.0, r)).astype(np.int64)
    last_change = np.maximum(last_change, pop.birth[row_person] + 16 * 365)
    ac01_rows = TableRows(
        hr.ac01,
        [
            row_number.tolist(),
            stored,
            stored_names,
            np.where(pop.male[row_person], "1", "2").tolist(),
            dates.format_days(pop.birth[row_person], "%Y%m%d").tolist(),
            DISTRICT_CODES_INT[district].astype("U6").tolist(),
            address.tolist(),
            aac008.tolist(),
            dates.format_instants(stamps(rng, last_change, as_of), "%Y-%m-%d", " ").tolist(),
        ],
    )
    links.add("ac01", row_number.tolist(), "person", true_ids, stored, stored_names, mask)

    def number_for(people: I64) -> I64:
        """The person's ac01 number; for persons with a duplicate, one of the two at random."""
        use_dup = (dup_of[people] >= 0) & (rng.random(len(people)) < 0.5)
        out: I64 = np.where(use_dup, dup_of[people], primary_of[people])
        return out

    # ab01: employers registered for insurance.
    units = np.flatnonzero(emp.insures).astype(np.int64)
    u = len(units)
    unit_no = np.empty(u, dtype=np.int64)
    unit_no[rng.permutation(u)] = 30_000_001 + np.arange(u)
    uorder = np.argsort(unit_no)
    units, unit_no = units[uorder], unit_no[uorder]
    unit_of = np.full(emp.m, -1, dtype=np.int64)
    unit_of[units] = unit_no
    codes = emp.codes[units].tolist()
    stored_codes, cmask = dirt.employer_codes(rng, codes, rates)
    unit_names = emp.names[units].tolist()
    ab01_rows = TableRows(
        hr.ab01,
        [
            unit_no.tolist(),
            stored_codes,
            unit_names,
            DISTRICT_CODES_INT[emp.district[units]].astype("U6").tolist(),
            dates.format_instants(stamps(rng, emp.registered[units], as_of), "%Y-%m-%d", " ").tolist(),
        ],
    )
    links.add("ab01", unit_no.tolist(), "employer", codes, stored_codes, unit_names, cmask)

    # ac02: one spell per insured relation, in relation order (ties resolve as in the truth).
    ins = np.flatnonzero(rel.insured)
    s_person, s_emp = rel.person[ins], rel.employer[ins]
    s_start, s_end = rel.start[ins], rel.end[ins]
    closed = s_end >= 0
    aae031 = np.full(len(ins), "", dtype="U6")
    aae031[closed] = dates.format_months(dates.month_of(s_end[closed]), "")
    ac02_rows = TableRows(
        hr.ac02,
        [
            (np.arange(len(ins)) + 1).tolist(),
            number_for(s_person).tolist(),
            unit_of[s_emp].tolist(),
            ["110"] * len(ins),
            dates.format_months(dates.month_of(s_start), "").tolist(),
            aae031.tolist(),
            rel.wage[ins].tolist(),
            dates.format_instants(stamps(rng, np.maximum(s_start, s_end), as_of), "%Y-%m-%d", " ").tolist(),
        ],
    )

    reg = em.registrations
    rorder = np.lexsort((reg.person, reg.registered))
    rp, rflex, rday, rcan = (
        reg.person[rorder],
        reg.flexible[rorder],
        reg.registered[rorder],
        reg.cancelled[rorder],
    )
    zxrq = dates.format_open_days(rcan, "%Y%m%d")
    djxx_rows = TableRows(
        hr.jy_djxx,
        [
            (np.arange(len(rp)) + 1).tolist(),
            number_for(rp).tolist(),
            np.where(rflex, hr.DJLX_FLEXIBLE, hr.DJLX_UNEMPLOYED).tolist(),
            dates.format_days(rday, "%Y%m%d").tolist(),
            zxrq.tolist(),
            dates.format_instants(stamps(rng, np.maximum(rday, rcan), as_of), "%Y-%m-%d", " ").tolist(),
        ],
    )

    cert = em.certifications
    corder = np.lexsort((cert.person, cert.certified))
    cp, ccat, cday, cexit = (
        cert.person[corder],
        cert.category[corder],
        cert.certified[corder],
        cert.exited[corder],
    )
    tcrq = dates.format_open_days(cexit, "%Y%m%d")
    knry_rows = TableRows(
        hr.jy_knry,
        [
            (np.arange(len(cp)) + 1).tolist(),
            number_for(cp).tolist(),
            np.array(KNLB)[ccat].tolist(),
            dates.format_days(cday, "%Y%m%d").tolist(),
            tcrq.tolist(),
            dates.format_instants(stamps(rng, np.maximum(cday, cexit), as_of), "%Y-%m-%d", " ").tolist(),
        ],
    )

    ben = em.benefits
    border = np.lexsort((ben.person, ben.first_month))
    bp = ben.person[border]
    bfirst, blast = ben.first_month[border], ben.last_month[border]
    dyff_rows = TableRows(
        hr.sy_dyff,
        [
            (np.arange(len(bp)) + 1).tolist(),
            number_for(bp).tolist(),
            dates.format_months(bfirst, "").tolist(),
            dates.format_months(blast, "").tolist(),
            ben.amount[border].tolist(),
            dates.format_instants(stamps(rng, dates.first_day(bfirst), as_of), "%Y-%m-%d", " ").tolist(),
        ],
    )

    cat = em.categories
    kp = cat.person
    kday = as_of - 1 - np.floor(rng.random(len(kp)) * 5 * 365).astype(np.int64)
    kday = np.maximum(kday, pop.birth[kp] + 18 * 365)
    rylb_rows = TableRows(
        hr.jy_rylb,
        [
            (np.arange(len(kp)) + 1).tolist(),
            number_for(kp).tolist(),
            np.array(RYLB)[cat.code].tolist(),
            dates.format_instants(stamps(rng, kday, as_of), "%Y-%m-%d", " ").tolist(),
        ],
    )
    return [ac01_rows, ab01_rows, ac02_rows, djxx_rows, knry_rows, dyff_rows, rylb_rows], links


# ----------------------------------------------------------------------------------------------
# education
# ----------------------------------------------------------------------------------------------


def build_education(
    world: World, rates: EducationDirt, rng: np.random.Generator
) -> tuple[list[TableRows], Links]:
    pop, g = world.population, world.graduations
    as_of = pop.as_of
    links = Links("education")
    order = np.lexsort((g.person, g.graduation))
    person = g.person[order]
    r = len(person)
    record_id = np.arange(1, r + 1)
    people = np.unique(person)
    breaking = _breaking_by_person(rng, people, pop.n, rates)
    passport_person = np.zeros(pop.n, dtype=bool)
    missing_people = people[breaking[people] == dirt.MISSING]
    passport_person[missing_people[rng.random(len(missing_people)) < float(rates.passport)]] = True
    passport_no = np.full(pop.n, "", dtype="U9")
    pp = np.flatnonzero(passport_person)
    passport_no[pp] = np.strings.add(
        np.where(rng.random(len(pp)) < 0.8, "E", "G"), zfill(rng.integers(0, 10**8, len(pp)), 8)
    )
    true_ids = _ids(world, person)
    stored, idmask = dirt.person_ids(rng, true_ids, breaking[person], rates)
    is_passport = passport_person[person]
    for i in np.flatnonzero(is_passport).tolist():
        stored[i] = str(passport_no[person[i]])
    stored_names, namemask = dirt.person_names(rng, _names(world, person), rates)
    mask = idmask | namemask
    level = g.level[order]
    school = g.school[order]
    grad = g.graduation[order]
    codes = np.array([u[0] for u in UNIVERSITIES])
    school_names = np.array([u[1] for u in UNIVERSITIES])
    rows = TableRows(
        ed.graduate_record,
        [
            record_id.tolist(),
            np.where(is_passport, "2", ed.CERT_TYPE_RESIDENT_ID).tolist(),
            stored,
            stored_names,
            np.where(pop.male[person], "M", "F").tolist(),
            dates.format_days(pop.birth[person], "%Y-%m-%d").tolist(),
            codes[school].tolist(),
            school_names[school].tolist(),
            np.array([lv[0] for lv in LEVELS])[level].tolist(),
            g.major[order].tolist(),
            dates.format_days(g.enrol[order], "%Y-%m-%d").tolist(),
            dates.format_days(grad, "%Y-%m-%d").tolist(),
            g.diploma[order].tolist(),
            dates.format_instants(stamps(rng, grad + 3, as_of, 60), "%Y-%m-%d", "T").tolist(),
        ],
    )
    links.add("graduate_record", record_id.tolist(), "person", true_ids, stored, stored_names, mask)
    return [rows], links


# ----------------------------------------------------------------------------------------------
# civil_affairs
# ----------------------------------------------------------------------------------------------


def build_civil_affairs(
    world: World, rates: CivilAffairsDirt, rng: np.random.Generator
) -> tuple[list[TableRows], Links]:
    pop, hh, dis = world.population, world.households, world.disability
    as_of = pop.as_of
    links = Links("civil_affairs")
    people = np.unique(np.concatenate([hh.member, dis.person]))
    breaking = _breaking_by_person(rng, people, pop.n, rates)

    h = len(hh.number)
    stale = rng.random(h) < float(rates.stale_address)
    address = hh.address.copy()
    address[stale] = stale_addresses(rng, hh.district[stale])[1]
    current = hh.left < 0
    tbrq = np.full(h, None, dtype=object)
    tbrq[~current] = dates.format_days(hh.left[~current], "%Y/%m/%d")
    changed = np.where(current, hh.approved, hh.left)
    jt_stamp = stamps(rng, changed, as_of)
    jt_rows = TableRows(
        ca.T_JZ_JT,
        [
            hh.number.tolist(),
            np.array(list(ca.JTLB_CODES))[hh.category].tolist(),
            DISTRICT_NAMES[hh.district].tolist(),
            address.tolist(),
            dates.format_days(hh.approved, "%Y/%m/%d").tolist(),
            tbrq.tolist(),
            np.where(hh.zero_employment, "Y", "N").tolist(),
            dates.format_instants(jt_stamp, "%Y/%m/%d", " ").tolist(),
        ],
    )

    member = hh.member
    mh = hh.member_household
    c = len(member)
    cybh = np.arange(1, c + 1)
    true_ids = _ids(world, member)
    stored, idmask = dirt.person_ids(rng, true_ids, breaking[member], rates)
    stored_names, namemask = dirt.person_names(rng, _names(world, member), rates)
    mask = idmask | namemask
    head_row = hh.relation == "01"
    mask[head_row & stale[mh]] |= BIT["stale_address"]
    cy_rows = TableRows(
        ca.T_JZ_CY,
        [
            cybh.tolist(),
            hh.number[mh].tolist(),
            stored_names,
            stored,
            hh.relation.tolist(),
            dates.format_instants(jt_stamp[mh], "%Y/%m/%d", " ").tolist(),
        ],
    )
    links.add("T_JZ_CY", cybh.tolist(), "person", true_ids, stored, stored_names, mask)

    order = np.lexsort((dis.person, dis.since))
    dp = dis.person[order]
    btbh = np.arange(1, len(dp) + 1)
    d_ids = _ids(world, dp)
    d_stored, d_idmask = dirt.person_ids(rng, d_ids, breaking[dp], rates)
    d_names, d_namemask = dirt.person_names(rng, _names(world, dp), rates)
    since = dis.since[order]
    bt_rows = TableRows(
        ca.T_CJ_BT,
        [
            btbh.tolist(),
            d_stored,
            d_names,
            (dis.kind[order] + 1).astype("U1").tolist(),
            dis.grade[order].astype("U1").tolist(),
            dates.format_days(since, "%Y/%m/%d").tolist(),
            dates.format_instants(stamps(rng, since, as_of), "%Y/%m/%d", " ").tolist(),
        ],
    )
    links.add("T_CJ_BT", btbh.tolist(), "person", d_ids, d_stored, d_names, d_idmask | d_namemask)
    return [jt_rows, cy_rows, bt_rows], links


# ----------------------------------------------------------------------------------------------
# tax
# ----------------------------------------------------------------------------------------------


def build_tax(world: World, rates: TaxDirt, rng: np.random.Generator) -> tuple[list[TableRows], Links]:
    pop, emp, rel = world.population, world.employers, world.employment.relations
    as_of = pop.as_of
    m0 = dates.month_of_day(as_of)
    links = Links("tax")
    payers = np.flatnonzero(emp.in_tax).astype(np.int64)
    t = len(payers)
    djxh = np.empty(t, dtype=np.int64)
    djxh[rng.permutation(t)] = 112_000_000_000_001 + np.arange(t)
    porder = np.argsort(djxh)
    payers, djxh = payers[porder], djxh[porder]
    codes = emp.codes[payers].tolist()
    stored_codes, cmask = dirt.employer_codes(rng, codes, rates)
    payer_names = emp.names[payers].tolist()
    reg_stamp = stamps(rng, emp.registered[payers], as_of)
    nsrxx_rows = TableRows(
        tx.dj_nsrxx,
        [
            djxh.tolist(),
            stored_codes,
            payer_names,
            np.where(emp.individual[payers], "2", "1").tolist(),
            (emp.headcount_band[payers] + 1).astype("U1").tolist(),
            (emp.revenue_band[payers] + 1).astype("U1").tolist(),
            reg_stamp.tolist(),
        ],
    )
    links.add("dj_nsrxx", djxh.tolist(), "employer", codes, stored_codes, payer_names, cmask)

    taxed = np.flatnonzero(rel.taxed)
    person = rel.person[taxed]
    k = len(taxed)
    row_id = np.arange(1, k + 1)
    people = np.unique(person)
    breaking = _breaking_by_person(rng, people, pop.n, rates)
    true_ids = _ids(world, person)
    stored, idmask = dirt.person_ids(rng, true_ids, breaking[person], rates)
    stored_names, namemask = dirt.person_names(rng, _names(world, person), rates)
    agent_codes, _ = dirt.employer_codes(rng, emp.codes[rel.employer[taxed]].tolist(), rates)
    start_m = dates.month_of(rel.start[taxed])
    end = rel.end[taxed]
    end_m = np.where(end >= 0, dates.month_of(np.maximum(end, 0)), m0 - 1)
    declared = dates.first_day(end_m + 1) * 86400 + np.floor(rng.random(k) * 15 * 86400).astype(np.int64)
    latest = as_of * 86400 - 1 - np.floor(rng.random(k) * 2 * 86400).astype(np.int64)
    kjmx_rows = TableRows(
        tx.gs_kjmx,
        [
            row_id.tolist(),
            agent_codes,
            [tx.ZZLX_RESIDENT_ID] * k,
            stored,
            stored_names,
            dates.format_months(start_m, "-").tolist(),
            dates.format_months(end_m, "-").tolist(),
            (rel.wage[taxed] * 100).tolist(),
            np.minimum(declared, latest).tolist(),
        ],
    )
    links.add("gs_kjmx", row_id.tolist(), "person", true_ids, stored, stored_names, idmask | namemask)
    return [nsrxx_rows, kjmx_rows], links


# ----------------------------------------------------------------------------------------------
# market_regulation
# ----------------------------------------------------------------------------------------------


def build_market_regulation(
    world: World, rates: MarketRegulationDirt, rng: np.random.Generator
) -> tuple[list[TableRows], Links]:
    pop, emp = world.population, world.employers
    as_of = pop.as_of
    links = Links("market_regulation")
    m = emp.m
    serial = np.empty(m, dtype=np.int64)
    serial[rng.permutation(m)] = np.arange(1, m + 1)
    order = np.lexsort((serial, emp.registered))
    regorg = DISTRICT_CODES_INT[emp.district[order]].astype("U6")
    pripid = np.strings.add(
        np.strings.add(regorg, dates.ymd(emp.registered[order])[0].astype("U4")),
        zfill(serial[order], 8),
    ).tolist()
    codes = emp.codes[order].tolist()
    stored_codes, cmask = dirt.employer_codes(rng, codes, rates)
    ent_names = emp.names[order].tolist()
    y, mo, d = dates.ymd(emp.registered[order])
    op = emp.operator[order]
    is_ind = op >= 0
    ops = op[is_ind]
    people = np.unique(ops)
    breaking = _breaking_by_person(rng, people, pop.n, rates)
    op_ids = _ids(world, ops)
    op_stored, op_idmask = dirt.person_ids(rng, op_ids, breaking[ops], rates)
    op_names, op_namemask = dirt.person_names(rng, _names(world, ops), rates)
    status = emp.status[order]
    changed = np.where(status == ACTIVE, emp.registered[order], emp.closed[order])
    changed = np.where(
        (status == ACTIVE) & (rng.random(m) < 0.3),
        changed + np.floor(rng.random(m) * (as_of - changed)).astype(np.int64),
        changed,
    )
    rows = TableRows(
        mr.E_BASEINFO,
        [
            pripid,
            stored_codes,
            ent_names,
            emp.enttype[order].tolist(),
            (y * 10000 + mo * 100 + d).tolist(),
            np.array(REGSTATE)[status].tolist(),
            regorg.tolist(),
            emp.address[order].tolist(),
            emp.industry[order].tolist(),
            emp.size_class[order].tolist(),
            _spread(op_names, is_ind),
            _spread(op_stored, is_ind),
            stamps(rng, changed, as_of).tolist(),
        ],
    )
    links.add("E_BASEINFO", pripid, "employer", codes, stored_codes, ent_names, cmask)
    ind_keys = [pripid[i] for i in np.flatnonzero(is_ind).tolist()]
    links.add("E_BASEINFO", ind_keys, "person", op_ids, op_stored, op_names, op_idmask | op_namemask)
    return [rows], links


def _spread(values: Sequence[Any], where: Bools) -> list[Any]:
    """``values`` placed at the True positions of ``where``, None elsewhere."""
    out: list[Any] = [None] * len(where)
    for i, v in zip(np.flatnonzero(where).tolist(), values, strict=True):
        out[i] = v
    return out


Builder = Callable[[World, Any, np.random.Generator], tuple[list[TableRows], Links]]
BUILDERS: dict[str, Builder] = {
    "hrss": build_hrss,
    "education": build_education,
    "civil_affairs": build_civil_affairs,
    "tax": build_tax,
    "market_regulation": build_market_regulation,
}
