"""The development PKI: files and modes, chains and names, revocation and the CRL checker, the
reloading server credentials, a real mTLS handshake over loopback, and the ``dsgw pki`` verbs."""

from __future__ import annotations

import argparse
import json
import shutil
import stat
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from adapters.agencies import Agency
from gateway import pki
from gateway.cli import fail
from gateway.cli import pki as pki_cli
from gateway.errors import CheckFailed, DsgwError


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PKI for the read-only tests (key generation is cheap, but not free)."""
    root = tmp_path_factory.mktemp("pki") / "pki"
    pki.init_pki(root, server_names=["gateway.internal", "10.0.0.7"])
    for agency in Agency:
        pki.issue_agency(root, agency)
    return root


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    root = tmp_path / "pki"
    pki.init_pki(root)
    return root


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sign_with_ca(home: Path, subject: x509.Name, san: list[x509.GeneralName] | None = None) -> bytes:
    """A client certificate of the same CA, with any subject: for the identity rejection tests."""
    ca_cert = cert(home / "ca.crt")
    ca_key = serialization.load_pem_private_key((home / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


# --- files, chains, names ---------------------------------------------------------------------


def test_init_writes_the_layout_with_private_modes(home: Path) -> None:
    assert mode(home) == 0o700
    assert mode(home / "agencies") == 0o700
    for key in ["ca.key", "server.key", *(f"agencies/{a.value}.key" for a in Agency)]:
        assert mode(home / key) == 0o600, key
    assert not list(home.glob(".*.tmp")) and not list((home / "agencies").glob(".*"))

    ca = cert(home / "ca.crt")
    assert ca.subject == ca.issuer
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(ca.signature_hash_algorithm, hashes.SHA256)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == 3650

    crl = pki.load_crl(home / "crl.pem", ca)
    assert len(crl) == 0


def test_server_certificate_names_and_usage(home: Path) -> None:
    server = cert(home / "server.crt")
    server.verify_directly_issued_by(cert(home / "ca.crt"))
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "gateway.internal"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1", "10.0.0.7"]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert 364 <= (server.not_valid_after_utc - server.not_valid_before_utc).days <= 366


def test_init_never_replaces_a_ca_without_force(fresh: Path) -> None:
    before = (fresh / "ca.crt").read_bytes()
    pki.issue_agency(fresh, "tax")
    with pytest.raises(pki.PkiConfigError) as err:
        pki.init_pki(fresh)
    assert err.value.reason == "PKI_EXISTS"
    assert (fresh / "ca.crt").read_bytes() == before

    pki.init_pki(fresh, force=True)
    assert (fresh / "ca.crt").read_bytes() != before
    assert not (fresh / "agencies" / "tax.crt").exists()  # no longer chains: removed


@pytest.mark.parametrize("agency", list(Agency))
def test_agency_certificates_chain_to_the_ca_and_name_the_agency(home: Path, agency: Agency) -> None:
    ca = cert(home / "ca.crt")
    pem = (home / "agencies" / f"{agency.value}.crt").read_bytes()
    leaf = x509.load_pem_x509_certificate(pem)
    # the signature, checked by hand with the CA's public key
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    assert leaf.signature_hash_algorithm is not None
    ca_key.verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm))
    leaf.verify_directly_issued_by(ca)

    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == agency.value
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "dsgw agency"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:dsgw:agency:{agency.value}"]
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    assert pki.agency_from_certificate(pem) is agency
    assert pki.agency_from_certificate(leaf.public_bytes(serialization.Encoding.DER)) is agency
    assert pki.agency_from_certificate(leaf) is agency


def test_agency_from_certificate_rejects_what_names_no_single_agency(home: Path) -> None:
    def name(cn: str | None, org: str = "dsgw agency") -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
        if cn is not None:
            attrs.insert(0, x509.NameAttribute(NameOID.COMMON_NAME, cn))
        return x509.Name(attrs)

    uri = x509.UniformResourceIdentifier
    cases = {
        "UNKNOWN_AGENCY": sign_with_ca(home, name("public_security_x")),
        "NO_AGENCY_NAME": sign_with_ca(home, name(None)),
        "AGENCY_URI_MISMATCH": sign_with_ca(home, name("tax"), [uri("urn:dsgw:agency:hrss")]),
    }
    for reason, pem in cases.items():
        with pytest.raises(pki.AgencyIdentityError) as err:
            pki.agency_from_certificate(pem)
        assert err.value.reason == reason
        assert isinstance(err.value, DsgwError)
    with pytest.raises(pki.AgencyIdentityError) as bad:
        pki.agency_from_certificate(b"not a certificate")
    assert bad.value.reason == "INVALID_CERTIFICATE"
    # no SAN at all, or an unrelated URI: the CN decides
    assert pki.agency_from_certificate(sign_with_ca(home, name("tax"))) is Agency.TAX
    other = sign_with_ca(home, name("tax"), [uri("https://tax.example/")])
    assert pki.agency_from_certificate(other) is Agency.TAX


def test_issue_validates_its_input(fresh: Path, tmp_path: Path) -> None:
    with pytest.raises(pki.PkiConfigError) as err:
        pki.issue_agency(fresh, "police")
    assert err.value.reason == "UNKNOWN_AGENCY"
    with pytest.raises(pki.PkiConfigError) as err:
        pki.issue_agency(tmp_path / "nowhere", "tax")
    assert err.value.reason == "PKI_MISSING"
    now = datetime.now(UTC)
    with pytest.raises(pki.PkiConfigError) as err:
        pki.issue_agency(fresh, "tax", not_before=now, not_after=now - timedelta(days=1))
    assert err.value.reason == "INVALID_VALIDITY"


def test_second_certificate_and_explicit_validity(fresh: Path, tmp_path: Path) -> None:
    first = pki.issue_agency(fresh, Agency.HRSS)
    start = datetime(2020, 1, 1, tzinfo=UTC)
    second = pki.issue_agency(
        fresh, Agency.HRSS, not_before=start, not_after=start + timedelta(days=2), out=tmp_path / "old.crt"
    )
    assert second.cert_path == tmp_path / "old.crt" and second.key_path == tmp_path / "old.key"
    assert mode(second.key_path) == 0o600
    assert first.serial != second.serial
    assert second.not_before == start and second.not_after == start + timedelta(days=2)
    assert pki.agency_from_certificate(second.cert_path.read_bytes()) is Agency.HRSS
    assert (fresh / "agencies" / "hrss.crt").read_bytes() != second.cert_path.read_bytes()


# --- revocation -------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_revoke_then_the_checker_says_revoked_after_its_interval(fresh: Path, tmp_path: Path) -> None:
    tax = pki.issue_agency(fresh, "tax")
    spare = pki.issue_agency(fresh, "tax", out=tmp_path / "tax-2.crt")
    hrss = pki.issue_agency(fresh, "hrss")
    clock = FakeClock()
    checker = pki.RevocationChecker(fresh / "crl.pem", clock=clock)
    tax_pem = tax.cert_path.read_bytes()
    assert checker.is_revoked(tax_pem) is False

    done = pki.revoke(fresh, "tax")  # the agency's current certificate
    assert done.serial == tax.serial and not done.already
    assert checker.is_revoked(tax_pem) is False  # not stat'ed again within the interval
    clock.t += 1.5
    assert checker.is_revoked(tax_pem) is True
    assert checker.is_revoked(x509.load_pem_x509_certificate(tax_pem)) is True
    assert checker.is_revoked(spare.cert_path.read_bytes()) is False  # a second cert, same agency
    assert checker.is_revoked(hrss.cert_path.read_bytes()) is False
    assert checker.reloads == 2

    # by path and by hexadecimal serial; twice changes nothing
    assert pki.revoke(fresh, spare.cert_path).serial == spare.serial
    assert pki.revoke(fresh, pki.serial_hex(spare.serial)).already
    assert pki.revoke(fresh, tax.serial).already
    checker.reload()
    assert checker.is_revoked(spare.cert_path.read_bytes()) is True

    crl = pki.load_crl(fresh / "crl.pem", cert(fresh / "ca.crt"))
    assert sorted(e.serial_number for e in crl) == sorted([tax.serial, spare.serial])
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3
    assert not list(fresh.glob(".crl.pem.*"))  # no temporary file left behind


def test_checker_caches_per_certificate_and_stats_at_most_once_per_interval(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = pki.issue_agency(fresh, "education").cert_path.read_bytes()
    clock = FakeClock()
    checker = pki.RevocationChecker(fresh / "crl.pem", fresh / "ca.crt", clock=clock)
    assert checker.is_revoked(pem) is False
    parsed: list[object] = []
    real = pki.load_certificate

    def counting_load(source: Any) -> x509.Certificate:
        parsed.append(source)
        return real(source)

    stats: list[Path] = []
    real_stamp = pki._FileStamp.of

    def counting_stamp(cls: type, path: Path) -> Any:
        stats.append(path)
        return real_stamp(path)

    monkeypatch.setattr(pki, "load_certificate", counting_load)
    monkeypatch.setattr(pki._FileStamp, "of", classmethod(counting_stamp))
    for _ in range(100):
        assert checker.is_revoked(pem) is False
    assert parsed == [] and stats == []  # answered from the cache, no stat within the interval
    clock.t += 2
    assert checker.is_revoked(pem) is False
    assert len(stats) == 2 and checker.reloads == 1  # files unchanged: no reload


def test_a_crl_signed_by_another_ca_is_refused(fresh: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    pki.init_pki(other)
    pki.revoke(other, 12345)
    pem = pki.issue_agency(fresh, "tax").cert_path.read_bytes()
    checker = pki.RevocationChecker(fresh / "crl.pem", interval=0)
    assert checker.is_revoked(pem) is False

    shutil.copy(other / "crl.pem", fresh / "crl.pem")
    with pytest.raises(pki.CrlError) as err:
        checker.is_revoked(pem)
    assert err.value.reason == "CRL_SIGNATURE"
    with pytest.raises(pki.CrlError):
        checker.is_revoked(pem)  # stays closed
    with pytest.raises(pki.CrlError):
        pki.load_crl(fresh / "crl.pem", cert(fresh / "ca.crt"))
    with pytest.raises(pki.CrlError):
        pki.revoke(fresh, "tax")

    # same issuer name, wrong key: still refused (the signature is what counts)
    forged = x509.load_pem_x509_crl((other / "crl.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert(fresh / "ca.crt").subject)
        .last_update(forged.last_update_utc)
        .next_update(forged.next_update_utc or datetime.now(UTC) + timedelta(days=1))
    )
    (fresh / "crl.pem").write_bytes(
        builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(pki.CrlError) as err:
        checker.is_revoked(pem)
    assert err.value.reason == "CRL_SIGNATURE"

    (fresh / "crl.pem").unlink()
    with pytest.raises(pki.CrlError) as err:
        checker.is_revoked(pem)
    assert err.value.reason == "CRL_MISSING"


def test_a_stale_crl_fails_closed(fresh: Path) -> None:
    pem = pki.issue_agency(fresh, "tax").cert_path.read_bytes()
    later = datetime.now(UTC) + timedelta(days=pki.CRL_DAYS + 1)
    checker = pki.RevocationChecker(fresh / "crl.pem", now=lambda: later)
    with pytest.raises(pki.CrlError) as err:
        checker.is_revoked(pem)
    assert err.value.reason == "CRL_EXPIRED"


def test_revoke_refuses_foreign_certificates_and_nonsense(fresh: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    pki.init_pki(other)
    foreign = pki.issue_agency(other, "tax")
    with pytest.raises(pki.PkiConfigError) as err:
        pki.revoke(fresh, foreign.cert_path)
    assert err.value.reason == "NOT_ISSUED_BY_CA"
    with pytest.raises(pki.PkiConfigError) as err:
        pki.revoke(fresh, "not-a-serial")
    assert err.value.reason == "INVALID_TARGET"
    with pytest.raises(pki.PkiConfigError) as err:
        pki.revoke(fresh, "hrss")  # no certificate issued yet
    assert err.value.reason == "PKI_MISSING"


# --- server credentials -----------------------------------------------------------------------


def test_reloader_returns_a_new_configuration_only_when_files_change(fresh: Path) -> None:
    reloader = pki.ServerCredentialsReloader.for_pki(fresh)
    assert reloader.initial_configuration() is not None
    assert reloader.fetch() is None
    assert reloader.fetch() is None

    pki.issue_server(fresh, server_names=["gw.example"])
    assert reloader.fetch() is not None
    assert reloader.fetch() is None
    assert reloader.reloads == 1

    # a key that does not belong to the certificate keeps the old configuration
    (fresh / "server.key").write_bytes((fresh / "ca.key").read_bytes())
    assert reloader.fetch() is None
    pki.issue_server(fresh)
    assert reloader.fetch() is not None
    assert reloader.reloads == 2


# --- a real mTLS handshake over loopback ------------------------------------------------------

WHO = "/dsgw.test.Who/Me"


@dataclass
class Gateway:
    port: int
    home: Path
    reloader: pki.ServerCredentialsReloader
    checker: pki.RevocationChecker

    def channel(self, cert_path: Path, key_path: Path, ca_path: Path | None = None) -> grpc.Channel:
        creds = pki.client_channel_credentials(ca_path or self.home / "ca.crt", cert_path, key_path)
        return grpc.secure_channel(f"127.0.0.1:{self.port}", creds)


def _who_handler(checker: pki.RevocationChecker) -> grpc.GenericRpcHandler:
    """A tiny method that answers the caller's agency code from its client certificate."""

    def me(request: bytes, context: grpc.ServicerContext) -> bytes:
        pem = pki.peer_certificate(context.auth_context())
        if pem is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "NO_CLIENT_CERTIFICATE")
            raise AssertionError("unreachable")
        try:
            if checker.is_revoked(pem):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "CERTIFICATE_REVOKED")
            return pki.agency_from_certificate(pem).value.encode()
        except pki.PkiError as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.reason)
        raise AssertionError("unreachable")

    handler = grpc.unary_unary_rpc_method_handler(me)
    return grpc.method_handlers_generic_handler("dsgw.test.Who", {"Me": handler})


