"""Benchmark: consent checks per second in one process (issue 5).

    python benchmarks/consent.py [--quick] [--consents N] [--seconds S] [--backend sqlite|postgresql|both]

Stores N consents (default 100,000; --quick 10,000) through the service's bulk path
(``ConsentService.grant_many``: full validation, one transaction per 5,000), revokes 1 % of them
through ``ConsentService.revoke``, then for S seconds (default 5) decides checks drawn at random
over all stored subjects: 70 % that a consent covers, 10 % with another purpose, 10 % asking a
field outside the scope, 10 % for subjects without any consent. A check is what the gateway does
per call once the request is validated: the store lookup of the subject's records (one indexed
query on a fresh read: no cache of anything a revocation changes) plus the pure decision
(``ConsentService.decide``). ``validated_checks_per_s`` adds the request validation
(``ConsentService.check``: identifier checksum, agency, dataset, fields, purpose).

The store keeps a bounded memo (8,192 records) of parsed immutable terms; with random subjects
over 100,000 consents most lookups miss it, as they would in production.

Last line: one JSON object with ``checks_per_s`` (SQLite), ``consents``, ``backend``, ``seconds``
and, with ``--backend both`` (the default), the PostgreSQL figures under ``postgresql``. The goal
is >= 20,000 checks/s on SQLite with 100,000 consents stored.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import secrets
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from adapters.sources import SourceConfig, make_engine
from gateway.consent.decision import CheckRequest, DenyReason
from gateway.consent.service import ConsentService, GrantRequest, ScopeRequest
from gateway.consent.store import ConsentStore
from gateway.identity import make_credit_code, make_resident_id

PG_URL = os.environ.get("DSGW_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
T0 = datetime(2025, 6, 1, tzinfo=UTC)

# (provider, dataset, fields in scope, a field outside the scope, consumer, purpose)
PERSON_SHAPES = [
    ("hrss", "employment_status", ("registered_unemployed", "unemployed_since"), "flexible_employment",
     "education", "employment_subsidy_review"),
    ("hrss", "person_insurance", ("currently_insured", "insured_months_24m"), "contribution_base",
     "civil_affairs", "social_insurance_subsidy"),
    ("education", "graduation", ("level", "graduation_date"), "major", "hrss", "graduate_employment"),
    ("tax", "income_withholding", ("months_withheld_12m",), "current_withholding_agents", "hrss",
     "unemployment_benefit"),
    ("civil_affairs", "assistance", ("household_category", "zero_employment_household"), "household_size",
     "hrss", "employment_assistance"),
]  # fmt: skip
EMPLOYER_SHAPE: tuple[str, str, tuple[str, ...], str, str, str] = (
    "tax",
    "employer_tax",
    ("headcount_band",),
    "revenue_band",
    "hrss",
    "job_stabilisation_refund",
)


def person_id(n: int) -> str:
    return make_resident_id("120101", date(1970, 1, 1) + timedelta(days=n // 1000), n % 1000)


def employer_id(n: int) -> str:
    return make_credit_code("91", "120101", f"{n:08d}")


def build_grants(n: int, rng: random.Random) -> list[tuple[GrantRequest, tuple[Any, ...]]]:
    """n grants over about 0.7 n subjects (some hold two or three consents); 5 % employers."""
    out = []
    subjects = max(1, int(n * 0.7))
    for i in range(n):
        k = i % subjects
        if k % 20 == 0:
            subject, shape = employer_id(k), EMPLOYER_SHAPE
        else:
            subject, shape = person_id(k), PERSON_SHAPES[(i // subjects + k) % len(PERSON_SHAPES)]
        provider, dataset, fields, _, consumer, purpose = shape
        req = GrantRequest(
            subject=subject,
            consumers=[consumer],
            scope=[ScopeRequest(provider, dataset, fields)],
            purposes=[purpose],
            valid_to=T0 + timedelta(days=365 * 5),
            valid_from=T0,
            channel=rng.choice(["counter", "app", "web", "paper"]),
            evidence_ref=f"ev-{i}",
            notice_version="notice-2025-1",
            separate=provider == "civil_affairs",
        )
        out.append((req, (subject, shape)))
    return out


def build_checks(
    service: ConsentService,
    grants: list[tuple[GrantRequest, tuple[Any, ...]]],
    rng: random.Random,
    count: int,
) -> list[tuple[CheckRequest, dict[str, Any]]]:
    checks = []
    for _ in range(count):
        subject, shape = rng.choice(grants)[1]
        provider, dataset, fields, outside, consumer, purpose = shape
        roll = rng.random()
        wanted = list(fields)
        if roll < 0.1:
            purpose = "startup_loan"
        elif roll < 0.2:
            wanted = [fields[0], outside]
        elif roll < 0.3:
            subject = person_id(10_000_000 + rng.randrange(1_000_000))
            provider, dataset, fields, outside, consumer, purpose = PERSON_SHAPES[0]
            wanted = list(fields)
        kw = {
            "subject": subject,
            "consumer": consumer,
            "provider": provider,
            "dataset": dataset,
            "purpose": purpose,
            "fields": wanted,
        }
        checks.append((service.check_request_for(**kw), kw))
    return checks


def run_backend(name: str, url: str, schema: str | None, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    store = ConsentStore(url, schema=schema)
    clock_now = [T0 + timedelta(days=1)]
    service = ConsentService(store, clock=lambda: clock_now[0])
    try:
        grants = build_grants(args.consents, rng)
        started = time.perf_counter()
        ids: list[str] = []
        for start in range(0, len(grants), 5000):
            batch = [g for g, _ in grants[start : start + 5000]]
            ids += [r.consent_id for r in service.grant_many(batch, now=T0)]
        load_s = time.perf_counter() - started
        print(f"[{name}] stored {len(ids):,} consents in {load_s:.1f} s", flush=True)
        started = time.perf_counter()
        for cid in rng.sample(ids, max(1, len(ids) // 100)):
            service.revoke(cid)
        revoke_s = time.perf_counter() - started
        print(f"[{name}] revoked {max(1, len(ids) // 100):,} in {revoke_s:.1f} s", flush=True)

        checks = build_checks(service, grants, rng, 20_000)
        del grants  # the harness's own garbage: out of the heap before timing
        gc.collect()
        # warm-up: connection, statement cache
        for req, _ in checks[:500]:
            service.decide(req)

        n = 0
        allowed = 0
        reasons: dict[str, int] = {}
        deadline = time.perf_counter() + args.seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            for req, _ in checks[n % len(checks) : n % len(checks) + 1000]:
                d = service.decide(req)
                n += 1
                if d.allowed:
                    allowed += 1
                else:
                    key = d.reason.value if d.reason else "?"
                    reasons[key] = reasons.get(key, 0) + 1
        seconds = time.perf_counter() - started
        checks_per_s = n / seconds
        print(f"[{name}] {n:,} checks in {seconds:.2f} s: {checks_per_s:,.0f}/s", flush=True)

        m = 0
        started = time.perf_counter()
        deadline = started + max(1.0, args.seconds / 2)
        while time.perf_counter() < deadline:
            for _, kw in checks[m % len(checks) : m % len(checks) + 1000]:
                service.check(**kw)
                m += 1
        validated_s = time.perf_counter() - started
        print(f"[{name}] {m:,} validated checks: {m / validated_s:,.0f}/s", flush=True)

        # a revocation takes effect for the very next check
        req = next(r for r, _ in checks if service.decide(r).allowed)
        cid = service.decide(req).consent_ids[0]
        service.revoke(cid)
        after = service.decide(req)
        effective = not after.allowed and after.reason is DenyReason.CONSENT_REVOKED
        return {
            "backend": name,
            "consents": store.count(),
            "checks": n,
            "seconds": round(seconds, 3),
            "checks_per_s": round(checks_per_s),
            "validated_checks_per_s": round(m / validated_s),
            "allowed_share": round(allowed / max(1, n), 3),
            "denied_reasons": dict(sorted(reasons.items())),
            "load_seconds": round(load_s, 2),
            "consents_per_s_bulk": round(len(ids) / load_s),
            "revocations_per_s": round(max(1, len(ids) // 100) / revoke_s),
            "revocation_effective_next_call": effective,
        }
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10,000 consents, 2 s of checks")
    parser.add_argument("--consents", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    args.consents = args.consents or (10_000 if args.quick else 100_000)
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)

    result: dict[str, Any] = {"benchmark": "consent", "cpus": os.cpu_count()}
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="dsgw-bench-consent-") as tmp:
            result.update(run_backend("sqlite", f"sqlite:///{Path(tmp) / 'consent.sqlite'}", None, args))
    if args.backend in ("postgresql", "both"):
        schema = f"dsgw_bench_consent_{secrets.token_hex(4)}"
        try:
            pg = run_backend("postgresql", args.pg_url, schema, args)
        except Exception as exc:  # report, do not hide: the SQLite figure stands on its own
            pg = {"backend": "postgresql", "error": f"{type(exc).__name__}: {exc}"[:200]}
        finally:
            engine = make_engine(SourceConfig(url=args.pg_url))
            try:
                with engine.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            except Exception:
                pass
            finally:
                engine.dispose()
        if args.backend == "postgresql":
            result.update(pg)
        else:
            result["postgresql"] = pg
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
