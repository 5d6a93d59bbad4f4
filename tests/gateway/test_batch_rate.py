"""A BatchVerify message refused by the agreement's rate limit (a message counts as one call)
ends the stream RESOURCE_EXHAUSTED, and the subjects it asked about are audited as refused
(they were not audited at all, while refused Query and Verify calls are)."""

from __future__ import annotations

import pytest

from gateway.client import GatewayError
from tests.gateway.conftest import Gateway, Subjects, entries_of, read_audit


def test_a_rate_limited_batch_message_is_audited(gateway: Gateway, subjects: Subjects) -> None:
    education = gateway.client("education")  # education -> hrss.person_insurance: 50 calls/s
    subject = subjects.insured[3]
    items = [(str(i), subject) for i in range(200)]  # one item per message: 200 calls
    answered = []
    with pytest.raises(GatewayError) as limited:
        for result in education.batch_verify(
            items, "graduate_employment", "hrss", "currently_insured", request_id="batch-rate", chunk=1
        ):
            answered.append(result)
    assert (limited.value.code, limited.value.reason) == ("RESOURCE_EXHAUSTED", "RATE_LIMITED")
    assert 0 < len(answered) < len(items)
    log = gateway.background.worker.audit
    assert log is not None and log.flush_index(timeout=30)
    access = [
        e
        for e in entries_of(read_audit(gateway.home, [gateway.audit_dir]), "batch-rate")
        if e.body.kind == "access"
    ]
    refused = [e for e in access if e.body.reason == "RATE_LIMITED"]
    # the refused message, and the other one in flight if it was refused too
    assert 1 <= len(refused) <= 2 and all(e.body.decision.value == "denied" for e in refused)
    # each answered item, the refused one, and any audited whose answer the abort overtook
    # (two messages are in flight on a stream)
    assert len(answered) + 1 <= len(access) <= len(answered) + 3
