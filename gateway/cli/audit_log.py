"""``dsgw audit`` verbs of the log itself: keys, creation, checkpoints, proofs and verification.

    dsgw audit keygen --home DIR [--suite gm] [--auditor-public-key FILE]
    dsgw audit rewrap --log DIR --auditor-key OLD_PRIVATE... --new-public-key NEW_PUB
    dsgw audit shred --log DIR --period PERIOD [--force]
    dsgw audit init --log DIR --home DIR --node NAME [--suite default|gm]
    dsgw audit vkey --log DIR
    dsgw audit checkpoint --log DIR [--home DIR --new]
    dsgw audit prove --log DIR --index N
    dsgw audit consistency --log DIR --old N [--new M]
    dsgw audit reindex --log DIR
    dsgw audit verify --log DIR [--checkpoint FILE]... [--key VKEY]... [--auditor-key FILE] [--jobs N]

Every verb takes ``--json``. Exit codes: 0 success, 1 a check failed (verification, a checkpoint
that does not verify, a proof that does not lead to the checkpoint's root), 2 bad usage or input.
Hashes in JSON are standard base64 (RFC 9162 SHA-256 in the default suite, SM3 in ``gm``).
Checkpoints of ``gm`` logs are signed with SM2 (``HOME/keys/checkpoint-sm2.key``: made by
``keygen --suite gm``, or by ``init --suite gm`` when missing).
"""

from __future__ import annotations

import argparse
import base64
import functools
import hmac
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli import add_json_flag, emit, positive_int
from gateway.errors import CheckFailed, UsageError

if TYPE_CHECKING:
    from audit.checkpoint import Checkpoint
    from audit.index import AuditIndex
    from audit.merkle import MerkleProver
    from audit.reader import LogReader


