"""Each predicate declares the fields it reads (``PredicateDescriptor.fields``): a Verify needs a
consent to those only, so a predicate that read another field would compare data no consent
covers. These tests run every predicate over sampled records (hypothesis varies every field): a
traced record notes each field read, and two real records that agree on the declared fields
must get the same answer however much they differ elsewhere."""

from __future__ import annotations

import datetime as dt
import types
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.agencies import Agency
from adapters.base import DatasetSpec, PredicateSpec, SqlAdapter, predicate
from adapters.contract import MAX_PARAMETER, CanonicalRecord, DatasetDescriptor, Sensitivity
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
    declared = set(d.fields)
    assert d.fields and declared <= set(model.model_fields), d.fields
    parameter = st.integers(min_value=0, max_value=MAX_PARAMETER)
    params = st.fixed_dictionaries({p: parameter for p in d.parameters})
    read_ever: set[str] = set()

    @settings(max_examples=150, deadline=None)
    @given(values=_values(model), other=_values(model), params=params, as_of=_DATES)
    def reads(values: dict[str, Any], other: dict[str, Any], params: dict[str, int], as_of: dt.date) -> None:
        # traced: every attribute read of the record is noted
        record = _Traced(values)
        answer = spec.test(record, params, as_of)
        assert isinstance(answer, bool)
        read = object.__getattribute__(record, "read")
        assert read <= declared, f"{d.name} reads {sorted(read - declared)} too"
        read_ever.update(read)
        # real records that agree on the declared fields and differ in every other get the same
        # answer (a read the tracing cannot see: str(), equality, model_dump, a method)
        first = model.model_validate(values)
        second = model.model_validate({**other, **{f: values[f] for f in d.fields}})
        assert spec.test(first, params, as_of) is answer
        assert spec.test(second, params, as_of) is answer

    reads()
    if not read_ever:  # a predicate on the presence of a record: its field must carry the fact's weight
        sensitive = {
            f.name for f in cls_descriptor(cls, spec).fields if f.sensitivity is Sensitivity.SENSITIVE
        }
        assert not sensitive or declared & sensitive, f"{d.name} names no sensitive field of {d.dataset}"


def cls_descriptor(cls: type[SqlAdapter], spec: PredicateSpec) -> DatasetDescriptor:
    (dataset,) = [x for x in cls.DATASETS if x.descriptor.name == spec.descriptor.dataset]
    return dataset.descriptor


def test_the_checks_notice_an_undeclared_read() -> None:
    # the checks above are only as good as their probes: a predicate that reads a second field,
    # by attribute or through the whole record, is caught
    graduation = _graduation()
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
    whole = predicate(
        graduation, "whole", "reads the record whole", lambda r, _p, _d: "law" in str(r), reads=("level",)
    )
    values = {
        "level": "bachelor",
        "school_code": "1",
        "school_name": "x",
        "major": "law",
        "graduation_date": dt.date(2020, 7, 1),
    }
    model = graduation.descriptor.model
    assert whole.test(model.model_validate(values), {}, dt.date(2026, 1, 1)) is not whole.test(
        model.model_validate({**values, "major": "art"}), {}, dt.date(2026, 1, 1)
    )


@pytest.mark.parametrize(
    ("reads", "needle"),
    [((), "at least one"), (("level", "level"), "once"), (("level", "salary"), "not fields: salary")],
)
def test_a_predicate_must_name_fields_of_its_dataset(reads: tuple[str, ...], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        predicate(_graduation(), "bad", "bad", lambda _r, _p, _d: True, reads=reads)
