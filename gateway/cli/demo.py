"""``dsgw demo``: on a fresh checkout, exercise everything that exists, with embedded defaults only.

Today: synthetic agency sources for a small city, identifier checks, every adapter's datasets and
predicates called for sampled subjects, and a provider outage that fails fast and opens its
circuit breaker. The gateway, consent, push and audit steps join as they land.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adapters.agencies import Agency
from adapters.contract import (
    Adapter,
    InvalidRequest,
    ProviderUnavailable,
    Subject,
    SubjectKind,
    SubjectNotFound,
)
from adapters.registry import close_adapters, open_adapter, open_adapters
from adapters.resilience import ResiliencePolicy
from adapters.sources import SourceConfig, sqlite_sources
from adapters.synthetic.generate import GenerateConfig, generate
from gateway.cli import add_json_flag, emit
from gateway.errors import UsageError
from gateway.identity import InvalidIdentifier, normalize_resident_id
from gateway.identity.forms import to_fullwidth, to_legacy15


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("demo", help="run the end-to-end demo")
    parser.add_argument("--home", type=Path, help="keep the demo's home (data, keys, logs) in DIR")
    parser.add_argument("--persons", type=int, default=5000, help="synthetic persons (default 5000)")
    parser.add_argument("--employers", type=int, default=500, help="synthetic employers (default 500)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample", type=int, default=200, help="subjects per subject kind to call")
    add_json_flag(parser)
    parser.set_defaults(handler=run)


@contextlib.contextmanager
def _home(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="dsgw-demo-") as tmp:
        yield Path(tmp)


def _say(args: argparse.Namespace, line: str) -> None:
    if not args.json:
        print(line, flush=True)


def _sample(truth: Path, table: str, column: str, n: int) -> list[str]:
    """Subjects for the demo: the first ``n`` by a hash order (stable, spread over the population)."""
    with contextlib.closing(sqlite3.connect(f"file:{truth}?mode=ro", uri=True)) as conn:
        rows = conn.execute(f"SELECT {column} FROM {table} ORDER BY substr({column}, 11) LIMIT ?", (n,))
        return [r[0] for r in rows]


def _identifiers(sample_id: str) -> dict[str, Any]:
    """Show normalisation of stored forms, and a precise refusal of a broken number."""
    forms = [
        sample_id.lower(),
        to_fullwidth(sample_id),
        f" {sample_id[:6]} {sample_id[6:14]} {sample_id[14:]} ",
    ]
    legacy = to_legacy15(sample_id)
    if legacy:
        forms.append(legacy)
    normalised = sum(normalize_resident_id(f) == sample_id for f in forms)
    broken = sample_id[:10] + sample_id[11] + sample_id[10] + sample_id[12:]
    if broken == sample_id:
        broken = sample_id[:16] + str((int(sample_id[16]) + 1) % 10) + sample_id[17]
    try:
        normalize_resident_id(broken)
        refusal = "accepted"
    except InvalidIdentifier as exc:
        refusal = exc.reason.value
    return {"forms_normalised": normalised, "forms_tried": len(forms), "transposed_digits_refused": refusal}


def _call_all(
    adapters: dict[Agency, Adapter], subjects: list[Subject], as_of: Any
) -> dict[str, Counter[str]]:
    fetches: Counter[str] = Counter()
    verifies: Counter[str] = Counter()
    for adapter in adapters.values():
        description = adapter.describe()
        for ds in description.datasets:
            for subject in subjects:
                if subject.kind is not ds.subject_kind:
                    continue
                try:
                    adapter.fetch(ds.name, subject, as_of=as_of)
                    fetches["found"] += 1
                except SubjectNotFound:
                    fetches["not_found"] += 1
        for pred in description.predicates:
            params = {p: 5 if p == "years" else 1 for p in pred.parameters}
            for subject in subjects:
                if subject.kind is not pred.subject_kind:
                    continue
                try:
                    verifies[
                        "yes" if adapter.evaluate(pred.name, subject, params, as_of=as_of) else "no"
                    ] += 1
                except SubjectNotFound:
                    verifies["not_found"] += 1
    return {"fetch": fetches, "verify": verifies}


def _outage() -> dict[str, Any]:
    """A provider whose server does not answer: typed errors within the deadline, then a fast
    failure once the breaker is open."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections and never answers
    port = listener.getsockname()[1]
    source = SourceConfig(
        url=f"postgresql://dsgw@127.0.0.1:{port}/none", connect_timeout_s=2, call_timeout_s=2
    )
    policy = ResiliencePolicy(attempts=1, fail_max=2, reset_timeout_s=60)
    adapter = open_adapter(Agency.TAX, source, policy)
    results: list[dict[str, Any]] = []
    subject = Subject(SubjectKind.EMPLOYER, "91350100M000100Y43")
    try:
        for _ in range(3):
            start = time.perf_counter()
            try:
                adapter.fetch("employer_tax", subject)
                outcome = "answered"
            except ProviderUnavailable as exc:
                outcome = "circuit_open" if exc.circuit_open else "unavailable"
            results.append({"outcome": outcome, "seconds": round(time.perf_counter() - start, 3)})
    finally:
        adapter.close()
        listener.close()
    return {"calls": results}