class _OneLog(argparse.Action):
    """``--log`` of a verb that reads one log: given twice is a usage error (the second would
    silently replace the first: ``verify --log A --log B`` would check B alone)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} given twice: this command reads one log (run it once per log)")
        setattr(namespace, self.dest, values)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _integer(option: str, text: str, *, minimum: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not an integer") from None
    if value < minimum:
        raise UsageError(f"{option} must be at least {minimum}")
    return value


class _Reported(CheckFailed):
    """A failed check whose --json output the verb printed already (``verify``: its report)."""


def _problem(args: argparse.Namespace, code: str, message: str) -> None:
    """With --json, a failed check on stdout as ``{"ok": false, "problem": {code, message, log,
    entry}}`` (the shape of ``dsgw audit search --json``'s failures)."""
    if getattr(args, "json", False):
        emit(args, {"ok": False, "problem": {"code": code, "message": message, "log": None, "entry": None}})


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Map the audit package's errors to exit codes: verification failures 1, the rest 2. A
    failed check is also printed as JSON with --json (:func:`_problem`)."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from audit.errors import AuditError, VerificationError

        try:
            return handler(args)
        except (_Reported, UsageError):
            raise
        except CheckFailed as exc:
            _problem(args, exc.reason, str(exc))
            raise
        except VerificationError as exc:
            _problem(args, exc.reason, str(exc))
            raise CheckFailed(str(exc)) from None
        except AuditError as exc:
            raise UsageError(str(exc)) from None
        except FileExistsError as exc:
            raise UsageError(f"{exc.filename or exc} exists") from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise UsageError(f"{where}{exc.strerror or exc}") from None

    return run


def register(sub: Any) -> None:
    def verb(
        name: str, help_text: str, handler: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_json_flag(parser)
        parser.set_defaults(handler=_guarded(handler))
        return parser

    p = verb("keygen", "generate the gateway's audit keys in its home (0600 files)", _keygen)
    p.add_argument("--home", required=True, type=Path, metavar="DIR", help="the gateway's home directory")
    p.add_argument(
        "--suite",
        default="default",
        choices=["default", "gm"],
        help="gm: also the SM2 checkpoint key (only it, if the other keys exist)",
    )
    p.add_argument(
        "--auditor-public-key",
        type=Path,
        metavar="FILE",
        help="use this EXISTING auditor public key (e.g. the organisation's) instead of a new key pair: "
        "the home gets only its public half",
    )

    p = verb(
        "rewrap",
        "rotate the log's auditor key: re-wrap its data keys under a new public key (no entry changes); "
        "refused while a gateway has the log open",
        _rewrap,
    )
    p.add_argument("--log", required=True, type=Path, metavar="DIR", action=_OneLog)
    p.add_argument(
        "--auditor-key",
        required=True,
        action="append",
        type=Path,
        metavar="OLD_PRIVATE",
        help="the current auditor PRIVATE key, which unwraps the data keys (repeatable: older keys too)",
    )
    p.add_argument(
        "--new-public-key",
        required=True,
        type=Path,
        metavar="NEW_PUB",
        help="the new auditor PUBLIC key (its .pub file) the data keys are wrapped under from now on",
    )

    p = verb(
        "shred",
        "crypto-shred a retention period: its data keys are destroyed, its entries still verify but "
        "can never be read again; refused while a gateway has the log open",
        _shred,
    )
    p.add_argument("--log", required=True, type=Path, metavar="DIR", action=_OneLog)
    p.add_argument(
        "--period",
        required=True,
        metavar="PERIOD",
        help="the period, in the log's granularity (month: YYYY-MM)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="also shred the current (or a future) period, whose data key a writer may still use",
    )

    p = verb("init", "create a new, empty audit log", _init)
    p.add_argument(
        "--log",
        required=True,
        type=Path,
        metavar="DIR",
        action=_OneLog,
        help="the log directory (absent or empty)",
    )
    p.add_argument(
        "--home", required=True, type=Path, metavar="DIR", help="home with the keys (dsgw audit keygen)"
    )
    p.add_argument("--node", required=True, metavar="NAME", help="this gateway node's name")
    p.add_argument("--suite", default="default", choices=["default", "gm"], help="algorithm suite")

    p = verb("vkey", "print the log's checkpoint verifier key (signed-note vkey)", _vkey)
    p.add_argument("--log", required=True, type=Path, metavar="DIR", action=_OneLog)

    p = verb("checkpoint", "print the latest signed checkpoint byte for byte", _checkpoint)
    p.add_argument("--log", required=True, type=Path, metavar="DIR", action=_OneLog)
    p.add_argument("--home", type=Path, metavar="DIR", help="the writer's home (with --new)")
    p.add_argument("--new", action="store_true", help="write a new checkpoint first (needs --home)")

    p = verb("prove", "inclusion proof of an entry against the latest checkpoint", _prove)
    p.add_argument("--log", required=True, type=Path, metavar="DIR", action=_OneLog)
    p.add_argument("--index", required=True, metavar="N", help="the entry's index")

    p = verb("consistency", "consistency proof between two tree sizes", _consistency)
    p.add_argument("--log", required=True, type=Path, metavar="DIR", action=_OneLog)
    p.add_argument("--old", required=True, metavar="N", help="the older tree size")
    p.add_argument("--new", metavar="M", help="the newer tree size (default: the latest checkpoint's)")

    p = verb(
        "reindex",
        "rebuild the log's search index (and its tile hashes) from the segments; no key needed",
        _reindex,
    )
    p.add_argument("--log", required=True, type=Path, metavar="DIR", action=_OneLog)

    p = verb("verify", "verify the whole audit log; exit 1 naming the first bad entry or checkpoint", _verify)
    p.add_argument("--log", required=True, type=Path, metavar="DIR", action=_OneLog)
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a signed checkpoint kept earlier (repeatable): the log must still extend it",
    )
    p.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="VKEY",
        help="trusted checkpoint verifier key (repeatable; default: the one in log.json)",
    )
    p.add_argument(
        "--auditor-key",
        type=Path,
        metavar="FILE",
        help="auditor private key: also open and check every entry, and compare the search index with them",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        metavar="N",
        help="processes scanning segments (default: one per CPU, at most 8, for a log of 32 MiB or more)",
    )


