"""``dsgw pki``: the development PKI (init, issue, revoke, list, show).

Every verb takes ``--dir DIR`` (default ``$DSGW_HOME/pki``, else ``~/.dsgw/pki``) and ``--json``.
Serials are shown and accepted in lowercase hexadecimal. Exit codes: 0 done; 2 bad input or
configuration (an existing CA without ``--force``, an unknown agency, a missing or foreign
certificate, a CRL not signed by the CA), with a one-line reason on stderr. See docs/pki.md.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.agencies import Agency
from gateway import pki
from gateway.cli import add_json_flag, emit
from gateway.errors import UsageError


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "pki", help="the development PKI (CA, certificates, CRL)"
    )
    psub = parser.add_subparsers(dest="pki_command", required=True, metavar="VERB")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir", type=Path, metavar="DIR", help="PKI directory (default $DSGW_HOME/pki or ~/.dsgw/pki)"
    )
    add_json_flag(common)

    i = psub.add_parser("init", parents=[common], help="make the CA, the server certificate and an empty CRL")
    i.add_argument(
        "--force", action="store_true", help="replace an existing CA (old agency certs are deleted)"
    )
    i.add_argument(
        "--server-name",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="extra DNS name or IP address for the server certificate (repeatable)",
    )
    i.add_argument(
        "--server-days",
        type=int,
        default=pki.SERVER_DAYS,
        metavar="N",
        help=f"server validity in days (at most {pki.CA_DAYS}, the CA's)",
    )
    i.set_defaults(handler=_init)

    s = psub.add_parser("issue", parents=[common], help="issue an agency client certificate")
    s.add_argument("agency", metavar="AGENCY", help=f"agency code ({', '.join(a.value for a in Agency)})")
    s.add_argument(
        "--days",
        type=int,
        default=pki.AGENCY_DAYS,
        metavar="N",
        help=f"validity in days (at most {pki.CA_DAYS})",
    )
    s.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="certificate path outside DIR, key next to it as .key (default DIR/agencies/AGENCY.crt)",
    )
    s.set_defaults(handler=_issue)

    r = psub.add_parser("revoke", parents=[common], help="revoke a certificate and rewrite the CRL")
    r.add_argument("target", metavar="AGENCY|CERT|SERIAL", help="agency code, certificate file or hex serial")
    r.set_defaults(handler=_revoke)

    ls = psub.add_parser("list", parents=[common], help="the PKI's certificates and their status")
    ls.set_defaults(handler=_list)

    sh = psub.add_parser("show", parents=[common], help="describe one certificate")
    sh.add_argument("cert", metavar="CERT", help="certificate file, or ca / server / an agency code")
    sh.set_defaults(handler=_show)


def _paths(args: argparse.Namespace) -> pki.PkiPaths:
    return pki.PkiPaths.of(args.dir)


def _line(info: pki.CertificateInfo, now: datetime) -> str:
    return (
        f"{info.kind:<7} {info.status(now):<13} serial {pki.serial_hex(info.serial)}  {info.subject}  "
        f"{info.not_before:%Y-%m-%d} .. {info.not_after:%Y-%m-%d}"
        + (f"  {info.path}" if info.path is not None else "")
    )


def _init(args: argparse.Namespace) -> int:
    if args.server_days < 1:
        raise UsageError("--server-days must be at least 1")
    paths = pki.init_pki(
        args.dir, force=args.force, server_names=args.server_name, server_days=args.server_days
    )
    ca = pki.certificate_info(paths.ca_crt)
    server = pki.certificate_info(paths.server_crt)
    payload = {
        "dir": str(paths.root),
        "ca": ca.to_json(),
        "server": server.to_json(),
        "crl": str(paths.crl),
    }
    names = ", ".join([*server.dns_names, *server.ip_addresses])
    human = (
        f"CA      {paths.ca_crt} (sha256 {ca.fingerprint_sha256[:16]}…)\n"
        f"server  {paths.server_crt} ({names})\n"
        f"CRL     {paths.crl} (empty)"
    )
    emit(args, payload, human)
    return 0


def _issue(args: argparse.Namespace) -> int:
    if args.days < 1:
        raise UsageError("--days must be at least 1")
    issued = pki.issue_agency(args.dir, args.agency, days=args.days, out=args.out)
    human = (
        f"issued {issued.subject} serial {pki.serial_hex(issued.serial)} "
        f"until {issued.not_after:%Y-%m-%d}\ncert {issued.cert_path}\nkey  {issued.key_path}"
    )
    emit(args, issued.to_json(), human)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    done = pki.revoke(args.dir, args.target)
    paths = _paths(args)
    payload = {**done.to_json(), "crl": str(paths.crl)}
    verb = "already revoked" if done.already else "revoked"
    emit(args, payload, f"{verb} serial {pki.serial_hex(done.serial)}; CRL {paths.crl}")
    return 0


def _list(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    infos = pki.list_certificates(args.dir)
    payload = {"dir": str(_paths(args).root), "certificates": [i.to_json(now) for i in infos]}
    emit(args, payload, "\n".join(_line(i, now) for i in infos))
    return 0


def _show(args: argparse.Namespace) -> int:
    paths = _paths(args)
    target: str = args.cert
    if target == "ca":
        source = paths.ca_crt
    elif target == "server":
        source = paths.server_crt
    elif target in {a.value for a in Agency} and not Path(target).exists():
        source = paths.agency_crt(target)
    else:
        source = Path(target).expanduser()
    if not source.exists():
        raise UsageError(f"no certificate at {source}")
    ca = pki.load_certificate(paths.ca_crt) if paths.ca_crt.exists() else None
    crl = pki.load_crl(paths.crl, ca) if ca is not None and paths.crl.exists() else None
    info = pki.certificate_info(source, ca=ca, crl=crl)
    now = datetime.now(UTC)
    human_lines = [
        f"subject      {info.subject}",
        f"issuer       {info.issuer}",
        f"serial       {pki.serial_hex(info.serial)}",
        f"validity     {info.not_before.isoformat()} .. {info.not_after.isoformat()}",
        f"status       {info.status(now)}",
        f"kind         {info.kind}",
        f"agency       {info.agency.value if info.agency else '-'}",
        f"sans         {', '.join([*info.dns_names, *info.ip_addresses, *info.uris]) or '-'}",
        f"ext key use  {', '.join(info.extended_key_usage) or '-'}",
        f"sha256       {info.fingerprint_sha256}",
    ]
    emit(args, info.to_json(now), "\n".join(human_lines))
    return 0
