"""The development PKI: a CA, the gateway's server certificate, agency client certificates, a CRL.

Layout of a PKI directory (default ``$DSGW_HOME/pki``, else ``~/.dsgw/pki``)::

    ca.key  ca.crt                      the development CA (ECDSA P-256, SHA-256, 10 years)
    server.key  server.crt              the gateway (serverAuth; localhost, 127.0.0.1, ::1 + names)
    agencies/<code>.key  <code>.crt     one client certificate per agency (clientAuth)
    crl.pem                             the CA's certificate revocation list

Keys are PKCS#8 PEM, unencrypted, mode 0600; directories 0700; every file is written atomically
(temporary file, fsync, rename, fsync of the directory).

An agency is identified by its client certificate: the subject CN is the agency code (the
contract's codes, :class:`adapters.agencies.Agency`) and, when present, the SAN URI
``urn:dsgw:agency:<code>`` must agree (:func:`agency_from_certificate`). gRPC checks the chain,
the validity period and the extended key usage during the handshake; revocation is checked by
the gateway per call with a :class:`RevocationChecker`. The server's certificate and trust roots
can be replaced on disk without a restart (:class:`ServerCredentialsReloader`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from adapters.agencies import Agency
from gateway.errors import DsgwError, UsageError

__all__ = [
    "AGENCY_ORGANIZATION",
    "AGENCY_URI_PREFIX",
    "AgencyIdentityError",
    "CertificateInfo",
    "CrlError",
    "IssuedCertificate",
    "PkiConfigError",
    "PkiError",
    "PkiPaths",
    "RevocationChecker",
    "Revoked",
    "ServerCredentialsReloader",
    "agency_from_certificate",
    "certificate_info",
    "client_channel_credentials",
    "default_pki_dir",
    "init_pki",
    "is_host_name",
    "issue_agency",
    "issue_server",
    "key_matches",
    "list_certificates",
    "load_certificate",
    "load_crl",
    "peer_certificate",
    "revoke",
    "serial_hex",
]

_log = structlog.get_logger("gateway.pki")

AGENCY_ORGANIZATION = "dsgw agency"
AGENCY_URI_PREFIX = "urn:dsgw:agency:"
CA_COMMON_NAME = "dsgw development CA"
SERVER_COMMON_NAME = "dsgw gateway"
CA_DAYS = 3650
SERVER_DAYS = 365
AGENCY_DAYS = 365
CRL_DAYS = 365
#: Certificates start this much before "now", to tolerate small clock differences between hosts.
BACKDATE = timedelta(minutes=5)
DEFAULT_SERVER_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

CertificateSource = bytes | x509.Certificate


# --- errors -----------------------------------------------------------------------------------


class PkiError(DsgwError):
    """Base of the PKI errors; ``reason`` is machine-readable, the message is one line."""

    reason = "PKI_ERROR"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PkiConfigError(PkiError, UsageError):
    """A PKI directory, file or argument that is missing, unreadable or not acceptable (CLI exit 2).
    ``reason``: PKI_EXISTS, PKI_MISSING, UNKNOWN_AGENCY, INVALID_CERTIFICATE, INVALID_KEY,
    NOT_ISSUED_BY_CA, INVALID_TARGET, INVALID_VALIDITY, INVALID_NAME, IO_ERROR."""


class AgencyIdentityError(PkiError):
    """A certificate that does not name exactly one known agency (gRPC: UNAUTHENTICATED).
    ``reason``: NO_AGENCY_NAME, UNKNOWN_AGENCY, AGENCY_URI_MISMATCH, INVALID_CERTIFICATE."""


class CrlError(PkiError):
    """The CRL cannot be trusted (unreadable, not signed by the CA, past its next update):
    revocation checks fail closed. ``reason``: CRL_MISSING, CRL_INVALID, CRL_SIGNATURE,
    CRL_EXPIRED, CA_MISSING."""


# --- layout -----------------------------------------------------------------------------------


def default_pki_dir() -> Path:
    """``$DSGW_HOME/pki`` when ``DSGW_HOME`` is set, else ``~/.dsgw/pki``."""
    env = os.environ.get("DSGW_HOME")
    return (Path(env).expanduser() if env else Path.home() / ".dsgw") / "pki"


@dataclass(frozen=True)
class PkiPaths:
    """The files of one PKI directory."""

    root: Path

    @classmethod
    def of(cls, home: Path | str | None) -> PkiPaths:
        return cls(Path(home).expanduser() if home is not None else default_pki_dir())

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def ca_crt(self) -> Path:
        return self.root / "ca.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def server_crt(self) -> Path:
        return self.root / "server.crt"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def agencies(self) -> Path:
        return self.root / "agencies"

    def agency_crt(self, agency: Agency | str) -> Path:
        return self.agencies / f"{Agency(agency).value}.crt"

    def agency_key(self, agency: Agency | str) -> Path:
        return self.agencies / f"{Agency(agency).value}.key"


@dataclass(frozen=True)
class IssuedCertificate:
    cert_path: Path
    key_path: Path
    serial: int
    subject: str
    not_before: datetime
    not_after: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "cert": str(self.cert_path),
            "key": str(self.key_path),
            "serial": serial_hex(self.serial),
            "subject": self.subject,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
        }


@dataclass(frozen=True)
class Revoked:
    serial: int
    revoked_at: datetime
    already: bool
    """True when the serial was on the CRL before (nothing changed)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": serial_hex(self.serial),
            "revoked_at": self.revoked_at.isoformat(),
            "already_revoked": self.already,
        }