@pytest.fixture
def gateway(fresh: Path) -> Iterator[Gateway]:
    reloader = pki.ServerCredentialsReloader.for_pki(fresh)
    checker = pki.RevocationChecker(fresh / "crl.pem", interval=0)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_generic_rpc_handlers([_who_handler(checker)])
    port = server.add_secure_port("127.0.0.1:0", reloader.credentials())
    server.start()
    try:
        yield Gateway(port, fresh, reloader, checker)
    finally:
        server.stop(None)


def _health(channel: grpc.Channel) -> Any:
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=5)


def _who(channel: grpc.Channel) -> str:
    with channel:
        return bytes(channel.unary_unary(WHO)(b"", timeout=5)).decode()


def test_mtls_accepts_an_issued_agency_certificate(gateway: Gateway) -> None:
    issued = pki.issue_agency(gateway.home, "civil_affairs")
    reply = _health(gateway.channel(issued.cert_path, issued.key_path))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert _who(gateway.channel(issued.cert_path, issued.key_path)) == "civil_affairs"


def test_mtls_refuses_a_client_certificate_of_another_ca(gateway: Gateway, tmp_path: Path) -> None:
    other = tmp_path / "other"
    pki.init_pki(other)
    foreign = pki.issue_agency(other, "tax")
    # the client trusts our CA (so the server is fine), but presents a certificate of another CA
    with pytest.raises(grpc.RpcError) as err:
        _health(gateway.channel(foreign.cert_path, foreign.key_path))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_an_expired_client_certificate(gateway: Gateway, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    expired = pki.issue_agency(
        gateway.home,
        "tax",
        not_before=now - timedelta(days=30),
        not_after=now - timedelta(days=1),
        out=tmp_path / "expired.crt",
    )
    with pytest.raises(grpc.RpcError) as err:
        _health(gateway.channel(expired.cert_path, expired.key_path))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_a_client_without_a_certificate(gateway: Gateway) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=(gateway.home / "ca.crt").read_bytes())
    with pytest.raises(grpc.RpcError) as err:
        _health(grpc.secure_channel(f"127.0.0.1:{gateway.port}", creds))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def test_revoked_certificate_passes_tls_but_the_gateway_refuses_it(gateway: Gateway) -> None:
    issued = pki.issue_agency(gateway.home, "market_regulation")
    assert _who(gateway.channel(issued.cert_path, issued.key_path)) == "market_regulation"
    pki.revoke(gateway.home, "market_regulation")
    with pytest.raises(grpc.RpcError) as err:
        _who(gateway.channel(issued.cert_path, issued.key_path))
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "CERTIFICATE_REVOKED"


