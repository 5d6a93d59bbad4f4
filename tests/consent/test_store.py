"""The consent store and service on both backends: the acceptance scenarios, append-only history,
concurrency, expiry, use limits, opt-outs."""

# ruff: noqa: F811 - the shared fixtures are imported from tests.consent

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gateway.consent import (
    Basis,
    BasisKind,
    ConsentNotActive,
    ConsentNotFound,
    ConsentRecord,
    ConsentStatus,
    DenyReason,
    ScopeRequest,
    StoreError,
)
from gateway.consent.store import ConsentStore
from tests.consent import (  # noqa: F401 - fixtures
    T0,
    Backend,
    Clock,
    backend,
    check_args,
    employer,
    grant_request,
    person,
    service_for,
    store,
)


def _revalidate(record: ConsentRecord) -> ConsentRecord:
    """Run the full model validation on a record read back (history numbered 1..n, one grant
    first, at most one final status)."""
    return ConsentRecord.model_validate(record.model_dump())


def test_grant_then_check_allowed(store: ConsentStore) -> None:
    svc = service_for(store)
    granted = svc.grant(grant_request())
    d = svc.check(**check_args())
    assert d.allowed and d.consent_id == granted.record.consent_id
    assert _revalidate(store.require(granted.record.consent_id)).status is ConsentStatus.GRANTED


def test_revoke_then_denied_on_the_next_call_on_every_replica(backend: Backend) -> None:
    a, b = backend.store(), backend.store()  # two gateway replicas sharing one store
    try:
        clock = Clock()
        svc_a, svc_b = service_for(a, clock), service_for(b, clock)
        cid = svc_a.grant(grant_request()).record.consent_id
        assert svc_b.check(**check_args()).allowed  # replica b has read (and memoised) the consent
        clock.advance(seconds=1)
        svc_a.revoke(cid)
        d = svc_b.check(**check_args())
        assert not d.allowed and d.reason is DenyReason.CONSENT_REVOKED and d.consent_id == cid
        assert not svc_a.check(**check_args()).allowed
    finally:
        a.close()
        b.close()


def test_expiry(store: ConsentStore) -> None:
    clock = Clock()
    events: list[tuple[str, str]] = []
    svc = service_for(store, clock, on_event=lambda r, e: events.append((r.consent_id, e.status.value)))
    short = svc.grant(grant_request(valid_to=T0 + timedelta(days=1))).record
    long = svc.grant(grant_request(person(2))).record
    revoked = svc.grant(grant_request(person(3), valid_to=T0 + timedelta(days=1))).record
    svc.revoke(revoked.consent_id)
    clock.advance(days=2)
    d = svc.check(**check_args())
    assert d.reason is DenyReason.CONSENT_EXPIRED  # by time, before the job ran
    done = svc.expire()
    assert [r.consent_id for r, _ in done] == [short.consent_id]
    _, event = done[0]
    assert event.status is ConsentStatus.EXPIRED and event.seq == 2 and event.at == short.terms.valid_to
    assert svc.expire() == []  # idempotent
    assert _revalidate(store.require(short.consent_id)).status is ConsentStatus.EXPIRED
    assert store.require(long.consent_id).status is ConsentStatus.GRANTED
    assert (short.consent_id, "expired") in events and events.count((short.consent_id, "expired")) == 1
    with pytest.raises(ConsentNotActive):
        svc.revoke(short.consent_id)
    assert svc.check(**check_args()).reason is DenyReason.CONSENT_EXPIRED


def test_revoking_past_valid_to_is_refused(store: ConsentStore) -> None:
    clock = Clock()
    svc = service_for(store, clock)
    cid = svc.grant(grant_request(valid_to=T0 + timedelta(hours=1))).record.consent_id
    clock.advance(hours=2)
    with pytest.raises(ConsentNotActive, match="expired"):
        svc.revoke(cid)


def test_purpose_field_and_sensitive_denials(store: ConsentStore) -> None:
    svc = service_for(store)
    svc.grant(
        grant_request(
            scope=[
                ScopeRequest(
                    "hrss",
                    "employment_status",
                    ("registered_unemployed", "hard_to_employ", "hard_to_employ_category"),
                )
            ]
        )
    )
    assert svc.check(**check_args(purpose="startup_loan")).reason is DenyReason.PURPOSE_MISMATCH
    d = svc.check(**check_args(fields=["flexible_employment"]))
    assert d.reason is DenyReason.FIELD_OUT_OF_SCOPE
    d = svc.check(**check_args(fields=["hard_to_employ"]))
    assert d.reason is DenyReason.SENSITIVE_WITHOUT_SEPARATE_CONSENT
    # a separate consent for the sensitive fields (only sensitive fields: separate by construction)
    sep = svc.grant(
        grant_request(
            scope=[ScopeRequest("hrss", "employment_status", ("hard_to_employ", "hard_to_employ_category"))]
        )
    ).record
    assert sep.terms.separate
    d = svc.check(**check_args(fields=["registered_unemployed", "hard_to_employ"]))
    assert d.allowed and len(d.consent_ids) == 2


