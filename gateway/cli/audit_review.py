"""``dsgw audit search | report | subject-report | export | verify-export``: the review tools.

Each reads one or several logs (``--log DIR``, repeatable: every gateway replica keeps its own)
with the auditor's keys (``--home DIR`` as ``dsgw audit keygen`` lays it out, or
``--auditor-key FILE`` / ``--blind-key FILE``). See docs/audit-review.md.

Exit codes: 0 success; 1 a check failed (a bundle that does not verify, a log whose entries do
not hold together); 2 usage or input errors (no key, not a log, an invalid identity number).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import stat
import sys
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapters.agencies import Agency
from audit.entry import Decision, Subject, SubjectKind
from audit.errors import AuditError, KeyFormatError, VerificationError
from gateway.cli import add_json_flag, emit, positive_int
from gateway.errors import CheckFailed, UsageError
from gateway.identity import InvalidIdentifier, normalize_credit_code, normalize_resident_id

if TYPE_CHECKING:
    from audit.checkpoint import Verifier

DEFAULT_TZ = "Asia/Shanghai"
AGENCIES = [a.value for a in Agency]


def register(sub: Any) -> None:
    from audit.review.query import KINDS
    from audit.review.report import MAX_SPIKE_WINDOW_DAYS, RULES

    days = _bounded_int(MAX_SPIKE_WINDOW_DAYS, "days (about ten years)")

    search = sub.add_parser("search", help="find entries by subject, agency, purpose, decision, time")
    _log_options(search)
    _criteria_options(search, KINDS)
    search.add_argument(
        "--limit", type=positive_int, metavar="N", help="show at most N entries (the earliest)"
    )
    search.add_argument("--full-ids", action="store_true", help="show identifiers unmasked in the table")
    add_json_flag(search)
    search.set_defaults(handler=_search)

    report = sub.add_parser("report", help="volumes, denials and unusual patterns per day")
    _log_options(report)
    report.add_argument("--since", type=_day, metavar="DATE", help="first day (local)")
    report.add_argument("--until", type=_day, metavar="DATE", help="last day, inclusive")
    report.add_argument(
        "--timezone", default=DEFAULT_TZ, metavar="TZ", help=f"days and working hours in TZ ({DEFAULT_TZ})"
    )
    report.add_argument("--work-hours", default="08:00-18:00", metavar="HH:MM-HH:MM", help="(08:00-18:00)")
    report.add_argument("--workdays", default="1-5", metavar="D-D", help="ISO weekdays, 1=Monday (1-5)")
    report.add_argument("--holiday", action="append", type=_day, default=[], metavar="DATE")
    report.add_argument(
        "--workday", action="append", type=_day, default=[], metavar="DATE",
        help="a make-up working day on a weekend (调休)",
    )  # fmt: skip
    report.add_argument(
        "--spike-factor", type=_factor, default=3.0, metavar="K", help="k x trailing median (3)"
    )
    report.add_argument(
        "--spike-min-history", type=days, default=7, metavar="DAYS", help="days before judging (7)"
    )
    report.add_argument("--spike-window", type=days, default=28, metavar="DAYS", help="trailing days (28)")
    report.add_argument(
        "--spike-min-count", type=positive_int, default=10, metavar="N", help="minimum volume (10)"
    )
    report.add_argument(
        "--max-subjects", type=positive_int, default=50, metavar="N", help="per operator and day (50)"
    )
    report.add_argument("--rule", action="append", choices=RULES, help="run only these rules (repeatable)")
    add_json_flag(report)
    report.set_defaults(handler=_report)

    subject = sub.add_parser("subject-report", help="what one citizen may see about their data")
    subject.add_argument("subject_id", metavar="ID", help="resident identity number (or credit code)")
    _log_options(subject)
    subject.add_argument("--employer", action="store_true", help="ID is a unified social credit code")
    subject.add_argument("--lang", choices=("en", "zh", "both"), default="both", help="(both)")
    subject.add_argument("--timezone", default=DEFAULT_TZ, metavar="TZ", help=f"({DEFAULT_TZ})")
    add_json_flag(subject)
    subject.set_defaults(handler=_subject_report)

    export = sub.add_parser("export", help="a signed bundle of entries with inclusion proofs")
    _log_options(export)
    _criteria_options(export, KINDS)
    export.add_argument(
        "--entry", action="append", default=[], metavar="LOG#INDEX",
        help="an entry by log (origin or directory) and index (repeatable)",
    )  # fmt: skip
    export.add_argument("--out", required=True, type=Path, metavar="FILE", help="where to write the bundle")
    export.add_argument("--decrypt", action="store_true", help="include the decrypted entries")
    export.add_argument(
        "--signer-key", type=Path, metavar="FILE", help="signed-note signer key file (Ed25519 or SM2)"
    )
    export.add_argument("--note", default="", metavar="TEXT", help="free text carried in the signed bundle")
    add_json_flag(export)
    export.set_defaults(handler=_export)

    verify = sub.add_parser("verify-export", help="verify an export bundle offline")
    verify.add_argument("bundle", type=Path, metavar="FILE")
    verify.add_argument("--trust", action="append", default=[], metavar="VKEY", help="a trusted verifier key")
    verify.add_argument("--trust-file", type=Path, action="append", default=[], metavar="FILE")
    verify.add_argument("--log", action="append", default=[], type=Path, metavar="DIR", help="trust its vkey")
    verify.add_argument("--auditor-key", type=Path, metavar="FILE", help="also check decrypted entries")
    add_json_flag(verify)
    verify.set_defaults(handler=_verify_export)


# --- options ----------------------------------------------------------------------------------


def _log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log", action="append", required=True, type=Path, metavar="DIR", help="a log directory (repeatable)"
    )
    parser.add_argument("--home", type=Path, metavar="DIR", help="key files as dsgw audit keygen wrote them")
    parser.add_argument("--auditor-key", type=Path, metavar="FILE", help="the auditor's X25519 private key")
    parser.add_argument("--blind-key", type=Path, action="append", default=[], metavar="FILE")


def _criteria_options(parser: argparse.ArgumentParser, kinds: tuple[str, ...]) -> None:
    parser.add_argument("--subject", metavar="ID", help="a person's resident identity number")
    parser.add_argument("--employer", metavar="CODE", help="an employer's unified social credit code")
    parser.add_argument("--caller", choices=AGENCIES, help="the agency that asked")
    parser.add_argument("--provider", choices=AGENCIES, help="the agency whose data was asked")
    parser.add_argument("--purpose", metavar="CODE", help="a purpose code of the purpose catalogue")
    parser.add_argument(
        "--purposes",
        type=Path,
        metavar="FILE",
        help="the gateway's purpose catalogue (JSON or TOML; default: the built-in one)",
    )
    parser.add_argument("--decision", choices=[d.value for d in Decision])
    parser.add_argument("--kind", choices=kinds)
    parser.add_argument("--since", metavar="TIME", help="date or ISO time, inclusive (local unless offset)")
    parser.add_argument("--until", metavar="TIME", help="date (inclusive) or ISO time (exclusive)")
    parser.add_argument(
        "--timezone", default=DEFAULT_TZ, metavar="TZ", help=f"for dates, times and tables ({DEFAULT_TZ})"
    )


def _bounded_int(maximum: int, unit: str) -> Any:
    """An argparse ``type``: an integer from 1 to ``maximum`` (``unit`` names what it counts)."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{text} is too large: at most {maximum:,} {unit}")
        return value

    return parse


