"""A call whose deadline leaves no time to reach the provider is refused before the consent step:
it spends no use of a use-limited consent (it spent one per attempt, with nothing disclosed)."""

from __future__ import annotations

import contextlib

import pytest

from gateway.client import GatewayError
from tests.gateway.conftest import Gateway, Subjects, client_grant


def test_a_call_without_time_for_the_provider_spends_no_consent_use(
    gateway: Gateway, subjects: Subjects
) -> None:
    client = gateway.client("hrss")
    subject = subjects.graduates[10][0]  # no other test's subject
    consent_id = client_grant(
        client, subject, [("education", "graduation", [])], ["graduate_employment"], uses=1
    )
    asks = [("education", "graduation", ["level"])]
    for _ in range(3):  # 20 ms: less than the time the gateway keeps to audit and answer
        with pytest.raises(GatewayError) as exc:
            client.query(subject, "graduate_employment", asks, timeout=0.02)
        assert exc.value.reason in ("PROVIDER_TIMEOUT", "") and exc.value.code in (
            "UNAVAILABLE",
            "DEADLINE_EXCEEDED",
        )
    answer = client.query(subject, "graduate_employment", asks)  # the one use is still there
    assert answer.results[0].found
    with pytest.raises(GatewayError) as spent:
        client.query(subject, "graduate_employment", asks)
    assert spent.value.reason == "CONSENT_USE_LIMIT_REACHED"
    assert consent_id


def test_a_batch_chunk_without_time_for_the_provider_spends_no_consent_use(
    gateway: Gateway, subjects: Subjects
) -> None:
    client = gateway.client("education")  # education reads hrss's insurance with consent
    subject = subjects.insured[-1]
    client_grant(client, subject, [("hrss", "person_insurance", [])], ["graduate_employment"], uses=1)
    ask = ("graduate_employment", "hrss", "currently_insured")
    for _ in range(3):  # 30 ms: the chunk finds no time left for the provider
        with contextlib.suppress(GatewayError):
            list(client.batch_verify([("1", subject)], *ask, timeout=0.03))
    first = list(client.batch_verify([("1", subject)], *ask))
    assert first[0].error_reason == ""  # the one use was still there
    second = list(client.batch_verify([("1", subject)], *ask))
    assert second[0].error_reason == "CONSENT_USE_LIMIT_REACHED"
