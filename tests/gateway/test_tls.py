"""The gateway's mTLS edge over real loopback connections: certificates of another CA, expired
and revoked certificates, no certificate and plain text are refused; an agency's valid
certificate is served; health checking and server reflection work over the same channel."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from dsgw.v1 import exchange_pb2, exchange_pb2_grpc
from gateway import pki
from gateway.client import GatewayClient, GatewayError
from gateway.devsetup import DevHome
from tests.gateway.conftest import Gateway


def _catalogue(target: str, creds: grpc.ChannelCredentials | None) -> exchange_pb2.ListCatalogueResponse:
    channel = grpc.secure_channel(target, creds) if creds is not None else grpc.insecure_channel(target)
    try:
        stub = exchange_pb2_grpc.DataExchangeStub(channel)
        resp: exchange_pb2.ListCatalogueResponse = stub.ListCatalogue(
            exchange_pb2.ListCatalogueRequest(), timeout=5
        )
        return resp
    finally:
        channel.close()


def _refused(target: str, creds: grpc.ChannelCredentials | None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as exc:
        _catalogue(target, creds)
    return exc.value


def _creds(ca: Path, cert: Path, key: Path) -> grpc.ChannelCredentials:
    creds: grpc.ChannelCredentials = pki.client_channel_credentials(ca, cert, key)
    return creds


def test_valid_certificate_is_served(gateway: Gateway, dev_home: DevHome) -> None:
    resp = _catalogue(gateway.target, _creds(*dev_home.agency_credentials("education")))
    assert [e.agreement_id for e in resp.entries] == ["education-hrss-insurance"]


def test_certificate_of_another_ca_fails_the_handshake(
    gateway: Gateway, dev_home: DevHome, tmp_path: Path
) -> None:
    other = tmp_path / "other-pki"
    pki.init_pki(other)
    issued = pki.issue_agency(other, "hrss")
    # trusts the gateway's CA, presents a certificate the gateway's CA never issued
    error = _refused(gateway.target, _creds(dev_home.pki / "ca.crt", issued.cert_path, issued.key_path))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


def test_expired_certificate_fails_the_handshake(gateway: Gateway, dev_home: DevHome, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    issued = pki.issue_agency(
        dev_home.pki,
        "hrss",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
        out=tmp_path / "expired.crt",
    )
    error = _refused(gateway.target, _creds(dev_home.pki / "ca.crt", issued.cert_path, issued.key_path))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


def test_no_client_certificate_fails_the_handshake(gateway: Gateway, dev_home: DevHome) -> None:
    creds = grpc.ssl_channel_credentials((dev_home.pki / "ca.crt").read_bytes())
    assert _refused(gateway.target, creds).code() is grpc.StatusCode.UNAVAILABLE


def test_plain_text_client_is_refused(gateway: Gateway) -> None:
    assert _refused(gateway.target, None).code() is grpc.StatusCode.UNAVAILABLE


def test_revoked_certificate_is_refused_on_the_next_call(
    gateway: Gateway, dev_home: DevHome, tmp_path: Path
) -> None:
    issued = pki.issue_agency(dev_home.pki, "civil_affairs", out=tmp_path / "to-revoke.crt")
    client = GatewayClient(
        gateway.target, ca=dev_home.pki / "ca.crt", cert=issued.cert_path, key=issued.key_path, timeout=5
    )
    try:
        assert client.catalogue().entries  # served while valid
        pki.revoke(dev_home.pki, issued.cert_path)
        # on the same connection: the CRL is checked on every call (the file is looked at at
        # most once a second), not only at the handshake
        revoked_at = time.monotonic()
        while True:
            try:
                client.catalogue()
            except GatewayError as exc:
                assert (exc.code, exc.reason) == ("UNAUTHENTICATED", "CERTIFICATE_REVOKED")
                break
            assert time.monotonic() - revoked_at < 2.0, "the revocation did not take effect"
            time.sleep(0.1)
        with pytest.raises(GatewayError) as exc:
            client.query("120101199003071234", "employment_assistance", [("civil_affairs", "assistance", [])])
        assert exc.value.reason == "CERTIFICATE_REVOKED"
    finally:
        client.close()
    # the agency's other certificate is unaffected
    assert _catalogue(gateway.target, _creds(*dev_home.agency_credentials("civil_affairs"))).entries


def test_client_refuses_a_server_of_another_ca(gateway: Gateway, dev_home: DevHome, tmp_path: Path) -> None:
    other = tmp_path / "other-pki"
    pki.init_pki(other)
    _, cert, key = dev_home.agency_credentials("hrss")
    assert _refused(gateway.target, _creds(other / "ca.crt", cert, key)).code() is grpc.StatusCode.UNAVAILABLE


def test_health_says_serving(gateway: Gateway) -> None:
    stub = health_pb2_grpc.HealthStub(gateway.channel("hrss"))
    for service in ("", "dsgw.v1.DataExchange", "dsgw.v1.ConsentService"):
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as exc:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert exc.value.code() is grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_services(gateway: Gateway) -> None:
    db = ProtoReflectionDescriptorDatabase(gateway.channel("tax"))
    services = set(db.get_services())
    assert {"dsgw.v1.DataExchange", "dsgw.v1.ConsentService", "grpc.health.v1.Health"} <= services
    pool = descriptor_pool.DescriptorPool(db)
    exchange = pool.FindServiceByName("dsgw.v1.DataExchange")
    assert {m.name for m in exchange.methods} == {"ListCatalogue", "Query", "Verify", "BatchVerify"}
    assert pool.FindMessageTypeByName("dsgw.v1.QueryRequest").fields_by_name["subject"]
