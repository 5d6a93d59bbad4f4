"""Benchmark: the audit log (issue 4).

    python benchmarks/audit.py [--quick] [--search-entries N] [--dir DIR]

Measures, in one run, on this machine:

* ``limit_seal_hash_per_s``: the baseline, one AES-256-GCM seal plus one SHA-256 leaf hash of
  the same realistic entry, single thread, nothing else (no I/O, no framing, no index);
* ``append_per_s``: durable appends per second (each acknowledged only after fdatasync) with 64
  concurrent writers as asyncio tasks (the gateway is grpc.aio), the index follower running as
  the default child process; ``append_threads_per_s`` the same with 64 threads;
* ``bulk_append_per_s``: building the search log through the same writer (append_many, large
  batches, the follower indexing alongside);
* ``verify_per_s``: full verification (CRCs, indices, Merkle tree, every checkpoint's root and
  signature) of the search log, segments scanned by one process per usable CPU
  (``verify_jobs``); ``verify_decrypt_per_s`` with the auditor key on a sample;
* ``subject_search_ms``: finding all entries of one subject (blind term + index lookup) in a log
  of ``search_log_entries`` entries (10,000,000; --quick 1,000,000): median and max over 50
  subjects; ``subject_fetch_ms`` also reads and decrypts the matching entries;
* ``proof_hashes``: the inclusion proof size at 1,000,000 entries.

Entries are realistic access entries (six field names, a subject out of 1,000,000 persons, a
purpose, a consent basis), built as protos (the gateway's fast path). The temporary logs are
deleted at the end. Progress lines first, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.blind_index import BlindIndexer
from audit.checkpoints import CheckpointPolicy
from audit.entry import AuditEntry
from audit.keys import FileKeyProvider
from audit.layout import HomeKeys, LogKeys
from audit.log import AuditLog, init_log
from audit.merkle import LEAF_PREFIX, MerkleProver
from audit.reader import LogReader
from audit.seal import Sealer
from audit.verify import verify_log
from dsgw.v1 import audit_pb2
from gateway.identity import make_resident_id
from gateway.server.app import run_loop

PERSONS = 1_000_000
FIELDS = [
    "currently_insured",
    "current_employer",
    "insured_since",
    "contribution_base",
    "unemployment_status",
    "benefit_months",
]
CALLERS = ["tax", "hrss", "education", "civil_affairs", "market_regulation"]
PURPOSES = ["employment_subsidy_review", "unemployment_benefit", "hardship_assistance"]
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f} s] {message}", flush=True)


STARTED = time.perf_counter()


def persons(count: int) -> list[str]:
    """``count`` distinct valid resident identity numbers (Tianjin divisions)."""
    divisions = ["120101", "120102", "120103", "120104", "120105", "120106", "120116", "120221"]
    ids = []
    day = date(1950, 1, 1)
    i = 0
    while len(ids) < count:
        for division in divisions:
            ids.append(make_resident_id(division, day, i % 1000))
        i += 1
        if i % 1000 == 0:
            day += timedelta(days=1)
    return ids[:count]


def template() -> audit_pb2.AuditEntry:
    return AuditEntry.model_validate(
        {
            "time": T0,
            "node": "gw-bench",
            "request_id": "req-00000000",
            "caller": "tax",
            "operator": "op-7712",
            "subject": {"kind": "person", "id": make_resident_id("120116", date(1985, 5, 5), 7)},
            "purpose": PURPOSES[0],
            "body": {
                "kind": "access",
                "provider": "hrss",
                "datasets": ["person_insurance"],
                "fields": FIELDS,
                "legal_basis": {"kind": "consent", "reference": "consent-0000000"},
                "decision": "allowed",
                "outcome": {"kind": "found"},
                "latency_us": 1234,
            },
        }
    ).to_proto()


class Entries:
    """Realistic entries, as protos, made fast: a template whose subject, caller, purpose, time
    and request id vary."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        base = template()
        self.variants = []
        model = AuditEntry.from_proto(base).model_dump()
        for caller in CALLERS:
            for purpose in PURPOSES:
                variant = {**model, "caller": caller, "purpose": purpose}
                self.variants.append(AuditEntry.model_validate(variant).to_proto())

    def make(self, i: int, subject: int | None = None) -> audit_pb2.AuditEntry:
        m = audit_pb2.AuditEntry()
        m.CopyFrom(self.variants[i % len(self.variants)])
        m.subject.id = self.ids[(i * 7919) % len(self.ids) if subject is None else subject]
        m.request_id = f"req-{i:08d}"
        m.time.seconds = int(T0.timestamp()) + i // 20
        m.access.legal_basis.reference = f"consent-{i % 1_000_003:07d}"
        return m