@dataclass(frozen=True)
class CertificateInfo:
    path: Path | None
    kind: str
    """``ca``, ``server``, ``agency`` or ``other``."""
    subject: str
    issuer: str
    serial: int
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str
    agency: Agency | None
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    extended_key_usage: tuple[str, ...] = ()
    revoked: bool | None = None
    """None when no CRL was consulted."""
    issued_by_ca: bool | None = None
    """None when no CA was consulted."""
    extra: dict[str, Any] = field(default_factory=dict)

    def status(self, now: datetime | None = None) -> str:
        moment = now or datetime.now(UTC)
        if self.revoked:
            return "revoked"
        if self.issued_by_ca is False:
            return "untrusted"
        if moment < self.not_before:
            return "not_yet_valid"
        if moment >= self.not_after:
            return "expired"
        return "valid"

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        return {
            "path": str(self.path) if self.path is not None else None,
            "kind": self.kind,
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": serial_hex(self.serial),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "fingerprint_sha256": self.fingerprint_sha256,
            "agency": self.agency.value if self.agency is not None else None,
            "dns_names": list(self.dns_names),
            "ip_addresses": list(self.ip_addresses),
            "uris": list(self.uris),
            "extended_key_usage": list(self.extended_key_usage),
            "revoked": self.revoked,
            "issued_by_ca": self.issued_by_ca,
            "status": self.status(now),
        }


def serial_hex(serial: int) -> str:
    """Serials are shown as lowercase hexadecimal in whole bytes (an even number of digits: the
    digits ``openssl x509 -serial`` prints, which it prints in upper case)."""
    digits = format(serial, "x")
    return digits.zfill(len(digits) + len(digits) % 2)


# --- files ------------------------------------------------------------------------------------