def test_sensitive_dataset_needs_separate_consent(store: ConsentStore) -> None:
    svc = service_for(store)
    # a bundled consent over a non-sensitive and a sensitive dataset, not flagged separate
    bundled = svc.grant(
        grant_request(
            consumers=["hrss"],
            scope=[ScopeRequest("civil_affairs", "assistance"), ScopeRequest("tax", "income_withholding")],
            purposes=["employment_assistance"],
        )
    ).record
    assert not bundled.terms.separate
    args = check_args(
        consumer="hrss", provider="civil_affairs", dataset="assistance", purpose="employment_assistance"
    )
    args["fields"] = None
    d = svc.check(**args)
    assert d.reason is DenyReason.SENSITIVE_WITHOUT_SEPARATE_CONSENT
    flagged = svc.grant(
        grant_request(
            consumers=["hrss"],
            scope=[ScopeRequest("civil_affairs", "assistance"), ScopeRequest("tax", "income_withholding")],
            purposes=["employment_assistance"],
            separate=True,
        )
    ).record
    d = svc.check(**args)
    assert d.allowed and d.consent_ids == (flagged.consent_id,)


def test_statutory_duty_agreement(store: ConsentStore) -> None:
    svc = service_for(store)
    d = svc.check(
        **check_args(), basis=Basis(statutory_duty=True, reference="unemployment-insurance-reg-art16")
    )
    assert d.allowed and d.basis is BasisKind.STATUTORY_DUTY
    assert d.reference == "unemployment-insurance-reg-art16" and d.consent_ids == ()


def test_employer_consents(store: ConsentStore) -> None:
    svc = service_for(store)
    code = employer(3)
    svc.grant(
        grant_request(
            code,
            consumers=["hrss"],
            scope=[ScopeRequest("tax", "employer_tax", ("revenue_band",))],
            purposes=["job_stabilisation_refund"],
        )
    )
    d = svc.check(
        subject=code.lower(),
        consumer="hrss",
        provider="tax",
        dataset="employer_tax",
        fields=["revenue_band"],
        purpose="job_stabilisation_refund",
    )
    assert d.allowed


def test_history_is_append_only_in_the_database(backend: Backend, store: ConsentStore) -> None:
    svc = service_for(store)
    cid = svc.grant(grant_request()).record.consent_id
    for statement in (
        "UPDATE {p}consent_event SET status = 'revoked'",
        "DELETE FROM {p}consent_event",
        "UPDATE {p}consent SET valid_to_us = valid_to_us + 1",
        "DELETE FROM {p}consent",
    ):
        prefix = f'"{backend.schema}".' if backend.schema else ""
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(text(statement.format(p=prefix)))
    assert _revalidate(store.require(cid)).status is ConsentStatus.GRANTED


def test_a_failing_audit_hook_stores_nothing(store: ConsentStore) -> None:
    def hook(record: ConsentRecord, event: Any) -> None:
        raise RuntimeError("audit log unavailable")

    svc = service_for(store, on_event=hook)
    with pytest.raises(RuntimeError):
        svc.grant(grant_request())
    assert store.count() == 0
    ok = service_for(store).grant(grant_request()).record
    with pytest.raises(RuntimeError):
        svc.revoke(ok.consent_id)
    assert store.require(ok.consent_id).status is ConsentStatus.GRANTED