def new_log(root: Path, name: str, keys: LogKeys) -> Path:
    log_dir = root / name
    init_log(log_dir, keys, node="gw-bench")
    return log_dir


def baseline(entries: Entries, seconds: float) -> tuple[float, int]:
    payload = entries.make(1).SerializeToString(deterministic=True)
    sealer = Sealer(os.urandom(32), log_id="dsgw.audit/gw-bench/00000000-0000-0000-0000-000000000000")
    sha = hashlib.sha256
    n = 0
    start = time.perf_counter()
    while True:
        for i in range(2000):
            sha(LEAF_PREFIX + sealer.seal(payload, i)).digest()
        n += 2000
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed, len(payload)


def append_async(
    log_dir: Path, home: Path, entries: Entries, total: int, writers: int, event_loop: str
) -> float:
    protos = [entries.make(i) for i in range(total)]
    per = total // writers
    with AuditLog.open(log_dir, home=home) as log:

        async def run() -> float:
            async def writer(k: int) -> None:
                for i in range(k * per, (k + 1) * per):
                    await log.append_async(protos[i])

            start = time.perf_counter()
            await asyncio.gather(*(writer(k) for k in range(writers)))
            return time.perf_counter() - start

        elapsed = run_loop(run(), event_loop)
        log.flush_index(timeout=600)
    return per * writers / elapsed


def append_threads(log_dir: Path, home: Path, entries: Entries, total: int, writers: int) -> float:
    protos = [entries.make(i) for i in range(total)]
    per = total // writers
    with AuditLog.open(log_dir, home=home) as log:

        def writer(k: int) -> None:
            for i in range(k * per, (k + 1) * per):
                log.append(protos[i])

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        log.flush_index(timeout=600)
    return per * writers / elapsed


