"""``dsgw call``: agency calls to a running gateway over mTLS (the Python client underneath).

    dsgw call query --target 127.0.0.1:7443 --agency hrss --subject ID --purpose P \
        --dataset education.graduation:level,graduation_date [--dataset ...]
    dsgw call verify --agency hrss --subject ID --purpose P --provider education \
        --predicate graduated_within_years --param years=2
    dsgw call batch-verify FILE --agency hrss --purpose P --provider education --predicate ...
    dsgw call catalogue --agency hrss

Credentials: ``--agency CODE`` takes ``ca.crt`` and ``agencies/CODE.{crt,key}`` from the PKI
directory (``--pki DIR``, default ``$DSGW_HOME/pki`` or ``~/.dsgw/pki``), or give ``--ca``,
``--cert`` and ``--key`` (not both); the files are checked before any call (the CA and the
certificate PEM certificates, the key the certificate's unencrypted PEM private key). ``--target``
is HOST:PORT (a host name, an IPv4 address or ``[IPv6]``; port 1-65535) and ``--timeout`` more
than 0 and at most a day. A refused call exits 1 with ``CODE REASON: message``
(with --json also ``{"ok": false, "code", "reason", ...}`` on stdout); bad arguments, and input
the gateway finds invalid (INVALID_ARGUMENT), exit 2. ``batch-verify`` reads one identifier per
line (or ``item_id,identifier``; ``-`` for stdin; UTF-8) and prints one result per line (JSON
Lines with --json: a stream of any length), then the counts on stderr. The stream as a whole has
no deadline; ``--timeout`` bounds each wait for the gateway's next answer (time spent reading the
input does not count), past which the stream is cancelled and the command exits 1 with
``DEADLINE_EXCEEDED``.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli import add_json_flag, emit, reads_label
from gateway.errors import CheckFailed, DsgwError, UsageError

if TYPE_CHECKING:
    from gateway.client import GatewayError


def register(sub: Any) -> None:
    p = sub.add_parser("call", help="call a running gateway as an agency (mTLS)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--target", default="127.0.0.1:7443", help="HOST:PORT of the gateway ([ADDRESS]:PORT for IPv6)"
    )
    common.add_argument("--agency", help="the calling agency (its certificate from the PKI directory)")
    common.add_argument("--pki", type=Path, help="PKI directory (default $DSGW_HOME/pki or ~/.dsgw/pki)")
    common.add_argument("--ca", type=Path)
    common.add_argument("--cert", type=Path)
    common.add_argument("--key", type=Path)
    common.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="deadline per call, seconds (more than 0, at most 86400); for batch-verify the longest"
        " wait for each answer of the gateway (the whole stream has no deadline)",
    )
    common.add_argument("--operator", default="", help="the operator at the calling agency (audited)")
    common.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    add_json_flag(common)

    q = verbs.add_parser("query", parents=[common], help="read allowed fields of a subject")
    q.add_argument("--subject", required=True)
    q.add_argument("--purpose", required=True)
    q.add_argument(
        "--dataset", action="append", required=True, metavar="PROVIDER.DATASET[:F1,F2]", help="repeatable"
    )
    q.set_defaults(handler=_query)

    v = verbs.add_parser("verify", parents=[common], help="a comparison: yes/no, none of the data")
    _predicate_args(v)
    v.add_argument("--subject", required=True)
    v.set_defaults(handler=_verify)

    b = verbs.add_parser("batch-verify", parents=[common], help="bulk comparisons on one stream")
    b.add_argument("file", help="identifiers, one per line (or item_id,identifier), UTF-8; - for stdin")
    _predicate_args(b)
    b.add_argument("--chunk", type=int, default=500, help="items per stream message")
    b.set_defaults(handler=_batch)

    c = verbs.add_parser("catalogue", parents=[common], help="what this agency may ask")
    c.set_defaults(handler=_catalogue)


def _predicate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--purpose", required=True)
    p.add_argument("--provider", required=True)
    p.add_argument("--predicate", required=True)
    p.add_argument("--param", action="append", default=[], metavar="NAME=INT")


def _params(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise UsageError(f"--param {item!r}: want NAME=INTEGER")
        try:
            number = int(value)
        except ValueError:
            raise UsageError(f"--param {name}: {value!r} is not an integer") from None
        if not -(2**63) <= number < 2**63:
            raise UsageError(f"--param {name}: {value} is outside the 64-bit integer range")
        out[name.strip()] = number
    return out


#: gRPC name-resolver schemes a target may start with (passed to gRPC as they are)
_TARGET_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def _target(text: str) -> str:
    """``text`` if it is HOST:PORT (a host name, an IPv4 address or ``[IPv6]``; port 1-65535) or
    a gRPC target URI (``dns:///host:port``, ``unix:/path``, ...), else UsageError."""
    if text.startswith(_TARGET_SCHEMES) and len(text) > text.index(":") + 1:
        return text
    want = f"--target {text!r}: want HOST:PORT (a host name, an IPv4 address or [IPv6]; port 1-65535)"
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise UsageError(want)
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        raise UsageError(f"--target {text!r}: the port must be a number from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise UsageError(f"--target {text!r}: {host} is not an IPv6 address") from None
        return text
    if ":" in host:
        raise UsageError(f"--target {text!r}: an IPv6 address goes in brackets, [ADDRESS]:PORT")
    if host.replace(".", "").isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise UsageError(f"--target {text!r}: {host} is not an IPv4 address") from None
        return text
    from gateway.pki import is_host_name

    if len(host) > 253 or not is_host_name(host):
        raise UsageError(f"--target {text!r}: {host!r} is not a host name")
    return text


def _client(args: argparse.Namespace) -> Any:
    from adapters.agencies import Agency
    from gateway.client import CredentialError, GatewayClient, check_timeout
    from gateway.pki import default_pki_dir

    if args.agency and (args.ca or args.cert or args.key):
        raise UsageError("give --agency (with --pki) or --ca, --cert and --key, not both")
    if args.request_id is not None and not args.request_id:
        raise UsageError("--request-id is empty (leave it out for a new one)")
    try:
        check_timeout(args.timeout, "--timeout")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    target = _target(args.target)
    if args.agency is not None:
        if args.agency not in {a.value for a in Agency}:
            known = ", ".join(a.value for a in Agency)
            raise UsageError(f"--agency {args.agency!r}: unknown agency (known: {known})")
        d = (args.pki or default_pki_dir()).expanduser()
        ca, cert, key = (
            d / "ca.crt",
            d / "agencies" / f"{args.agency}.crt",
            d / "agencies" / f"{args.agency}.key",
        )
    else:
        if not (args.ca and args.cert and args.key):
            raise UsageError("give --agency (with --pki) or all of --ca, --cert and --key")
        ca, cert, key = args.ca, args.cert, args.key
    for path in (ca, cert, key):
        if not Path(path).is_file():
            raise UsageError(f"missing credential file {path}")
    try:
        return GatewayClient(target, ca=ca, cert=cert, key=key, timeout=args.timeout, operator=args.operator)
    except CredentialError as exc:
        if args.agency is not None:
            raise UsageError(f"--agency {args.agency}: {exc}") from None
        raise UsageError(f"--{exc.which} {exc.path}: {exc.problem}") from None


def _refused(args: argparse.Namespace, exc: GatewayError) -> DsgwError:
    """The error a refused call exits with: 2 (UsageError) when the gateway found the input
    invalid (INVALID_ARGUMENT: a bad identifier, an unknown field, purpose or predicate), else 1
    (a denial, NOT_FOUND, UNAVAILABLE, ...). With --json the refusal is also printed on stdout as
    one JSON document: ``{"ok": false, "code", "reason", "message", "retry_after_s"}``."""
    if getattr(args, "json", False):
        emit(
            args,
            {
                "ok": False,
                "code": exc.code,
                "reason": exc.reason,
                "message": exc.message,
                "retry_after_s": exc.retry_after_s,
            },
        )
    if exc.code == "INVALID_ARGUMENT":
        return UsageError(str(exc))
    return CheckFailed(str(exc))


def _query(args: argparse.Namespace) -> int:
    from gateway.client import GatewayError

    asks = []
    for text in args.dataset:
        head, colon, tail = text.partition(":")
        provider, dot, dataset = (name.strip() for name in head.partition("."))
        if not dot or not provider or not dataset:
            raise UsageError(f"--dataset {text!r}: want PROVIDER.DATASET[:FIELD,FIELD]")
        fields = [f.strip() for f in tail.split(",")] if colon else []
        if colon and not all(fields):
            # an empty list after the colon is not "every field": leave the colon out for that
            raise UsageError(
                f"--dataset {text!r}: a field name is empty (PROVIDER.DATASET alone asks every field "
                "the agreement shares)"
            )
        asks.append((provider, dataset, fields))
    with _client(args) as gw:
        try:
            r = gw.query(args.subject, args.purpose, asks, request_id=args.request_id)
        except GatewayError as exc:
            raise _refused(args, exc) from None
    payload = {
        "request_id": r.request_id,
        "replayed": r.replayed,
        "results": [
            {
                "provider": d.provider.value if d.provider else None,
                "dataset": d.dataset,
                "found": d.found,
                "values": d.values,
                "legal_basis": d.legal_basis,
            }
            for d in r.results
        ],
    }
    lines = [f"request {r.request_id}{' (replayed)' if r.replayed else ''}"]
    for d in payload["results"]:
        lines.append(
            f"{d['provider']}.{d['dataset']}: {'found' if d['found'] else 'no record'} [{d['legal_basis']}]"
        )
        lines.extend(f"  {k} = {v}" for k, v in d["values"].items())
    emit(args, payload, "\n".join(lines))
    return 0


def _answer(result: bool | None) -> str:
    return "no_record" if result is None else ("yes" if result else "no")


def _verify(args: argparse.Namespace) -> int:
    from gateway.client import GatewayError

    with _client(args) as gw:
        try:
            r = gw.verify(
                args.subject,
                args.purpose,
                args.provider,
                args.predicate,
                _params(args.param),
                request_id=args.request_id,
            )
        except GatewayError as exc:
            raise _refused(args, exc) from None
    payload = {
        "request_id": r.request_id,
        "result": _answer(r.result),
        "legal_basis": r.legal_basis,
        "replayed": r.replayed,
    }
    emit(args, payload, f"{args.predicate}: {_answer(r.result)} [{r.legal_basis}]")
    return 0


def _read_items(path: str) -> Iterator[tuple[str, str]]:
    """The (item id, identifier) pairs of ``path`` (``-``: stdin); UsageError naming the line
    that is not UTF-8."""
    name = "stdin" if path == "-" else path
    if path == "-":
        handle: Any = getattr(sys.stdin, "buffer", sys.stdin)
    else:
        handle = open(path, "rb")  # noqa: SIM115
    try:
        for n, raw in enumerate(handle, 1):
            if isinstance(raw, str):  # a text stdin without a byte buffer (a test's)
                line = raw
            else:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise UsageError(f"{name} line {n}: not UTF-8") from None
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            item, comma, ident = text.partition(",")
            yield (item.strip(), ident.strip()) if comma else (str(n), text)
    finally:
        if path != "-":
            handle.close()


def _batch(args: argparse.Namespace) -> int:
    import json

    from gateway.client import GatewayError

    if args.file != "-" and not Path(args.file).is_file():
        raise UsageError(f"no file {args.file}")
    if args.chunk < 1:
        raise UsageError("--chunk must be at least 1")
    counts = {"yes": 0, "no": 0, "no_record": 0, "refused": 0}
    with _client(args) as gw:
        try:
            for r in gw.batch_verify(
                _read_items(args.file),
                args.purpose,
                args.provider,
                args.predicate,
                _params(args.param),
                request_id=args.request_id,
                chunk=args.chunk,
                idle_timeout=args.timeout,
            ):
                answer = r.error_reason or _answer(r.result)
                counts["refused" if r.error_reason else answer] += 1
                if args.json:
                    print(json.dumps({"item_id": r.item_id, "result": answer}))
                else:
                    print(f"{r.item_id}\t{answer}")
        except GatewayError as exc:
            raise _refused(args, exc) from None
    summary = ", ".join(f"{name} {count}" for name, count in counts.items())
    print(json.dumps({"summary": counts}) if args.json else f"# {summary}", file=sys.stderr)
    return 0


def _catalogue(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    from gateway.client import GatewayError

    with _client(args) as gw:
        try:
            resp = gw.catalogue()
        except GatewayError as exc:
            raise _refused(args, exc) from None
    data = MessageToDict(resp, preserving_proto_field_name=True)
    # agency enums as the contract's codes (AGENCY_CODE_EDUCATION -> education)
    data["caller"] = str(data.get("caller", "")).removeprefix("AGENCY_CODE_").lower()
    for e in data.get("entries", []):
        e["provider"] = str(e.get("provider", "")).removeprefix("AGENCY_CODE_").lower()
        for p in e.get("predicates", []):
            p["provider"] = str(p.get("provider", "")).removeprefix("AGENCY_CODE_").lower()
    lines = []
    for e in data.get("entries", []):
        fields = ", ".join(
            f["name"] + (f" ({f['mask']})" if f.get("mask") else "") for f in e.get("fields", [])
        )
        preds = ", ".join(p["name"] + reads_label(p.get("fields", [])) for p in e.get("predicates", []))
        lines.append(
            f"{e.get('agreement_id')}: {e.get('provider')} {e.get('dataset')} [{e.get('legal_basis')}] "
            f"purposes {', '.join(e.get('purposes', []))}; fields {fields or '-'}; predicates {preds or '-'}"
        )
    emit(args, data, "\n".join(lines) or "no agreements")
    return 0
