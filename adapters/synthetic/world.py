"""The latent world: every component of the synthetic city, drawn from one seed."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from adapters.synthetic.assistance import Disability, Households, build_disability, build_households
from adapters.synthetic.education import Graduations, build_graduations
from adapters.synthetic.employers import Employers, build_employers
from adapters.synthetic.employment import Employment, build_employment
from adapters.synthetic.population import Population, build_population
from adapters.synthetic.sampling import streams


@dataclass
class World:
    seed: int
    as_of: dt.date
    population: Population
    households: Households
    disability: Disability
    graduations: Graduations
    employers: Employers
    employment: Employment


def build_world(persons: int, employers: int, seed: int, as_of: dt.date) -> World:
    rngs = streams(seed)
    pop = build_population(rngs["population"], persons, as_of)
    households = build_households(rngs["households"], pop)
    disability = build_disability(rngs["disability"], pop, households)
    graduations = build_graduations(rngs["education"], pop, households, disability)
    emp = build_employers(rngs["employers"], employers, pop, households)
    employment = build_employment(rngs, pop, households, disability, graduations, emp)
    return World(
        seed=seed,
        as_of=as_of,
        population=pop,
        households=households,
        disability=disability,
        graduations=graduations,
        employers=emp,
        employment=employment,
    )