def bulk_build(
    log_dir: Path, home: Path, entries: Entries, total: int, chunk: int = 20_000
) -> tuple[float, float]:
    """Fill a log through the real writer (append_many from two producer threads); returns
    (appends/s until the last is durable, seconds until the index caught up)."""
    with AuditLog.open(log_dir, home=home, policy=CheckpointPolicy(every_entries=1000)) as log:
        chunks = list(range(0, total, chunk))
        start = time.perf_counter()
        done = [0]
        lock = threading.Lock()

        def producer(parity: int) -> None:
            for number, at in enumerate(chunks):
                if number % 2 != parity:
                    continue
                log.append_many([entries.make(i) for i in range(at, min(at + chunk, total))])
                with lock:
                    done[0] += 1
                    if done[0] % max(1, len(chunks) // 10) == 0:
                        progress(f"  bulk: {min(done[0] * chunk, total):,} entries")

        threads = [threading.Thread(target=producer, args=(p,)) for p in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        appended = time.perf_counter() - start
        log.flush_index(timeout=3600)
        indexed = time.perf_counter() - start
    return total / appended, indexed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a 1,000,000-entry search log, fewer appends")
    parser.add_argument("--search-entries", type=int, default=None, help="entries of the search log")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temporary logs")
    parser.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the loop of the asyncio writers (default: the gateway's, server.event_loop)",
    )
    args = parser.parse_args()
    from gateway import logs

    logs.configure()  # structlog on stderr: stdout carries the progress lines and the JSON
    search_entries = args.search_entries or (1_000_000 if args.quick else 10_000_000)
    append_total = 64 * (1000 if args.quick else 4000)
    writers = 64

    root = Path(tempfile.mkdtemp(prefix="dsgw-bench-audit-", dir=args.dir))
    result: dict[str, object] = {"benchmark": "audit", "cpus": os.cpu_count(), "quick": args.quick}
    try:
        home = root / "home"
        key_files = HomeKeys(home)
        key_files.generate()
        keys = key_files.load()
        progress(f"making {PERSONS:,} person identifiers")
        entries = Entries(persons(PERSONS))
        payload_bytes = len(entries.make(1).SerializeToString(deterministic=True))

        progress("baseline: one AES-256-GCM seal + one SHA-256 per entry, single thread")
        limit, _ = baseline(entries, 2.0)
        result["limit_seal_hash_per_s"] = round(limit)
        result["entry_payload_bytes"] = payload_bytes
        progress(f"  {limit:,.0f}/s ({payload_bytes}-byte payload)")

        progress(f"append: {append_total:,} durable appends, {writers} asyncio tasks")
        rate = append_async(
            new_log(root, "async", keys), home, entries, append_total, writers, args.event_loop
        )
        result["append_per_s"] = round(rate)
        result["append_concurrency"] = f"{writers} asyncio tasks, one event loop"
        result["append_event_loop"] = args.event_loop
        progress(f"  {rate:,.0f}/s")
        threads_total = append_total // 2
        progress(f"append: {threads_total:,} durable appends, {writers} threads")
        rate_threads = append_threads(new_log(root, "threads", keys), home, entries, threads_total, writers)
        result["append_threads_per_s"] = round(rate_threads)
        progress(f"  {rate_threads:,.0f}/s")
        result["append_vs_limit"] = round(rate / limit, 3)
        result["append_threads_vs_limit"] = round(rate_threads / limit, 3)
        shutil.rmtree(root / "async")
        shutil.rmtree(root / "threads")

        progress(f"search log: {search_entries:,} entries through the writer (append_many)")
        search_dir = new_log(root, "search", keys)
        bulk_rate, indexed_after = bulk_build(search_dir, home, entries, search_entries)
        result["search_log_entries"] = search_entries
        result["bulk_append_per_s"] = round(bulk_rate)
        result["bulk_index_caught_up_s"] = round(indexed_after, 1)
        disk = sum(p.stat().st_size for p in search_dir.rglob("*") if p.is_file())
        result["search_log_bytes"] = disk
        progress(f"  {bulk_rate:,.0f}/s; index caught up after {indexed_after:.1f} s; {disk / 2**30:.2f} GiB")

        reader = LogReader(search_dir)
        progress("verify: the whole search log")
        report = verify_log(reader)
        assert report.ok, report.problem
        result["verify_per_s"] = round(report.entries / report.seconds)
        result["verify_seconds"] = round(report.seconds, 1)
        result["verify_checkpoints"] = report.checkpoints
        result["verify_jobs"] = report.jobs  # processes that scanned the segments
        progress(
            f"  {report.entries:,} entries, {report.checkpoints:,} checkpoints in {report.seconds:.1f} s"
        )

        progress("subject search: 50 subjects")
        indexer = BlindIndexer(keys.blind_index_key)
        keyring = reader.keyring(FileKeyProvider.from_private_key_file(key_files.auditor_key))
        index = reader.index()
        assert index is not None
        times, fetch_times, found = [], [], []
        for k in range(50):
            subject = entries.ids[(k * 104_729 * 7919) % len(entries.ids)]
            start = time.perf_counter()
            matches = index.postings(indexer.subject_term("person", subject))
            times.append((time.perf_counter() - start) * 1000)
            frames = reader.frames_at(matches)
            opened = [reader.open_frame(f, keyring) for f in frames]
            fetch_times.append((time.perf_counter() - start) * 1000)
            found.append(len(matches))
            assert len(opened) == len(matches)
        index.close()
        result["subject_search_ms"] = round(statistics.median(times), 2)
        result["subject_search_max_ms"] = round(max(times), 2)
        result["subject_fetch_ms"] = round(statistics.median(fetch_times), 2)
        result["subject_entries_median"] = statistics.median(found)
        progress(
            f"  median {statistics.median(times):.2f} ms (max {max(times):.2f}); with reading and decrypting "
            f"the {statistics.median(found):.0f} entries {statistics.median(fetch_times):.2f} ms"
        )

        progress("decrypting verification on the first 200,000 entries")
        sample = root / "sample"
        sample_dir = new_log(root, "sample", keys)
        with AuditLog.open(sample_dir, home=home, index="none") as log:
            for at in range(0, 200_000, 20_000):
                log.append_many([entries.make(i) for i in range(at, at + 20_000)])
        full = verify_log(
            LogReader(sample_dir), auditor=FileKeyProvider.from_private_key_file(key_files.auditor_key)
        )
        assert full.ok and full.opened == 200_000, full.problem
        result["verify_decrypt_per_s"] = round(full.entries / full.seconds)
        progress(f"  {full.entries / full.seconds:,.0f}/s")
        shutil.rmtree(sample)

        size = 1_000_000
        progress(f"inclusion proof at {size:,} entries")
        leaves = reader.leaf_hashes(size) if search_entries >= size else []
        if leaves:
            prover = MerkleProver(leaves)
            lengths = {len(prover.inclusion_proof(i, size)) for i in (0, 1, size // 3, size - 2, size - 1)}
            result["proof_hashes"] = max(lengths)
            progress(f"  {max(lengths)} hashes")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - STARTED, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
