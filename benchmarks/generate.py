"""Benchmark: synthetic agency data at city scale (``dsgw data generate``).

    python benchmarks/generate.py [--quick] [--persons N] [--employers M] [--workers K]

Default 1,000,000 persons and 100,000 employers (--quick: 100,000 / 10,000), written as the six
SQLite databases into a temporary directory (removed afterwards). Prints progress lines, then as
its last line one JSON object: persons, employers, seconds, persons_per_s, rows, bytes,
peak_rss_mb (this process; peak_rss_children_mb for the writer processes), phases, rows by
database. The acceptance goal (issue 3) is 1M/100k within 120 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.synthetic.generate import GenerateConfig, generate


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100,000 persons / 10,000 employers")
    parser.add_argument("--persons", type=int, default=None)
    parser.add_argument("--employers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    persons = args.persons or (100_000 if args.quick else 1_000_000)
    employers = args.employers or max(1, persons // 10)

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", flush=True)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dsgw-bench-generate-") as tmp:
        config = GenerateConfig(
            persons=persons, employers=employers, seed=args.seed, out=Path(tmp), workers=args.workers
        )
        summary = generate(config, progress)
    seconds = summary.seconds
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "benchmark": "generate",
        "persons": persons,
        "employers": employers,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "seconds": round(seconds, 2),
        "persons_per_s": round(persons / seconds),
        "rows": summary.total_rows,
        "rows_per_s": round(summary.total_rows / seconds),
        "bytes": summary.total_bytes,
        "peak_rss_mb": round(own, 1),
        "peak_rss_children_mb": round(children, 1),
        "phases": {k: round(v, 2) for k, v in summary.phases.items()},
        "rows_by_database": {name: sum(t.values()) for name, t in summary.rows.items()},
        "goal_seconds": 120 if (persons, employers) == (1_000_000, 100_000) else None,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