def run(args: argparse.Namespace) -> int:
    if args.persons < 100 or args.employers < 10:
        raise UsageError("the demo needs at least 100 persons and 10 employers")
    if args.sample < 1:
        raise UsageError("--sample must be at least 1")
    started = time.perf_counter()
    with _home(args.home) as home:
        data = home / "data"
        _say(args, f"dsgw demo: home {home}")
        config = GenerateConfig(
            persons=args.persons, employers=args.employers, seed=args.seed, out=data, force=True
        )
        summary = generate(config)
        _say(
            args,
            f"  generated {summary.persons} persons, {summary.employers} employers "
            f"({summary.total_rows} rows in 6 databases) in {summary.seconds:.1f}s",
        )
        truth = data / "truth.sqlite"
        persons = _sample(truth, "person", "person_id", args.sample)
        employers = _sample(truth, "employer", "credit_code", max(1, args.sample // 4))
        identifiers = _identifiers(persons[0])
        _say(
            args,
            f"  identifiers: {identifiers['forms_normalised']}/{identifiers['forms_tried']} stored forms "
            f"normalised; transposed digits refused ({identifiers['transposed_digits_refused']})",
        )
        adapters = open_adapters(sqlite_sources(data))
        try:
            health = {a.value: ad.health().state.value for a, ad in adapters.items()}
            _say(args, "  providers: " + ", ".join(f"{a} {s}" for a, s in health.items()))
            subjects = [Subject(SubjectKind.PERSON, p) for p in persons]
            subjects += [Subject(SubjectKind.EMPLOYER, e) for e in employers]
            calls = _call_all(adapters, subjects, config.as_of)
            try:
                adapters[Agency.EDUCATION].fetch("no_such_dataset", subjects[0])
                refused = "accepted"
            except InvalidRequest:
                refused = "invalid_request"
        finally:
            close_adapters(adapters)
        _say(
            args,
            f"  adapter calls: fetch {dict(calls['fetch'])}, verify {dict(calls['verify'])}; "
            f"unknown dataset -> {refused}",
        )
        outage = _outage()
        _say(
            args,
            "  provider outage: " + ", ".join(f"{c['outcome']} in {c['seconds']}s" for c in outage["calls"]),
        )
        result = {
            "home": str(home) if args.home else None,
            "data": {
                "persons": summary.persons,
                "employers": summary.employers,
                "rows": summary.total_rows,
                "seconds": round(summary.seconds, 3),
            },
            "identifiers": identifiers,
            "providers": health,
            "calls": {k: dict(v) for k, v in calls.items()},
            "invalid_request": refused,
            "outage": outage,
            "seconds": round(time.perf_counter() - started, 3),
        }
    if args.json:
        emit(args, result)
    else:
        print(f"dsgw demo: done in {result['seconds']}s")
    return 0
