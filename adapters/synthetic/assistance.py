"""Civil-affairs facts of the latent population: assistance households and disability subsidies.

About 2.4% of residents live in a currently assisted household (subsistence 低保, near-subsistence
低保边缘, extreme poverty 特困, rigid-expenditure hardship), another 0.8% in a household that has
left assistance. Households have 1-5 members living at the head's address in one district; heads
and members are drawn towards the disadvantaged. A share of households with working-age members
are zero-employment households (零就业家庭): none of them is employed, all are registered unemployed.
Disability subsidies (about 1.6%, rising with age) are four times as common in assisted households.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from adapters.civil_affairs.schema import CJLB_CODES, JTLB_CODES
from adapters.synthetic import dates
from adapters.synthetic.population import DISTRICT_CODES_INT, Population
from adapters.synthetic.sampling import choice, weighted_sample, zfill

I64 = NDArray[np.int64]
Bools = NDArray[np.bool_]
Strs = NDArray[np.str_]

JTLB = tuple(JTLB_CODES)  # '01' subsistence, '02' near, '03' extreme poverty, '04' rigid expenditure
CJLB = tuple(CJLB_CODES)
CURRENT_SHARE = 0.024
FORMER_SHARE = 0.008
SIZE_WEIGHTS = (0.35, 0.27, 0.22, 0.11, 0.05)  # 1..5 members


@dataclass
class Households:
    # per household
    number: Strs  # JTBH
    category: I64  # index into JTLB
    approved: I64  # day
    left: I64  # day, -1 while assisted
    zero_employment: Bools
    district: I64
    address: Strs
    head: I64  # person index
    size: I64
    # per member row
    member: I64  # person index
    member_household: I64
    relation: Strs  # YHZGX
    # per person
    current: I64  # index of the person's current household, -1 if none

    @property
    def is_current(self) -> Bools:
        out: Bools = self.left < 0
        return out


@dataclass
class Disability:
    person: I64
    kind: I64  # index into CJLB
    grade: I64  # 1..4
    since: I64  # day
    has: Bools  # per person


def build_households(rng: np.random.Generator, pop: Population) -> Households:
    n = pop.n
    sizes_w = np.array(SIZE_WEIGHTS)
    mean_size = float((np.arange(1, 6) * sizes_w).sum() / sizes_w.sum())
    n_cur = round(n * CURRENT_SHARE / mean_size)
    n_former = round(n * FORMER_SHARE / mean_size)
    h = n_cur + n_former
    weights = np.exp(1.2 * pop.disadvantage) * np.where(pop.age >= 60, 1.5, 1.0)
    head_w = np.where(pop.age >= 18, weights, 0.0)
    heads = weighted_sample(rng, head_w, h)
    h = len(heads)
    size = choice(rng, sizes_w, h) + 1
    # Members: a weighted random order of the other residents, grouped by district; each district's
    # heads take members from its front, in turn.
    pool_w = weights.copy()
    pool_w[heads] = 0.0
    pool = weighted_sample(rng, pool_w, n)
    pool = pool[np.argsort(pop.district[pool], kind="stable")]
    pool_start = np.searchsorted(pop.district[pool], np.arange(16))
    pool_count = np.bincount(pop.district[pool], minlength=16)
    hd = pop.district[heads]
    order = np.argsort(hd, kind="stable")
    need = size - 1
    cum = np.zeros(h, dtype=np.int64)
    need_sorted = need[order]
    cs = np.cumsum(need_sorted) - need_sorted
    d_sorted = hd[order]
    first_of_district = np.searchsorted(d_sorted, d_sorted)
    cum[order] = cs - cs[first_of_district]
    avail = np.maximum(0, pool_count[hd] - cum)
    need = np.minimum(need, avail)
    size = need + 1
    member_house = np.repeat(np.arange(h), need)
    within = np.arange(len(member_house)) - np.repeat(np.cumsum(need) - need, need)
    members = pool[pool_start[hd[member_house]] + cum[member_house] + within]

    all_members = np.concatenate([heads, members])
    all_house = np.concatenate([np.arange(h), member_house])
    srt = np.lexsort((np.concatenate([np.zeros(h), np.ones(len(members))]), all_house))
    all_members, all_house = all_members[srt], all_house[srt]
    is_head = np.zeros(len(all_members), dtype=bool)
    is_head[np.searchsorted(all_house, np.arange(h))] = True
    head_of = heads[all_house]
    age_m, age_h = pop.age[all_members], pop.age[head_of]
    relation = np.where(
        is_head,
        "01",
        np.where(
            (np.abs(age_m - age_h) <= 10) & (age_m >= 20) & (pop.male[all_members] != pop.male[head_of]),
            "02",
            np.where(age_m <= age_h - 16, "03", "09"),
        ),
    )

    current_flag = np.zeros(h, dtype=bool)
    current_flag[rng.permutation(h)[:n_cur]] = True
    cat_single = choice(rng, (0.45, 0.2, 0.25, 0.1), h)
    cat_family = choice(rng, (0.62, 0.27, 0.02, 0.09), h)
    category = np.where(size == 1, cat_single, cat_family)
    as_of = pop.as_of
    approved = as_of - 30 - np.floor(rng.random(h) * 8 * 365).astype(np.int64)
    approved = np.where(current_flag, approved, approved - 365)
    left_span = np.maximum(1, as_of - 1 - (approved + 180))
    left = np.where(current_flag, -1, approved + 180 + np.floor(rng.random(h) * left_span).astype(np.int64))
    working = (pop.age[all_members] >= 18) & (pop.age[all_members] <= 59)
    has_working = np.bincount(all_house, weights=working, minlength=h) > 0
    zero_employment = has_working & (rng.random(h) < np.where(current_flag, 0.15, 0.1))
    district = pop.district[heads]
    year = dates.ymd(approved)[0]
    serial = np.arange(1, h + 1)
    number = np.strings.add(
        np.strings.add(DISTRICT_CODES_INT[district].astype("U6"), year.astype("U4")),
        zfill(serial, 6),
    )
    address = pop.address[heads]
    # Members live at the head's address.
    pop.address[all_members] = address[all_house]
    current = np.full(n, -1, dtype=np.int64)
    cur_rows = current_flag[all_house]
    current[all_members[cur_rows]] = all_house[cur_rows]
    return Households(
        number=number,
        category=category,
        approved=approved,
        left=left,
        zero_employment=zero_employment,
        district=district,
        address=address,
        head=heads,
        size=size,
        member=all_members,
        member_household=all_house,
        relation=relation,
        current=current,
    )


def build_disability(rng: np.random.Generator, pop: Population, households: Households) -> Disability:
    n = pop.n
    age = pop.age
    p = np.select([age < 18, age < 45, age < 60, age < 75], [0.004, 0.008, 0.015, 0.025], default=0.045)
    p = p * np.exp(0.4 * pop.disadvantage - 0.08) * np.where(households.current >= 0, 4.0, 1.0)
    has = rng.random(n) < np.minimum(p, 0.6)
    person = np.flatnonzero(has).astype(np.int64)
    k = len(person)
    kind = choice(rng, (0.12, 0.15, 0.01, 0.45, 0.07, 0.10, 0.10), k)
    grade = choice(rng, (0.15, 0.25, 0.30, 0.30), k) + 1
    earliest = np.maximum(pop.birth[person] + 365, pop.as_of - 12 * 365)
    since = earliest + np.floor(rng.random(k) * (pop.as_of - earliest)).astype(np.int64)
    return Disability(person=person, kind=kind, grade=grade, since=since, has=has)
