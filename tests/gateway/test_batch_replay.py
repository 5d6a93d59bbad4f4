"""BatchVerify request ids: a re-sent item replays its answer only for the same header and the
same subject; anything else is REQUEST_ID_CONFLICT (a replay must never answer about other data)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from gateway.client import GatewayError
from gateway.devsetup import DevHome
from tests.gateway.conftest import Gateway, Subjects, entries_of, read_audit, start_gateway

PURPOSE, PROVIDER, PREDICATE = "employment_assistance", "civil_affairs", "receives_subsistence_allowance"


def _two_answers(subjects: Subjects) -> tuple[str, str]:
    """A subject civil affairs answers yes for, and one it answers no (or no record) for."""
    answer = {s: subjects.answers[(PROVIDER, PREDICATE, s)] for s in subjects.assisted + subjects.unknown}
    yes = next(s for s, a in answer.items() if a is True)
    other = next(s for s, a in answer.items() if a is not True)
    return yes, other


def test_a_re_sent_item_about_another_subject_conflicts(gateway: Gateway, subjects: Subjects) -> None:
    client = gateway.client("hrss")
    yes, other = _two_answers(subjects)
    rid = f"batch-{uuid.uuid4().hex}"
    first = list(client.batch_verify([("1", yes)], PURPOSE, PROVIDER, PREDICATE, request_id=rid))
    assert [(r.result, r.error_reason) for r in first] == [(True, "")]
    again = list(client.batch_verify([("1", yes)], PURPOSE, PROVIDER, PREDICATE, request_id=rid))
    assert again == first  # the same item: replayed
    swapped = list(client.batch_verify([("1", other)], PURPOSE, PROVIDER, PREDICATE, request_id=rid))
    assert [(r.item_id, r.result, r.error_reason) for r in swapped] == [("1", None, "REQUEST_ID_CONFLICT")]


def test_an_item_id_reused_in_one_stream_for_another_subject_conflicts(
    gateway: Gateway, subjects: Subjects
) -> None:
    client = gateway.client("hrss")
    yes, other = _two_answers(subjects)
    rid = f"batch-{uuid.uuid4().hex}"
    items = [("a", yes), ("b", other), ("a", other)]  # chunk=1: the third reaches a later message
    out = list(client.batch_verify(items, PURPOSE, PROVIDER, PREDICATE, request_id=rid, chunk=1))
    assert [(r.item_id, r.error_reason) for r in out] == [("a", ""), ("b", ""), ("a", "REQUEST_ID_CONFLICT")]


def test_an_item_id_twice_in_one_message_is_answered_and_audited_once(
    dev_home: DevHome, subjects: Subjects, tmp_path: Path
) -> None:
    yes, other = _two_answers(subjects)
    rid = f"batch-{uuid.uuid4().hex}"
    gw = start_gateway(dev_home, tmp_path / "home")
    try:
        client = gw.client("hrss")
        items = [("a", yes), ("b", other), ("a", yes), ("b", yes)]  # one message (default chunk)
        out = list(client.batch_verify(items, PURPOSE, PROVIDER, PREDICATE, request_id=rid))
    finally:
        gw.stop()
    assert [(r.item_id, r.result, r.error_reason) for r in out] == [
        ("a", True, ""),
        ("b", out[1].result, ""),
        ("a", True, ""),  # the same subject again: the first answer
        ("b", None, "REQUEST_ID_CONFLICT"),  # the same id for another subject
    ]
    access = [e for e in entries_of(read_audit(gw.home, [gw.audit_dir]), rid) if e.body.kind == "access"]
    assert len(access) == 2  # a and b, once each


def test_the_same_request_id_with_another_header_is_refused(gateway: Gateway, subjects: Subjects) -> None:
    client = gateway.client("hrss")
    yes, _ = _two_answers(subjects)
    rid = f"batch-{uuid.uuid4().hex}"
    list(client.batch_verify([("1", yes)], PURPOSE, PROVIDER, PREDICATE, request_id=rid))
    with pytest.raises(GatewayError) as exc:
        list(client.batch_verify([("1", yes)], PURPOSE, PROVIDER, "near_subsistence", request_id=rid))
    assert (exc.value.code, exc.value.reason) == ("ALREADY_EXISTS", "REQUEST_ID_CONFLICT")


def test_an_overlong_item_id_is_refused_per_item(gateway: Gateway, subjects: Subjects) -> None:
    client = gateway.client("hrss")
    yes, _ = _two_answers(subjects)
    out = list(client.batch_verify([("x" * 1000, yes), ("ok", yes)], PURPOSE, PROVIDER, PREDICATE))
    assert [(len(r.item_id), r.error_reason) for r in out] == [(128, "INVALID_ITEM_ID"), (2, "")]


@pytest.mark.parametrize(("years", "reason"), [(2026, ""), (5000, ""), (2**31, "INVALID_REQUEST")])
def test_large_predicate_parameters_are_answered_or_refused_never_internal(
    gateway: Gateway, subjects: Subjects, years: int, reason: str
) -> None:
    """years=2026 reached the year 0 inside the provider and gave INTERNAL: within the range it
    means "ever"; past 2^31 - 1 the request is INVALID_ARGUMENT."""
    client = gateway.client("hrss")
    args = (subjects.employers[0], "hiring_subsidy", "market_regulation", "registered_within_years")
    if not reason:
        answer = client.verify(*args, {"years": years})
        assert answer.result is True  # registered within the last 2026 years: every employer
        return
    with pytest.raises(GatewayError) as exc:
        client.verify(*args, {"years": years})
    assert (exc.value.code, exc.value.reason) == ("INVALID_ARGUMENT", reason)