def _factor(text: str) -> float:
    """An argparse ``type``: a positive, finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive finite number")
    return value


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown time zone {name!r}") from None


def parse_time(text: str, zone: ZoneInfo, *, end: bool) -> datetime:
    """A date (its start; with ``end`` the start of the next day) or an ISO time (local in
    ``zone`` unless it has an offset). The last day of the calendar (9999-12-31) with ``end``
    means up to the last instant a time can hold; the search clamps times beyond what a UTC time
    can hold (0001-01-01 east of UTC) in the same way."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        if end and day == date.max:
            from audit.review import LATEST

            return LATEST
        return datetime.combine(day + timedelta(days=1 if end else 0), time(0), zone)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{text!r} is neither a date (YYYY-MM-DD) nor an ISO time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=zone)


def _subject(value: str, *, employer: bool) -> Subject:
    try:
        if employer:
            return Subject(kind=SubjectKind.EMPLOYER, id=normalize_credit_code(value))
        return Subject(kind=SubjectKind.PERSON, id=normalize_resident_id(value))
    except InvalidIdentifier as exc:
        raise UsageError(str(exc)) from None


def _criteria(args: argparse.Namespace) -> Any:
    from audit.review.query import Criteria

    if args.subject and args.employer:
        raise UsageError("give --subject or --employer, not both")
    zone = _zone(args.timezone)
    if args.purpose is not None:
        _known_purpose(args.purpose, args.purposes)
    subject = None
    if args.subject:
        subject = _subject(args.subject, employer=False)
    elif args.employer:
        subject = _subject(args.employer, employer=True)
    try:
        return Criteria(
            subject=subject,
            caller=Agency(args.caller) if args.caller else None,
            provider=Agency(args.provider) if args.provider else None,
            purpose=args.purpose,
            decision=Decision(args.decision) if args.decision else None,
            kind=args.kind,
            since=parse_time(args.since, zone, end=False) if args.since else None,
            until=parse_time(args.until, zone, end=True) if args.until else None,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _known_purpose(code: str, catalogue_file: Path | None) -> None:
    """UsageError, naming ``code``, unless it is in the purpose catalogue the gateway uses
    (``catalogue_file``, default the built-in one): the gateway records no other purpose."""
    from gateway.purposes import DEFAULT_CATALOGUE, UnknownPurpose, load_catalogue

    try:
        catalogue = load_catalogue(catalogue_file) if catalogue_file is not None else DEFAULT_CATALOGUE
    except RecursionError:
        raise UsageError(
            f"--purposes {catalogue_file}: not a purpose catalogue (nested too deeply)"
        ) from None
    try:
        catalogue.require(code)
    except UnknownPurpose as exc:
        where = (
            str(catalogue_file) if catalogue_file is not None else "the built-in catalogue (see --purposes)"
        )
        raise UsageError(f"--purpose: {exc}: it is not in {where}") from None


def _keys(args: argparse.Namespace, *, need_auditor: bool = True) -> Any:
    from audit.keys import FileKeyProvider, load_blind_index_key
    from audit.layout import HomeKeys
    from audit.review.query import AuditorKeys

    home = None
    if args.home is not None:
        if not args.home.is_dir():
            raise UsageError(f"--home {args.home}: no such directory")
        home = HomeKeys(args.home)
    auditor_path = args.auditor_key or (home.auditor_key if home and home.auditor_key.exists() else None)
    blind_paths = list(args.blind_key)
    if not blind_paths and home is not None and home.blind_index_key.exists():
        blind_paths.append(home.blind_index_key)
    if auditor_path is None and (need_auditor or not blind_paths):
        if home is not None:
            raise UsageError(
                f"--home {args.home}: no auditor key ({home.auditor_key} does not exist): "
                "give --auditor-key FILE"
            )
        raise UsageError("reading the audit log needs the auditor key: give --auditor-key FILE or --home DIR")
    provider = FileKeyProvider.from_private_key_file(auditor_path) if auditor_path else None
    blind = tuple(load_blind_index_key(p) for p in blind_paths)
    return AuditorKeys(provider=provider, blind_keys=blind)


def _check_failed(args: argparse.Namespace, exc: VerificationError) -> CheckFailed:
    """A failed check (exit 1), named by its code: with --json, ``{"ok": false, "problem": {code,
    message, log, entry}}`` on stdout (as ``dsgw audit verify --json``); the one stderr line
    carries the code too."""
    if getattr(args, "json", False):
        problem = {
            "code": exc.reason,
            "message": str(exc),
            "log": getattr(exc, "origin", None),
            "entry": getattr(exc, "index", None),
        }
        emit(args, {"ok": False, "problem": problem})
    return CheckFailed(f"{exc.reason}: {exc}")


@contextlib.contextmanager
def _failures(args: argparse.Namespace) -> Iterator[None]:
    """Map the audit package's errors to the CLI's: a failed check exits 1, the rest 2."""
    from pydantic import ValidationError

    try:
        yield
    except VerificationError as exc:
        raise _check_failed(args, exc) from None
    except (AuditError, ValueError, ValidationError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(message) from None
    except FileNotFoundError as exc:
        raise UsageError(f"{exc.filename}: no such file") from None
    except PermissionError as exc:
        raise UsageError(f"{exc.filename}: permission denied") from None
    except OSError as exc:
        raise UsageError(f"{exc.filename or 'file'}: {exc.strerror}") from None


def _open_logs(args: argparse.Namespace, *, need_auditor: bool = True) -> Any:
    from audit.review.query import LogSet

    return LogSet.open(args.log, _keys(args, need_auditor=need_auditor))


def _warn(warnings: list[str]) -> None:
    """One stderr line per log whose index is behind it (the same lines are in the --json
    output's ``warnings``)."""
    for warning in warnings:
        print(f"dsgw: warning: {warning}", file=sys.stderr)


# --- verbs ------------------------------------------------------------------------------------


def _search(args: argparse.Namespace) -> int:
    from audit.review.render import render_entries

    with _failures(args):
        criteria = _criteria(args)
        if criteria.is_empty:
            raise UsageError("give at least one criterion (--subject, --caller, --since, ...)")
        with _open_logs(args) as logs:
            result = logs.search(criteria, limit=args.limit)
        _warn(result.warnings)
        human = render_entries(
            result.entries, timezone=args.timezone, full_ids=args.full_ids, shredded=result.shredded
        )
        if result.truncated:
            human += f" (the first {args.limit}; more matched)"
        emit(args, result.to_json(), human)
    return 0


def _day(text: str) -> date:
    """An argparse type: a calendar day (YYYY-MM-DD)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not a date (YYYY-MM-DD)") from None


def _work_hours(text: str) -> tuple[time, time]:
    start, sep, end = text.partition("-")
    try:
        if not sep:
            raise ValueError
        return time.fromisoformat(start), time.fromisoformat(end)
    except ValueError:
        raise UsageError(f"--work-hours {text!r}: use HH:MM-HH:MM, e.g. 08:00-18:00") from None


def _workdays(text: str) -> frozenset[int]:
    first, sep, last = text.partition("-")
    if not (sep and first.isdigit() and last.isdigit() and 1 <= int(first) <= int(last) <= 7):
        raise UsageError(
            f"--workdays {text!r}: use D-D, ISO weekdays from 1 (Monday) to 7 (Sunday), e.g. 1-5"
        )
    return frozenset(range(int(first) - 1, int(last)))


def _report_config(args: argparse.Namespace) -> Any:
    from audit.review.report import RULES, ReportConfig

    work_start, work_end = _work_hours(args.work_hours)
    workdays = _workdays(args.workdays)
    try:
        return ReportConfig(
            timezone=args.timezone,
            work_start=work_start,
            work_end=work_end,
            workdays=workdays,
            holidays=frozenset(args.holiday),
            extra_workdays=frozenset(args.workday),
            spike_factor=args.spike_factor,
            spike_min_history_days=args.spike_min_history,
            spike_window_days=max(args.spike_window, args.spike_min_history),
            spike_min_count=args.spike_min_count,
            operator_max_subjects=args.max_subjects,
            rules=frozenset(args.rule or RULES),
        )
    except ValueError as exc:
        raise UsageError(f"bad report option: {exc}") from None


def _report(args: argparse.Namespace) -> int:
    from audit.review.query import Criteria
    from audit.review.render import render_report
    from audit.review.report import build_report

    with _failures(args):
        config = _report_config(args)
        zone = config.zone
        if args.since and args.until and args.until < args.since:
            raise UsageError("--until is before --since")
        # the window's history before --since; open ends at the ends of the calendar
        since = until = None
        if args.since and args.since.toordinal() > config.spike_window_days:
            since = datetime.combine(args.since - timedelta(days=config.spike_window_days), time(0), zone)
        if args.until and args.until < date.max:
            until = datetime.combine(args.until + timedelta(days=1), time(0), zone)
        with _open_logs(args) as logs:
            result = logs.search(Criteria(since=since, until=until))
        _warn(result.warnings)
        report = build_report(
            result.entries, config, since=args.since, until=args.until, shredded=result.shredded
        )
        payload = report.to_json()
        payload["logs"] = [s.origin for s in result.logs]
        payload["warnings"] = result.warnings
        emit(args, payload, render_report(report))
    return 0


def _subject_report(args: argparse.Namespace) -> int:
    from audit.review.query import Criteria
    from audit.review.render import render_subject_report
    from audit.review.subject_report import subject_report

    with _failures(args):
        _zone(args.timezone)
        subject = _subject(args.subject_id, employer=args.employer)
        languages: tuple[Any, ...] = ("en", "zh") if args.lang == "both" else (args.lang,)
        with _open_logs(args) as logs:
            result = logs.search(Criteria(subject=subject))
        _warn(result.warnings)
        report = subject_report(
            subject, result.entries, timezone=args.timezone, languages=languages, shredded=result.shredded
        )
        payload = report.to_json()
        payload["warnings"] = result.warnings
        emit(args, payload, render_subject_report(report, languages=languages))
    return 0


def _parse_ref(text: str) -> Any:
    from audit.review import EntryRef

    log, sep, index = text.rpartition("#")
    if not sep or not log or not index.isdigit():
        raise UsageError(f"--entry {text!r}: use LOG#INDEX (log origin or directory, entry index)")
    return EntryRef(log, int(index))


def _signer(args: argparse.Namespace, logs: Any, refs: list[Any]) -> Any:
    from audit.layout import HomeKeys
    from audit.review.query import parse_signer_key

    path = args.signer_key
    if path is None and args.home:
        home = HomeKeys(args.home)
        path = home.checkpoint_key
        # a bundle of gm logs is signed with the SM2 checkpoint key (the logs' own key) if any
        if home.checkpoint_sm2_key.exists() and any(
            logs.reader(origin).meta.verifier.scheme == "sm2" for origin in logs.origins(refs)
        ):
            path = home.checkpoint_sm2_key
    if path is None:
        raise UsageError("signing the bundle needs a key: give --signer-key FILE or --home DIR")
    try:
        name, key = parse_signer_key(path.read_text(encoding="ascii"))
    except (UnicodeDecodeError, IndexError, KeyFormatError):
        raise UsageError(f"{path}: not a signed-note signer key") from None
    return logs.signer(key, name, prefer=logs.origins(refs))


def _write_bundle(path: Path, data: bytes) -> None:
    """Write an export bundle to ``path``: a regular file is replaced whole (temporary file,
    fsync, rename: a failed write leaves no half bundle and an existing one as it was), keeping an
    existing file's mode or else the umask's, and through a symbolic link the file it points to;
    a pipe or a terminal (``--out >(gpg -e ...)``, ``/dev/stdout``) is written to as a stream."""
    from audit.layout import atomic_write

    try:
        found = os.stat(path)
    except FileNotFoundError:
        found = None
    if found is not None and not stat.S_ISREG(found.st_mode):
        with open(path, "wb") as out:
            out.write(data)
        return
    if found is not None:
        mode = stat.S_IMODE(found.st_mode)
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    atomic_write(Path(os.path.realpath(path)), data, mode=mode)


def _export(args: argparse.Namespace) -> int:
    from collections import Counter

    from audit.review.export import dump_bundle

    with _failures(args):
        refs = [_parse_ref(text) for text in args.entry]
        criteria = _criteria(args)
        with _open_logs(args) as logs:
            uncertain = []
            if not criteria.is_empty:
                result = logs.search(criteria)
                refs += [e.ref for e in result.entries]
                # shredded matches are exported too (without details: the bundle proves they exist),
                # except those matched by a UTC day only partly inside the time range
                refs += [s.ref for s in result.shredded if s.certain]
                uncertain = [s for s in result.shredded if not s.certain]
                if not refs:
                    why = "no entry matched"
                    if uncertain:
                        why = (
                            f"{len(uncertain)} shredded entr{'y' if len(uncertain) == 1 else 'ies'} matched "
                            "by a UTC day only partly inside the time range; "
                            "select them with --entry LOG#INDEX"
                        )
                    raise UsageError(f"nothing to export: {why}")
            elif not refs:
                raise UsageError("select entries: give search criteria or --entry LOG#INDEX")
            signer = _signer(args, logs, refs)
            bundle = logs.export(refs, signer, decrypt=args.decrypt, note=args.note)
            warnings = logs.warnings(logs.origins(refs))
        try:  # all or nothing: a bundle already at --out stays as it was unless replaced whole
            _write_bundle(args.out, dump_bundle(bundle))
        except OSError as exc:
            raise UsageError(f"--out {args.out}: cannot write the bundle: {exc.strerror or exc}") from None
        _warn(warnings)
        sections = [
            {
                "log": s["origin"],
                "entries": len(s["entries"]),
                "shredded": [e["index"] for e in s["entries"] if "shredded" in e],
            }
            for s in bundle["logs"]
        ]
        count = sum(s["entries"] for s in sections)
        periods = Counter(
            e["shredded"]["period"] or "an unknown period"
            for s in bundle["logs"]
            for e in s["entries"]
            if "shredded" in e
        )
        shredded = sum(periods.values())
        payload = {
            "bundle": str(args.out),
            "signed_by": signer.name,
            "vkey": signer.verifier().vkey(),
            "decrypted": args.decrypt,
            "entries": count,
            "shredded": {"count": shredded, "periods": dict(sorted(periods.items()))},
            "logs": sections,
            "warnings": warnings,
        }
        human = (
            f"wrote {args.out}: {count} entr{'y' if count == 1 else 'ies'} from {len(sections)} log(s)"
            f"{', decrypted' if args.decrypt else ''}, signed by {signer.name}\n"
        )
        for period, n in sorted(periods.items()):
            human += (
                f"{n} of them {'is' if n == 1 else 'are'} of {period}, shredded at retention: exported "
                "without their details (the bundle still proves they are in the log)\n"
            )
        if uncertain:
            human += (
                f"not exported: {len(uncertain)} shredded entr{'y' if len(uncertain) == 1 else 'ies'} "
                "matched by a UTC day only partly inside the time range (select with --entry LOG#INDEX)\n"
            )
        human += f"verify with: dsgw audit verify-export {args.out} --trust '{signer.verifier().vkey()}'"
        if uncertain:
            payload["not_exported_shredded"] = [s.to_json() for s in uncertain]
        emit(args, payload, human)
    return 0


def _trust_file(path: Path) -> list[Verifier]:
    """The verifier keys in ``path``, one a line; blank lines and ``#`` comments are skipped, and
    a bad line is named ``FILE:LINE``."""
    from audit.checkpoint import Verifier

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file of verifier keys") from None
    keys = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            keys.append(Verifier.from_vkey(text))
        except KeyFormatError as exc:
            raise UsageError(f"{path}:{number}: {exc}") from None
    return keys


def _verify_export(args: argparse.Namespace) -> int:
    from audit.keys import FileKeyProvider, Keyring
    from audit.layout import LogMeta, LogPaths
    from audit.review.export import load_bundle, verify_export
    from audit.review.render import render_verified_export

    with _failures(args):
        trusted: list[str | Verifier] = list(args.trust)
        for path in args.trust_file:
            trusted += _trust_file(path)
        metas = [(directory, LogMeta.load(directory)) for directory in args.log]
        trusted += [meta.vkey for _, meta in metas]
        if not trusted:
            raise UsageError("name the keys you trust: --trust VKEY, --trust-file FILE or --log DIR")
        auditor = FileKeyProvider.from_private_key_file(args.auditor_key) if args.auditor_key else None
        data_keys: dict[str, Any] = {}
        if auditor is not None:  # the decrypted entries are opened with their log's own keyring
            for directory, meta in metas:
                data_keys[meta.log_id] = Keyring.open(
                    LogPaths(directory).keyring, auditor, log_id=meta.log_id
                )
        bundle = load_bundle(args.bundle.read_bytes())
        result = verify_export(bundle, trusted, auditor=auditor, data_keys=data_keys)
        emit(args, result.to_json(), render_verified_export(result))
    return 0