def test_server_picks_up_a_new_ca_and_certificate_without_a_restart(gateway: Gateway) -> None:
    old = pki.issue_agency(gateway.home, "hrss")
    old_ca = gateway.home.parent / "old-ca.crt"
    shutil.copy(gateway.home / "ca.crt", old_ca)
    assert _who(gateway.channel(old.cert_path, old.key_path)) == "hrss"

    pki.init_pki(gateway.home, force=True)  # new CA, new server certificate, empty CRL
    new = pki.issue_agency(gateway.home, "hrss")
    assert _who(gateway.channel(new.cert_path, new.key_path)) == "hrss"
    assert gateway.reloader.reloads >= 1
    # a client of the old CA no longer gets through: the server's trust roots moved on
    with pytest.raises(grpc.RpcError) as err:
        _health(gateway.channel(old.cert_path, old.key_path, ca_path=old_ca))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


# --- the command line -------------------------------------------------------------------------


def run(argv: list[str]) -> int:
    """``dsgw pki ...`` through register() on a fresh parser, with gateway.cli.main's mapping."""
    parser = argparse.ArgumentParser(prog="dsgw")
    sub = parser.add_subparsers(dest="command", required=True)
    pki_cli.register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except CheckFailed as exc:
        return fail(str(exc), 1)
    except DsgwError as exc:
        return fail(str(exc), 2)


