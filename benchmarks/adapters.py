"""Benchmark: the per-call cost of the agency adapters (fetch / evaluate / evaluate_many).

    python benchmarks/adapters.py [--quick] [--persons N] [--seconds S] [--threads T]
                                  [--backend sqlite|postgresql|both] [--repeats R]

Generates a synthetic city (default 100,000 persons and 10,000 employers; --quick 20,000 / 2,000;
seed 7) into a temporary directory (SQLite files; with --backend postgresql|both also into
PostgreSQL schemas, dropped afterwards), opens the adapters with
``open_adapters(sqlite_sources(DIR))`` and measures, each for S seconds (default 2, --quick 1)
and R times (default 3), after a warm-up:

- ``fetch_us``: ``education.fetch("graduation", person)`` per call, one thread (subjects drawn
  from the truth's graduates; the few whose record the agency lost count as calls too);
- ``fetch_hrss_us``: ``hrss.fetch("person_insurance", person, 3 fields)`` per call, one thread;
- ``evaluate_us``: ``civil_affairs.evaluate("receives_subsistence_allowance", person)`` per call,
  one thread (half the subjects assisted, half not: absent means False);
- ``evaluate_many_us_per_subject``: ``evaluate_many`` of the same predicate over chunks of 500
  subjects, per subject;
- ``fetch_threads_per_s`` / ``evaluate_threads_per_s``: calls per second from T threads
  (default 8) sharing one adapter, as the gateway's I/O threads do.

Logs are configured as the gateway runs (``gateway.logs.configure``, level WARNING). Each figure
is the median of the R runs; ``spread`` gives min and max. Per-call figures are
wall time on an otherwise idle process (the calls are CPU-bound on SQLite). Last line: one JSON
object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select, text

from adapters.agencies import Agency
from adapters.contract import Adapter, Subject, SubjectKind, SubjectNotFound
from adapters.registry import close_adapters, open_adapters
from adapters.sources import SourceConfig, make_engine, server_sources, sqlite_sources
from adapters.synthetic import truth
from adapters.synthetic.generate import DEFAULT_AS_OF, GenerateConfig, generate
from gateway.logs import configure as configure_logs

PG_URL = os.environ.get("DSGW_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
AS_OF = DEFAULT_AS_OF
HRSS_FIELDS = ["currently_insured", "insured_months_24m", "contribution_base"]
CHUNK = 500


def say(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f} s] {message}", flush=True)


STARTED = time.perf_counter()


def subjects_from_truth(source: SourceConfig, rng: random.Random) -> dict[str, list[Subject]]:
    """Graduates, assisted persons and other persons (canonical ids from the truth)."""
    engine = make_engine(source)
    try:
        with engine.connect() as conn:
            p = truth.person.c
            ids = select(p.person_id)
            graduates = list(conn.execute(ids.where(p.education_level.is_not(None))).scalars())
            assisted = list(conn.execute(ids.where(p.household_id.is_not(None))).scalars())
            everyone = list(conn.execute(ids).scalars())
    finally:
        engine.dispose()

    def pick(ids: list[str], n: int) -> list[Subject]:
        chosen = rng.sample(ids, min(n, len(ids)))
        return [Subject(SubjectKind.PERSON, i) for i in chosen]

    mixed = pick(assisted, 2000) + pick(everyone, 2000)
    rng.shuffle(mixed)
    return {"graduates": pick(graduates, 4000), "persons": pick(everyone, 4000), "mixed": mixed}


def per_call(fn: Callable[[Subject], Any], subjects: list[Subject], seconds: float) -> float:
    """Microseconds per call of ``fn`` over ``subjects`` (cycled) for about ``seconds``."""
    n = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for s in subjects[n % len(subjects) : n % len(subjects) + 200]:
            fn(s)
        n += min(200, len(subjects) - n % len(subjects))
        if time.perf_counter() >= deadline:
            break
    return (time.perf_counter() - started) / n * 1e6


def threaded_rate(
    fn: Callable[[Subject], Any], subjects: list[Subject], threads: int, seconds: float
) -> float:
    """Calls per second of ``fn`` from ``threads`` threads for about ``seconds``."""
    counts = [0] * threads
    errors: list[BaseException] = []
    stop = threading.Event()
    go = threading.Barrier(threads + 1)

    def worker(k: int) -> None:
        local = subjects[k::threads] or subjects
        go.wait()
        i = 0
        try:
            while not stop.is_set():
                fn(local[i % len(local)])
                i += 1
        except BaseException as exc:  # report, do not hide
            errors.append(exc)
        counts[k] = i

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    go.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


def measure(
    name: str,
    adapters: Mapping[Agency, Adapter],
    subjects: dict[str, list[Subject]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    edu = adapters[Agency.EDUCATION]
    hrss = adapters[Agency.HRSS]
    civil = adapters[Agency.CIVIL_AFFAIRS]
    graduates, persons, mixed = subjects["graduates"], subjects["persons"], subjects["mixed"]

    def fetch_edu(s: Subject) -> Any:
        try:
            return edu.fetch("graduation", s, as_of=AS_OF)
        except SubjectNotFound:  # the truth's graduate whose record the agency lost (dirt)
            return None

    def fetch_hrss(s: Subject) -> Any:
        try:
            return hrss.fetch("person_insurance", s, HRSS_FIELDS, as_of=AS_OF)
        except SubjectNotFound:
            return None

    def evaluate(s: Subject) -> Any:
        return civil.evaluate("receives_subsistence_allowance", s, as_of=AS_OF)

    chunks = [mixed[i : i + CHUNK] for i in range(0, len(mixed) - CHUNK + 1, CHUNK)]

    def evaluate_many_us() -> float:
        n = 0
        started = time.perf_counter()
        deadline = started + args.seconds
        while time.perf_counter() < deadline:
            chunk = chunks[(n // CHUNK) % len(chunks)]
            civil.evaluate_many("receives_subsistence_allowance", chunk, as_of=AS_OF, timeout=30)
            n += len(chunk)
        return (time.perf_counter() - started) / n * 1e6

    # warm-up: connections, statement caches; and a sanity check of the subjects
    found_edu = sum(fetch_edu(s) is not None for s in graduates[:300])
    found_hrss = sum(fetch_hrss(s) is not None for s in persons[:300])
    yes = sum(bool(evaluate(s)) for s in mixed[:300])
    civil.evaluate_many("receives_subsistence_allowance", mixed[:CHUNK], as_of=AS_OF, timeout=30)
    say(
        f"[{name}] warm; of 300 subjects each: {found_edu} graduations, {found_hrss} insurance "
        f"records found, {yes} receive the subsistence allowance"
    )

    runs: dict[str, list[float]] = {
        k: []
        for k in (
            "fetch_us",
            "fetch_hrss_us",
            "evaluate_us",
            "evaluate_many_us_per_subject",
            "fetch_threads_per_s",
            "evaluate_threads_per_s",
        )
    }
    gc.collect()
    for r in range(args.repeats):
        runs["fetch_us"].append(per_call(fetch_edu, graduates, args.seconds))
        runs["fetch_hrss_us"].append(per_call(fetch_hrss, persons, args.seconds))
        runs["evaluate_us"].append(per_call(evaluate, mixed, args.seconds))
        runs["evaluate_many_us_per_subject"].append(evaluate_many_us())
        runs["fetch_threads_per_s"].append(threaded_rate(fetch_edu, graduates, args.threads, args.seconds))
        runs["evaluate_threads_per_s"].append(threaded_rate(evaluate, mixed, args.threads, args.seconds))
        say(f"[{name}] run {r + 1}: " + ", ".join(f"{k} {v[-1]:,.1f}" for k, v in runs.items()))
    out: dict[str, Any] = {"backend": name}
    for k, v in runs.items():
        out[k] = round(statistics.median(v), 1)
    out["spread"] = {k: [round(min(v), 1), round(max(v), 1)] for k, v in runs.items()}
    return out


def run_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dsgw-bench-adapters-") as tmp:
        out = Path(tmp)
        say(f"generating {args.persons:,} persons, {args.employers:,} employers (SQLite)")
        generate(GenerateConfig(persons=args.persons, employers=args.employers, seed=7, out=out))
        sources = sqlite_sources(out)
        subjects = subjects_from_truth(sources["truth"], random.Random(args.seed))
        adapters = open_adapters(sources)
        try:
            return measure("sqlite", adapters, subjects, args)
        finally:
            close_adapters(adapters)


def run_postgresql(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"dsgw_bench_adapters_{secrets.token_hex(4)}_"
    try:
        say(f"generating {args.persons:,} persons, {args.employers:,} employers (PostgreSQL)")
        generate(
            GenerateConfig(
                persons=args.persons, employers=args.employers, seed=7, url=args.pg_url, schema_prefix=prefix
            )
        )
        sources = server_sources(args.pg_url, prefix)
        subjects = subjects_from_truth(sources["truth"], random.Random(args.seed))
        adapters = open_adapters(sources)
        try:
            return measure("postgresql", adapters, subjects, args)
        finally:
            close_adapters(adapters)
    finally:
        engine = make_engine(SourceConfig(url=args.pg_url))
        try:
            with engine.begin() as conn:
                names = conn.execute(
                    text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"), {"p": prefix + "%"}
                ).scalars()
                for schema in list(names):
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20,000 persons, 1 s per figure")
    parser.add_argument("--persons", type=int, default=None)
    parser.add_argument("--employers", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    args.persons = args.persons or (20_000 if args.quick else 100_000)
    args.employers = args.employers or max(1, args.persons // 10)
    args.seconds = args.seconds or (1.0 if args.quick else 2.0)
    configure_logs(json=True, level="WARNING")  # as the gateway runs: adapter.call debug events filtered

    result: dict[str, Any] = {
        "benchmark": "adapters",
        "cpus": os.cpu_count(),
        "persons": args.persons,
        "threads": args.threads,
        "as_of": AS_OF.isoformat(),
        "date": dt.date.today().isoformat(),
    }
    if args.backend in ("sqlite", "both"):
        result.update(run_sqlite(args))
    if args.backend in ("postgresql", "both"):
        try:
            pg = run_postgresql(args)
        except Exception as exc:  # report, do not hide: the SQLite figures stand on their own
            pg = {"backend": "postgresql", "error": f"{type(exc).__name__}: {exc}"[:200]}
        if args.backend == "postgresql":
            result.update(pg)
        else:
            result["postgresql"] = pg
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
