"""The latent population: N persons shaped like Tianjin's residents, drawn as numpy arrays.

Ages follow a 2020-census-like pyramid (0-95); about a fifth of residents were born in other
provinces (their identity numbers carry the birth province's division code); Tianjin-born
residents carry their birth district's code, the historical one (Tanggu, Hangu, Dagang, the old
counties) for those born before the change. Identity numbers are valid GB 11643 numbers, unique,
with the sequence parity of the person's gender.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from adapters.synthetic import dates
from adapters.synthetic import names as namelib
from adapters.synthetic.geography import DISTRICTS, HISTORICAL_CODES, MIGRANT_ORIGINS
from adapters.synthetic.sampling import choice, rank_within
from gateway.identity.checksums import RESIDENT_CHECK, RESIDENT_WEIGHTS

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
Bools = NDArray[np.bool_]
Strs = NDArray[np.str_]

#: Share of residents by five-year age band 0-4 ... 85-89, then 90-95 (per cent).
AGE_BANDS: tuple[float, ...] = (
    3.4, 4.1, 4.0, 3.6, 4.9, 6.6, 8.7, 8.2, 7.0, 7.2, 8.0, 7.8, 6.4, 5.7, 4.4, 2.8, 1.8, 1.0, 0.4,
)  # fmt: skip

DISTRICT_NAMES = np.array([d.name for d in DISTRICTS])
DISTRICT_CODES_INT = np.array([int(d.code) for d in DISTRICTS], dtype=np.int64)
STREETS = np.array([list(d.streets) for d in DISTRICTS])  # (16, 8)
RURAL = np.array([d.rural for d in DISTRICTS])
_RESIDENT_W = np.array(RESIDENT_WEIGHTS, dtype=np.int64)
_CHECK_BYTES = np.frombuffer(RESIDENT_CHECK.encode(), dtype=np.uint8)


@dataclass
class Population:
    n: int
    as_of: int  # day number
    birth: I64  # day numbers
    age: I64  # completed years at as_of
    male: Bools
    district: I64  # index into DISTRICTS (current residence)
    born_elsewhere: Bools
    division: I64  # 6-digit division code in the identity number
    ids: Strs  # canonical 18-character numbers
    names: Strs
    address: Strs
    disadvantage: F64  # latent score, higher: poorer prospects


def addresses(rng: np.random.Generator, district: I64) -> Strs:
    """Random street addresses in the given districts: 天津市<区><路><n>号[<楼>号楼<门>门<室>]."""
    n = len(district)
    street = STREETS[district, rng.integers(0, STREETS.shape[1], n)]
    number = rng.integers(1, 400, n).astype("U3")
    flat = rng.random(n) < np.where(RURAL[district], 0.35, 0.8)
    building = rng.integers(1, 30, n).astype("U2")
    gate = rng.integers(1, 7, n).astype("U1")
    room = (rng.integers(1, 25, n) * 100 + rng.integers(1, 5, n)).astype("U4")
    s = np.strings.add(np.strings.add("天津市", DISTRICT_NAMES[district]), street)
    s = np.strings.add(np.strings.add(s, number), "号")
    tail = np.strings.add(np.strings.add(np.strings.add(building, "号楼"), np.strings.add(gate, "门")), room)
    tail = np.strings.add(tail, "室")
    out: Strs = np.where(flat, np.strings.add(s, tail), s)
    return out


def stale_addresses(rng: np.random.Generator, district: I64) -> tuple[I64, Strs]:
    """An earlier address for residents of ``district``: in another district for a third of them."""
    n = len(district)
    moved = rng.random(n) < 1 / 3
    weights = np.array([d.population for d in DISTRICTS])
    other = choice(rng, weights, n)
    old = np.where(moved, other, district).astype(np.int64)
    return old, addresses(rng, old)


def _ages(rng: np.random.Generator, n: int) -> I64:
    band = choice(rng, AGE_BANDS, n)
    width = np.where(band == len(AGE_BANDS) - 1, 6, 5)
    out: I64 = band * 5 + np.floor(rng.random(n) * width).astype(np.int64)
    return out


def identity_numbers(rng: np.random.Generator, division: I64, birth: I64, male: Bools) -> Strs:
    """Valid, unique GB 11643 numbers: division + birth date + sequence (odd for men) + check."""
    n = len(division)
    year, month, day = dates.ymd(birth)
    # Sequence: distinct within (division, birth date, gender); 1..499 halves, parity by gender.
    key = (division * 100_000 + (birth - birth.min() if n else birth)) * 2 + male.astype(np.int64)
    rank = rank_within(key)
    if n and rank.max() >= 499:
        raise ValueError("population too large for distinct identity sequence numbers")
    offset = rng.integers(0, 499, n)
    # The same offset for a whole group: take the offset of the group's first member.
    order = np.argsort(key, kind="stable")
    sk = key[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = sk[1:] != sk[:-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    group_offset = np.empty(n, dtype=np.int64)
    group_offset[order] = offset[order][first]
    half = (group_offset + rank) % 499 + 1
    seq = np.where(male, half * 2 - 1, half * 2)  # men odd, women even
    digits = np.empty((n, 17), dtype=np.int64)
    for i, (value, width) in enumerate(((division, 6), (year, 4), (month, 2), (day, 2), (seq, 3))):
        start = sum((6, 4, 2, 2, 3)[:i])
        for k in range(width):
            digits[:, start + k] = value // 10 ** (width - 1 - k) % 10
    check = _CHECK_BYTES[(digits @ _RESIDENT_W) % 11]
    chars = np.empty((n, 18), dtype=np.uint8)
    chars[:, :17] = digits + ord("0")
    chars[:, 17] = check
    out: Strs = chars.view("S18").ravel().astype("U18")
    return out


def person_names(rng: np.random.Generator, male: Bools) -> Strs:
    n = len(male)
    surnames = np.array([s for s, _ in namelib.SURNAMES])
    surname = surnames[choice(rng, [w for _, w in namelib.SURNAMES], n)]
    m_pool, f_pool = np.array(list(namelib.GIVEN_MALE)), np.array(list(namelib.GIVEN_FEMALE))
    first = np.where(male, m_pool[rng.integers(0, len(m_pool), n)], f_pool[rng.integers(0, len(f_pool), n)])
    second = np.where(male, m_pool[rng.integers(0, len(m_pool), n)], f_pool[rng.integers(0, len(f_pool), n)])
    single = rng.random(n) < 0.3
    given = np.where(single, first, np.strings.add(first, second))
    out: Strs = np.strings.add(surname, given)
    return out


def build_population(rng: np.random.Generator, n: int, as_of: dt.date) -> Population:
    as_of_day = dates.day_number(as_of)
    age0 = _ages(rng, n)
    birth = as_of_day - np.floor((age0 + rng.random(n)) * 365.2425).astype(np.int64) - 1
    year, month, day = dates.ymd(birth)
    age = (as_of.year - year) - ((month * 100 + day) > (as_of.month * 100 + as_of.day)).astype(np.int64)
    p_male = np.where(age < 60, 0.515, np.where(age < 80, 0.47, 0.40))
    male = rng.random(n) < p_male
    p_migrant = np.select(
        [age < 16, age < 23, age < 51, age < 65], [0.12, 0.25, 0.31, 0.2], default=0.08
    ).astype(np.float64)
    born_elsewhere = rng.random(n) < p_migrant
    base_w = np.array([d.population for d in DISTRICTS])
    migrant_w = (
        base_w
        * np.where(RURAL, 0.6, 1.0)
        * np.array(
            [1.6 if d.code in ("120116", "120111", "120110", "120112", "120113") else 1.0 for d in DISTRICTS]
        )
    )
    district = np.where(born_elsewhere, choice(rng, migrant_w, n), choice(rng, base_w, n)).astype(np.int64)

    # Division code in the number: birth province for migrants, birth district (historical code if
    # born before the change) for Tianjin-born.
    province = choice(rng, [w for _, w, _ in MIGRANT_ORIGINS], n)
    pick = rng.integers(0, 1 << 30, n)
    migrant_codes = np.zeros(n, dtype=np.int64)
    for p, (_, _, codes) in enumerate(MIGRANT_ORIGINS):
        sel = province == p
        table = np.array([int(c) for c in codes], dtype=np.int64)
        migrant_codes[sel] = table[pick[sel] % len(table)]
    moved = rng.random(n) < 0.15
    birth_district = np.where(moved, choice(rng, base_w, n), district)
    tianjin_codes = DISTRICT_CODES_INT[birth_district].copy()
    u = rng.random(n)
    for code, (options, first_year) in HISTORICAL_CODES.items():
        sel = (tianjin_codes == int(code)) & (year < first_year)
        cdf = np.cumsum([w for _, w in options])
        which = np.minimum(np.searchsorted(cdf / cdf[-1], u[sel], side="right"), len(options) - 1)
        tianjin_codes[sel] = np.array([int(c) for c, _ in options], dtype=np.int64)[which]
    division = np.where(born_elsewhere, migrant_codes, tianjin_codes)

    ids = identity_numbers(rng, division, birth, male)
    return Population(
        n=n,
        as_of=as_of_day,
        birth=birth,
        age=age,
        male=male,
        district=district,
        born_elsewhere=born_elsewhere,
        division=division,
        ids=ids,
        names=person_names(rng, male),
        address=addresses(rng, district),
        disadvantage=rng.standard_normal(n),
    )
