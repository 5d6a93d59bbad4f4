"""BatchVerify items answered as each would be alone: a subject named by two items gets the same
answer twice, and a subject whose own records the provider cannot map fails alone."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.agencies import Agency
from adapters.contract import ProviderUnavailable
from tests.gateway.conftest import Gateway, Subjects, entries_of, read_audit

PURPOSE, PROVIDER, PREDICATE = "employment_assistance", "civil_affairs", "receives_subsistence_allowance"


def _answers(subjects: Subjects) -> dict[str, bool | None]:
    return {s: subjects.answers[(PROVIDER, PREDICATE, s)] for s in subjects.assisted + subjects.unknown}


def test_a_subject_named_by_two_items_is_answered_twice(gateway: Gateway, subjects: Subjects) -> None:
    """The second item used to be answered as if the provider had no record (NO here)."""
    yes = next(s for s, a in _answers(subjects).items() if a is True)
    client = gateway.client("hrss")
    results = list(client.batch_verify([("a", yes), ("b", yes), ("c", yes)], PURPOSE, PROVIDER, PREDICATE))
    assert [(r.item_id, r.result, r.error_reason) for r in results] == [
        ("a", True, ""),
        ("b", True, ""),
        ("c", True, ""),
    ]


def test_a_subject_the_provider_cannot_map_fails_alone(
    gateway: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = _answers(subjects)
    chosen = list(answers)[:3]
    x = gateway.background.worker.exchange
    assert x is not None
    adapter = x.adapters[Agency.CIVIL_AFFAIRS]
    real = adapter.evaluate_many

    def one_malformed(predicate: str, subjects_: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(predicate, subjects_, *args, **kwargs)
        return [
            ProviderUnavailable(
                Agency.CIVIL_AFFAIRS, "malformed native data (household_category: unknown code)"
            )
            if s.id == chosen[1]
            else a
            for s, a in zip(subjects_, out, strict=True)
        ]

    monkeypatch.setattr(adapter, "evaluate_many", one_malformed)
    rid = "batch-malformed-1"
    client = gateway.client("hrss")
    results = list(
        client.batch_verify(
            [(str(i), s) for i, s in enumerate(chosen)], PURPOSE, PROVIDER, PREDICATE, request_id=rid
        )
    )
    assert results[1].error_reason == "PROVIDER_UNAVAILABLE"
    for i in (0, 2):
        assert results[i].error_reason == "" and results[i].result == (answers[chosen[i]] is True)
    log = gateway.background.worker.audit
    assert log is not None and log.flush_index(timeout=30)
    entries = entries_of(read_audit(gateway.home, [gateway.audit_dir]), rid)
    failed = [e for e in entries if e.body.outcome.kind.value == "failed"]
    assert len(entries) == 3 and len(failed) == 1
    assert failed[0].subject is not None and failed[0].subject.id == chosen[1]
    assert failed[0].body.reason == "PROVIDER_UNAVAILABLE"