def _run_threads(n: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def wrap(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_concurrent_revocations_one_wins(backend: Backend) -> None:
    stores = [backend.store() for _ in range(4)]
    try:
        cid = service_for(stores[0]).grant(grant_request()).record.consent_id
        barrier = threading.Barrier(8)
        outcome: list[str] = []

        def revoke(i: int) -> None:
            svc = service_for(stores[i % 4], Clock(T0 + timedelta(seconds=1)))
            barrier.wait()
            try:
                svc.revoke(cid)
                outcome.append("revoked")
            except ConsentNotActive:
                outcome.append("not_active")

        _run_threads(8, revoke)
        assert sorted(outcome) == ["not_active"] * 7 + ["revoked"]
        record = _revalidate(stores[1].require(cid))
        assert [e.status for e in record.history] == [ConsentStatus.GRANTED, ConsentStatus.REVOKED]
    finally:
        for s in stores:
            s.close()


def test_concurrent_grant_revoke_and_expire_keep_a_consistent_history(backend: Backend) -> None:
    stores = [backend.store() for _ in range(3)]
    try:
        rounds = 6
        ids = [f"race-{i}" for i in range(rounds)]
        valid_to = T0 + timedelta(minutes=10)
        revoked_ok: dict[str, int] = dict.fromkeys(ids, 0)
        expired_ok: dict[str, int] = dict.fromkeys(ids, 0)
        lock = threading.Lock()

        def granter(_: int) -> None:
            svc = service_for(stores[0], Clock(T0))
            for cid in ids:
                svc.grant(grant_request(person(100), consent_id=cid, valid_to=valid_to))

        def revoker(i: int) -> None:
            svc = service_for(stores[1 + i % 2], Clock(T0 + timedelta(minutes=1)))
            for cid in ids:
                while True:
                    try:
                        svc.revoke(cid)
                        with lock:
                            revoked_ok[cid] += 1
                        break
                    except ConsentNotFound:
                        continue  # not granted yet: try again
                    except ConsentNotActive:
                        break

        def expirer(i: int) -> None:
            svc = service_for(stores[i % 3], Clock(valid_to + timedelta(minutes=1)))
            for _ in range(rounds * 3):
                for record, _event in svc.expire():
                    with lock:
                        expired_ok[record.consent_id] += 1

        def run(i: int) -> None:
            (granter if i == 0 else revoker if i <= 3 else expirer)(i)

        _run_threads(6, run)
        for cid in ids:
            record = _revalidate(stores[0].require(cid))
            statuses = [e.status for e in record.history]
            assert statuses[0] is ConsentStatus.GRANTED and len(statuses) == 2
            assert revoked_ok[cid] + expired_ok[cid] == 1
            final = ConsentStatus.REVOKED if revoked_ok[cid] else ConsentStatus.EXPIRED
            assert statuses[1] is final
        assert stores[0].count() == rounds
    finally:
        for s in stores:
            s.close()


def test_concurrent_grants_and_revocations_for_one_subject(backend: Backend) -> None:
    stores = [backend.store() for _ in range(2)]
    try:
        subject = person(55)

        def work(i: int) -> None:
            svc = service_for(stores[i % 2], Clock(T0 + timedelta(seconds=i)))
            for k in range(5):
                cid = svc.grant(grant_request(subject, consent_id=f"s{i}-{k}")).record.consent_id
                if k % 2 == 0:
                    svc.revoke(cid)

        _run_threads(4, work)
        records = stores[0].records_for("person", subject)
        assert len(records) == 20
        revoked = [r for r in map(_revalidate, records) if r.status is ConsentStatus.REVOKED]
        assert len(revoked) == 12
        assert service_for(stores[1], Clock(T0 + timedelta(minutes=1))).check(**check_args(subject)).allowed
    finally:
        for s in stores:
            s.close()


def test_use_limit_is_exact_under_concurrency(backend: Backend) -> None:
    stores = [backend.store() for _ in range(2)]
    try:
        service_for(stores[0]).grant(grant_request(use_limit=3))
        barrier = threading.Barrier(8)
        allowed: list[bool] = []

        def use(i: int) -> None:
            svc = service_for(stores[i % 2], Clock(T0 + timedelta(seconds=1)))
            barrier.wait()
            allowed.append(svc.check(**check_args(), consume=True).allowed)

        _run_threads(8, use)
        assert allowed.count(True) == 3
        d = service_for(stores[0], Clock(T0 + timedelta(seconds=2))).check(**check_args())
        assert d.reason is DenyReason.USE_LIMIT_REACHED
        assert stores[0].records_for("person", person())[0].uses == 3
    finally:
        for s in stores:
            s.close()


def test_check_without_consume_counts_nothing(store: ConsentStore) -> None:
    svc = service_for(store)
    svc.grant(grant_request(use_limit=1))
    for _ in range(3):
        assert svc.check(**check_args()).allowed
    assert svc.check(**check_args(), consume=True).allowed
    assert svc.check(**check_args(), consume=True).reason is DenyReason.USE_LIMIT_REACHED


def test_list_filters(store: ConsentStore) -> None:
    clock = Clock()
    svc = service_for(store, clock)
    a = svc.grant(grant_request(person(1))).record
    clock.advance(seconds=1)
    b = svc.grant(grant_request(person(2), valid_to=T0 + timedelta(hours=1))).record
    clock.advance(seconds=1)
    c = svc.grant(grant_request(person(1))).record
    svc.revoke(c.consent_id)
    clock.advance(hours=2)
    assert [r.consent_id for r in svc.list()] == [c.consent_id, b.consent_id, a.consent_id]
    assert [r.consent_id for r in svc.list(subject=person(1))] == [c.consent_id, a.consent_id]
    assert [r.consent_id for r in svc.list(status="granted")] == [a.consent_id]
    assert [r.consent_id for r in svc.list(status="revoked")] == [c.consent_id]
    assert [r.consent_id for r in svc.list(status="expired")] == [b.consent_id]
    assert [r.consent_id for r in svc.list(limit=1, offset=1)] == [b.consent_id]


def test_opt_outs(store: ConsentStore) -> None:
    clock = Clock()
    svc = service_for(store, clock)
    pid = person(9)
    svc.opt_out(pid, channel="sms")
    svc.opt_out(pid, category="training")
    clock.advance(minutes=1)
    svc.opt_out(pid, channel="sms", refused=False)
    prefs = svc.preferences(pid)
    assert prefs.refused_channels == frozenset() and prefs.refused_categories == {"training"}
    subject = svc.check_request_for(**check_args(pid)).subject
    assert svc.may_contact(subject, channel="sms", category="employment_subsidy")
    assert not svc.may_contact(subject, channel="app", category="training")
    history = svc.opt_outs(pid)
    assert [(o.value, o.seq, o.refused) for o in history] == [
        ("training", 1, True),
        ("sms", 1, True),
        ("sms", 2, False),
    ]
    everyone = store.all_preferences()
    assert everyone[(subject.kind, subject.id)].refused_categories == {"training"}
    assert svc.preferences(person(10)).allows("sms", "training")


def test_records_read_back_equal_validated_ones(backend: Backend) -> None:
    """The hot path builds records from stored rows without re-validating them: they must be the
    very models validation gives (both with and without the memo)."""
    writer = backend.store()
    try:
        clock = Clock()
        svc = service_for(writer, clock)
        pid = person(77)
        a = svc.grant(
            grant_request(
                pid,
                consumers=["education", "tax"],
                scope=[ScopeRequest("hrss", "employment_status"), ScopeRequest("tax", "income_withholding")],
                purposes=["startup_loan", "employment_subsidy_review"],
                use_limit=4,
                separate=True,
                channel="paper",
            )
        ).record
        clock.advance(minutes=5)
        svc.revoke(a.consent_id, channel="web", evidence_ref="ticket-7")
        svc.grant(grant_request(pid))
        for cache in (0, 100):
            reader = backend.store(record_cache=cache)
            try:
                for _ in range(2):
                    records = reader.records_for("person", pid)
                    assert len(records) == 2
                    for r in records:
                        validated = ConsentRecord.model_validate(r.model_dump())
                        assert r == validated
                        assert r.model_dump_json() == validated.model_dump_json()
                        assert r.model_fields_set == validated.model_fields_set
                        assert r.terms.scope.fields_for("hrss", "employment_status") is not None
                    assert reader.records_for("person", pid, dataset=("tax", "income_withholding")) == [
                        r for r in records if r.consent_id == a.consent_id
                    ]
            finally:
                reader.close()
    finally:
        writer.close()


def test_damaged_stored_terms_fail_closed(backend: Backend, store: ConsentStore) -> None:
    svc = service_for(store)
    good = svc.grant(grant_request()).record
    prefix = f'"{backend.schema}".' if backend.schema else ""
    with store.engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO {prefix}consent (consent_id, subject_kind, subject_id, valid_from_us, "
                "valid_to_us, use_limit, granted_us, terms, datasets) SELECT 'forged', subject_kind, "
                "subject_id, valid_from_us, valid_to_us, use_limit, granted_us, terms, datasets "
                f"FROM {prefix}consent WHERE consent_id = :cid"
            ),
            {"cid": good.consent_id},
        )
        conn.execute(
            text(
                f"INSERT INTO {prefix}consent_event (consent_id, seq, status, at_us, recorded_us, channel, "
                "evidence_ref, note) VALUES ('forged', 1, 'granted', 0, 0, NULL, '', '')"
            )
        )
    with pytest.raises(StoreError, match="damaged"):
        store.records_for("person", person())


def test_memo_admits_a_record_on_its_second_sighting() -> None:
    """The memo keeps only what comes back (a one-off record would only churn it)."""
    from gateway.consent.store import _Lru

    lru = _Lru(8)
    sentinel: Any = object()
    lru.put("a", sentinel)
    assert lru.get("a") is None  # seen once: only the key is remembered
    lru.put("a", sentinel)
    assert lru.get("a") is sentinel
    for n in range(20):  # many new keys push "b"'s sighting out of the window
        lru.put(f"k{n}", sentinel)
    lru.put("b", sentinel)
    for n in range(20, 40):
        lru.put(f"k{n}", sentinel)
    lru.put("b", sentinel)
    assert lru.get("b") is None
    assert len(lru._data) <= 8
    assert _Lru(0).get("a") is None


def test_stored_terms_json_is_parsed_strictly() -> None:
    good = '{"consent_id": "c1"}'
    for damaged in (good + " x", good + "}", "[1, 2]", "", " ", "nul"):
        with pytest.raises(StoreError, match="damaged"):
            ConsentStore._parse_terms(damaged, "c1", "s")