def test_cli_init_issue_revoke_list_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "pki")
    assert run(["pki", "init", "--dir", d, "--server-name", "gw.example", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "gw.example" in out["server"]["dns_names"] and out["ca"]["kind"] == "ca"

    assert run(["pki", "init", "--dir", d]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "--force" in captured.err and "Traceback" not in captured.err

    assert run(["pki", "issue", "police", "--dir", d]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown agency 'police'" in err

    assert run(["pki", "issue", "tax", "--dir", d, "--days", "30", "--json"]) == 0
    issued = json.loads(capsys.readouterr().out)
    assert issued["subject"] == "O=dsgw agency,CN=tax"
    assert run(["pki", "issue", "hrss", "--dir", d]) == 0
    assert "issued" in capsys.readouterr().out

    assert run(["pki", "revoke", "tax", "--dir", d, "--json"]) == 0
    revoked = json.loads(capsys.readouterr().out)
    assert revoked["serial"] == issued["serial"] and revoked["already_revoked"] is False
    assert run(["pki", "revoke", issued["serial"], "--dir", d]) == 0
    assert "already revoked" in capsys.readouterr().out
    assert run(["pki", "revoke", "zzz", "--dir", d]) == 2
    assert capsys.readouterr().err.count("\n") == 1

    assert run(["pki", "list", "--dir", d, "--json"]) == 0
    listed = {c["subject"]: c for c in json.loads(capsys.readouterr().out)["certificates"]}
    assert listed["O=dsgw agency,CN=tax"]["revoked"] is True
    assert listed["O=dsgw agency,CN=tax"]["status"] == "revoked"
    assert listed["O=dsgw agency,CN=hrss"]["status"] == "valid"
    assert listed["O=dsgw agency,CN=hrss"]["agency"] == "hrss"
    assert {c["kind"] for c in listed.values()} == {"ca", "server", "agency"}
    assert run(["pki", "list", "--dir", d]) == 0
    human = capsys.readouterr().out
    assert "revoked" in human and "CN=hrss" in human

    assert run(["pki", "show", str(tmp_path / "pki" / "agencies" / "hrss.crt"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["agency"] == "hrss" and shown["uris"] == ["urn:dsgw:agency:hrss"]
    assert shown["extended_key_usage"] == ["clientAuth"]
    assert run(["pki", "show", "tax", "--dir", d]) == 0
    assert "revoked" in capsys.readouterr().out
    assert run(["pki", "show", str(tmp_path / "missing.crt")]) == 2
    (tmp_path / "junk.crt").write_text("junk")
    assert run(["pki", "show", str(tmp_path / "junk.crt")]) == 2
    assert capsys.readouterr().err.count("\n") == 2


def test_cli_list_without_a_pki_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["pki", "list", "--dir", str(tmp_path / "none")]) == 2
    assert "dsgw pki init" in capsys.readouterr().err


def test_default_directory_follows_dsgw_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSGW_HOME", str(tmp_path))
    assert pki.default_pki_dir() == tmp_path / "pki"
    pki.init_pki()
    assert (tmp_path / "pki" / "ca.crt").exists()


@pytest.mark.parametrize(
    ("serial", "shown"), [(0x1, "01"), (0xAB, "ab"), (0x22B94294, "22b94294"), (0x2B94294, "02b94294")]
)
def test_serials_are_shown_in_whole_bytes(serial: int, shown: str) -> None:
    assert pki.serial_hex(serial) == shown
    assert int(shown, 16) == serial


# --- refusals: --out over managed files, validity, the CA itself, server names -------------------


MANAGED = ("ca.crt", "ca.key", "server.crt", "server.key", "crl.pem")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "out",
    [
        "ca.crt",  # the CA certificate (and ca.key next to it)
        "ca",  # the key sibling is ca.key
        "server.crt",
        "server.pem",  # the key sibling is server.key
        "crl.pem",
        "agencies/hrss.crt",
        "agencies/other.crt",
        "agencies/../ca.crt",
    ],
)
def test_issue_out_refuses_files_the_pki_directory_manages(fresh: Path, out: str) -> None:
    pki.issue_agency(fresh, "hrss")
    before = snapshot(fresh)
    with pytest.raises(pki.PkiConfigError) as err:
        pki.issue_agency(fresh, "hrss", out=fresh / out)
    assert err.value.reason == "INVALID_NAME" and "managed by the PKI directory" in str(err.value)
    assert snapshot(fresh) == before


def test_issue_out_refuses_a_symlink_to_a_managed_file(fresh: Path, tmp_path: Path) -> None:
    (tmp_path / "link.crt").symlink_to(fresh / "ca.crt")
    (tmp_path / "elsewhere").symlink_to(fresh)
    before = snapshot(fresh)
    for out in (tmp_path / "link.crt", tmp_path / "elsewhere" / "server.crt"):
        with pytest.raises(pki.PkiConfigError) as err:
            pki.issue_agency(fresh, "tax", out=out)
        assert err.value.reason == "INVALID_NAME"
    assert snapshot(fresh) == before and not (tmp_path / "link.key").exists()


def test_issue_out_refuses_directories_before_writing(fresh: Path, tmp_path: Path) -> None:
    (tmp_path / "x" / "p").mkdir(parents=True)
    with pytest.raises(pki.PkiConfigError) as err:
        pki.issue_agency(fresh, "tax", out=tmp_path / "x" / "p")
    assert err.value.reason == "INVALID_NAME" and "is a directory" in str(err.value)
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["p"]  # no p.key left behind

    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "q.key").mkdir()
    with pytest.raises(pki.PkiConfigError) as err:
        pki.issue_agency(fresh, "tax", out=tmp_path / "y" / "q.crt")
    assert err.value.reason == "INVALID_NAME" and "q.key is a directory" in str(err.value)
    assert sorted(p.name for p in (tmp_path / "y").iterdir()) == ["q.key"]


def test_cli_issue_out_over_the_ca_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "pki"
    assert run(["pki", "init", "--dir", str(d)]) == 0
    before = snapshot(d)
    capsys.readouterr()
    for out in (d / "ca.crt", d / "server.crt"):
        assert run(["pki", "issue", "hrss", "--dir", str(d), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(out) in err and "Traceback" not in err
    assert snapshot(d) == before


def test_validity_is_capped_at_the_cas(fresh: Path) -> None:
    for days in (pki.CA_DAYS + 1, 99999999):
        with pytest.raises(pki.PkiConfigError) as err:
            pki.issue_agency(fresh, "tax", days=days)
        assert err.value.reason == "INVALID_VALIDITY" and "at most 3650 days" in str(err.value)
        with pytest.raises(pki.PkiConfigError) as err:
            pki.issue_server(fresh, days=days)
        assert err.value.reason == "INVALID_VALIDITY"
    start = datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(pki.PkiConfigError) as err:
        pki.issue_agency(fresh, "tax", not_before=start, not_after=start + timedelta(days=pki.CA_DAYS + 1))
    assert err.value.reason == "INVALID_VALIDITY"
    issued = pki.issue_agency(fresh, "tax", days=pki.CA_DAYS)
    assert issued.not_after - issued.not_before == timedelta(days=pki.CA_DAYS)


def test_cli_too_long_validity_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "pki"
    assert run(["pki", "init", "--dir", str(d), "--server-days", "99999999"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at most 3650 days" in err
    assert not d.exists() or not any(d.iterdir())
    assert run(["pki", "init", "--dir", str(d)]) == 0  # not "a CA already exists"
    capsys.readouterr()
    assert run(["pki", "issue", "tax", "--dir", str(d), "--days", "99999999"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at most 3650 days" in err
    assert not (d / "agencies" / "tax.crt").exists()


def test_revoke_refuses_the_ca_itself(fresh: Path) -> None:
    ca = cert(fresh / "ca.crt")
    crl = (fresh / "crl.pem").read_bytes()
    for target in (
        fresh / "ca.crt",
        str(fresh / "ca.crt"),
        ca,
        ca.serial_number,
        pki.serial_hex(ca.serial_number),
    ):
        with pytest.raises(pki.PkiConfigError) as err:
            pki.revoke(fresh, target)
        assert err.value.reason == "INVALID_TARGET" and "CA" in str(err.value)
    assert (fresh / "crl.pem").read_bytes() == crl
    assert [i.status() for i in pki.list_certificates(fresh) if i.kind == "ca"] == ["valid"]


def test_cli_revoke_the_ca_is_refused(fresh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    serial = pki.serial_hex(cert(fresh / "ca.crt").serial_number)
    for target in (str(fresh / "ca.crt"), serial, serial.upper()):
        assert run(["pki", "revoke", target, "--dir", str(fresh)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "CA" in err and "Traceback" not in err
    assert len(pki.load_crl(fresh / "crl.pem")) == 0


@pytest.mark.parametrize(
    "name",
    [
        "bad name!",
        "a" * 300,
        "a" * 64 + ".example",
        ("a" * 63 + ".") * 4 + "b",  # 257 characters
        "-lead.example",
        "trail-.example",
        "a..b",
        ".",
        "bücher.de",
        "*.example.com",  # no wildcard support
        "10.0.0.256",
        "\u212aa.example",  # KELVIN SIGN lowercases to ASCII "k"
    ],
)
def test_invalid_server_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(pki.PkiConfigError) as err:
        pki.init_pki(tmp_path / "pki", server_names=[name])
    assert err.value.reason == "INVALID_NAME" and repr(name[:64]) in str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 200
    assert not (tmp_path / "pki").exists()


def test_valid_server_names_are_accepted(fresh: Path) -> None:
    longest = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters
    names = [
        "a" * 63 + ".example",
        "GW-1.Example.COM.",
        "xn--bcher-kva.de",
        "dsgw_gateway",  # a Docker Compose service name
        "a",
        longest,
        "10.0.0.7",
        "[::2]",
    ]
    pki.issue_server(fresh, server_names=names)
    san = cert(fresh / "server.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "localhost",
        "a" * 63 + ".example",
        "gw-1.example.com",
        "xn--bcher-kva.de",
        "dsgw_gateway",
        "a",
        longest,
    ]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1",
        "::1",
        "10.0.0.7",
        "::2",
    ]


def test_cli_init_refuses_a_bad_server_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "pki"
    assert run(["pki", "init", "--dir", str(d), "--server-name", "bad name!"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'bad name!'" in err and "Traceback" not in err
    assert not d.exists()


def test_server_credentials_take_a_self_signed_certificate_without_extended_key_usage(tmp_path: Path) -> None:
    """What ``openssl req -x509`` makes (CA:TRUE, no extendedKeyUsage) may serve TLS; a
    certificate whose extended key usages leave out serverAuth (an agency's) may not."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    made = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    crt, pem_key = tmp_path / "srv.crt", tmp_path / "srv.key"
    crt.write_bytes(made.public_bytes(serialization.Encoding.PEM))
    pem_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    assert pki.ServerCredentialsReloader(crt, pem_key, crt).initial_configuration() is not None
    home = tmp_path / "pki"
    pki.init_pki(home)
    issued = pki.issue_agency(home, "hrss")
    with pytest.raises(pki.PkiConfigError, match="not a server certificate"):
        pki.ServerCredentialsReloader(
            issued.cert_path, issued.key_path, home / "ca.crt"
        ).initial_configuration()
