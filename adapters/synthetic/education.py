"""Higher-education graduations of the latent population (records of Tianjin's institutions).

The chance of a degree falls with age (about half of those aged 25-34, a few per cent of the over
65s) and with disadvantage; migrants studied in Tianjin less often. The highest level is drawn
(associate, bachelor, master, doctorate; fewer postgraduates among older people); postgraduates
also hold the earlier degrees, some associates upgraded to a bachelor (专升本). Graduation is in
late June or early July at a typical age; degrees not finished by as_of are not recorded, nor
graduations before 1982 (before the records system). The last
five years form a visible cohort of recent graduates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from adapters.synthetic import dates
from adapters.synthetic.assistance import Disability, Households
from adapters.synthetic.geography import MAJORS_ASSOCIATE, MAJORS_DEGREE, UNIVERSITIES
from adapters.synthetic.population import Population
from adapters.synthetic.sampling import choice, rank_within, zfill

I64 = NDArray[np.int64]
Bools = NDArray[np.bool_]
Strs = NDArray[np.str_]

#: Level index -> (education_level code, canonical level, years of study, diploma level digit).
LEVELS: tuple[tuple[str, str, int, str], ...] = (
    ("41", "associate", 3, "6"),
    ("31", "bachelor", 4, "5"),
    ("12", "master", 3, "2"),
    ("11", "doctorate", 4, "1"),
)
ASSOCIATE, BACHELOR, MASTER, DOCTORATE = range(4)
#: The records system holds graduations from this year on (older graduates have no record).
FIRST_RECORD_YEAR = 1982
_SCHOOL_WEIGHT = {"10055": 4.0, "10056": 4.0, "10065": 2.5, "10060": 2.0, "10058": 2.0, "10070": 2.0}


@dataclass
class Graduations:
    person: I64
    level: I64  # index into LEVELS
    school: I64  # index into UNIVERSITIES
    major: Strs
    enrol: I64  # day
    graduation: I64  # day
    diploma: Strs
    latest: I64  # per person: index of the latest record, -1 if none


def _schools_for(level: int) -> tuple[I64, NDArray[np.float64]]:
    code = LEVELS[level][0]
    idx = [i for i, (_, _, levels) in enumerate(UNIVERSITIES) if code in levels.split(",")]
    w = [_SCHOOL_WEIGHT.get(UNIVERSITIES[i][0], 1.0) for i in idx]
    return np.array(idx, dtype=np.int64), np.array(w)


def build_graduations(
    rng: np.random.Generator, pop: Population, households: Households, disability: Disability
) -> Graduations:
    n = pop.n
    age = pop.age
    p = np.select(
        [age < 20, age < 25, age < 35, age < 45, age < 55, age < 65, age < 80],
        [0.0, 0.5, 0.52, 0.36, 0.2, 0.1, 0.05],
        default=0.02,
    )
    p = p * np.where(pop.born_elsewhere, 0.55, 0.8) * np.exp(-0.35 * pop.disadvantage - 0.06)
    p = p * np.where(households.current >= 0, 0.3, 1.0) * np.where(disability.has, 0.5, 1.0)
    has = rng.random(n) < np.minimum(p, 0.95)
    who = np.flatnonzero(has).astype(np.int64)
    k = len(who)
    young = age[who] < 46
    top = np.where(
        young, choice(rng, (0.38, 0.46, 0.13, 0.03), k), choice(rng, (0.52, 0.42, 0.05, 0.01), k)
    ).astype(np.int64)
    birth_year = dates.ymd(pop.birth[who])[0]
    jitter = rng.integers(0, 2, k)
    # Graduation years of each level of the chain (-1: no such record).
    g_assoc = np.where(top == ASSOCIATE, birth_year + 21 + jitter, -1)
    upgraded = (top == BACHELOR) & (rng.random(k) < 0.1)
    g_assoc = np.where(upgraded, birth_year + 21, g_assoc)
    g_bach = np.where(top == BACHELOR, birth_year + 22 + jitter + upgraded, -1)
    has_bach_record = (top >= MASTER) & (rng.random(k) < 0.6)
    g_bach = np.where(has_bach_record, birth_year + 22 + jitter, g_bach)
    g_master = np.where(top == MASTER, birth_year + 25 + jitter + rng.integers(0, 3, k), -1)
    has_master_record = (top == DOCTORATE) & (rng.random(k) < 0.6)
    g_master = np.where(has_master_record, birth_year + 25 + jitter, g_master)
    g_doc = np.where(top == DOCTORATE, birth_year + 28 + jitter + rng.integers(0, 4, k), -1)

    rec_person, rec_level, rec_year = [], [], []
    for lv, years in enumerate((g_assoc, g_bach, g_master, g_doc)):
        sel = years > 0
        rec_person.append(who[sel])
        rec_level.append(np.full(int(sel.sum()), lv, dtype=np.int64))
        rec_year.append(years[sel])
    person = np.concatenate(rec_person)
    level = np.concatenate(rec_level)
    year = np.concatenate(rec_year)
    r = len(person)
    june20 = dates.first_day((year * 12 + 5).astype(np.int64)) + 19
    graduation = june20 + rng.integers(0, 20, r)
    keep = (graduation < pop.as_of) & (year >= FIRST_RECORD_YEAR)
    person, level, year, graduation = person[keep], level[keep], year[keep], graduation[keep]
    r = len(person)
    duration = np.array([lv[2] for lv in LEVELS])[level]
    enrol = dates.first_day(((year - duration) * 12 + 8).astype(np.int64))
    school = np.zeros(r, dtype=np.int64)
    for lv in range(4):
        sel = level == lv
        idx, w = _schools_for(lv)
        school[sel] = idx[choice(rng, w, int(sel.sum()))]
    degree_majors = np.array(MAJORS_DEGREE)
    assoc_majors = np.array(MAJORS_ASSOCIATE)
    major = np.where(
        level == ASSOCIATE,
        assoc_majors[rng.integers(0, len(assoc_majors), r)],
        degree_majors[rng.integers(0, len(degree_majors), r)],
    )
    # Records sorted by person then graduation, so that the chain can share school and major.
    order = np.lexsort((graduation, person))
    person, level, year, graduation, enrol, school, major = (
        a[order] for a in (person, level, year, graduation, enrol, school, major)
    )
    same_person = np.zeros(r, dtype=bool)
    same_person[1:] = person[1:] == person[:-1]
    stay = same_person & (rng.random(r) < 0.5)
    for i in np.flatnonzero(stay).tolist():  # a postgraduate stays at the same school, if it can
        prev = int(school[i - 1])
        if LEVELS[int(level[i])][0] in UNIVERSITIES[prev][2].split(","):
            school[i] = prev
    keep_major = same_person & (level > BACHELOR) & (rng.random(r) < 0.6)
    major = np.where(keep_major, np.roll(major, 1), major)
    codes = np.array([u[0] for u in UNIVERSITIES])
    level_digit = np.array([lv[3] for lv in LEVELS])[level]
    seq = rank_within((school * 10_000 + year) * 10 + level) + 1
    diploma = np.strings.add(
        np.strings.add(np.strings.add(codes[school], "1"), np.strings.add(year.astype("U4"), level_digit)),
        zfill(seq, 6),
    )
    latest = np.full(n, -1, dtype=np.int64)
    latest[person] = np.arange(r)  # sorted by graduation within person: the last one wins
    return Graduations(
        person=person,
        level=level,
        school=school,
        major=major,
        enrol=enrol,
        graduation=graduation,
        diploma=diploma,
        latest=latest,
    )
