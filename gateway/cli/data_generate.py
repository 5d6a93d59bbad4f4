"""``dsgw data generate``: synthetic agency sources (one database per agency, each in its native
schema) and the ground truth they were derived from.

    dsgw data generate --out DIR --persons N --employers M --seed S [--as-of YYYY-MM-DD]
                       [--dirt FILE.json] [--force] [--workers K] [--json]
    dsgw data generate --url postgresql://host/db [--schema-prefix P] --persons N ...

Writes ``DIR/<agency>.sqlite`` and ``DIR/truth.sqlite`` (or one schema per agency on the server),
all-or-nothing: existing databases are only replaced with ``--force``. A directory that cannot be
written (permissions, a read-only file system) is refused before anything is generated; a write
that fails on the way (a full disk) leaves nothing behind. Both exit 2 with one line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.cli import add_json_flag, check_writable_dir, emit
from gateway.errors import UsageError


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "generate",
        help="synthetic agency databases and their ground truth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, metavar="DIR", help="directory for the SQLite databases")
    where.add_argument("--url", metavar="URL", help="server database (PostgreSQL), one schema per agency")
    parser.add_argument("--schema-prefix", default="", metavar="P", help="prefix of the schema names (--url)")
    parser.add_argument("--persons", required=True, metavar="N", help="residents of the city (1-20,000,000)")
    parser.add_argument("--employers", required=True, metavar="M", help="employers (1-5,000,000)")
    parser.add_argument("--seed", default="0", metavar="S", help="random seed, 0 to 2^63 - 1 (default 0)")
    parser.add_argument(
        "--as-of", default=None, metavar="YYYY-MM-DD", help="evaluation date (default 2026-11-01)"
    )
    parser.add_argument("--dirt", type=Path, default=None, metavar="FILE.json", help="dirt rate overrides")
    parser.add_argument("--force", action="store_true", help="replace existing databases")
    parser.add_argument("--workers", default="2", metavar="K", help="writer processes (default 2)")
    add_json_flag(parser)
    parser.set_defaults(handler=_generate)


def _integer(option: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not an integer") from None


def _generate(args: argparse.Namespace) -> int:
    from adapters.synthetic.dirt import DirtRates
    from adapters.synthetic.generate import (
        DEFAULT_AS_OF,
        MAX_EMPLOYERS,
        MAX_PERSONS,
        GenerateConfig,
        config_error,
        generate,
    )

    persons = _integer("--persons", args.persons)
    employers = _integer("--employers", args.employers)
    seed = _integer("--seed", args.seed)
    workers = _integer("--workers", args.workers)
    if not 1 <= persons <= MAX_PERSONS:
        raise UsageError(f"--persons must be 1-{MAX_PERSONS:,}")
    if not 1 <= employers <= MAX_EMPLOYERS:
        raise UsageError(f"--employers must be 1-{MAX_EMPLOYERS:,}")
    if not 0 <= seed < 2**63:
        raise UsageError("--seed must be 0 to 2^63 - 1")
    if not 1 <= workers <= 16:
        raise UsageError("--workers must be 1-16")
    if args.schema_prefix and args.url is None:
        raise UsageError("--schema-prefix needs --url")
    as_of = DEFAULT_AS_OF
    if args.as_of is not None:
        try:
            as_of = dt.date.fromisoformat(args.as_of)
        except ValueError:
            raise UsageError(f"--as-of {args.as_of!r} is not a date YYYY-MM-DD") from None
    dirt = DirtRates.from_file(args.dirt) if args.dirt is not None else DirtRates()
    try:
        config = GenerateConfig(
            persons=persons,
            employers=employers,
            seed=seed,
            as_of=as_of,
            dirt=dirt,
            out=args.out,
            url=args.url,
            schema_prefix=args.schema_prefix,
            force=args.force,
            workers=workers,
        )
    except ValidationError as exc:
        raise config_error(exc) from None

    def progress(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr)

    if args.out is not None:
        check_writable_dir(args.out, "--out")
    where = f"--out {args.out}" if args.out is not None else "the database"
    try:
        summary = generate(config, progress)  # all-or-nothing: a failure leaves nothing behind
    except BrokenPipeError:
        raise
    except OSError as exc:  # e.g. EROFS, ENOSPC, a directory made unwritable meanwhile
        raise UsageError(f"cannot write {where}: {exc.strerror or type(exc).__name__}") from None
    except sqlite3.Error as exc:  # e.g. "database or disk is full"
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"cannot write {where}: {reason}") from None
    payload = summary.as_dict()
    lines = [
        f"{name}: {sum(t.values()):,} rows, {summary.sizes.get(name, 0):,} bytes, {summary.locations[name]}"
        for name, t in summary.rows.items()
    ]
    lines.append(f"{summary.total_rows:,} rows in {summary.seconds:.1f} s")
    emit(args, payload, "\n".join(lines))
    return 0