# --- verbs ------------------------------------------------------------------------------------


def _keygen(args: argparse.Namespace) -> int:
    from audit.layout import HomeKeys

    keys = HomeKeys(args.home)
    kek_id = keys.generate(suite=args.suite, auditor_public_key=args.auditor_public_key)
    private = keys.auditor_key.exists()
    payload: dict[str, Any] = {
        "home": str(args.home),
        "checkpoint_key": str(keys.checkpoint_key),
        "blind_index_key": str(keys.blind_index_key),
        "auditor_key": str(keys.auditor_key) if private else None,
        "auditor_public_key": str(keys.auditor_public_key),
        "kek_id": kek_id,
    }
    if args.suite == "gm":
        payload["checkpoint_sm2_key"] = str(keys.checkpoint_sm2_key)
    if private:
        advice = f"give {keys.auditor_key.name} to the auditors and keep only the .pub on the gateway"
    else:
        advice = "the home holds only the auditor's public key"
    emit(args, payload, f"keys written to {keys.directory} (auditor key {kek_id}); {advice}")
    return 0


def _rewrap(args: argparse.Namespace) -> int:
    from audit.keys import FileKeyProvider
    from audit.layout import rotate_auditor_key

    old = [FileKeyProvider.from_private_key_file(path) for path in args.auditor_key]
    new = FileKeyProvider.from_public_key_file(args.new_public_key)
    done = rotate_auditor_key(args.log, new, old_providers=old)
    payload = {
        "log": str(args.log),
        "log_id": done.log_id,
        "old_kek_id": done.old_kek_id,
        "new_kek_id": done.new_kek_id,
        "rewrapped": done.rewrapped,
    }
    emit(
        args,
        payload,
        f"{done.log_id}: {done.rewrapped} wrapped keys re-wrapped from auditor key {done.old_kek_id} to "
        f"{done.new_kek_id}; put {args.new_public_key} in each gateway's home as keys/auditor.key.pub "
        "before it reopens the log",
    )
    return 0


def _shred(args: argparse.Namespace) -> int:
    from audit.keys import PeriodNotOver
    from audit.layout import shred_period

    try:
        report = shred_period(args.log, args.period, force=args.force)
    except PeriodNotOver:
        raise UsageError(
            f"refusing to shred period {args.period}: it is not over yet (a writer may still seal with its "
            "data key); pass --force to shred it anyway"
        ) from None
    now = {key_id for key_id in report.shredded}
    payload = {
        "log": str(args.log),
        "log_id": report.log_id,
        "period": report.period,
        "shredded": [key_id.hex() for key_id in report.shredded],
        "already_shredded": [t.key_id.hex() for t in report.tombstones if t.key_id not in now],
        "tombstones": [
            {"key_id": t.key_id.hex(), "created": t.created, "shredded_at": t.shredded_at}
            for t in report.tombstones
        ],
    }
    if report.shredded:
        human = (
            f"{report.log_id}: shredded {len(report.shredded)} data keys of period {report.period}; "
            "its entries still verify but can never be read again"
        )
    elif report.tombstones:
        human = (
            f"{report.log_id}: period {report.period} was shredded already "
            f"({len(report.tombstones)} data keys, at {report.tombstones[-1].shredded_at}); nothing to do"
        )
    else:
        human = f"{report.log_id}: no data keys of period {report.period}; nothing to shred"
    emit(args, payload, human)
    return 0


def _init(args: argparse.Namespace) -> int:
    from audit.layout import HomeKeys
    from audit.log import init_log

    meta = init_log(args.log, HomeKeys(args.home).load(), node=args.node, suite=args.suite)
    payload = {"log": str(args.log), "log_id": meta.log_id, "suite": meta.suite, "vkey": meta.vkey}
    emit(args, payload, f"{meta.log_id}\n{meta.vkey}")
    return 0


