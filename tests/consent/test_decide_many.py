"""ConsentService.decide_many: the decisions of several calls with one store read per subject kind
and dataset, each what decide_all gives the call alone (on SQLite and PostgreSQL)."""

# ruff: noqa: F811 - the shared fixtures are imported from tests.consent

from __future__ import annotations

from typing import Any

import pytest

from gateway.consent.decision import CONSENT_REQUIRED, Basis, BasisKind, CheckRequest
from gateway.consent.errors import StoreError
from gateway.consent.service import ConsentService
from gateway.consent.store import ConsentStore
from tests.consent import (  # noqa: F401 - fixtures
    Clock,
    backend,
    check_args,
    grant_request,
    person,
    service_for,
    store,
)

DUTY = Basis(BasisKind.STATUTORY_DUTY, "Employment Promotion Law art. 11")


def _call(svc: ConsentService, subject: str, **kw: Any) -> list[tuple[CheckRequest, Basis]]:
    basis = kw.pop("basis", CONSENT_REQUIRED)
    return [(svc.check_request_for(**check_args(subject, **kw)), basis)]


def _view(outcome: Any) -> Any:
    assert outcome is not None
    if isinstance(outcome, StoreError):
        return ("StoreError", str(outcome))
    return [(d.allowed, d.reason, d.basis, d.consent_ids) for d in outcome]


def test_decide_many_gives_each_call_what_decide_all_gives_it(store: ConsentStore) -> None:
    clock = Clock()
    svc = service_for(store, clock)
    granted, revoked, limited, absent = person(21), person(22), person(23), person(24)
    svc.grant(grant_request(granted))
    svc.grant(grant_request(granted, purposes=["employment_assistance"]))  # a second consent
    rid = svc.grant(grant_request(revoked)).record.consent_id
    clock.advance(minutes=1)
    svc.revoke(rid, channel="counter", evidence_ref="rev-1")
    svc.grant(grant_request(limited, use_limit=1))
    calls = [
        _call(svc, granted),
        _call(svc, revoked),
        _call(svc, absent),
        _call(svc, granted, fields=["unemployed_since"]),
        _call(svc, granted, purpose="employment_assistance"),
        _call(svc, absent, basis=DUTY),  # no store read
        _call(svc, granted),  # the same call twice
        _call(svc, limited),
        _call(svc, limited),  # its one use goes to one of the two only
    ]
    many = svc.decide_many(calls, consume=True)
    assert [_view(o) for o in many[:7]] == [_view(svc.decide_all(c)) for c in calls[:7]]
    spent = [o for o in many[7:] if o is not None and not isinstance(o, StoreError)]
    assert sorted(d[0].allowed for d in spent) == [False, True]
    assert {d[0].reason.value for d in spent if not d[0].allowed} == {"USE_LIMIT_REACHED"}
    assert svc.decide_many([], consume=True) == []


def test_a_failed_read_fails_only_the_calls_that_fail_alone(
    store: ConsentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = service_for(store)
    good, damaged = person(31), person(32)
    svc.grant(grant_request(good))
    svc.grant(grant_request(damaged))
    real = store.records_for

    def many_down(*args: Any, **kwargs: Any) -> Any:  # the batch read fails (say, damaged terms)
        raise StoreError("consent x: stored terms are damaged")

    def one_down(kind: Any, subject_id: str, **kwargs: Any) -> Any:  # only one subject's does alone
        if subject_id == damaged:
            raise StoreError("consent x: stored terms are damaged")
        return real(kind, subject_id, **kwargs)

    monkeypatch.setattr(store, "records_for_many", many_down)
    monkeypatch.setattr(store, "records_for", one_down)
    out = svc.decide_many([_call(svc, good), _call(svc, damaged), _call(svc, good, basis=DUTY)], consume=True)
    assert not isinstance(out[0], StoreError) and out[0][0].allowed
    assert isinstance(out[1], StoreError)
    assert not isinstance(out[2], StoreError) and out[2][0].basis is BasisKind.STATUTORY_DUTY

    monkeypatch.setattr(store, "records_for", many_down)  # the store is down: every call fails
    out = svc.decide_many([_call(svc, good), _call(svc, damaged)], consume=True)
    assert all(isinstance(o, StoreError) for o in out)


def test_records_for_many_matches_records_for(store: ConsentStore) -> None:
    svc = service_for(store)
    subjects = [person(40 + n) for n in range(12)]
    for n, s in enumerate(subjects):
        for _ in range(n % 3):  # 0, 1 or 2 consents each
            svc.grant(grant_request(s))
    asked = [*subjects, subjects[0], person(99)]  # a repeat, and one nobody holds anything about
    many = store.records_for_many("person", asked, dataset=("hrss", "employment_status"))
    assert set(many) == set(asked)
    for s in asked:
        alone = store.records_for("person", s, dataset=("hrss", "employment_status"))
        assert [r.consent_id for r in many[s]] == [r.consent_id for r in alone]
    assert store.records_for_many("person", subjects, dataset=("tax", "income_withholding")) == {
        s: [] for s in subjects
    }


def test_calls_decided_after_another_spends_a_use_see_the_store_and_clock_of_then(
    store: ConsentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call spending a limited consent's use goes alone (a write); the others are decided
    again on a fresh read at a fresh time: a revocation made meanwhile counts, as it would for a
    call decided then."""
    clock = Clock()
    svc = service_for(store, clock)
    limited, plain = person(51), person(52)
    svc.grant(grant_request(limited, use_limit=3))
    plain_id = svc.grant(grant_request(plain)).record.consent_id
    real = svc.decide_all

    def spend_then_revoke(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        clock.advance(minutes=1)
        svc.revoke(plain_id, channel="counter", evidence_ref="rev-2")
        return out

    monkeypatch.setattr(svc, "decide_all", spend_then_revoke)
    out = svc.decide_many([_call(svc, limited), _call(svc, plain)], consume=True)
    assert not isinstance(out[0], StoreError) and out[0] is not None and out[0][0].allowed
    assert not isinstance(out[1], StoreError) and out[1] is not None
    assert out[1][0].reason is not None and out[1][0].reason.value == "CONSENT_REVOKED"


def test_a_call_that_may_not_proceed_spends_nothing(store: ConsentStore) -> None:
    svc = service_for(store)
    limited, plain = person(61), person(62)
    cid = svc.grant(grant_request(limited, use_limit=1)).record.consent_id
    svc.grant(grant_request(plain))
    out = svc.decide_many([_call(svc, limited), _call(svc, plain)], consume=True, proceed=lambda i: i != 0)
    assert out[0] is None
    assert not isinstance(out[1], StoreError) and out[1] is not None and out[1][0].allowed
    assert store.get(cid).uses == 0  # type: ignore[union-attr]