def _ensure_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise PkiConfigError("IO_ERROR", f"cannot create directory {path}: {exc.strerror or exc}") from None


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` atomically and durably (:func:`audit.layout.atomic_write`)."""
    from audit.layout import atomic_write

    try:
        atomic_write(path, data, mode=mode)
    except OSError as exc:
        raise PkiConfigError("IO_ERROR", f"cannot write {path}: {exc.strerror or exc}") from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiConfigError("PKI_MISSING", f"no {what} at {path}") from None
    except OSError as exc:
        raise PkiConfigError("IO_ERROR", f"cannot read {path}: {exc.strerror or exc}") from None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _parse_certificate(data: bytes) -> x509.Certificate:
    stripped = data.lstrip()
    if stripped.startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(stripped)
    return x509.load_der_x509_certificate(data)


def load_certificate(source: Path | str | bytes | x509.Certificate) -> x509.Certificate:
    """A certificate from a path, PEM or DER bytes (the first one of a PEM bundle)."""
    if isinstance(source, x509.Certificate):
        return source
    data = _read(Path(source), "certificate") if isinstance(source, Path | str) else source
    try:
        return _parse_certificate(data)
    except ValueError:
        where = f" {source}" if isinstance(source, Path | str) else ""
        raise PkiConfigError("INVALID_CERTIFICATE", f"not an X.509 certificate{where}") from None


def _load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise PkiConfigError("INVALID_KEY", f"not an unencrypted PEM private key: {path}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiConfigError("INVALID_KEY", f"not an EC private key: {path}")
    return key


def key_matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """Whether ``key`` is the private key of ``cert`` (their public keys are the same); False
    for a key type that cannot be compared."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return False


def _load_ca(paths: PkiPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not paths.ca_crt.exists() or not paths.ca_key.exists():
        raise PkiConfigError("PKI_MISSING", f"no CA in {paths.root}; run `dsgw pki init` first")
    cert = load_certificate(paths.ca_crt)
    key = _load_private_key(paths.ca_key)
    if not key_matches(cert, key):
        raise PkiConfigError("INVALID_KEY", f"{paths.ca_key} does not belong to {paths.ca_crt}")
    return cert, key


# --- issuing ----------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _validity(
    days: int, not_before: datetime | None, not_after: datetime | None
) -> tuple[datetime, datetime]:
    """The validity period of a leaf certificate: ``days`` from ``not_before`` (default now), or
    ``not_before``..``not_after``; never longer than the CA's own validity (``CA_DAYS``)."""
    too_long = f"validity must be at most {CA_DAYS} days (the CA's)"
    start = not_before if not_before is not None else _now() - BACKDATE
    if start.tzinfo is None:
        raise PkiConfigError("INVALID_VALIDITY", "not_before must carry a time zone")
    if not_after is None:
        if days < 1:
            raise PkiConfigError("INVALID_VALIDITY", "validity must be at least 1 day")
        if days > CA_DAYS:
            raise PkiConfigError("INVALID_VALIDITY", too_long)
    elif not_after.tzinfo is None:
        raise PkiConfigError("INVALID_VALIDITY", "not_after must carry a time zone")
    try:
        end = start + timedelta(days=days) if not_after is None else not_after
        start, end = start.astimezone(UTC), end.astimezone(UTC)
    except OverflowError:
        raise PkiConfigError(
            "INVALID_VALIDITY", "validity is outside the dates a certificate can carry"
        ) from None
    if end <= start:
        raise PkiConfigError("INVALID_VALIDITY", "not_after must be after not_before")
    if end - start > timedelta(days=CA_DAYS):
        raise PkiConfigError("INVALID_VALIDITY", too_long)
    return start, end


# RFC 1123 labels, and underscores, which container and service names use (Docker Compose)
_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def is_host_name(name: str) -> bool:
    """Whether ``name`` is a host name: dot-separated labels of 1-63 ASCII letters, digits,
    hyphens and underscores (RFC 1123, with the underscores service names have), not starting or
    ending with a hyphen, at most 253 characters (one trailing dot allowed). No wildcards."""
    host = name[:-1] if name.endswith(".") else name
    if not host or len(host) > 253:
        return False
    return all(_DNS_LABEL.fullmatch(label) for label in host.split("."))


def _is_dns_name(name: str) -> bool:
    """A server name for a certificate: a host name (:func:`is_host_name`) whose last label is not
    all digits, so that a mistyped IPv4 address is not taken for a name."""
    return is_host_name(name) and not name.removesuffix(".").rpartition(".")[2].isdigit()


def _san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in names:
        name = raw.strip()
        if not name:
            raise PkiConfigError("INVALID_NAME", "empty server name")
        try:
            ip = ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            if not _is_dns_name(name):
                shown = repr(name[:64]) + ("…" if len(name) > 64 else "")
                raise PkiConfigError(
                    "INVALID_NAME", f"server name {shown} is neither an IP address nor an RFC 1123 DNS name"
                ) from None
            key = name.lower().rstrip(".")
            if key in seen:
                continue
            seen.add(key)
            out.append(x509.DNSName(key))
        else:
            if str(ip) in seen:
                continue
            seen.add(str(ip))
            out.append(x509.IPAddress(ip))
    return out


def _leaf_builder(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    ca_cert: x509.Certificate,
    start: datetime,
    end: datetime,
) -> x509.CertificateBuilder:
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
        ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
    )


def _write_pair(
    cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    _ensure_dir(cert_path.parent)
    if key_path.parent != cert_path.parent:
        _ensure_dir(key_path.parent)
    # the key first: a reader that sees the new certificate finds its key already in place
    _write_atomic(key_path, _key_pem(key), 0o600)
    _write_atomic(cert_path, _cert_pem(cert), 0o644)


def _issued(cert_path: Path, key_path: Path, cert: x509.Certificate) -> IssuedCertificate:
    return IssuedCertificate(
        cert_path=cert_path,
        key_path=key_path,
        serial=cert.serial_number,
        subject=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def init_pki(
    home: Path | str | None = None,
    *,
    force: bool = False,
    server_names: Sequence[str] = (),
    server_days: int = SERVER_DAYS,
) -> PkiPaths:
    """Make a new CA, the server certificate and an empty CRL in ``home``.

    An existing CA is never replaced without ``force`` (:class:`PkiConfigError` PKI_EXISTS). With
    ``force`` the agency certificates of the old CA are deleted, since they no longer chain."""
    paths = PkiPaths.of(home)
    if not force and (paths.ca_key.exists() or paths.ca_crt.exists()):
        raise PkiConfigError("PKI_EXISTS", f"a CA already exists in {paths.root}; use --force to replace it")
    # validate before anything is written
    _san_entries([*DEFAULT_SERVER_NAMES, *server_names])
    _validity(server_days, None, None)
    _ensure_dir(paths.root)
    _ensure_dir(paths.agencies)
    if force and paths.agencies.is_dir():
        for old in paths.agencies.iterdir():
            if old.suffix in (".crt", ".key"):
                with contextlib.suppress(OSError):
                    old.unlink()

    key = ec.generate_private_key(ec.SECP256R1())
    start = _now() - BACKDATE
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dsgw"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(paths.ca_crt, paths.ca_key, ca, key)
    _write_crl(paths, ca, key, [], number=1)
    issue_server(paths.root, server_names=server_names, days=server_days)
    return paths


def issue_server(
    home: Path | str | None = None,
    *,
    server_names: Sequence[str] = (),
    days: int = SERVER_DAYS,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> IssuedCertificate:
    """(Re)issue ``server.crt``/``server.key``: SANs localhost, 127.0.0.1, ::1 and ``server_names``
    (DNS names or IP addresses), extendedKeyUsage serverAuth. A running server that uses a
    :class:`ServerCredentialsReloader` picks the new pair up on its next handshake."""
    paths = PkiPaths.of(home)
    sans = _san_entries([*DEFAULT_SERVER_NAMES, *server_names])
    ca_cert, ca_key = _load_ca(paths)
    start, end = _validity(days, not_before, not_after)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, SERVER_COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dsgw"),
        ]
    )
    cert = (
        _leaf_builder(subject, key.public_key(), ca_cert, start, end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_pair(paths.server_crt, paths.server_key, cert, key)
    return _issued(paths.server_crt, paths.server_key, cert)


def _agency(value: Agency | str) -> Agency:
    try:
        return Agency(value)
    except ValueError:
        known = ", ".join(a.value for a in Agency)
        raise PkiConfigError("UNKNOWN_AGENCY", f"unknown agency {value!r} (known: {known})") from None


def _out_paths(paths: PkiPaths, cert_path: Path) -> tuple[Path, Path]:
    """The certificate and key paths for ``issue --out``, refused (before anything is written)
    when either is a directory or a file the PKI directory manages (CA, server, CRL, agencies/)."""
    if cert_path.is_dir():
        raise PkiConfigError("INVALID_NAME", f"certificate path {cert_path} is a directory")
    try:
        key_path = cert_path.with_suffix(".key")
    except ValueError:
        raise PkiConfigError("INVALID_NAME", f"certificate path {cert_path} names no file") from None
    if key_path == cert_path:
        raise PkiConfigError("INVALID_NAME", f"certificate path {cert_path} must not end in .key")
    if key_path.is_dir():
        raise PkiConfigError("INVALID_NAME", f"key path {key_path} is a directory")
    try:
        managed = {
            p.resolve() for p in (paths.ca_crt, paths.ca_key, paths.server_crt, paths.server_key, paths.crl)
        }
        agencies = paths.agencies.resolve()
        resolved = [(path, path.resolve()) for path in (cert_path, key_path)]
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise PkiConfigError("INVALID_NAME", f"cannot resolve {cert_path}: {exc}") from None
    for path, real in resolved:
        if real in managed or real.is_relative_to(agencies):
            raise PkiConfigError(
                "INVALID_NAME", f"{path} is managed by the PKI directory {paths.root}; choose another --out"
            )
    return cert_path, key_path


def issue_agency(
    home: Path | str | None,
    agency: Agency | str,
    *,
    days: int = AGENCY_DAYS,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    out: Path | str | None = None,
) -> IssuedCertificate:
    """Issue a client certificate for ``agency``: CN=<code>, O=dsgw agency, SAN URI
    ``urn:dsgw:agency:<code>``, extendedKeyUsage clientAuth.

    Written to ``agencies/<code>.crt`` and ``.key`` (replacing a previous one, which stays valid
    until revoked), or to ``out`` (the certificate path; the key goes next to it with ``.key``),
    which must not be a directory nor a file the PKI directory manages (:func:`_out_paths`).
    ``not_before``/``not_after`` (aware datetimes) override the default of ``days`` from now."""
    code = _agency(agency)
    paths = PkiPaths.of(home)
    ca_cert, ca_key = _load_ca(paths)
    start, end = _validity(days, not_before, not_after)
    if out is not None:
        cert_path, key_path = _out_paths(paths, Path(out).expanduser())
    else:
        cert_path, key_path = paths.agency_crt(code), paths.agency_key(code)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, code.value),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, AGENCY_ORGANIZATION),
        ]
    )
    cert = (
        _leaf_builder(subject, key.public_key(), ca_cert, start, end)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(AGENCY_URI_PREFIX + code.value)]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_pair(cert_path, key_path, cert, key)
    return _issued(cert_path, key_path, cert)


# --- identity ---------------------------------------------------------------------------------


def agency_from_certificate(source: CertificateSource) -> Agency:
    """The agency a client certificate (PEM, DER or parsed) names: its subject CN must be exactly
    one known agency code and every ``urn:dsgw:agency:`` SAN URI must name the same agency.
    Raises :class:`AgencyIdentityError` otherwise. Chain, validity and revocation are checked
    elsewhere (the TLS handshake, :class:`RevocationChecker`)."""
    if isinstance(source, x509.Certificate):
        cert = source
    else:
        try:
            cert = _parse_certificate(source)
        except ValueError:
            raise AgencyIdentityError("INVALID_CERTIFICATE", "not an X.509 certificate") from None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise AgencyIdentityError("NO_AGENCY_NAME", "certificate subject must have exactly one CN")
    cn = cns[0].value
    cn_text = cn if isinstance(cn, str) else cn.decode("utf-8", "replace")
    try:
        agency = Agency(cn_text)
    except ValueError:
        raise AgencyIdentityError(
            "UNKNOWN_AGENCY", f"certificate CN {cn_text[:64]!r} is not an agency code"
        ) from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return agency
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.lower().startswith(AGENCY_URI_PREFIX) and uri[len(AGENCY_URI_PREFIX) :] != agency.value:
            raise AgencyIdentityError(
                "AGENCY_URI_MISMATCH", f"certificate SAN URI {uri[:96]!r} does not match CN {agency.value!r}"
            )
    return agency


# --- revocation -------------------------------------------------------------------------------


def load_crl(path: Path | str, ca: x509.Certificate | None = None) -> x509.CertificateRevocationList:
    """Parse a CRL (PEM or DER). With ``ca``, also check that the CA issued and signed it
    (:class:`CrlError` CRL_SIGNATURE otherwise)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CrlError("CRL_MISSING", f"no CRL at {path}") from None
    except OSError as exc:
        raise CrlError("CRL_MISSING", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(data.lstrip())
        else:
            crl = x509.load_der_x509_crl(data)
    except ValueError:
        raise CrlError("CRL_INVALID", f"not a CRL: {path}") from None
    if ca is not None:
        public_key = ca.public_key()
        if crl.issuer != ca.subject or not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise CrlError("CRL_SIGNATURE", f"CRL {path} is not issued by the CA")
        try:
            valid = crl.is_signature_valid(public_key)
        except (InvalidSignature, TypeError, ValueError):
            valid = False
        if not valid:
            raise CrlError("CRL_SIGNATURE", f"CRL {path} is not signed by the CA")
    return crl


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def _write_crl(
    paths: PkiPaths,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    revoked: Sequence[x509.RevokedCertificate],
    *,
    number: int,
) -> None:
    now = _now()
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - BACKDATE)
        .next_update(now + timedelta(days=CRL_DAYS))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca_key, hashes.SHA256())
    _write_atomic(paths.crl, crl.public_bytes(serialization.Encoding.PEM), 0o644)


def _resolve_target(paths: PkiPaths, target: int | str | Path | x509.Certificate) -> tuple[int, Path | None]:
    """A serial, and the certificate path when the target named one."""
    if isinstance(target, x509.Certificate):
        return target.serial_number, None
    if isinstance(target, int):
        return target, None
    if isinstance(target, str) and target in {a.value for a in Agency}:
        path = paths.agency_crt(target)
        if not path.exists():
            raise PkiConfigError("PKI_MISSING", f"no certificate for agency {target!r} at {path}")
        return load_certificate(path).serial_number, path
    path = Path(target).expanduser()
    if isinstance(target, Path) or path.exists():
        return load_certificate(path).serial_number, path
    text = str(target).strip().lower().replace(":", "")
    text = text.removeprefix("0x")
    try:
        return int(text, 16), None
    except ValueError:
        raise PkiConfigError(
            "INVALID_TARGET",
            f"{str(target)[:80]!r} is not an agency code, a certificate file or a hexadecimal serial",
        ) from None


def revoke(
    home: Path | str | None,
    target: int | str | Path | x509.Certificate,
    *,
    reason: x509.ReasonFlags | None = None,
) -> Revoked:
    """Add a certificate to the CRL and rewrite ``crl.pem`` atomically.

    ``target``: a serial (int, or a hexadecimal string as ``dsgw pki list`` shows it), an agency
    code (its current certificate in ``agencies/``), a certificate path or a parsed certificate. A
    certificate given as such must be issued by this CA. The CA's own certificate cannot be revoked
    (INVALID_TARGET), by file or by serial. Revoking twice changes nothing."""
    paths = PkiPaths.of(home)
    ca_cert, ca_key = _load_ca(paths)
    serial, cert_path = _resolve_target(paths, target)
    cert = target if isinstance(target, x509.Certificate) else None
    if cert is None and cert_path is not None:
        cert = load_certificate(cert_path)
    if cert is not None and not _issued_by(cert, ca_cert):
        raise PkiConfigError("NOT_ISSUED_BY_CA", "the certificate is not issued by this CA")
    if serial == ca_cert.serial_number:
        raise PkiConfigError("INVALID_TARGET", "the CA's own certificate cannot be revoked")
    if serial <= 0 or serial.bit_length() > 160:
        raise PkiConfigError("INVALID_TARGET", "a serial is a positive number of at most 20 bytes")
    crl = load_crl(paths.crl, ca_cert) if paths.crl.exists() else None
    entries = list(crl) if crl is not None else []
    for entry in entries:
        if entry.serial_number == serial:
            return Revoked(serial, entry.revocation_date_utc, already=True)
    now = _now()
    builder = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now)
    if reason is not None:
        builder = builder.add_extension(x509.CRLReason(reason), critical=False)
    entries.append(builder.build())
    _write_crl(paths, ca_cert, ca_key, entries, number=(_crl_number(crl) if crl is not None else 0) + 1)
    return Revoked(serial, now, already=False)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@dataclass
class _FileStamp:
    mtime_ns: int
    size: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> _FileStamp | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return cls(st.st_mtime_ns, st.st_size, st.st_ino)


class RevocationChecker:
    """Answers "is this certificate revoked?" from a CRL file, cheaply, per call.

    The CRL and the CA certificate are stat'ed at most once per ``interval`` seconds; when either
    changed (mtime, size or inode) the CRL is reloaded and its signature checked against the CA.
    Answers are cached per certificate (its bytes) until the next reload.

    Fails closed: a missing or unparsable CRL, one not signed by the CA, or one past its next
    update makes :meth:`is_revoked` raise :class:`CrlError` (the caller refuses the request)
    until a good CRL is in place. Thread-safe."""

    _CACHE_LIMIT = 4096

    def __init__(
        self,
        crl_path: Path | str,
        ca_path: Path | str | None = None,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.crl_path = Path(crl_path)
        self.ca_path = Path(ca_path) if ca_path is not None else self.crl_path.parent / "ca.crt"
        self.interval = interval
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._stamps: tuple[_FileStamp | None, _FileStamp | None] | None = None
        self._issuer: x509.Name | None = None
        self._serials: frozenset[int] = frozenset()
        self._next_update: datetime | None = None
        self._error: CrlError | None = None
        self._cache: dict[bytes, bool] = {}
        self.reloads = 0

    def _refresh(self, *, warn: bool = True) -> None:
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self.interval:
            return
        self._checked_at = now
        stamps = (_FileStamp.of(self.crl_path), _FileStamp.of(self.ca_path))
        if stamps == self._stamps:
            return
        self._stamps = stamps
        self._cache.clear()
        self.reloads += 1
        try:
            try:
                ca = load_certificate(self.ca_path)
            except PkiConfigError as exc:
                raise CrlError("CA_MISSING", str(exc)) from None
            crl = load_crl(self.crl_path, ca)
        except CrlError as exc:
            self._error = exc
            self._serials = frozenset()
            if warn:
                _log.warning("crl_rejected", reason=exc.reason, path=str(self.crl_path))
            return
        self._error = None
        self._issuer = crl.issuer
        self._serials = frozenset(entry.serial_number for entry in crl)
        self._next_update = crl.next_update_utc

    def check(self) -> None:
        """Read the files now and raise :class:`CrlError` if the CRL cannot be trusted (what every
        call would be refused for); a start checks this once."""
        self.reload()
        with self._lock:
            self._refresh(warn=False)  # the caller reports the error
            self._require_usable()

    def _require_usable(self) -> None:
        """Raise :class:`CrlError` unless the CRL read last can be trusted (with the lock held)."""
        if self._error is not None:
            raise self._error
        if self._next_update is not None and self._now() >= self._next_update:
            raise CrlError("CRL_EXPIRED", f"CRL {self.crl_path} is past its next update")

    def reload(self) -> None:
        """Re-read the files on the next call, whatever the interval."""
        with self._lock:
            self._checked_at = None
            self._stamps = None

    def is_revoked(self, cert: CertificateSource) -> bool:
        """True when the certificate (PEM, DER or parsed) is on the CA's CRL."""
        with self._lock:
            self._refresh()
            self._require_usable()
            # a certificate's bytes (PEM or DER) are their own key: no digest per call
            key = (
                cert.public_bytes(serialization.Encoding.DER) if isinstance(cert, x509.Certificate) else cert
            )
            hit = self._cache.get(key)
            if hit is not None:
                return hit
            parsed = cert if isinstance(cert, x509.Certificate) else load_certificate(cert)
            answer = parsed.issuer == self._issuer and parsed.serial_number in self._serials
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = answer
            return answer


# --- gRPC credentials -------------------------------------------------------------------------


class ServerCredentialsReloader:
    """gRPC server credentials that follow the server certificate, key and CA files on disk.

    :meth:`credentials` builds ``grpc.dynamic_ssl_server_credentials`` with client authentication
    required; gRPC calls :meth:`fetch` on each new handshake, which returns a new certificate
    configuration when any file's mtime, size or inode changed and None otherwise. A pair that
    does not load (half-written, key not matching) keeps the previous configuration and is tried
    again on the next handshake."""

    def __init__(self, cert_path: Path | str, key_path: Path | str, ca_path: Path | str) -> None:
        self.cert_path = Path(cert_path)
        self.key_path = Path(key_path)
        self.ca_path = Path(ca_path)
        self._lock = threading.Lock()
        self._stamps: tuple[_FileStamp | None, ...] = ()
        self.reloads = 0

    @classmethod
    def for_pki(cls, home: Path | str | None = None) -> ServerCredentialsReloader:
        paths = PkiPaths.of(home)
        return cls(paths.server_crt, paths.server_key, paths.ca_crt)

    def _files(self) -> tuple[Path, Path, Path]:
        return self.cert_path, self.key_path, self.ca_path

    def _load(self) -> Any:
        cert_pem = _read(self.cert_path, "server certificate")
        key_pem = _read(self.key_path, "server key")
        ca_pem = _read(self.ca_path, "CA certificate")
        cert = load_certificate(cert_pem)
        key = _load_private_key(self.key_path)
        load_certificate(ca_pem)
        if not key_matches(cert, key):
            raise PkiConfigError("INVALID_KEY", f"{self.key_path} does not belong to {self.cert_path}")
        _require_server_use(cert, self.cert_path)
        return grpc.ssl_server_certificate_configuration([(key_pem, cert_pem)], root_certificates=ca_pem)

    def initial_configuration(self) -> Any:
        """The current files as a ``grpc.ServerCertificateConfiguration`` (errors raise)."""
        with self._lock:
            stamps = tuple(_FileStamp.of(p) for p in self._files())
            config = self._load()
            self._stamps = stamps
            return config

    def fetch(self) -> Any:
        """The certificate configuration fetcher: a new configuration, or None for "unchanged"."""
        with self._lock:
            stamps = tuple(_FileStamp.of(p) for p in self._files())
            if stamps == self._stamps:
                return None
            try:
                config = self._load()
            except PkiError as exc:
                _log.warning("server_credentials_reload_failed", reason=exc.reason)
                return None
            self._stamps = stamps
            self.reloads += 1
            _log.info("server_credentials_reloaded", cert=str(self.cert_path))
            return config

    def credentials(self) -> Any:
        """``grpc.ServerCredentials`` for ``server.add_secure_port``, requiring client certificates."""
        return grpc.dynamic_ssl_server_credentials(
            self.initial_configuration(), self.fetch, require_client_authentication=True
        )


def _require_server_use(cert: x509.Certificate, path: Path) -> None:
    """PkiConfigError unless ``cert`` may serve TLS: serverAuth among its extended key usages
    when it lists any (an agency's client certificate would be taken, and every client's
    handshake would then fail with "unsupported certificate purpose"). A certificate without the
    extension may serve (``openssl req -x509`` makes such self-signed ones)."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if ExtendedKeyUsageOID.SERVER_AUTH not in usages:
        raise PkiConfigError(
            "NOT_A_SERVER_CERTIFICATE",
            f"{path} is not a server certificate (no serverAuth extended key usage)",
        )


def client_channel_credentials(ca_path: Path | str, cert_path: Path | str, key_path: Path | str) -> Any:
    """``grpc.ChannelCredentials`` for an agency: trust ``ca_path``, present ``cert_path``/``key_path``."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(Path(ca_path), "CA certificate"),
        private_key=_read(Path(key_path), "private key"),
        certificate_chain=_read(Path(cert_path), "certificate"),
    )


def peer_certificate(auth_context: Mapping[str, Sequence[bytes]]) -> bytes | None:
    """The client's leaf certificate (PEM) from a gRPC ``context.auth_context()``, if any."""
    values = auth_context.get("x509_pem_cert")
    return values[0] if values else None


# --- listing ----------------------------------------------------------------------------------


_EKU_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}


def _kind(cert: x509.Certificate) -> str:
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "ca"
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "other"
    if ExtendedKeyUsageOID.SERVER_AUTH in eku:
        return "server"
    if ExtendedKeyUsageOID.CLIENT_AUTH in eku:
        return "agency"
    return "other"


def certificate_info(
    source: Path | str | bytes | x509.Certificate,
    *,
    ca: x509.Certificate | None = None,
    crl: x509.CertificateRevocationList | None = None,
) -> CertificateInfo:
    """What a certificate says, with its revocation (from ``crl``) and chain (to ``ca``) status."""
    cert = load_certificate(source)
    # without a SubjectAlternativeName extension (the CA's), no names
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        ip_addresses = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    try:
        eku = tuple(
            _EKU_NAMES.get(oid, oid.dotted_string)
            for oid in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        )
    except x509.ExtensionNotFound:
        eku = ()
    kind = _kind(cert)
    agency: Agency | None = None
    if kind != "ca":
        with contextlib.suppress(AgencyIdentityError):
            agency = agency_from_certificate(cert)
    revoked: bool | None = None
    if crl is not None:
        revoked = (
            cert.issuer == crl.issuer
            and crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
        )
    return CertificateInfo(
        path=Path(source) if isinstance(source, Path | str) else None,
        kind=kind,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        agency=agency,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        uris=uris,
        extended_key_usage=eku,
        revoked=revoked,
        issued_by_ca=_issued_by(cert, ca) if ca is not None else None,
    )


def list_certificates(home: Path | str | None = None) -> list[CertificateInfo]:
    """The CA, server and agency certificates of a PKI directory, with their revocation status."""
    paths = PkiPaths.of(home)
    if not paths.ca_crt.exists():
        raise PkiConfigError("PKI_MISSING", f"no CA in {paths.root}; run `dsgw pki init` first")
    ca = load_certificate(paths.ca_crt)
    crl = load_crl(paths.crl, ca) if paths.crl.exists() else None
    files = [paths.ca_crt, paths.server_crt]
    if paths.agencies.is_dir():
        files += sorted(paths.agencies.glob("*.crt"))
    return [certificate_info(p, ca=ca, crl=crl) for p in files if p.exists()]