def _vkey(args: argparse.Namespace) -> int:
    from audit.layout import LogMeta

    meta = LogMeta.load(args.log)
    emit(args, {"log_id": meta.log_id, "vkey": meta.vkey}, meta.vkey)
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    from audit.reader import LogReader

    if args.new:
        if args.home is None:
            raise UsageError("--new needs --home (the writer's keys sign the checkpoint)")
        from audit.log import AuditLog, LogLocked

        try:
            log = AuditLog.open(args.log, home=args.home, index="none")
        except LogLocked:
            raise UsageError(
                f"{args.log} is open by a running writer, which checkpoints by itself; "
                "try again without --new"
            ) from None
        try:
            log.checkpoint_now()
        finally:
            log.close()
    elif args.home is not None:
        raise UsageError("--home is only used with --new")
    reader = LogReader(args.log)
    checkpoint, note = reader.latest_checkpoint()
    if args.json:
        emit(
            args,
            {
                "log_id": reader.log_id,
                "tree_size": checkpoint.size,
                "root_hash": _b64(checkpoint.root_hash),
                "checkpoint": note.decode("utf-8"),
            },
        )
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(note)
        sys.stdout.buffer.flush()
    return 0


def _prove(args: argparse.Namespace) -> int:
    from audit.merkle import verify_inclusion
    from audit.reader import LogReader

    index = _integer("--index", args.index)
    reader = LogReader(args.log)
    checkpoint, note = reader.latest_checkpoint()
    if index >= checkpoint.size:
        size = reader.size()
        if index >= size:
            raise UsageError(f"the log has no entry {index} (it has {size:,} entries)")
        raise UsageError(
            f"entry {index} is not covered by the latest checkpoint (tree size {checkpoint.size}): "
            "wait for the next checkpoint or write one (dsgw audit checkpoint --new)"
        )
    prover = _prover(reader, checkpoint.size)
    if prover.root(checkpoint.size) != checkpoint.root_hash:
        raise CheckFailed(
            f"the log's root at tree size {checkpoint.size} is not the checkpoint's: run dsgw audit verify"
        )
    leaf = prover.subtree_hash(index, index + 1)
    _check_stored(reader, index, leaf)
    proof = prover.inclusion_proof(index, checkpoint.size)
    verify_inclusion(index, checkpoint.size, leaf, proof, checkpoint.root_hash, reader.hash_fn)
    payload: dict[str, Any] = {
        "log_id": reader.log_id,
        "leaf_index": index,
        "tree_size": checkpoint.size,
        "leaf_hash": _b64(leaf),
        "proof": [_b64(p) for p in proof],
        "root_hash": _b64(checkpoint.root_hash),
        "checkpoint": note.decode("utf-8"),
    }
    human = "\n".join(
        [
            f"entry {index} in tree size {checkpoint.size} of {reader.log_id}",
            f"leaf hash {payload['leaf_hash']}",
            *(f"proof {p}" for p in payload["proof"]),
            f"root hash {payload['root_hash']}",
        ]
    )
    emit(args, payload, human)
    return 0


