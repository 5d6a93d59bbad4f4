"""The latent city is shaped like Tianjin and holds every group the datasets ask about."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np
import pytest

from adapters.synthetic import dates
from adapters.synthetic.employment import EMPLOYED, FLEXIBLE, UNEMPLOYED
from adapters.synthetic.geography import DISTRICT_CODES
from adapters.synthetic.world import World, build_world
from gateway.identity import normalize_resident_id
from gateway.identity.divisions import TIANJIN_HISTORICAL


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(30000, 3000, seed=99, as_of=dt.date(2026, 11, 1))


def test_people(world: World) -> None:
    pop = world.population
    assert len(set(pop.ids.tolist())) == pop.n
    for pid in pop.ids[:2000].tolist():
        assert normalize_resident_id(pid, today=world.as_of) == pid
    assert pop.age.min() >= 0 and pop.age.max() <= 95
    share = np.bincount(pop.district, minlength=16) / pop.n
    assert share.min() > 0.01 and DISTRICT_CODES[int(share.argmax())] == "120116"  # Binhai New Area
    assert 0.18 < pop.born_elsewhere.mean() < 0.27
    provinces = Counter(str(c)[:2] for c in pop.division[pop.born_elsewhere].tolist())
    assert {"13", "37", "41", "23"} <= set(provinces) and provinces.most_common(1)[0][0] == "13"
    historical = {str(c) for c in pop.division.tolist()} & set(TIANJIN_HISTORICAL)
    assert {"120107", "120108", "120109", "120221", "120223", "120225"} <= historical
    year = dates.ymd(pop.birth)[0]
    assert not np.isin(pop.division[year >= 2016], [120107, 120108, 120109, 120221, 120223, 120225]).any()
    assert 0.45 < pop.male.mean() < 0.55
    assert all(2 <= len(n) <= 3 for n in pop.names[:1000].tolist())


def test_groups_and_correlations(world: World) -> None:
    em, hh, dis, grads = world.employment, world.households, world.disability, world.graduations
    n = world.population.n
    status = Counter(em.status.tolist())
    assert 0.3 < status[EMPLOYED] / n < 0.55
    assert status[UNEMPLOYED] > 0 and status[FLEXIBLE] > 0
    assert em.hard_to_employ.sum() > 0 and (em.status[em.hard_to_employ] == UNEMPLOYED).mean() > 0.6
    assert em.benefit_now.sum() > 0 and (em.status[em.benefit_now] == UNEMPLOYED).all()
    assert em.veteran.sum() and em.returning_migrant.sum() and em.poverty_lifted.sum()
    in_hh = hh.current >= 0
    assert 0.01 < in_hh.mean() < 0.05
    assert (em.status[in_hh] == UNEMPLOYED).mean() > 2 * (em.status[~in_hh] == UNEMPLOYED).mean()
    assert dis.has[in_hh].mean() > 2 * dis.has[~in_hh].mean()
    assert hh.zero_employment.any() and set(hh.size.tolist()) <= {1, 2, 3, 4, 5}
    zero_rows = hh.zero_employment[hh.member_household] & hh.is_current[hh.member_household]
    zero_members = hh.member[zero_rows]
    open_people = set(em.relations.person[em.relations.end < 0].tolist())
    assert not open_people & set(zero_members.tolist())
    levels = Counter(grads.level.tolist())
    assert len(levels) == 4
    recent = grads.graduation >= dates.day_number(dt.date(2021, 11, 1))
    assert recent.sum() > 0.1 * len(grads.graduation)


def test_employers(world: World) -> None:
    emp = world.employers
    assert 0.35 < emp.individual.mean() < 0.55
    sizes = Counter(emp.size_class.tolist())
    assert sizes["XS"] + sizes["S"] > 0.9 * emp.m
    assert set(Counter(emp.status.tolist())) == {0, 1, 2}
    assert (emp.operator[emp.individual] >= 0).all() and (emp.operator[~emp.individual] < 0).all()
    rel = world.employment.relations
    assert (rel.start >= emp.registered[rel.employer]).all()
    assert (rel.end[rel.end >= 0] <= emp.closed[rel.employer[rel.end >= 0]]).all()
