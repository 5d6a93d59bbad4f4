"""Employers of the latent city: enterprises and individual businesses (个体工商户).

About 55% are enterprises (mostly limited companies), 45% individual businesses, each operated by
a resident (a few operate two). Registration dates reach back to the 1980s for enterprises;
about 18% are no longer active (revoked 吊销 or cancelled 注销), closed on a date between
registration and as_of. Credit codes are valid GB 32100 codes: '91' (enterprise) or '92'
(individual business) + the registering district + a GB 11714 organization code ('MA...' for
those registered since 2015) + check. Headcount, size class and bands are set by the employment
model (employment.py), from the workforce actually employed at as_of.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from adapters.synthetic import dates
from adapters.synthetic.assistance import Households
from adapters.synthetic.geography import DISTRICTS, INDUSTRIES, INDUSTRY_WORDS, SHOP_WORDS, TRADE_CHARS
from adapters.synthetic.population import DISTRICT_CODES_INT, DISTRICT_NAMES, Population, addresses
from adapters.synthetic.sampling import choice, weighted_sample
from gateway.identity.checksums import CREDIT_CHARSET, CREDIT_WEIGHTS, ORG_WEIGHTS

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
Bools = NDArray[np.bool_]
Strs = NDArray[np.str_]

ACTIVE, REVOKED, CANCELLED = 0, 1, 2
REGSTATE = ("1", "2", "3")
STATUS_NAMES = ("active", "revoked", "cancelled")
ENTERPRISE_TYPES = ("1100", "1200", "4000", "5100")
ENTERPRISE_TYPE_W = (0.86, 0.04, 0.05, 0.05)
INDIVIDUAL_TYPE = "9600"
NEVER = 10**7  # closure day of an active employer

_CREDIT_VALUE = np.zeros(128, dtype=np.int64)
for _i, _c in enumerate(CREDIT_CHARSET):
    _CREDIT_VALUE[ord(_c)] = _i
_ORG_VALUE = np.zeros(128, dtype=np.int64)
for _c in "0123456789":
    _ORG_VALUE[ord(_c)] = int(_c)
for _c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
    _ORG_VALUE[ord(_c)] = ord(_c) - ord("A") + 10
_CHARSET_BYTES = np.frombuffer(CREDIT_CHARSET.encode(), dtype=np.uint8)
_ORG_CHECK = np.frombuffer(b"0123456789X0", dtype=np.uint8)  # index 11 - total % 11, 11 -> '0'


@dataclass
class Employers:
    m: int
    individual: Bools
    enttype: Strs
    district: I64
    industry: Strs
    industrial: Bools
    registered: I64  # day
    status: I64  # ACTIVE / REVOKED / CANCELLED
    closed: I64  # day of revocation or cancellation, NEVER while active
    operator: I64  # person index for individual businesses, else -1
    codes: Strs
    names: Strs
    address: Strs
    insures: Bools  # registered with hrss, contributes pension insurance
    withholds: Bools  # withholds income tax for its employees
    in_tax: Bools  # in the tax register
    weight: F64  # relative size, for drawing workforce
    # Set by the employment model.
    headcount: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    size_class: Strs = field(default_factory=lambda: np.zeros(0, dtype="U2"))
    headcount_band: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # CYRS_DM - 1
    revenue_band: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # YYSR_DM - 1


def credit_codes(rng: np.random.Generator, individual: Bools, district: I64, new_style: Bools) -> Strs:
    """Valid, unique GB 32100 credit codes."""
    m = len(individual)
    chars = np.zeros((m, 18), dtype=np.uint8)
    todo = np.arange(m)
    while len(todo):
        k = len(todo)
        c = np.zeros((k, 18), dtype=np.uint8)
        c[:, 0] = ord("9")
        c[:, 1] = np.where(individual[todo], ord("2"), ord("1"))
        div = DISTRICT_CODES_INT[district[todo]]
        for j in range(6):
            c[:, 2 + j] = div // 10 ** (5 - j) % 10 + ord("0")
        body = _CHARSET_BYTES[rng.integers(0, len(_CHARSET_BYTES), (k, 8))]
        digits = rng.integers(0, 10, (k, 8)).astype(np.uint8) + ord("0")
        new = new_style[todo]
        body[new, 0], body[new, 1] = ord("M"), ord("A")
        body[~new] = digits[~new]
        c[:, 8:16] = body
        total = (_ORG_VALUE[body] * np.array(ORG_WEIGHTS, dtype=np.int64)).sum(axis=1)
        c[:, 16] = _ORG_CHECK[11 - total % 11]
        total = (_CREDIT_VALUE[c[:, :17]] * np.array(CREDIT_WEIGHTS, dtype=np.int64)).sum(axis=1)
        c[:, 17] = _CHARSET_BYTES[(31 - total % 31) % 31]
        chars[todo] = c
        codes = chars.view("S18").ravel()
        _, first = np.unique(codes, return_index=True)
        dup = np.ones(m, dtype=bool)
        dup[first] = False
        todo = np.flatnonzero(dup)
    out: Strs = chars.view("S18").ravel().astype("U18")
    return out


def build_employers(rng: np.random.Generator, m: int, pop: Population, households: Households) -> Employers:
    as_of = pop.as_of
    individual = rng.random(m) < 0.45
    n_ind = int(individual.sum())
    # Operators: adults 22-70, fewer among the disadvantaged, none in zero-employment households.
    age = pop.age
    w = np.where((age >= 22) & (age <= 70), np.where((age >= 30) & (age <= 55), 1.0, 0.5), 0.0)
    w = w * np.exp(-0.3 * pop.disadvantage) * np.where(pop.born_elsewhere, 1.3, 1.0)
    in_zero = households.current >= 0
    in_zero[in_zero] = households.zero_employment[households.current[in_zero]]
    w = np.where(in_zero, 0.0, w)
    n_ops = max(1, round(n_ind * 0.97)) if n_ind else 0
    ops = weighted_sample(rng, w, n_ops)
    operator = np.full(m, -1, dtype=np.int64)
    if n_ind and len(ops):
        assigned = np.concatenate([ops, ops[rng.integers(0, len(ops), max(0, n_ind - len(ops)))]])
        operator[individual] = assigned[:n_ind]
    individual = individual & (operator >= 0)

    ent_w = np.array([d.population for d in DISTRICTS]) * np.array(
        [1.8 if d.code == "120116" else 1.0 for d in DISTRICTS]
    )
    district = np.where(individual, pop.district[np.maximum(operator, 0)], choice(rng, ent_w, m)).astype(
        np.int64
    )
    letters = np.array([i[0] for i in INDUSTRIES])
    industry = np.where(
        individual,
        letters[choice(rng, [i[2] for i in INDUSTRIES], m)],
        letters[choice(rng, [i[1] for i in INDUSTRIES], m)],
    )
    industrial = np.isin(industry, [i[0] for i in INDUSTRIES if i[3]])
    enttype = np.where(
        individual, INDIVIDUAL_TYPE, np.array(ENTERPRISE_TYPES)[choice(rng, ENTERPRISE_TYPE_W, m)]
    )

    years = np.where(individual, rng.exponential(4.5, m), rng.exponential(7.0, m))
    years = np.minimum(years, np.where(individual, 30.0, 38.0))
    registered = as_of - 1 - np.floor(years * 365.2425).astype(np.int64)
    if individual.any():  # an operator registers as an adult
        op_adult = pop.birth[operator[individual]] + 20 * 365
        registered[individual] = np.minimum(np.maximum(registered[individual], op_adult), as_of - 1)
    status = choice(rng, (0.82, 0.06, 0.12), m)
    can_close = registered < as_of - 400
    status = np.where(can_close, status, ACTIVE)
    span = np.maximum(1, as_of - 1 - (registered + 365))
    closed = np.where(
        status == ACTIVE, NEVER, registered + 365 + np.floor(rng.random(m) ** 0.7 * span).astype(np.int64)
    )
    new_style = dates.ymd(registered)[0] >= 2015
    codes = credit_codes(rng, individual, district, new_style | individual)

    trade = np.array(list(TRADE_CHARS))
    t1 = trade[rng.integers(0, len(trade), m)]
    t2 = trade[rng.integers(0, len(trade), m)]
    ind_words = np.array([INDUSTRY_WORDS[c] for c in letters])
    shop_words = np.array([SHOP_WORDS.get(c, "商行") for c in letters])
    letter_idx = np.searchsorted(letters, industry)
    suffix = np.select(
        [enttype == "1200", enttype == "4000", enttype == "5100"],
        ["股份有限公司", "公司", "有限公司"],
        "有限公司",
    )
    ent_name = np.strings.add(np.strings.add(np.strings.add("天津", t1), t2), ind_words[letter_idx])
    ent_name = np.strings.add(np.strings.add(ent_name, np.where(enttype == "5100", "(中外合资)", "")), suffix)
    surname = np.array([name[:1] for name in pop.names[np.maximum(operator, 0)].tolist()], dtype="U1")
    shop_name = np.strings.add(np.strings.add(DISTRICT_NAMES[district], surname), "记")
    shop_name = np.strings.add(np.strings.add(shop_name, t1), shop_words[letter_idx])
    names = np.where(individual, shop_name, ent_name)

    weight = np.where(individual, rng.exponential(0.6, m), rng.lognormal(np.log(4.0), 1.4, m))
    insures = rng.random(m) < np.where(individual, 0.25, 0.9)
    withholds = rng.random(m) < np.where(individual, 0.6, 0.97)
    in_tax = ~individual | withholds | (rng.random(m) < 0.5)
    return Employers(
        m=m,
        individual=individual,
        enttype=enttype,
        district=district,
        industry=industry,
        industrial=industrial,
        registered=registered,
        status=status,
        closed=closed,
        operator=np.where(individual, operator, -1),
        codes=codes,
        names=names,
        address=addresses(rng, district),
        insures=insures,
        withholds=withholds,
        in_tax=in_tax,
        weight=weight,
    )