def _consistency(args: argparse.Namespace) -> int:
    from audit.merkle import verify_consistency
    from audit.reader import LogReader, ReadError

    old = _integer("--old", args.old)
    reader = LogReader(args.log)
    checkpoint, note = reader.latest_checkpoint()
    new = checkpoint.size if args.new is None else _integer("--new", args.new)
    if old > new:
        raise UsageError(f"--old {old} is larger than the new tree size {new}")
    if new > checkpoint.size:
        try:
            size: int | None = reader.size()
        except ReadError:
            size = None  # damaged: the leaves below say so (exit 1)
        if size is not None and new > size:
            raise UsageError(f"--new {new} is beyond the log: the log has {size:,} entries")
    # the proof comes from the index: its tree up to the latest checkpoint must have that
    # checkpoint's signed root, which then vouches for every smaller tree it holds
    prover = _prover(reader, max(new, checkpoint.size))
    if prover.root(checkpoint.size) != checkpoint.root_hash:
        raise CheckFailed(
            f"the log's root at tree size {checkpoint.size} is not the latest checkpoint's: "
            "run dsgw audit verify"
        )
    new_root = prover.root(new)
    # the proof comes from the index: check (cheaply) that the segments still hold the entries
    for last in sorted({old - 1, new - 1} - {-1}):
        _check_stored(reader, last, prover.subtree_hash(last, last + 1))
    old_root = prover.root(old)
    proof = prover.consistency_proof(old, new)
    verify_consistency(old, new, old_root, new_root, proof, reader.hash_fn)
    payload: dict[str, Any] = {
        "log_id": reader.log_id,
        "old_size": old,
        "new_size": new,
        "old_root": _b64(old_root),
        "new_root": _b64(new_root),
        "proof": [_b64(p) for p in proof],
        "checkpoint": note.decode("utf-8") if new == checkpoint.size else None,
    }
    human = "\n".join(
        [
            f"tree size {old} -> {new} of {reader.log_id}",
            f"old root {payload['old_root']}",
            f"new root {payload['new_root']}",
            *(f"proof {p}" for p in payload["proof"]),
        ]
    )
    emit(args, payload, human)
    return 0


def _prover(reader: LogReader, size: int) -> MerkleProver:
    """The reader's prover over entries ``[0, size)``; CheckFailed if the log cannot give their
    leaves (segments cut short or damaged, with no index to read them from)."""
    from audit.reader import ReadError

    try:
        return reader.prover(size)
    except ReadError as exc:
        raise CheckFailed(
            f"the log cannot give the leaves of tree size {size} ({exc}): run dsgw audit verify"
        ) from None


def _check_stored(reader: LogReader, index: int, leaf: bytes) -> None:
    """CheckFailed unless the segments still hold entry ``index`` with leaf hash ``leaf`` (a proof
    comes from the index, which is not evidence: the entry it proves must still be there)."""
    from audit.reader import ReadError

    try:
        frame = reader.frame(index)
    except ReadError as exc:
        raise CheckFailed(
            f"entry {index} cannot be read from the segments ({exc}): run dsgw audit verify"
        ) from None
    if not hmac.compare_digest(reader.leaf_hash(frame.sealed), leaf):
        raise CheckFailed(
            f"entry {index}: its frame is damaged or is another entry's (its leaf hash is not the "
            "one indexed): run dsgw audit verify"
        )


def _reindex(args: argparse.Namespace) -> int:
    import time

    from audit.follower import FollowerError, rebuild_index
    from audit.merkle import TILE_LEVEL
    from audit.reader import LogReader, ReadError

    reader = LogReader(args.log)  # refuses a directory that is not a log, before touching it
    # the rebuilt index describes the segments as they are now: it replaces the old one only if it
    # leads to the signed checkpoint, so that a damaged log is not quietly given a matching index
    # (and the old index, which may be the only record of a changed entry's leaf, is kept)
    try:
        checkpoint, _ = reader.latest_checkpoint()
    except ReadError:
        checkpoint = None
    started = time.perf_counter()
    check = functools.partial(_check_rebuilt, reader, checkpoint)
    try:
        entries = rebuild_index(args.log, check=check)  # LogLocked (exit 2) while a writer has it open
    except FollowerError as exc:
        raise CheckFailed(f"{exc}; the index is kept: run dsgw audit verify") from None
    seconds = time.perf_counter() - started
    payload: dict[str, Any] = {
        "log_id": reader.log_id,
        "entries": entries,
        "tiles": entries >> TILE_LEVEL,
        "seconds": round(seconds, 3),
        "checkpoint_size": None if checkpoint is None else checkpoint.size,
    }
    emit(
        args,
        payload,
        f"indexed {entries:,} entries of {reader.log_id} ({payload['tiles']:,} tiles) in {seconds:.2f} s"
        + (f"; the latest checkpoint (tree size {checkpoint.size}) matches" if checkpoint else ""),
    )
    return 0


