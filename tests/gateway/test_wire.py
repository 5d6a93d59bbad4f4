"""Wire translation (gateway.server.wire) and request errors as gRPC statuses
(gateway.server.status), without a server: the client side reads the status through a fake call."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.agencies import Agency
from adapters.contract import SubjectKind
from dsgw.v1 import common_pb2
from gateway.pipeline.errors import (
    AuditFailed,
    Conflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    RequestError,
    Unauthenticated,
    Unavailable,
)
from gateway.server.status import DOMAIN, error_info_of, to_grpc_status
from gateway.server.wire import (
    agency_from_wire,
    agency_to_wire,
    kind_from_wire,
    kind_to_wire,
    timestamp_from,
    timestamp_to,
    value_from_wire,
    value_to_wire,
)

# Protobuf strings are UTF-8: no lone surrogates.
wire_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    wire_text,
    st.dates(),
    st.lists(wire_text, max_size=5),
)


def _round_trip(value: Any) -> Any:
    msg = common_pb2.Value()
    value_to_wire(value, msg)
    again = common_pb2.Value.FromString(msg.SerializeToString())
    return value_from_wire(again)


@given(values)
def test_value_round_trip(value: Any) -> None:
    back = _round_trip(value)
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize("value", [None, False, 0, "", [], dt.date(1, 1, 1)])
def test_value_round_trip_of_defaults(value: Any) -> None:
    # Proto3 defaults must still select their oneof case (else they would read back as None).
    assert _round_trip(value) == value
    assert type(_round_trip(value)) is type(value)


def test_value_to_wire_other_shapes() -> None:
    assert _round_trip(("a", 1)) == ["a", "1"]
    assert _round_trip(3.5) == "3.5"
    assert value_from_wire(common_pb2.Value()) is None


def test_enums_round_trip() -> None:
    for agency in Agency:
        assert agency_from_wire(agency_to_wire(agency)) is agency
        assert common_pb2.AgencyCode.Name(agency_to_wire(agency)) == f"AGENCY_CODE_{agency.value.upper()}"
    for kind in SubjectKind:
        assert kind_from_wire(kind_to_wire(kind)) is kind
    assert agency_from_wire(0) is None
    assert agency_from_wire(9999) is None
    assert kind_from_wire(0) is None


@given(st.datetimes(timezones=st.just(dt.UTC), min_value=dt.datetime(1970, 1, 1)))
def test_timestamp_round_trip(when: dt.datetime) -> None:
    assert timestamp_from(timestamp_to(when)) == when


def test_timestamp_of_another_zone() -> None:
    when = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert timestamp_from(timestamp_to(when)) == when
    assert timestamp_from(timestamp_to(when)).tzinfo is dt.UTC


# --- statuses -------------------------------------------------------------------------------------


@dataclass
class FakeCall:
    """What grpc_status.rpc_status.from_call reads of a failed call."""

    status: grpc.Status

    def trailing_metadata(self) -> Any:
        return self.status.trailing_metadata

    def code(self) -> grpc.StatusCode:
        return self.status.code

    def details(self) -> str:
        return self.status.details


ERRORS: list[tuple[RequestError, grpc.StatusCode]] = [
    (Unauthenticated("CERTIFICATE_REVOKED", "revoked"), grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied("FIELD_NOT_ALLOWED", "no", field="major"), grpc.StatusCode.PERMISSION_DENIED),
    (InvalidArgument("UNKNOWN_FIELD", "bad field"), grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound("SUBJECT_NOT_FOUND", "none"), grpc.StatusCode.NOT_FOUND),
    (Conflict("REQUEST_ID_CONFLICT", "reused"), grpc.StatusCode.ALREADY_EXISTS),
    (
        Unavailable("CIRCUIT_OPEN", "down", retry_after_s=5.0, provider="tax"),
        grpc.StatusCode.UNAVAILABLE,
    ),
    (RateLimited("RATE_LIMITED", "slow down", retry_after_s=0.25), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (AuditFailed(), grpc.StatusCode.UNAVAILABLE),
]


@pytest.mark.parametrize(("error", "code"), ERRORS, ids=lambda x: getattr(x, "reason", None))
def test_status_round_trip(error: RequestError, code: grpc.StatusCode) -> None:
    status = to_grpc_status(error)
    assert status.code is code
    assert status.details == str(error)
    reason, metadata, retry = error_info_of(FakeCall(status))
    assert reason == error.reason
    assert common_pb2.ErrorReason.Value(reason)  # an ErrorReason name of the proto
    assert metadata == error.metadata
    if error.retry_after_s is None:
        assert retry is None
    else:
        assert retry == pytest.approx(error.retry_after_s, abs=1e-6)


def test_status_carries_error_info_domain() -> None:
    from google.rpc import error_details_pb2, status_pb2

    status = to_grpc_status(PermissionDenied("NO_AGREEMENT", "none"))
    [(key, raw)] = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    rich = status_pb2.Status.FromString(raw)
    assert rich.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    info = error_details_pb2.ErrorInfo()
    assert rich.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("NO_AGREEMENT", DOMAIN)
    assert len(rich.details) == 1  # no RetryInfo without a retry delay


@given(st.floats(min_value=0, max_value=86400, allow_nan=False))
def test_retry_delay_round_trip(seconds: float) -> None:
    status = to_grpc_status(Unavailable("PROVIDER_UNAVAILABLE", "down", retry_after_s=seconds))
    _, _, retry = error_info_of(FakeCall(status))
    assert retry is not None
    assert retry == pytest.approx(seconds, abs=1e-6)


def test_negative_retry_delay_is_zero() -> None:
    status = to_grpc_status(RateLimited("RATE_LIMITED", "x", retry_after_s=-3.0))
    assert error_info_of(FakeCall(status))[2] == 0.0


@dataclass
class BareCall:
    metadata: Any

    def trailing_metadata(self) -> Any:
        return self.metadata

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.INTERNAL

    def details(self) -> str:
        return "boom"


@pytest.mark.parametrize("metadata", [None, (), (("other", "x"),)])
def test_error_info_of_a_call_without_details(metadata: Any) -> None:
    assert error_info_of(BareCall(metadata)) == ("", {}, None)


def test_a_status_message_is_bounded_and_keeps_its_error_info() -> None:
    """A message that repeats an oversized input (a 1 MB name) would exceed gRPC's metadata limit
    and lose the ErrorInfo: it is cut at MAX_MESSAGE characters."""
    from gateway.server.status import MAX_MESSAGE

    status = to_grpc_status(InvalidArgument("UNKNOWN_DATASET", "unknown dataset " + "x" * 1_000_000))
    assert len(status.details) == MAX_MESSAGE and status.details.endswith("…")
    assert error_info_of(FakeCall(status))[0] == "UNKNOWN_DATASET"
