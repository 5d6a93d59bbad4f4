"""``dsgw consent``: grant, revoke, check, list, verify-receipt, receipt-key, opt-out, expire.

Every verb takes ``--home DIR`` (default ``$DSGW_HOME``, else ``~/.dsgw``): the store is
``DIR/consent.sqlite`` unless ``--store URL`` names another (e.g. ``postgresql://host/db``, with
``--store-schema``), the receipt signing key is ``DIR/keys/receipt-ed25519.pem`` (Ed25519), or
``DIR/keys/receipt-sm2.pem`` (SM2, alg ``SM2-SM3``) with ``--suite gm`` or when the home has that
key already (a home is configured for gm receipts by its first ``--suite gm`` and stays gm:
``--suite default`` is then refused, exit 2); keys are made on first use. ``verify-receipt``
verifies with the home's receipt key that the receipt's key_id names (or one of ``--key``'s).
Receipts go to
``DIR/receipts/<consent id>.<grant|revoke>.json`` unless ``--receipt-out`` (a new file or an
existing regular one: a device, FIFO, socket or link is refused, never replaced).

Only ``grant`` and ``opt-out`` start a new home; every other verb refuses a home without a
consent store (a mistyped ``--home``, exit 2) unless ``--store`` names one. Every change (grant,
revoke, expire, opt-out) needs a usable audit log (``--audit-log``, default ``HOME/audit/cli``:
an audit log, or a new or empty directory), checked before anything is stored. ``expire --at``
may not be in the future (an expiry is final).

Times: ISO 8601 (``2025-07-01``, ``2025-07-01T09:30``, ``2025-07-01T09:30+08:00``); without a
zone they are Beijing time (UTC+8). A date alone as ``--valid-to`` means to the end of that day.

Exit codes: 0 done / allowed / receipt valid; 1 ``check`` denied, a receipt that does not
verify, or a grant or revocation that WAS recorded but whose receipt file could not be written
(the line on stderr names the consent id: do not grant again); 2 bad input, configuration or an
unusable home, audit log, store or receipt path (nothing stored), with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from adapters.sources import SCHEMA_NAME
from gateway.cli import add_json_flag, check_writable_dir, emit, fail
from gateway.consent.decision import CONSENT_REQUIRED, Basis
from gateway.consent.errors import InvalidReceipt
from gateway.consent.model import CONSENT_ID, MAX_USE_LIMIT, OPTIONAL_REF, REF, CaptureChannel, PushChannel
from gateway.consent.receipts import (
    RECEIPT_KEY_FILES,
    ReceiptPublicKey,
    ReceiptSigner,
    alg_of,
    check_receipt_path,
    home_receipt_keys,
    key_id_of,
    load_public_key,
    load_public_keys,
    load_receipt_signer,
    public_key_pem,
    receipt_suite,
    verify_receipt_bytes,
    write_receipt,
)
from gateway.consent.service import CLOCK_TOLERANCE, ConsentService, GrantRequest, ScopeRequest
from gateway.consent.store import ConsentStore
from gateway.errors import UsageError
from gateway.localtime import BEIJING
from gateway.purposes import DEFAULT_CATALOGUE, PurposeCatalogue, load_catalogue

KEY_PATH = Path("keys") / "receipt-ed25519.pem"
STORE_FILE = "consent.sqlite"

#: Times the command line accepts (``--valid-from``, ``--valid-to``, ``--at``): [MIN_TIME, MAX_TIME).
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9999, 1, 1, tzinfo=UTC)
TIME_RANGE = "1970-01-01 to 9998-12-31"
MAX_DAYS = 36500
MAX_LIST = 10_000
MAX_OFFSET = 1_000_000_000
#: As ``gateway.consent.model``: the patterns of the terms, checked here to name the option.

RECEIPT_EXIT = (
    "exit codes: 0 done and receipt written; 1 the change WAS recorded but the receipt file could not "
    "be written (stderr names the consent id: do not repeat the command); 2 bad input or an unusable "
    "home, store, audit log or receipt path (nothing stored)"
)


def _int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer in [low, high] (a usage error naming the option else)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}-{high}")
        return value

    return parse


_KIND_HELP = "the subject's kind (default: from its form)"


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("consent", help="consent records and signed receipts")
    csub = parser.add_subparsers(dest="consent_command", required=True, metavar="VERB")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", type=Path, help="gateway home (default $DSGW_HOME or ~/.dsgw)")
    common.add_argument("--store", metavar="URL", help="consent store URL (default HOME/consent.sqlite)")
    common.add_argument(
        "--store-schema",
        metavar="SCHEMA",
        help="with --store: schema of the tables on PostgreSQL (lower-case letters, digits, '_')",
    )
    common.add_argument("--purposes", type=Path, metavar="FILE", help="purpose catalogue (JSON or TOML)")
    common.add_argument(
        "--audit-log", type=Path, metavar="DIR", help="audit log of consent changes (default HOME/audit/cli)"
    )
    common.add_argument(
        "--suite",
        choices=("default", "gm"),
        help="receipt algorithm: default Ed25519, gm SM2-SM3 (default: gm if the home has an SM2 key; "
        "a home stays gm once it has one)",
    )
    add_json_flag(common)

    g = csub.add_parser(
        "grant", parents=[common], help="record a consent and write its signed receipt", epilog=RECEIPT_EXIT
    )
    g.add_argument("--subject", required=True, help="resident identity number or credit code")
    g.add_argument(
        "--kind", choices=("person", "employer"), help="subject kind (default: from the identifier)"
    )
    g.add_argument("--consumer", action="append", required=True, help="consumer agency code (repeat)")
    g.add_argument(
        "--scope",
        action="append",
        required=True,
        metavar="PROVIDER.DATASET[:FIELD,...]",
        help="provider dataset and fields (all fields if none) (repeat)",
    )
    g.add_argument("--purpose", action="append", required=True, help="purpose code (repeat)")
    g.add_argument("--valid-from", help=f"start of validity ({TIME_RANGE}; default now)")
    g.add_argument(
        "--valid-to", help=f"end of validity (exclusive; a date means through that day; {TIME_RANGE})"
    )
    g.add_argument(
        "--days",
        type=_int_in(1, MAX_DAYS),
        help=f"validity of N days from the start, 1-{MAX_DAYS} (instead of --valid-to)",
    )
    g.add_argument(
        "--use-limit",
        type=_int_in(1, MAX_USE_LIMIT),
        help=f"maximum number of disclosures (1-{MAX_USE_LIMIT})",
    )
    g.add_argument(
        "--separate", action="store_true", help="the subject consented separately (sensitive data)"
    )
    g.add_argument("--channel", choices=[c.value for c in CaptureChannel], default="counter")
    g.add_argument(
        "--evidence",
        required=True,
        metavar="REF",
        help="evidence reference (form no., session; 1-128 printable characters)",
    )
    g.add_argument(
        "--notice-version",
        required=True,
        metavar="V",
        help="version of the notice text shown (1-128 printable characters)",
    )
    g.add_argument(
        "--consent-id",
        help="use this consent id (1-64 of A-Z a-z 0-9 . _ : -; default: a new random one)",
    )
    g.add_argument("--receipt-out", type=Path, metavar="FILE", help="receipt file (its directory must exist)")
    g.set_defaults(handler=_verb(_grant))

    r = csub.add_parser(
        "revoke", parents=[common], help="revoke a consent and write its signed receipt", epilog=RECEIPT_EXIT
    )
    r.add_argument("consent_id", metavar="CONSENT_ID")
    r.add_argument("--subject", help="refuse unless the consent is this subject's")
    r.add_argument("--channel", choices=[c.value for c in CaptureChannel], help="how it was requested")
    r.add_argument(
        "--evidence", default="", metavar="REF", help="evidence reference (at most 128 characters)"
    )
    r.add_argument(
        "--note", default="subject_request", help="machine-readable reason (at most 128 characters)"
    )
    r.add_argument("--receipt-out", type=Path, metavar="FILE", help="receipt file (its directory must exist)")
    r.set_defaults(handler=_verb(_revoke))

    c = csub.add_parser("check", parents=[common], help="decide one disclosure (exit 1 when denied)")
    c.add_argument("--subject", required=True, help="the subject's identity number or credit code")
    c.add_argument("--kind", choices=("person", "employer"), help=_KIND_HELP)
    c.add_argument("--consumer", required=True, help="consumer agency code")
    c.add_argument("--dataset", required=True, metavar="PROVIDER.DATASET")
    c.add_argument("--fields", metavar="F1,F2", help="requested fields (default: all)")
    c.add_argument("--purpose", required=True, help="the purpose code the consumer asks for")
    c.add_argument("--at", help=f"decide as of this time ({TIME_RANGE}; default now)")
    c.add_argument("--statutory-duty", metavar="REF", help="the agreement is a statutory duty (reference)")
    c.add_argument("--consume", action="store_true", help="count a use when allowed")
    c.set_defaults(handler=_verb(_check))

    ls = csub.add_parser("list", parents=[common], help="list consents, newest first")
    ls.add_argument("--subject", help="only this subject's consents")
    ls.add_argument("--kind", choices=("person", "employer"), help=_KIND_HELP)
    ls.add_argument("--status", choices=("granted", "revoked", "expired"), help="only this status")
    ls.add_argument(
        "--limit",
        type=_int_in(1, MAX_LIST),
        default=100,
        help=f"at most N (1-{MAX_LIST}, default 100)",
    )
    ls.add_argument(
        "--offset", type=_int_in(0, MAX_OFFSET), default=0, help=f"skip N consents (0-{MAX_OFFSET})"
    )
    ls.set_defaults(handler=_verb(_list))

    v = csub.add_parser(
        "verify-receipt", parents=[common], help="verify a receipt offline (exit 1 if altered)"
    )
    v.add_argument("file", type=Path, metavar="FILE")
    v.add_argument(
        "--key", type=Path, metavar="PEM", help="public key PEM, one or more keys (default: the home's keys)"
    )
    v.set_defaults(handler=_verb(_verify))

    k = csub.add_parser(
        "receipt-key", parents=[common], help="print every receipt public key of the home (PEM)"
    )
    k.set_defaults(handler=_verb(_receipt_key))

    o = csub.add_parser("opt-out", parents=[common], help="refuse proactive contact by channel or category")
    o.add_argument("--subject", required=True, help="the subject's identity number or credit code")
    o.add_argument("--kind", choices=("person", "employer"), help=_KIND_HELP)
    o.add_argument("--channel", choices=[p.value for p in PushChannel], help="push channel refused")
    o.add_argument("--category", help="policy category refused (purpose catalogue)")
    o.add_argument("--undo", action="store_true", help="lift the refusal")
    o.add_argument("--list", action="store_true", help="show the current refusals and their history")
    o.add_argument("--capture-channel", choices=[c.value for c in CaptureChannel])
    o.add_argument(
        "--evidence", default="", metavar="REF", help="evidence reference (at most 128 characters)"
    )
    o.set_defaults(handler=_verb(_opt_out))

    e = csub.add_parser("expire", parents=[common], help="record expiry of consents past their validity")
    e.add_argument("--at", help=f"as of this time ({TIME_RANGE}; default now)")
    e.set_defaults(handler=_verb(_expire))


# --- helpers ----------------------------------------------------------------------------------


def home_of(args: argparse.Namespace) -> Path:
    if args.home is not None:
        return Path(args.home).expanduser()
    env = os.environ.get("DSGW_HOME")
    return Path(env).expanduser() if env else Path.home() / ".dsgw"


def home_label(args: argparse.Namespace) -> str:
    """How the user named the home, for messages."""
    if args.home is not None:
        return "--home"
    return "DSGW_HOME" if os.environ.get("DSGW_HOME") else "home"


def parse_time(text: str, *, end_of_day: bool = False, what: str = "time") -> datetime:
    """ISO date or datetime; naive means Beijing time; a date is its start (or, with
    ``end_of_day``, the start of the next day). UsageError outside [MIN_TIME, MAX_TIME)."""
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime.combine(day, time(0), BEIJING)
            if end_of_day:
                moment += timedelta(days=1)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=BEIJING)
        moment = moment.astimezone(UTC)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not an ISO 8601 date or time") from None
    except OverflowError:  # year 1 east of UTC (too early); past 9999-12-31 in UTC (too late)
        moment = MIN_TIME - timedelta(microseconds=1) if moment.year < 5000 else MAX_TIME
    if moment < MIN_TIME:
        raise UsageError(
            f"{what} {text!r} is too early: times start at 1970-01-01T00:00Z (1970-01-01T08:00 Beijing time)"
        )
    if moment >= MAX_TIME:
        raise UsageError(f"{what} {text!r} is too late: times end before 9999-01-01T00:00Z")
    return moment


def _plus_days(start: datetime, days: int) -> datetime:
    try:
        end = start + timedelta(days=days)
    except OverflowError:
        end = MAX_TIME
    if end >= MAX_TIME:
        raise UsageError(f"--days: the validity would end after {TIME_RANGE.split()[-1]}")
    return end


def _check_ref(option: str, value: str, *, optional: bool = False) -> None:
    """The terms' reference pattern, with a message naming the option (not pydantic's)."""
    _check_utf8(option, value)
    if not (OPTIONAL_REF if optional else REF).match(value):
        bound = "at most 128" if optional else "1-128"
        raise UsageError(f"{option}: {bound} printable characters")


def _check_utf8(option: str, value: str) -> None:
    """A command-line text that was not valid UTF-8 (Python keeps its bytes as surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{option}: not valid UTF-8") from None


def _check_texts(args: argparse.Namespace) -> None:
    """Every text option (and list of them) is valid UTF-8, named as the user typed it."""
    positional = getattr(args, "consent_command", None) == "revoke"  # revoke CONSENT_ID
    for name, value in vars(args).items():
        option = name.upper() if positional and name == "consent_id" else "--" + name.replace("_", "-")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                _check_utf8(option, item)


def _check_receipt_out(path: Path) -> None:
    """``--receipt-out``: a new file, or an existing regular one, in an existing, writable
    directory (nothing is created for it; a device, FIFO, socket or link is never replaced)."""
    parent = path.absolute().parent
    if path.is_dir():
        raise UsageError(f"--receipt-out {path} is a directory")
    try:
        check_receipt_path(path)
    except OSError:
        raise UsageError(f"--receipt-out {path} exists and is not a regular file") from None
    if not parent.exists():
        raise UsageError(f"--receipt-out {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"--receipt-out {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--receipt-out {path}: directory {parent} is not writable")


def _receipt_target(args: argparse.Namespace) -> Callable[[str, str], Path]:
    """Checks, before anything is stored, that the receipt can be written; the receipt path of a
    consent id and action then."""
    if args.receipt_out is not None:
        _check_receipt_out(args.receipt_out)
        return lambda _cid, _action: Path(args.receipt_out)
    receipts = home_of(args) / "receipts"
    check_writable_dir(receipts, home_label(args))
    return lambda cid, action: receipts / f"{cid}.{action}.json"


def _write_receipt(receipt: dict[str, Any], out: Path, consent_id: str, action: str) -> str | None:
    """Write the receipt; the one-line problem if that fails (the change itself is recorded)."""
    try:
        write_receipt(receipt, out)
    except OSError as exc:
        return (
            f"consent {consent_id} WAS {action} (recorded and audited); only its receipt file {out} "
            f"could not be written: {exc.strerror or type(exc).__name__}"
        )
    return None


def _verb(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The checks every verb shares. (A file-system error that still escapes, a path made
    unwritable meanwhile, is one line with exit 2 at gateway.cli.main.)"""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        _check_texts(args)
        if args.store_schema is not None:
            if not args.store:
                raise UsageError("--store-schema needs --store")
            if not SCHEMA_NAME.match(args.store_schema):
                raise UsageError("--store-schema must be lower-case letters, digits and '_' (at most 63)")
        return handler(args)

    return run


def _catalogue(args: argparse.Namespace) -> PurposeCatalogue:
    return load_catalogue(args.purposes) if args.purposes else DEFAULT_CATALOGUE


def _require_home_store(args: argparse.Namespace) -> None:
    """A verb that reads or changes existing consents refuses a home without a consent store (a
    mistyped ``--home``) rather than creating one; only ``grant`` and ``opt-out`` start a home."""
    home = home_of(args)
    if not args.store and not (home / STORE_FILE).is_file():
        raise UsageError(f"no consent store in {home} ({home_label(args)}; a grant creates one)")


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[ConsentStore]:
    """The consent store (``--store``, else the home's, made if missing: see :func:`_service`)."""
    if args.store:
        store = ConsentStore(args.store, schema=args.store_schema)
    else:
        check_writable_dir(home_of(args), home_label(args))
        store = ConsentStore.for_home(home_of(args))
    try:
        yield store
    finally:
        store.close()


def _signer(args: argparse.Namespace) -> ReceiptSigner:
    """The home's receipt signer. A gm home (one with an SM2 receipt key) stays gm: ``--suite
    default`` is refused there rather than signing with Ed25519."""
    home, suite = home_of(args), getattr(args, "suite", None)
    if suite == "default" and receipt_suite(home) == "gm":
        raise UsageError(
            f"this home signs receipts with SM2 ({home / 'keys' / RECEIPT_KEY_FILES['gm']}) and stays gm: "
            "--suite default is refused"
        )
    return load_receipt_signer(home, suite)


def _audit_dir(args: argparse.Namespace) -> Path:
    """The audit log's directory, checked writable (or creatable) and either an audit log whose
    ``log.json`` reads, or absent or empty (a new log); nothing is created."""
    from audit.errors import AuditError
    from audit.layout import LOG_JSON, LogMeta

    directory = Path(args.audit_log).expanduser() if args.audit_log else home_of(args) / "audit" / "cli"
    label = "--audit-log" if args.audit_log else home_label(args)
    check_writable_dir(directory, label)
    if not directory.exists():
        return directory
    if (directory / LOG_JSON).exists() or (directory / LOG_JSON).is_symlink():
        try:
            LogMeta.load(directory)
        except AuditError as exc:
            raise UsageError(f"{label} {directory}: not a usable audit log: {exc}") from None
    elif any(directory.iterdir()):
        raise UsageError(
            f"{label} {directory}: not an audit log (a directory that is not empty and has no {LOG_JSON}); "
            "name an audit log, or a new or empty directory"
        )
    return directory


@contextmanager
def _audit_log(args: argparse.Namespace, directory: Path) -> Iterator[Any]:
    """The command line's own audit log in ``directory`` (:func:`_audit_dir`): consent changes
    made here are audited like the gateway's. Created (with the home's audit keys) on first use.
    A log that cannot be made or opened, or that fails to take an entry, is a one-line usage error
    (the change it would have audited is not made: the store's transaction is rolled back)."""
    from audit.errors import AuditError
    from audit.layout import HomeKeys
    from audit.log import AuditLog, init_log

    home = home_of(args)
    try:
        keys = HomeKeys(home)
        if not keys.checkpoint_key.exists():
            keys.generate()
        if not (directory / "log.json").exists():
            suite = "gm" if getattr(args, "suite", None) == "gm" else "default"
            init_log(directory, keys.load(), node="cli", suite=suite)
        log = AuditLog.open(directory, home=home, index="thread")
    except AuditError as exc:
        raise UsageError(f"audit log {directory}: {exc}") from None
    try:
        yield log
    except AuditError as exc:
        raise UsageError(
            f"audit log {directory}: {exc} (the change it could not audit was not made)"
        ) from None
    finally:
        log.close()


@contextmanager
def _service(
    args: argparse.Namespace, *, signer: bool = False, audited: bool = False, create: bool = False
) -> Iterator[ConsentService]:
    """The consent service over the store (``create``: a new home may be started, else the
    home must have a consent store), with the receipt signer and the audit hook when asked."""
    from gateway.pipeline.record import consent_hook

    # checked first: a verb that needs an existing store, or cannot audit its change, refuses
    # before anything is made
    if not create:
        _require_home_store(args)
    audit_dir = _audit_dir(args) if audited else None
    catalogue = _catalogue(args)
    sign = _signer(args) if signer else None
    with _store(args) as store, contextlib.ExitStack() as stack:
        hook = None
        if audit_dir is not None:
            log = stack.enter_context(_audit_log(args, audit_dir))
            hook = consent_hook(log.append, "cli")
        yield ConsentService(store, catalogue=catalogue, signer=sign, on_event=hook)


def _split_dataset(text: str) -> tuple[str, str]:
    provider, dot, dataset = text.partition(".")
    if not dot or not provider or not dataset:
        raise UsageError(f"dataset {text!r} is not PROVIDER.DATASET")
    return provider, dataset


# --- verbs ------------------------------------------------------------------------------------


def _grant(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)  # one clock reading: the grant time, the default start, --days
    valid_from = parse_time(args.valid_from, what="--valid-from") if args.valid_from else None
    if (args.valid_to is None) == (args.days is None):
        raise UsageError("give exactly one of --valid-to or --days")
    if args.valid_to is not None:
        valid_to = parse_time(args.valid_to, end_of_day=True, what="--valid-to")
    else:
        valid_to = _plus_days(valid_from or now, args.days)
    _check_ref("--evidence", args.evidence)
    _check_ref("--notice-version", args.notice_version)
    if args.consent_id is not None and not CONSENT_ID.match(args.consent_id):
        raise UsageError("--consent-id: 1-64 of A-Z a-z 0-9 . _ : -, starting with a letter or digit")
    request = GrantRequest(
        subject=args.subject,
        subject_kind=args.kind,
        consumers=args.consumer,
        scope=[ScopeRequest.parse(s) for s in args.scope],
        purposes=args.purpose,
        valid_from=valid_from,
        valid_to=valid_to,
        use_limit=args.use_limit,
        separate=args.separate,
        channel=args.channel,
        evidence_ref=args.evidence,
        notice_version=args.notice_version,
        consent_id=args.consent_id,
    )
    with _service(args, create=True) as service:
        # validate before the receipt key or the audit log is made: bad input makes nothing
        service.validate_grant(request, now)
    # and refuse now (nothing stored) if the receipt or the audit entry could not be written
    target = _receipt_target(args)
    with _service(args, signer=True, audited=True, create=True) as service:
        granted = service.grant(request, now=now)
    cid = granted.record.consent_id
    out = target(cid, "grant")
    assert granted.receipt is not None
    problem = _write_receipt(granted.receipt, out, cid, "granted")
    payload = {
        "consent": granted.record.to_json(),
        "receipt_file": None if problem else str(out),
        "receipt": granted.receipt,
    }
    emit(args, payload, f"granted {cid}\n" + ("receipt NOT written" if problem else f"receipt {out}"))
    return fail(problem, 1) if problem else 0


def _revoke(args: argparse.Namespace) -> int:
    _check_ref("--evidence", args.evidence, optional=True)
    _check_ref("--note", args.note, optional=True)
    target = _receipt_target(args)
    with _service(args, signer=True, audited=True) as service:
        revoked = service.revoke(
            args.consent_id,
            subject=args.subject,
            channel=args.channel,
            evidence_ref=args.evidence,
            note=args.note,
        )
    cid = revoked.record.consent_id
    out = target(cid, "revoke")
    assert revoked.receipt is not None
    problem = _write_receipt(revoked.receipt, out, cid, "revoked")
    payload = {
        "consent": revoked.record.to_json(),
        "receipt_file": None if problem else str(out),
        "receipt": revoked.receipt,
    }
    receipt_line = "receipt NOT written" if problem else f"receipt {out}"
    emit(args, payload, f"revoked {cid} at {revoked.event.at.isoformat()}\n{receipt_line}")
    return fail(problem, 1) if problem else 0


def _check(args: argparse.Namespace) -> int:
    provider, dataset = _split_dataset(args.dataset)
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    basis = (
        Basis(statutory_duty=True, reference=args.statutory_duty) if args.statutory_duty else CONSENT_REQUIRED
    )
    now = parse_time(args.at, what="--at") if args.at else None
    with _service(args) as service:
        decision = service.check(
            subject=args.subject,
            subject_kind=args.kind,
            consumer=args.consumer,
            provider=provider,
            dataset=dataset,
            fields=fields,
            purpose=args.purpose,
            basis=basis,
            now=now,
            consume=args.consume,
        )
    if decision.allowed:
        human = f"allowed ({decision.basis.value} {decision.legal_basis_reference})"
    else:
        human = f"denied: {decision.reason.value if decision.reason else ''}: {decision.detail}"
    emit(args, decision.to_json(), human)
    return 0 if decision.allowed else 1


def _list(args: argparse.Namespace) -> int:
    if args.kind and not args.subject:
        raise UsageError("--kind needs --subject")
    with _service(args) as service:
        now = service.clock()
        records = service.list(
            subject=args.subject,
            subject_kind=args.kind,
            status=args.status,
            limit=args.limit,
            offset=args.offset,
        )
    items = [r.to_json(now) for r in records]
    lines = [
        f"{i['consent_id']}  {_status_label(i):<8} {i['subject']['kind']:<8} "
        f"{','.join(i['consumers'])} <- {','.join(s['provider'] + '.' + s['dataset'] for s in i['scope'])} "
        f"for {','.join(i['purposes'])} until {i['valid_to']}"
        for i in items
    ]
    emit(args, {"consents": items, "count": len(items)}, "\n".join(lines) if lines else "no consents")
    return 0


def _status_label(item: dict[str, Any]) -> str:
    """The status a list row shows, as ``--status`` filters: a recorded revocation or expiry is
    final (even one whose effective time is still ahead), else the status now."""
    recorded = str(item["status"])
    if recorded != "granted":
        return recorded
    return str(item.get("status_now") or recorded)


def _verify(args: argparse.Namespace) -> int:
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    keys = load_public_keys(args.key) if args.key else _home_public_keys(args)
    try:
        verified = verify_receipt_bytes(data, keys)
    except InvalidReceipt as exc:
        if args.json:
            emit(args, {"valid": False, "reason": exc.reason, "message": str(exc)})
        raise
    payload = {
        "valid": True,
        "key_id": verified.key_id,
        "action": verified.action,
        "consent_id": verified.consent_id,
        "receipt_id": verified.receipt_id,
        "payload": verified.payload,
    }
    emit(args, payload, f"valid: {verified.action} {verified.consent_id} (key {verified.key_id})")
    return 0


def _home_public_keys(args: argparse.Namespace) -> list[ReceiptPublicKey]:
    """The home's receipt keys (Ed25519 and SM2; only the ``--suite`` one when given), among which
    the receipt's key_id picks; a usage error only when there is none at all."""
    home, suite = home_of(args), getattr(args, "suite", None)
    if suite is not None:
        path = home / "keys" / RECEIPT_KEY_FILES[suite]
        if not path.exists():
            raise UsageError(f"no receipt key at {path}; pass --key PUBLIC_KEY.pem")
        return [load_public_key(path)]
    keys = home_receipt_keys(home)
    if not keys:
        raise UsageError(f"no receipt key in {home / 'keys'}; pass --key PUBLIC_KEY.pem")
    return keys


def _receipt_key(args: argparse.Namespace) -> int:
    """Every receipt key of the home, the signing one first (made on first use), so that any
    receipt the home issued verifies offline from this output. A home with neither a consent
    store nor a receipt key (a mistyped ``--home``) is refused: no key is minted there."""
    home = home_of(args)
    if not home_receipt_keys(home) and not (home / STORE_FILE).is_file():
        raise UsageError(f"no consent store in {home} ({home_label(args)}; a grant creates one)")
    signer = _signer(args)
    keys = [signer.public_key] + [
        k for k in home_receipt_keys(home_of(args)) if key_id_of(k) != signer.key_id
    ]
    items = [{"key_id": key_id_of(k), "alg": alg_of(k), "public_key_pem": public_key_pem(k)} for k in keys]
    human = "".join(f"# alg {i['alg']} key_id {i['key_id']}\n{i['public_key_pem']}" for i in items)
    emit(args, {**items[0], "keys": items}, human.rstrip("\n"))
    return 0


def _opt_out(args: argparse.Namespace) -> int:
    _check_ref("--evidence", args.evidence, optional=True)
    if args.list:
        if args.channel or args.category or args.undo:
            raise UsageError("--list takes no --channel, --category or --undo")
        with _service(args) as service:
            prefs = service.preferences(args.subject, subject_kind=args.kind)
            history = service.opt_outs(args.subject, subject_kind=args.kind)
        payload = {
            "refused_channels": sorted(prefs.refused_channels),
            "refused_categories": sorted(prefs.refused_categories),
            "history": [o.to_json() for o in history],
        }
        human = (
            f"refused channels: {', '.join(sorted(prefs.refused_channels)) or '-'}\n"
            f"refused categories: {', '.join(sorted(prefs.refused_categories)) or '-'}"
        )
        emit(args, payload, human)
        return 0
    # a change: the audit log is checked and opened first (no usable audit log, no change)
    with _service(args, audited=True, create=True) as service:
        item = service.opt_out(
            args.subject,
            subject_kind=args.kind,
            channel=args.channel,
            category=args.category,
            refused=not args.undo,
            capture_channel=args.capture_channel,
            evidence_ref=args.evidence,
        )
    verb = "refused" if item.refused else "accepted again"
    emit(args, item.to_json(), f"{item.target.value} {item.value}: {verb}")
    return 0


def _expire(args: argparse.Namespace) -> int:
    now = parse_time(args.at, what="--at") if args.at else None
    if now is not None and now > datetime.now(UTC) + CLOCK_TOLERANCE:
        raise UsageError(
            f"--at {args.at}: in the future; an expiry is final, and consents still in force "
            "would end for good (expire as of now or an earlier time)"
        )
    with _service(args, audited=True) as service:
        done = service.expire(now=now)
    ids = [record.consent_id for record, _ in done]
    emit(args, {"expired": ids, "count": len(ids)}, f"expired {len(ids)} consent(s)")
    return 0