def _check_rebuilt(reader: LogReader, checkpoint: Checkpoint | None, built: AuditIndex) -> None:
    """CheckFailed, naming the first entry it can, unless the index ``built`` from the segments
    holds every entry the old index recorded, with the same leaf hashes (entries past the latest
    checkpoint were acknowledged too: the old index may be the only record of one changed or cut
    since), and leads to ``checkpoint``'s root."""
    _check_against_old(reader, built)
    if checkpoint is None:
        return
    size = checkpoint.size
    refused = f"the segments do not lead to the latest checkpoint (tree size {size})"
    kept = "the index is kept" if reader.paths.index.exists() else "no index was written"
    advice = f"{kept}: run dsgw audit verify"
    if built.size < size:
        raise CheckFailed(
            f"{refused}: entry {built.size} is missing or cannot be read (the segments hold "
            f"{built.size:,} entries); {advice}"
        )
    if reader.index_prover(built, size).root() == checkpoint.root_hash:
        return
    changed = _first_changed_leaf(reader, built, size)
    where = (
        f"entry {changed} is not the one indexed (its leaf hash changed)"
        if changed is not None
        else f"one of entries 0 to {size - 1} was changed"
    )
    raise CheckFailed(f"{refused}: {where}; {advice}")


def _check_against_old(reader: LogReader, built: AuditIndex) -> None:
    """CheckFailed unless ``built`` holds at least the entries of the log's current index, with
    the same leaf hashes (a current index that cannot be read is not evidence: no check)."""
    from audit.errors import AuditError

    try:
        old = reader.index()
    except AuditError:  # ReadError, IndexError_: an unreadable index
        return
    if old is None:
        return
    try:
        recorded = old.size
    finally:
        old.close()
    advice = "the index is kept: run dsgw audit verify"
    if built.size < recorded:
        raise CheckFailed(
            f"the segments hold {built.size:,} entries, the index recorded {recorded:,}: entry "
            f"{built.size} is missing or cannot be read; {advice}"
        )
    changed = _first_changed_leaf(reader, built, recorded)
    if changed is not None:
        raise CheckFailed(f"entry {changed} is not the one indexed (its leaf hash changed); {advice}")


def _first_changed_leaf(reader: LogReader, built: AuditIndex, size: int) -> int | None:
    """The first entry below ``size`` whose leaf hash in ``built`` differs from the old index's."""
    old = reader.index()
    if old is None:
        return None
    try:
        step = 65_536
        for start in range(0, size, step):
            before, after = old.leaves(start, min(start + step, size)), built.leaves(start, start + step)
            for offset, (a, b) in enumerate(zip(before, after, strict=False)):
                if a != b:
                    return start + offset
            if len(before) < min(step, size - start):
                return None
        return None
    finally:
        old.close()


def _verify(args: argparse.Namespace) -> int:
    from audit.keys import FileKeyProvider
    from audit.reader import LogReader
    from audit.verify import read_checkpoint_file, verify_log

    reader = LogReader(args.log)
    if reader.meta.kek_rotation is not None:
        print(
            f"dsgw: warning: an auditor key rotation of this log to {reader.meta.kek_rotation} was "
            f"interrupted; the data keys are wrapped under {reader.meta.kek_id}: finish it with "
            "dsgw audit rewrap",
            file=sys.stderr,
        )
    given = [read_checkpoint_file(path) for path in args.checkpoint]
    auditor = None
    if args.auditor_key is not None:
        auditor = FileKeyProvider.from_private_key_file(args.auditor_key)
    progress = None
    if not args.json and sys.stderr.isatty():

        def progress(message: str) -> None:
            print(f"\r{message}", end="", file=sys.stderr, flush=True)

    report = verify_log(
        reader, keys=args.key or None, checkpoints=given, auditor=auditor, progress=progress, jobs=args.jobs
    )
    if progress is not None:
        print(file=sys.stderr)
    if args.json:
        emit(args, report.to_json())
    elif report.ok:
        print(report.summary())
    for warning in report.warnings:
        print(f"dsgw: warning: {warning}", file=sys.stderr)
    if report.problem is not None:
        raise _Reported(report.problem.message)
    return 0
