"""Each predicate declares the fields it reads (``PredicateDescriptor.fields``): a Verify needs a
consent to those only, so a predicate that read another field would compare data no consent
covers. These tests run every predicate over records it sees field by field and fail if it reads
an undeclared one, on any path (hypothesis varies every field)."""

from __future__ import annotations

import datetime as dt
import types
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.agencies import Agency
from adapters.base import DatasetSpec, PredicateSpec, SqlAdapter, predicate
from adapters.contract import MAX_PARAMETER, CanonicalRecord
from adapters.registry import ADAPTER_CLASSES

_DATES = st.dates(min_value=dt.date(1950, 1, 1), max_value=dt.date(2040, 12, 31))


def _strategy(annotation: Any) -> st.SearchStrategy[Any]:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (Union, types.UnionType):
        return st.one_of(*(st.none() if a is type(None) else _strategy(a) for a in args))
    if origin is list:
        return st.lists(_strategy(args[0]), max_size=3)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(min_value=0, max_value=MAX_PARAMETER)
    if annotation is dt.date:
        return _DATES
    if annotation is str:
        return st.text(max_size=8)
    raise AssertionError(f"no strategy for {annotation!r}: extend _strategy")


def _values(model: type[CanonicalRecord]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({name: _strategy(f.annotation) for name, f in model.model_fields.items()})


class _Traced:
    """A record that notes every field read of it."""

    def __init__(self, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if name not in values:
            raise AttributeError(name)
        object.__getattribute__(self, "read").add(name)
        return values[name]


PREDICATES = [(agency, cls, spec) for agency, cls in ADAPTER_CLASSES.items() for spec in cls.PREDICATES]


def _graduation() -> DatasetSpec[Any]:
    (spec,) = [d for d in ADAPTER_CLASSES[Agency.EDUCATION].DATASETS if d.descriptor.name == "graduation"]
    return spec


def _model(cls: type[SqlAdapter], spec: PredicateSpec) -> type[CanonicalRecord]:
    (dataset,) = [d for d in cls.DATASETS if d.descriptor.name == spec.descriptor.dataset]
    return dataset.descriptor.model


@pytest.mark.parametrize(
    ("agency", "cls", "spec"), PREDICATES, ids=[f"{a.value}.{s.descriptor.name}" for a, _, s in PREDICATES]
)
def test_a_predicate_reads_only_the_fields_it_declares(
    agency: Agency, cls: type[SqlAdapter], spec: PredicateSpec
) -> None:
    d = spec.descriptor
    model = _model(cls, spec)
    assert d.fields and set(d.fields) <= set(model.model_fields), d.fields
    params = st.fixed_dictionaries(
        {p: st.integers(min_value=0, max_value=MAX_PARAMETER) for p in d.parameters}
    )

    @settings(max_examples=150, deadline=None)
    @given(values=_values(model), params=params, as_of=_DATES)
    def reads(values: dict[str, Any], params: dict[str, int], as_of: dt.date) -> None:
        record = _Traced(values)
        assert isinstance(spec.test(record, params, as_of), bool)
        read = object.__getattribute__(record, "read")
        assert read <= set(d.fields), f"{d.name} reads {sorted(read - set(d.fields))} too"

    reads()


def test_the_tracing_notices_an_undeclared_read() -> None:
    # the check above is only as good as the tracing: a predicate that reads a second field is caught
    (graduation,) = [
        d for d in ADAPTER_CLASSES[Agency.EDUCATION].DATASETS if d.descriptor.name == "graduation"
    ]
    sneaky = predicate(
        graduation,
        "sneaky",
        "reads major as well",
        lambda r, _p, _d: r.level == "bachelor" and r.major == "law",
        reads=("level",),
    )
    record = _Traced({"level": "bachelor", "major": "law"})
    sneaky.test(record, {}, dt.date(2026, 1, 1))
    assert object.__getattribute__(record, "read") - set(sneaky.descriptor.fields) == {"major"}


@pytest.mark.parametrize(
    ("reads", "needle"),
    [((), "at least one"), (("level", "level"), "once"), (("level", "salary"), "not fields: salary")],
)
def test_a_predicate_must_name_fields_of_its_dataset(reads: tuple[str, ...], needle: str) -> None:
    (graduation,) = [
        d for d in ADAPTER_CLASSES[Agency.EDUCATION].DATASETS if d.descriptor.name == "graduation"
    ]
    with pytest.raises(ValueError, match=needle):
        predicate(graduation, "bad", "bad", lambda _r, _p, _d: True, reads=reads)
