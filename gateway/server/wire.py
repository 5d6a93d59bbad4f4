"""Wire <-> domain translation shared by the servicers and the client: agency and subject-kind
enums, field values, timestamps. Pure."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeAlias

from google.protobuf import timestamp_pb2

from adapters.agencies import Agency
from adapters.contract import SubjectKind
from dsgw.v1 import common_pb2

__all__ = [
    "AgencyWire",
    "KindWire",
    "agency_from_wire",
    "agency_to_wire",
    "kind_from_wire",
    "kind_to_wire",
    "timestamp_from",
    "timestamp_to",
    "value_from_wire",
    "value_to_wire",
]

AgencyWire: TypeAlias = common_pb2.AgencyCode.ValueType
KindWire: TypeAlias = common_pb2.SubjectKind.ValueType

_AGENCY_TO: dict[Agency, AgencyWire] = {
    a: common_pb2.AgencyCode.Value(f"AGENCY_CODE_{a.value.upper()}") for a in Agency
}
_AGENCY_FROM: dict[int, Agency] = {int(v): a for a, v in _AGENCY_TO.items()}
_KIND_TO: dict[SubjectKind, KindWire] = {
    SubjectKind.PERSON: common_pb2.SUBJECT_KIND_PERSON,
    SubjectKind.EMPLOYER: common_pb2.SUBJECT_KIND_EMPLOYER,
}
_KIND_FROM: dict[int, SubjectKind] = {int(v): k for k, v in _KIND_TO.items()}


def agency_to_wire(agency: Agency) -> AgencyWire:
    return _AGENCY_TO[agency]


def agency_from_wire(code: int) -> Agency | None:
    """The agency, or None for UNSPECIFIED or an agency without an adapter package."""
    return _AGENCY_FROM.get(int(code))


def kind_to_wire(kind: SubjectKind) -> KindWire:
    return _KIND_TO[kind]


def kind_from_wire(code: int) -> SubjectKind | None:
    return _KIND_FROM.get(int(code))


def value_to_wire(value: Any, out: common_pb2.Value) -> None:
    if value is None:
        out.null_value = True
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, dt.date):
        out.date_value = value.isoformat()
    elif isinstance(value, list | tuple):
        out.list_value.values.extend(str(v) for v in value)
    else:
        out.string_value = str(value)


def value_from_wire(value: common_pb2.Value) -> Any:
    which = value.WhichOneof("kind")
    if which is None or which == "null_value":
        return None
    if which == "list_value":
        return list(value.list_value.values)
    if which == "date_value":
        return dt.date.fromisoformat(value.date_value)
    return getattr(value, which)


def timestamp_to(when: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when.astimezone(dt.UTC))
    return ts


def timestamp_from(ts: timestamp_pb2.Timestamp) -> dt.datetime:
    return ts.ToDatetime(tzinfo=dt.UTC)
