"""Orchestration: ``generate(config)`` draws the latent city, builds every agency's native tables
and the truth, and writes them all-or-nothing (SQLite files in a directory or PostgreSQL schemas).

The latent world is drawn once in this process; the databases are then built and written by
``workers`` forked processes (each agency and the truth is one task). Output depends only on the
seed, the sizes, as_of and the dirt rates, never on the clock or the number of workers.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.sources import TRUTH
from adapters.synthetic.dirt import DirtRates
from adapters.synthetic.native import BUILDERS, TableRows
from adapters.synthetic.sampling import streams
from adapters.synthetic.truth_rows import build_truth, dirt_json
from adapters.synthetic.world import World, build_world
from adapters.synthetic.writers import AGENCIES, PostgresTarget, SqliteTarget, Target, link_table
from gateway.errors import UsageError

DEFAULT_AS_OF = dt.date(2026, 11, 1)
MAX_PERSONS = 20_000_000
MAX_EMPLOYERS = 5_000_000

Progress = Callable[[str], None]


class GenerateConfig(BaseModel):
    """What to generate and where. Exactly one of ``out`` (a directory for SQLite files) and
    ``url`` (a PostgreSQL database; one schema per agency) is given."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    persons: int = Field(ge=1, le=MAX_PERSONS)
    employers: int = Field(ge=1, le=MAX_EMPLOYERS)
    seed: int = Field(default=0, ge=0, lt=2**63)
    as_of: dt.date = DEFAULT_AS_OF
    dirt: DirtRates = Field(default_factory=DirtRates)
    out: Path | None = None
    url: str | None = None
    schema_prefix: str = ""
    force: bool = False
    workers: int = Field(default=2, ge=1, le=16)

    @model_validator(mode="after")
    def _one_target(self) -> GenerateConfig:
        if (self.out is None) == (self.url is None):
            raise ValueError("give exactly one of out (a directory) and url (a server database)")
        if self.as_of.year < 1990 or self.as_of.year > 2100:
            raise ValueError("as_of must be between 1990 and 2100")
        return self


@dataclass
class GenerateSummary:
    persons: int
    employers: int
    seed: int
    as_of: str
    seconds: float
    locations: dict[str, str]
    sizes: dict[str, int]
    rows: dict[str, dict[str, int]]
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(sum(t.values()) for t in self.rows.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "persons": self.persons,
            "employers": self.employers,
            "seed": self.seed,
            "as_of": self.as_of,
            "seconds": round(self.seconds, 3),
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "total_rows": self.total_rows,
            "total_bytes": self.total_bytes,
            "rows": self.rows,
            "sizes": self.sizes,
            "paths": self.locations,
        }


# State shared with forked workers (set before the pool starts; read-only there).
_STATE: dict[str, Any] = {}


def _run_task(name: str) -> tuple[str, dict[str, int], float]:
    """Build and write one database (an agency with its record_link part, or the truth)."""
    started = time.perf_counter()
    world: World = _STATE["world"]
    config: GenerateConfig = _STATE["config"]
    target: Target = _STATE["target"]
    counts: dict[str, int] = {}
    if name == TRUTH:
        tables = build_truth(world, dirt_json(config.dirt))
        sink = target.sink(TRUTH)
        for rows in tables:
            sink.write(rows)
            counts[rows.table.name] = rows.count
        sink.close()
    else:
        rng = streams(config.seed)[_STREAM[name]]
        tables, links = BUILDERS[name](world, getattr(config.dirt, name), rng)
        sink = target.sink(name)
        for rows in tables:
            sink.write(rows)
            counts[rows.table.name] = rows.count
        sink.close()
        link_sink = target.link_sink(name)
        link_rows = TableRows(link_table(name), links.columns())
        link_sink.write(link_rows)
        link_sink.close()
        counts["record_link"] = link_rows.count
    return name, counts, time.perf_counter() - started


_STREAM = {
    "hrss": "hrss",
    "education": "education_rows",
    "civil_affairs": "civil_affairs",
    "tax": "tax",
    "market_regulation": "market_regulation",
}
#: Tasks, largest first, so that two workers finish close together.
TASK_ORDER: tuple[str, ...] = (TRUTH, "hrss", "tax", "education", "market_regulation", "civil_affairs")


def make_target(config: GenerateConfig) -> Target:
    """The output target; raises UsageError (before anything is written) if it already holds
    databases and ``force`` is not set, or cannot be reached."""
    if config.out is not None:
        return SqliteTarget(config.out, config.force)
    assert config.url is not None
    return PostgresTarget(config.url, config.schema_prefix, config.force)


def _written(name: str, counts: dict[str, int], seconds: float) -> str:
    """The progress line of one written database: its own rows, and apart the record links it
    made (they are moved to the truth at the end, where the summary counts them)."""
    links = counts.get("record_link", 0)
    own = sum(counts.values()) - links
    return (
        f"{name}: {own:,} rows"
        + (f" (+{links:,} record links for the truth)" if links else "")
        + (f" in {seconds:.1f} s")
    )


def generate(config: GenerateConfig, progress: Progress | None = None) -> GenerateSummary:
    """Generate the five agency databases and the truth; returns what was written."""
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    phases: dict[str, float] = {}
    target = make_target(config)
    say(f"drawing the latent city: {config.persons:,} persons, {config.employers:,} employers")
    world = build_world(config.persons, config.employers, config.seed, config.as_of)
    phases["world"] = time.perf_counter() - started
    say(f"latent city drawn in {phases['world']:.1f} s; writing {len(TASK_ORDER)} databases")
    rows: dict[str, dict[str, int]] = {}
    target.prepare()
    try:
        _STATE.update(world=world, config=config, target=target)
        t_write = time.perf_counter()
        if config.workers > 1:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(min(config.workers, len(TASK_ORDER))) as pool:
                for name, counts, seconds in pool.imap_unordered(_run_task, TASK_ORDER):
                    rows[name] = counts
                    say(_written(name, counts, seconds))
        else:
            for task in TASK_ORDER:
                name, counts, seconds = _run_task(task)
                rows[name] = counts
                say(_written(name, counts, seconds))
        phases["write"] = time.perf_counter() - t_write
        t_assemble = time.perf_counter()
        target.assemble()
        for agency in AGENCIES:
            rows[TRUTH]["record_link"] = rows[TRUTH].get("record_link", 0) + rows[agency].pop("record_link")
        target.commit()
        phases["assemble"] = time.perf_counter() - t_assemble
    except BaseException:
        target.abort()
        raise
    finally:
        _STATE.clear()
    ordered = {name: rows[name] for name in (*AGENCIES, TRUTH)}
    seconds = time.perf_counter() - started
    say(f"done in {seconds:.1f} s")
    return GenerateSummary(
        persons=config.persons,
        employers=config.employers,
        seed=config.seed,
        as_of=config.as_of.isoformat(),
        seconds=seconds,
        locations=target.locations(),
        sizes=target.sizes(),
        rows=ordered,
        phases=phases,
    )


def config_error(exc: Exception) -> UsageError:
    """A pydantic validation error as a one-line UsageError."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return UsageError(f"bad {where}: {message}" if where else message)
    return UsageError(str(exc).splitlines()[0])
