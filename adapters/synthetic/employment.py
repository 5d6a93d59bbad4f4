"""The labour market of the latent city at as_of and over the 24 months before it.

Each resident gets a status: out of the labour force, employed (an open employment relation),
registered unemployed (失业登记), flexibly employed (灵活就业登记), unregistered unemployed, or
self-employed (operates an active individual business). Participation follows age and gender;
unemployment is three times as likely in assisted households and twice for persons with a
disability; zero-employment households' working-age members are all registered unemployed.

Open relations: the workforce is spread over the active employers in proportion to a heavy-tailed
size (most employers micro or small, a few large); 2% of employees have a second open relation.
Closed relations (ending within the 24 months before as_of): earlier jobs of those hired in the
window, of the unemployed and flexible workers, retirements. Only employers active at the time
employ anyone. Headcount bands, size classes and revenue bands follow from the open relations.

Also drawn here: registrations (including cancelled ones), hard-to-employ certifications (mostly
of registered unemployed; ended ones too), unemployment benefits (for the registered unemployed
whose insured job ended, 12-24 months), person categories (veterans, returning migrant workers,
poverty-lifted), and who has an hrss person record at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from adapters.hrss.schema import KNLB_CODES
from adapters.synthetic import dates
from adapters.synthetic.assistance import Disability, Households
from adapters.synthetic.education import Graduations
from adapters.synthetic.employers import ACTIVE, Employers
from adapters.synthetic.population import RURAL, Population

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
Bools = NDArray[np.bool_]
Strs = NDArray[np.str_]

OUT, EMPLOYED, UNEMPLOYED, FLEXIBLE, UNREGISTERED, SELF_EMPLOYED = range(6)
KNLB = tuple(KNLB_CODES)  # '01'..'06'
LONG_TERM, OLDER, DISABLED, LOW_INCOME, ZERO_EMPLOYMENT, OTHER = range(6)
VETERAN, RETURNING, POVERTY_LIFTED = range(3)
RYLB = ("11", "12", "13")
MIN_WAGE = 2320
HEADCOUNT_BOUNDS = np.array([10, 20, 100, 300, 1000])
REVENUE_BOUNDS = np.array([100, 500, 2000, 20000, 40000])
ADULT_DAYS = 6575  # 18 years


@dataclass
class Relations:
    """Employment relations, sorted by (start, person, employer); relation id = index + 1."""

    person: I64
    employer: I64
    start: I64  # day
    end: I64  # day, -1 while open
    insured: Bools
    taxed: Bools
    wage: I64  # yuan per month


@dataclass
class Registrations:
    person: I64
    flexible: Bools  # True: LH, False: SY
    registered: I64  # day
    cancelled: I64  # day, -1 while valid


@dataclass
class Certifications:
    person: I64
    category: I64  # index into KNLB
    certified: I64
    exited: I64  # -1 while certified


@dataclass
class Benefits:
    person: I64
    first_month: I64
    last_month: I64
    amount: I64


@dataclass
class Categories:
    person: I64
    code: I64  # index into RYLB


@dataclass
class Employment:
    status: I64
    unemployed_since: I64  # -1
    flexible_since: I64  # -1
    hard_to_employ: Bools
    hard_category: I64  # -1
    hard_since: I64  # -1
    benefit_now: Bools
    veteran: Bools
    returning_migrant: Bools
    poverty_lifted: Bools
    in_hrss: Bools
    relations: Relations
    registrations: Registrations
    certifications: Certifications
    benefits: Benefits
    categories: Categories


def _days(rng: np.random.Generator, n: int, mean: float) -> I64:
    out: I64 = np.floor(rng.exponential(mean, n)).astype(np.int64)
    return out


def _uniform_day(rng: np.random.Generator, lo: I64, hi: I64) -> I64:
    """A day in [lo, hi] (hi >= lo)."""
    out: I64 = lo + np.floor(rng.random(len(lo)) * (hi - lo + 1)).astype(np.int64)
    return np.minimum(out, hi)


def _pick_employers(
    rng: np.random.Generator, emp: Employers, start: I64, end: I64, tries: int = 12
) -> tuple[I64, Bools]:
    """An employer per closed relation, active over it (registered before its end, not closed
    before its end), drawn by size; ok=False where none was found."""
    k = len(end)
    w = emp.weight * np.where(emp.individual, 1.0, 1.0)
    cdf = np.cumsum(w)
    cdf /= cdf[-1] if len(cdf) and cdf[-1] > 0 else 1.0
    chosen = np.full(k, -1, dtype=np.int64)
    todo = np.arange(k)
    for _ in range(tries):
        if not len(todo) or not len(cdf):
            break
        cand = np.minimum(np.searchsorted(cdf, rng.random(len(todo)), side="right"), emp.m - 1)
        good = (emp.registered[cand] < end[todo] - 30) & (emp.closed[cand] > end[todo])
        chosen[todo[good]] = cand[good]
        todo = todo[~good]
    return chosen, chosen >= 0


def _bands(values: I64, bounds: I64) -> I64:
    out: I64 = np.searchsorted(bounds, values, side="right").astype(np.int64)
    return out


def build_employment(
    rngs: dict[str, np.random.Generator],
    pop: Population,
    households: Households,
    disability: Disability,
    grads: Graduations,
    emp: Employers,
) -> Employment:
    rng = rngs["employment"]
    n, as_of = pop.n, pop.as_of
    m0 = dates.month_of_day(as_of)
    m0_start = dates.first_day_of_month(m0)
    last_prev = m0_start - 1  # last day of M0-1
    win_start = dates.first_day_of_month(m0 - 24)
    age, male = pop.age, pop.male
    adult = pop.birth + ADULT_DAYS
    in_cur = households.current >= 0
    zero = np.zeros(n, dtype=bool)
    zero[in_cur] = households.zero_employment[households.current[in_cur]]
    subsist = np.zeros(n, dtype=bool)
    subsist[in_cur] = households.category[households.current[in_cur]] <= 1

    lf_m = np.select(
        [age < 18, age < 22, age < 25, age < 50, age < 55, age < 60, age < 65, age < 70],
        [0.0, 0.3, 0.7, 0.9, 0.85, 0.75, 0.35, 0.08],
        default=0.0,
    )
    lf_f = np.select(
        [age < 18, age < 22, age < 25, age < 50, age < 55, age < 60, age < 65, age < 70],
        [0.0, 0.3, 0.65, 0.8, 0.6, 0.35, 0.15, 0.05],
        default=0.0,
    )
    can_work = adult < last_prev - 1
    lf = (rng.random(n) < np.where(male, lf_m, lf_f) * np.where(disability.has, 0.5, 1.0)) & can_work
    working_age = (age >= 18) & (age <= 59) & can_work
    status = np.where(lf, EMPLOYED, OUT).astype(np.int64)
    u = rng.random(n)
    p_unemp = np.minimum(
        0.045
        * np.where(in_cur, 3.0, 1.0)
        * np.where(disability.has, 2.0, 1.0)
        * np.exp(0.3 * pop.disadvantage),
        0.6,
    )
    reg_ok = lf & working_age
    status[reg_ok & (u < p_unemp)] = UNEMPLOYED
    status[reg_ok & (u >= p_unemp) & (u < p_unemp + 0.06)] = FLEXIBLE
    status[(status == EMPLOYED) & (rng.random(n) < 0.02)] = UNREGISTERED
    active_ops = emp.operator[emp.individual & (emp.status == ACTIVE)]
    status[active_ops] = SELF_EMPLOYED
    status[zero & working_age] = UNEMPLOYED
    status[zero & ~working_age & (status != OUT)] = OUT  # nobody of a zero-employment household works

    # ---- open relations ------------------------------------------------------------------
    employed = np.flatnonzero(status == EMPLOYED).astype(np.int64)
    eligible = (emp.status == ACTIVE) & (emp.registered < m0_start - 31)
    w = np.where(eligible, emp.weight, 0.0)
    if w.sum() <= 0:  # nobody can employ: the employed are unregistered unemployed
        status[employed] = UNREGISTERED
        employed = employed[:0]
    second = employed[rng.random(len(employed)) < 0.02]
    holders = np.concatenate([employed, second])
    if len(holders):
        counts = rng.multinomial(len(holders), w / w.sum())
        slots = np.repeat(np.arange(emp.m), counts)
        rng.shuffle(slots)
    else:
        slots = np.zeros(0, dtype=np.int64)
    first_of = np.full(n, -1, dtype=np.int64)
    first_of[employed] = slots[: len(employed)]
    keep = np.ones(len(holders), dtype=bool)
    keep[len(employed) :] = slots[len(employed) :] != first_of[second]
    o_person, o_emp = holders[keep], slots[keep].astype(np.int64)
    is_second = np.arange(len(holders))[keep] >= len(employed)
    tenure = np.where(is_second, _days(rng, len(o_person), 440.0), _days(rng, len(o_person), 2000.0))
    lower = np.maximum(emp.registered[o_emp] + 1, adult[o_person])
    o_start = np.maximum(as_of - 1 - tenure, lower)
    late = o_start > last_prev
    o_start[late] = _uniform_day(rng, lower[late], np.full(int(late.sum()), last_prev))

    # ---- registrations of the unemployed and flexible workers ----------------------------
    unemployed = np.flatnonzero(status == UNEMPLOYED).astype(np.int64)
    since = as_of - 1 - _days(rng, len(unemployed), 250.0)
    since = np.maximum(since, np.maximum(as_of - 4 * 365, adult[unemployed] + 30))
    since = np.minimum(since, as_of - 1)
    unemployed_since = np.full(n, -1, dtype=np.int64)
    unemployed_since[unemployed] = since
    flexible = np.flatnonzero(status == FLEXIBLE).astype(np.int64)
    fsince = as_of - 1 - _days(rng, len(flexible), 700.0)
    fsince = np.minimum(np.maximum(fsince, np.maximum(as_of - 10 * 365, adult[flexible] + 30)), as_of - 1)
    flexible_since = np.full(n, -1, dtype=np.int64)
    flexible_since[flexible] = fsince

    # ---- closed relations ---------------------------------------------------------------
    first_rel = ~is_second
    changer = first_rel & (o_start >= win_start + 60) & (rng.random(len(o_person)) < 0.6)
    c_person = [o_person[changer]]
    gap_changer = rng.integers(1, 120, int(changer.sum()))
    c_end = [o_start[changer] - gap_changer]
    prior_u = rng.random(len(unemployed)) < np.where(zero[unemployed], 0.3, 0.65)
    c_person.append(unemployed[prior_u])
    c_end.append(np.minimum(since[prior_u] - 1 - rng.integers(0, 60, int(prior_u.sum())), last_prev))
    prior_f = rng.random(len(flexible)) < 0.3
    c_person.append(flexible[prior_f])
    c_end.append(np.minimum(fsince[prior_f] - 1 - rng.integers(0, 60, int(prior_f.sum())), last_prev))
    unreg = np.flatnonzero((status == UNREGISTERED) & (rng.random(n) < 0.5)).astype(np.int64)
    retired = np.flatnonzero((status == OUT) & (age >= 55) & (age <= 66) & (rng.random(n) < 0.3)).astype(
        np.int64
    )
    for group in (unreg, retired):
        c_person.append(group)
        k = len(group)
        c_end.append(_uniform_day(rng, np.full(k, win_start), np.full(k, last_prev)))
    cp = np.concatenate(c_person)
    ce = np.concatenate(c_end)
    source = np.repeat(np.arange(len(c_person)), [len(x) for x in c_person])
    ok = (ce >= win_start) & (ce >= adult[cp] + 30)
    cp, ce, source = cp[ok], ce[ok], source[ok]
    cs = ce - 30 - _days(rng, len(cp), 1100.0)
    cs = np.maximum(cs, adult[cp])
    c_emp, found = _pick_employers(rng, emp, cs, ce)
    cp, ce, cs, c_emp, source = cp[found], ce[found], cs[found], c_emp[found], source[found]
    cs = np.maximum(cs, emp.registered[c_emp] + 1)

    # ---- all relations -------------------------------------------------------------------
    r_person = np.concatenate([o_person, cp])
    r_emp = np.concatenate([o_emp, c_emp])
    r_start = np.concatenate([o_start, cs])
    r_end = np.concatenate([np.full(len(o_person), -1, dtype=np.int64), ce])
    r = len(r_person)
    insured = emp.insures[r_emp] & (rng.random(r) < 0.94)
    taxed = emp.withholds[r_emp] & (rng.random(r) < 0.97)
    level = np.full(n, -1, dtype=np.int64)
    has_grad = grads.latest >= 0
    level[has_grad] = grads.level[grads.latest[has_grad]]
    edu = np.array([1.0, 1.15, 1.45, 1.85, 2.2])[level[r_person] + 1]
    a = age[r_person]
    age_f = np.select([a < 25, a < 35, a < 50], [0.8, 1.0, 1.1], default=1.0)
    size_f = 1.0 + 0.05 * np.log1p(emp.weight[r_emp])
    wage = 5200.0 * edu * age_f * size_f * np.where(emp.individual[r_emp], 0.75, 1.0)
    wage = wage * rng.lognormal(0.0, 0.35, r) * np.where(r_end >= 0, 0.95, 1.0)
    wage_i = (np.maximum(np.round(wage / 10.0) * 10.0, MIN_WAGE)).astype(np.int64)
    order = np.lexsort((r_emp, r_person, r_start))
    relations = Relations(
        person=r_person[order],
        employer=r_emp[order],
        start=r_start[order],
        end=r_end[order],
        insured=insured[order],
        taxed=taxed[order],
        wage=wage_i[order],
    )
    _employer_figures(rng, emp, relations)

    # ---- registrations -------------------------------------------------------------------
    rr = rngs["registrations"]
    changers_closed = source == 0
    ch_person, ch_end = cp[changers_closed], ce[changers_closed]
    ch_next = np.zeros(len(ch_person), dtype=np.int64)
    next_start = np.full(n, -1, dtype=np.int64)
    next_start[o_person[first_rel]] = o_start[first_rel]
    ch_next = next_start[ch_person]
    gap = ch_next - ch_end
    sy_cancel = (gap >= 15) & (rr.random(len(ch_person)) < 0.4)
    sc_person = ch_person[sy_cancel]
    sc_reg = (
        ch_end[sy_cancel]
        + 1
        + np.floor(rr.random(len(sc_person)) * (gap[sy_cancel] - 1) / 2).astype(np.int64)
    )
    sc_cancel = ch_next[sy_cancel]
    emp_first = o_person[first_rel]
    emp_start = o_start[first_rel]
    lh_old = rr.random(len(emp_first)) < 0.02
    lh_reg = emp_start[lh_old] - rr.integers(60, 1000, int(lh_old.sum()))
    lh_ok = lh_reg > adult[emp_first[lh_old]]
    lh_person = emp_first[lh_old][lh_ok]
    lh_reg, lh_cancel = lh_reg[lh_ok], emp_start[lh_old][lh_ok] - 1
    registrations = Registrations(
        person=np.concatenate([unemployed, flexible, sc_person, lh_person]),
        flexible=np.concatenate(
            [
                np.zeros(len(unemployed), bool),
                np.ones(len(flexible), bool),
                np.zeros(len(sc_person), bool),
                np.ones(len(lh_person), bool),
            ]
        ),
        registered=np.concatenate([since, fsince, sc_reg, lh_reg]),
        cancelled=np.concatenate(
            [np.full(len(unemployed) + len(flexible), -1, dtype=np.int64), sc_cancel, lh_cancel]
        ),
    )

    # ---- hard-to-employ certifications ---------------------------------------------------
    older = np.where(male, age >= 50, age >= 40)
    boost = in_cur | disability.has | older
    p_u = np.where(zero[unemployed], 0.9, np.where(boost[unemployed], 0.6, 0.2))
    cert_u = unemployed[rr.random(len(unemployed)) < p_u]
    cert_u_day = _uniform_day(rr, unemployed_since[cert_u], np.full(len(cert_u), as_of - 1))
    cert_f = flexible[rr.random(len(flexible)) < 0.06]
    cert_f_day = _uniform_day(
        rr, np.maximum(flexible_since[cert_f], as_of - 3 * 365), np.full(len(cert_f), as_of - 1)
    )
    cert_e = employed[rr.random(len(employed)) < 0.004]
    cert_e_day = _uniform_day(
        rr, np.maximum(adult[cert_e] + 30, as_of - 3 * 365), np.full(len(cert_e), as_of - 1)
    )
    cert_person = np.concatenate([cert_u, cert_f, cert_e])
    cert_day = np.concatenate([cert_u_day, cert_f_day, cert_e_day])
    long_term = (unemployed_since >= 0) & (unemployed_since <= as_of - 365)
    category = np.select(
        [zero, disability.has, subsist, older, long_term],
        [ZERO_EMPLOYMENT, DISABLED, LOW_INCOME, OLDER, LONG_TERM],
        default=OTHER,
    )[cert_person]
    ended = (gap >= 2) & (rr.random(len(ch_person)) < 0.05)
    ended_person = ch_person[ended]
    ended_cert = ch_end[ended] + 1
    ended_exit = ch_next[ended]
    ended_cat = np.array([LONG_TERM, OLDER, OTHER])[rr.integers(0, 3, len(ended_person))]
    certifications = Certifications(
        person=np.concatenate([cert_person, ended_person]),
        category=np.concatenate([category, ended_cat]),
        certified=np.concatenate([cert_day, ended_cert]),
        exited=np.concatenate([np.full(len(cert_person), -1, dtype=np.int64), ended_exit]),
    )
    hard = np.zeros(n, dtype=bool)
    hard[cert_person] = True
    hard_category = np.full(n, -1, dtype=np.int64)
    hard_category[cert_person] = category
    hard_since = np.full(n, -1, dtype=np.int64)
    hard_since[cert_person] = cert_day

    # ---- unemployment benefits -----------------------------------------------------------
    from_unemp = source == 1
    prior_insured = np.zeros(len(cp), dtype=bool)
    # insured flags of the closed relations, in the order they were built (before sorting)
    closed_insured = insured[len(o_person) :]
    prior_insured = closed_insured & from_unemp
    b_person = cp[prior_insured]
    b_tenure_years = (ce[prior_insured] - cs[prior_insured]) / 365.25
    paid = (rr.random(len(b_person)) < 0.75) & (b_tenure_years >= 1.0)
    b_person, b_tenure_years = b_person[paid], b_tenure_years[paid]
    b_first = dates.month_of(unemployed_since[b_person])
    duration = np.select([b_tenure_years < 5, b_tenure_years < 10], [12, 18], default=24)
    b_last = b_first + duration - 1
    amount = (1750 + 25 * np.minimum(np.floor(b_tenure_years), 10)).astype(np.int64)
    benefits = Benefits(person=b_person, first_month=b_first, last_month=b_last, amount=amount)
    benefit_now = np.zeros(n, dtype=bool)
    benefit_now[b_person[(b_first <= m0) & (m0 <= b_last)]] = True

    # ---- person categories ---------------------------------------------------------------
    rc = rngs["categories"]
    rural = RURAL[pop.district]
    p_vet = np.where(
        male, np.where((age >= 22) & (age <= 75), 0.03, 0.0), np.where((age >= 22) & (age <= 60), 0.002, 0.0)
    )
    p_ret = np.where((age >= 22) & (age <= 55), np.where(rural, 0.03, 0.002), 0.0)
    p_pov = np.where(in_cur, 0.05, np.where(rural, 0.006, 0.0005)) * (age >= 16)
    veteran = rc.random(n) < p_vet
    returning = rc.random(n) < p_ret
    poverty = rc.random(n) < p_pov
    cat_person = np.concatenate([np.flatnonzero(veteran), np.flatnonzero(returning), np.flatnonzero(poverty)])
    cat_code = np.repeat(np.arange(3), [int(veteran.sum()), int(returning.sum()), int(poverty.sum())])
    categories = Categories(person=cat_person.astype(np.int64), code=cat_code.astype(np.int64))

    # ---- who has an hrss person record ---------------------------------------------------
    in_hrss = np.zeros(n, dtype=bool)
    for people in (
        relations.person[relations.insured],
        registrations.person,
        certifications.person,
        benefits.person,
        categories.person,
    ):
        in_hrss[people] = True
    extra = np.where((age >= 18) & can_work, np.where(age >= 60, 0.75, 0.5), 0.0)
    in_hrss |= rc.random(n) < extra

    return Employment(
        status=status,
        unemployed_since=unemployed_since,
        flexible_since=flexible_since,
        hard_to_employ=hard,
        hard_category=hard_category,
        hard_since=hard_since,
        benefit_now=benefit_now,
        veteran=veteran,
        returning_migrant=returning,
        poverty_lifted=poverty,
        in_hrss=in_hrss,
        relations=relations,
        registrations=registrations,
        certifications=certifications,
        benefits=benefits,
        categories=categories,
    )


def _employer_figures(rng: np.random.Generator, emp: Employers, rel: Relations) -> None:
    """Headcount at as_of, size class, headcount and revenue bands, from the open relations."""
    m = emp.m
    open_rel = rel.end < 0
    headcount = np.bincount(rel.employer[open_rel], minlength=m).astype(np.int64)
    industrial_bounds = np.array([20, 300, 1000])
    service_bounds = np.array([10, 100, 300])
    size_idx = np.where(
        emp.industrial,
        np.searchsorted(industrial_bounds, headcount, side="right"),
        np.searchsorted(service_bounds, headcount, side="right"),
    )
    active = emp.status == ACTIVE
    past_size = np.where(rng.random(m) < 0.8, 0, 1)
    size_idx = np.where(active, size_idx, past_size)
    size_idx = np.where(emp.individual, 0, size_idx)
    emp.size_class = np.array(["XS", "S", "M", "L"])[size_idx]
    emp.headcount = headcount
    emp.headcount_band = _bands(headcount, HEADCOUNT_BOUNDS)
    factor = np.select(
        [np.isin(emp.industry, ["J", "K"]), emp.industry == "F", emp.industry == "G"], [3.0, 1.5, 1.3], 1.0
    )
    revenue = headcount * rng.lognormal(np.log(25.0), 0.7, m) * factor + rng.lognormal(np.log(20.0), 1.0, m)
    revenue = np.where(emp.individual, rng.lognormal(np.log(12.0), 0.9, m), revenue)
    revenue = np.where(active, revenue, 0.0)
    emp.revenue_band = _bands(np.floor(revenue).astype(np.int64), REVENUE_BOUNDS)
