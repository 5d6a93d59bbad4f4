"""``dsgw data describe|fetch|evaluate|health|extract``: call the agency adapters directly.

The sources are ``--data DIR`` (the embedded SQLite files ``DIR/<agency>.sqlite``) or ``--url URL
[--schema-prefix P]`` (one server database, an agency per schema). The subject is validated and
normalised (gateway.identity) before any call: an invalid number exits 2 with its reason.

Exit codes: 0 success; 1 a failed check (no record of the subject, the agency unavailable, a
health check not up); 2 usage (unknown agency, dataset, field or predicate, bad parameters, an
invalid identifier). One line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from adapters.agencies import Agency
from adapters.base import SqlAdapter
from adapters.contract import (
    AdapterError,
    ExtractedRecord,
    HealthState,
    InvalidRequest,
    ProviderDescription,
    ProviderUnavailable,
    Subject,
    SubjectKind,
    SubjectNotFound,
)
from adapters.registry import ADAPTER_CLASSES, open_adapter
from adapters.resilience import DEFAULT_POLICY
from adapters.sources import (
    SCHEMA_PREFIX,
    SUPPORTED_DRIVERS,
    SourceConfig,
    server_sources,
    sqlite_sources,
)
from gateway.cli import add_json_flag, emit, reads_label
from gateway.errors import CheckFailed, DsgwError, UsageError


def register(sub: Any) -> None:
    verbs: list[
        tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
    ] = [
        (
            "describe",
            "datasets, fields (with sensitivity) and predicates of the adapters",
            _args_describe,
            _describe,
        ),
        ("fetch", "one subject's canonical record (or some of its fields)", _args_fetch, _fetch),
        ("evaluate", "a predicate about one subject, computed inside the adapter", _args_evaluate, _evaluate),
        ("health", "reachability and latency of every agency's source", _args_health, _health),
        ("extract", "every subject's canonical record as JSON lines", _args_extract, _extract),
    ]
    for name, help_text, add_args, handler in verbs:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
        _source_args(parser, required=name != "describe")
        add_args(parser)
        add_json_flag(parser)
        parser.set_defaults(handler=_guarded(handler))


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def _source_args(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--data", type=Path, metavar="DIR", help="directory of the agencies' SQLite files")
    group.add_argument("--url", metavar="URL", help="server database URL (one schema per agency)")
    parser.add_argument(
        "--schema-prefix",
        default="",
        metavar="P",
        help="with --url: schemas are P<agency> (lower-case letters, digits, '_'; at most 40)",
    )
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="per-call (extract: per-page) timeout, seconds"
    )


def _args_describe(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agency", metavar="A", help="only this agency")


_DATASET_HELP = "a dataset of that agency (dsgw data describe)"


def _args_fetch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agency", required=True, metavar="A", help="the provider agency's code, e.g. hrss")
    p.add_argument("--dataset", required=True, metavar="D", help=_DATASET_HELP)
    p.add_argument("--subject", required=True, metavar="ID", help="identity number or credit code")
    p.add_argument("--fields", metavar="F1,F2", help="only these fields (default: all)")
    p.add_argument("--as-of", metavar="DATE", help="evaluation date YYYY-MM-DD (default: today)")


def _args_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agency", required=True, metavar="A", help="the provider agency's code, e.g. hrss")
    p.add_argument("--predicate", required=True, metavar="P", help="one of its predicates")
    p.add_argument("--subject", required=True, metavar="ID", help="identity number or credit code")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="integer parameter (repeat)")
    p.add_argument("--as-of", metavar="DATE", help="evaluation date YYYY-MM-DD (default: today)")


def _args_health(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agency", metavar="A", help="only this agency")


def _args_extract(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agency", required=True, metavar="A", help="the provider agency's code, e.g. hrss")
    p.add_argument("--dataset", required=True, metavar="D", help=_DATASET_HELP)
    p.add_argument("--since", metavar="W", help="only subjects changed after this watermark")
    p.add_argument("--limit", type=int, metavar="N", help="stop after N records")
    p.add_argument("--chunk-size", type=int, default=5000, metavar="N", help="rows per read (default 5000)")
    p.add_argument("--as-of", metavar="DATE", help="evaluation date YYYY-MM-DD (default: today)")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Adapter errors to exit codes; nothing escapes as a traceback."""

    def run(args: argparse.Namespace) -> int:
        from gateway import logs

        if "DSGW_LOG_LEVEL" not in os.environ:
            logs.configure(level="ERROR")  # the failure is reported as the one-line reason
        _check_source_args(args)
        try:
            return handler(args)
        except DsgwError:
            raise
        except (SubjectNotFound, ProviderUnavailable) as exc:
            raise CheckFailed(str(exc)) from None
        except InvalidRequest as exc:
            raise UsageError(str(exc)) from None
        except AdapterError as exc:
            raise CheckFailed(str(exc)) from None
        except (KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as exc:
            raise CheckFailed(f"unexpected error ({type(exc).__name__})") from None

    return run


def _check_source_args(args: argparse.Namespace) -> None:
    """``--url`` and ``--schema-prefix`` as ``dsgw data generate`` checks them (UsageError, exit 2);
    the message never repeats the URL (it may hold a password)."""
    if args.url is not None:
        try:
            parsed = make_url(args.url)
        except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
            raise UsageError("--url is not a database URL") from None
        if parsed.drivername not in SUPPORTED_DRIVERS:
            raise UsageError(f"--url back end {parsed.drivername!r} not supported (sqlite, postgresql)")
    if args.schema_prefix:
        if args.url is None:
            raise UsageError("--schema-prefix needs --url")
        if not SCHEMA_PREFIX.match(args.schema_prefix):
            raise UsageError("--schema-prefix must be lower-case letters, digits and '_' (at most 40)")


def _agency(value: str) -> Agency:
    try:
        agency = Agency(value)
    except ValueError:
        raise UsageError(
            f"unknown agency {value!r} (one of {', '.join(a.value for a in ADAPTER_CLASSES)})"
        ) from None
    if agency not in ADAPTER_CLASSES:
        raise UsageError(f"no adapter for agency {value!r}")
    return agency


def _sources(args: argparse.Namespace) -> dict[str, SourceConfig]:
    if args.data is not None:
        if not args.data.is_dir():
            raise UsageError(f"no data directory at {args.data}")
        sources = sqlite_sources(args.data)
    elif args.url is not None:
        sources = server_sources(args.url, args.schema_prefix)
    else:
        raise UsageError("one of --data DIR or --url URL is required")
    return sources


def _timeout(args: argparse.Namespace) -> float | None:
    value: float | None = args.timeout
    if value is not None and not value > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    return value


@contextmanager
def _opened(args: argparse.Namespace, agency: Agency) -> Iterator[SqlAdapter]:
    timeout = _timeout(args)
    policy = DEFAULT_POLICY if timeout is None else replace(DEFAULT_POLICY, extract_chunk_timeout_s=timeout)
    adapter = open_adapter(agency, _sources(args)[agency.value], policy)
    try:
        yield adapter
    finally:
        adapter.close()


def _as_of(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--as-of: not a date YYYY-MM-DD: {value!r}") from None


def _subject(kind: SubjectKind, raw: str) -> Subject:
    """The subject with its identifier validated and normalised; InvalidIdentifier (exit 2) else."""
    if kind is SubjectKind.PERSON:
        from gateway.identity.resident_id import normalize_resident_id

        return Subject(kind, normalize_resident_id(raw))
    from gateway.identity.credit_code import normalize_credit_code

    return Subject(kind, normalize_credit_code(raw))


def _params(pairs: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--param: expected K=V, got {pair!r}")
        if key in out:
            raise UsageError(f"--param {key}: given twice")
        try:
            out[key] = int(value)
        except ValueError:
            raise UsageError(f"--param {key}: not an integer") from None
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# Verbs
# --------------------------------------------------------------------------------------------


def _description_json(d: ProviderDescription) -> dict[str, Any]:
    return {
        "agency": d.agency.value,
        "datasets": [
            {
                "name": ds.name,
                "subject_kind": ds.subject_kind.value,
                "description": ds.description,
                "sensitive": ds.sensitive,
                "fields": [
                    {
                        "name": f.name,
                        "type": f.type,
                        "sensitivity": f.sensitivity.value,
                        "description": f.description,
                    }
                    for f in ds.fields
                ],
            }
            for ds in d.datasets
        ],
        "predicates": [
            {
                "name": p.name,
                "dataset": p.dataset,
                "subject_kind": p.subject_kind.value,
                "parameters": list(p.parameters),
                "fields": list(p.fields),
                "absent_means_false": p.absent_means_false,
                "description": p.description,
            }
            for p in d.predicates
        ],
    }


def _describe(args: argparse.Namespace) -> int:
    agencies = [_agency(args.agency)] if args.agency else list(ADAPTER_CLASSES)
    descriptions = []
    for agency in agencies:
        cls = ADAPTER_CLASSES[agency]
        descriptions.append(
            ProviderDescription(
                agency, tuple(d.descriptor for d in cls.DATASETS), tuple(p.descriptor for p in cls.PREDICATES)
            )
        )
    lines: list[str] = []
    for d in descriptions:
        lines.append(f"{d.agency.value}")
        for ds in d.datasets:
            lines.append(f"  dataset {ds.name} ({ds.subject_kind.value}): {ds.description}")
            for f in ds.fields:
                lines.append(f"    {f.name:<32} {f.type:<12} {f.sensitivity.value:<9} {f.description}")
        for p in d.predicates:
            params = ", ".join(p.parameters)
            absent = "absent: false" if p.absent_means_false else "absent: not found"
            on = f"{p.dataset}{reads_label(p.fields)}"
            lines.append(f"  predicate {p.name}({params}) on {on} [{absent}]: {p.description}")
    emit(args, {"agencies": [_description_json(d) for d in descriptions]}, "\n".join(lines))
    return 0


def _fetch(args: argparse.Namespace) -> int:
    agency = _agency(args.agency)
    as_of = _as_of(args.as_of)
    timeout = _timeout(args)
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields is not None else None
    with _opened(args, agency) as adapter:
        descriptor = adapter.describe().dataset(args.dataset)
        subject = _subject(descriptor.subject_kind, args.subject)
        result = adapter.fetch(args.dataset, subject, fields, as_of=as_of, timeout=timeout)
    values = _jsonable(dict(result.values))
    human = "\n".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in values.items())
    emit(args, {"agency": agency.value, "dataset": args.dataset, "values": values}, human)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    agency = _agency(args.agency)
    as_of = _as_of(args.as_of)
    timeout = _timeout(args)
    params = _params(args.param)
    with _opened(args, agency) as adapter:
        descriptor = adapter.describe().predicate(args.predicate)
        subject = _subject(descriptor.subject_kind, args.subject)
        result = adapter.evaluate(args.predicate, subject, params, as_of=as_of, timeout=timeout)
    payload = {"agency": agency.value, "predicate": args.predicate, "params": params, "result": result}
    emit(args, payload, "true" if result else "false")
    return 0


def _health(args: argparse.Namespace) -> int:
    agencies = [_agency(args.agency)] if args.agency else list(ADAPTER_CLASSES)
    sources = _sources(args)
    timeout = _timeout(args)
    reports = []
    for agency in agencies:
        adapter = open_adapter(agency, sources[agency.value])
        try:
            reports.append(adapter.health(timeout=timeout))
        finally:
            adapter.close()
    payload = [
        {"agency": h.agency.value, "state": h.state.value, "latency_ms": h.latency_ms, "detail": h.detail}
        for h in reports
    ]
    human = "\n".join(
        f"{h.agency.value:<18} {h.state.value:<13} {h.latency_ms:>8.1f} ms  {h.detail}".rstrip()
        for h in reports
    )
    emit(args, {"health": payload}, human)
    down = [h.agency.value for h in reports if h.state is not HealthState.UP]
    if down:
        print(f"dsgw: not up: {', '.join(down)}", file=sys.stderr)
        return 1
    return 0


def _record_json(r: ExtractedRecord) -> dict[str, Any]:
    return {
        "native_key": r.native_key,
        "subject_id": r.subject_id,
        "raw_id": r.raw_id,
        "name": r.name,
        "birth_date": r.birth_date.isoformat() if r.birth_date else None,
        "record": _jsonable(r.record.model_dump()),
    }


def _extract(args: argparse.Namespace) -> int:
    agency = _agency(args.agency)
    as_of = _as_of(args.as_of)
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must not be negative")
    count = 0
    watermark = ""
    with _opened(args, agency) as adapter:
        adapter.describe().dataset(args.dataset)
        chunks = adapter.extract(args.dataset, since=args.since, chunk_size=args.chunk_size, as_of=as_of)
        try:
            for chunk in chunks:
                watermark = chunk.watermark
                for record in chunk.records:
                    if args.limit is not None and count >= args.limit:
                        break
                    print(json.dumps(_record_json(record), ensure_ascii=False))
                    count += 1
                if args.limit is not None and count >= args.limit:
                    break
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
    if args.json:
        print(json.dumps({"watermark": watermark, "records": count}))
    else:
        print(f"{count} records, watermark {watermark or '(none)'}", file=sys.stderr)
    return 0
