"""Step 2, agreement: the data-sharing agreement (共享目录 entry) that lets the caller read a
provider dataset today, and which of the requested fields or predicates it covers. Pure."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence

from adapters.agencies import Agency
from gateway.config import Agreement
from gateway.pipeline.errors import InvalidArgument, PermissionDenied, echo_name

__all__ = ["AgreementBook", "allowed_fields", "allowed_predicate"]


class AgreementBook:
    """The configured agreements, indexed by (consumer, provider, dataset)."""

    def __init__(self, agreements: Iterable[Agreement]) -> None:
        self._by_key: dict[tuple[Agency, Agency, str], list[Agreement]] = defaultdict(list)
        self._by_consumer: dict[Agency, list[Agreement]] = defaultdict(list)
        for a in agreements:
            self._by_key[(a.consumer, a.provider, a.dataset)].append(a)
            self._by_consumer[a.consumer].append(a)

    def for_consumer(self, consumer: Agency) -> Sequence[Agreement]:
        return tuple(self._by_consumer.get(consumer, ()))

    def find(self, consumer: Agency, provider: Agency, dataset: str, today: dt.date) -> Agreement:
        """The agreement in force today, or PermissionDenied: NO_AGREEMENT, AGREEMENT_EXPIRED,
        AGREEMENT_NOT_YET_VALID."""
        candidates = self._by_key.get((consumer, provider, dataset))
        what = f"{consumer.value} -> {provider.value}.{dataset}"
        if not candidates:
            raise PermissionDenied("NO_AGREEMENT", f"no data-sharing agreement for {what}")
        for a in candidates:
            if a.valid_from <= today and (a.valid_to is None or today < a.valid_to):
                return a
        if all(a.valid_from > today for a in candidates):
            raise PermissionDenied("AGREEMENT_NOT_YET_VALID", f"the agreement for {what} is not yet in force")
        raise PermissionDenied("AGREEMENT_EXPIRED", f"the agreement for {what} has expired")


def allowed_fields(agreement: Agreement, requested: Sequence[str], offered: Sequence[str]) -> tuple[str, ...]:
    """The fields to read: ``requested`` (empty: every field the agreement shares). A field the
    dataset does not have is INVALID_ARGUMENT (UNKNOWN_FIELD); one it has but the agreement does
    not share is PERMISSION_DENIED (FIELD_NOT_ALLOWED)."""
    where = f"{agreement.provider.value}.{agreement.dataset}"
    if not requested:
        if not agreement.fields:
            raise PermissionDenied("FIELD_NOT_ALLOWED", f"the agreement shares no field of {where}")
        return agreement.fields
    names = tuple(dict.fromkeys(requested))
    for name in names:
        if name not in offered:
            raise InvalidArgument("UNKNOWN_FIELD", f"{where} has no field {echo_name(name)!r}")
    for name in names:
        if name not in agreement.fields:
            raise PermissionDenied(
                "FIELD_NOT_ALLOWED", f"the agreement does not share field {name!r} of {where}", field=name
            )
    return names


def allowed_predicate(agreement: Agreement, predicate: str) -> None:
    if predicate not in agreement.predicates:
        raise PermissionDenied(
            "PREDICATE_NOT_ALLOWED",
            f"the agreement does not allow predicate {predicate!r} over "
            f"{agreement.provider.value}.{agreement.dataset}",
        )
