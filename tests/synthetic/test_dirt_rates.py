"""Dirt appears at the configured rates (within sampling error), counted as docs/synthetic-data.md
defines each rate."""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from adapters.synthetic.dirt import DirtRates
from adapters.synthetic.generate import GenerateConfig, generate
from adapters.synthetic.names import traditional_variant
from gateway.errors import UsageError

RATES: dict[str, dict[str, float]] = {
    "hrss": {"legacy15": 0.2, "lower_x": 0.4, "spaces": 0.1, "fullwidth": 0.1, "transposed": 0.05,
             "missing_id": 0.05, "name_spaces": 0.05, "traditional": 0.1, "homophone": 0.05,
             "stale_address": 0.2, "duplicate": 0.05, "code_lower": 0.1, "code_spaces": 0.1,
             "code_fullwidth": 0.1},
    "tax": {"lower_x": 0.3, "spaces": 0.1, "fullwidth": 0.05, "transposed": 0.03, "missing_id": 0.03,
            "name_spaces": 0.05, "homophone": 0.05},
}  # fmt: skip


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dirty")
    generate(
        GenerateConfig(persons=20000, employers=2000, seed=3, out=out, dirt=DirtRates.with_overrides(RATES))
    )
    return out


def _near(hits: int, total: int, rate: float) -> None:
    assert total > 100, "too few eligible records to measure"
    expected = rate * total
    slack = 5 * math.sqrt(total * rate * (1 - rate)) + 2
    assert abs(hits - expected) <= slack, f"{hits} of {total}, expected about {expected:.0f}"


def _links(city: Path, agency: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(city / "truth.sqlite")
    conn.row_factory = sqlite3.Row
    return [dict(r) for r in conn.execute("SELECT * FROM record_link WHERE agency = ?", (agency,))]


@pytest.mark.parametrize("agency", sorted(RATES))
def test_rates_near_configured(city: Path, agency: str) -> None:
    rates = RATES[agency]
    links = _links(city, agency)
    persons = [x for x in links if x["subject_kind"] == "person"]
    employers = [x for x in links if x["subject_kind"] == "employer"]
    dirt = [set(filter(None, x["dirt"].split(","))) for x in persons]
    # identity-breaking: per person
    per_person: dict[str, set[str]] = defaultdict(set)
    for x, d in zip(persons, dirt, strict=True):
        per_person[x["subject_id"]] |= d & {"transposed", "missing_id"}
    for kind in ("transposed", "missing_id"):
        _near(sum(kind in d for d in per_person.values()), len(per_person), rates[kind])
    ok = [(x, d) for x, d in zip(persons, dirt, strict=True) if x["id_recoverable"]]
    if "legacy15" in rates:
        eligible = [d for x, d in ok if x["subject_id"][6:8] == "19"]
        _near(sum("legacy15" in d for d in eligible), len(eligible), rates["legacy15"])
    eligible = [d for x, d in ok if x["subject_id"].endswith("X")]
    _near(sum("lower_x" in d for d in eligible), len(eligible), rates["lower_x"])
    for kind in ("spaces", "fullwidth"):
        _near(sum(kind in d for _, d in ok), len(ok), rates[kind])
    for kind in ("name_spaces", "homophone"):
        _near(sum(kind in d for d in dirt), len(dirt), rates[kind])
    if "traditional" in rates:
        names = [d for x, d in zip(persons, dirt, strict=True) if traditional_variant(_true_name(city, x))]
        _near(sum("traditional" in d for d in names), len(names), rates["traditional"])
    if agency == "hrss":
        ac01 = [d for x, d in zip(persons, dirt, strict=True) if x["table_name"] == "ac01"]
        _near(sum("stale_address" in d for d in ac01), len(ac01), rates["stale_address"])
        unbroken = len({x["subject_id"] for x, _ in ok if x["table_name"] == "ac01"})
        _near(sum("duplicate" in d for d in ac01), unbroken, rates["duplicate"])
        codes = [set(filter(None, x["dirt"].split(","))) for x in employers]
        _near(sum("fullwidth" in d for d in codes), len(codes), rates["code_fullwidth"])
        _near(sum("spaces" in d for d in codes), len(codes), rates["code_spaces"])


_NAMES: dict[str, str] = {}


def _true_name(city: Path, link: dict[str, Any]) -> str:
    if not _NAMES:
        conn = sqlite3.connect(city / "truth.sqlite")
        _NAMES.update(conn.execute("SELECT person_id, name FROM person").fetchall())
    return _NAMES[link["subject_id"]]


def test_zero_rates_store_everything_exactly(tmp_path: Path) -> None:
    generate(GenerateConfig(persons=1500, employers=150, seed=1, out=tmp_path, dirt=DirtRates.none()))
    conn = sqlite3.connect(tmp_path / "truth.sqlite")
    assert conn.execute(
        "SELECT COUNT(*) FROM record_link WHERE dirt != '' OR stored_id != subject_id"
    ).fetchone() == (0,)


@pytest.mark.parametrize(
    "overrides",
    [
        {"hrss": {"nonsense": 0.1}},
        {"police": {"legacy15": 0.1}},
        {"tax": {"legacy15": 1.5}},
        {"tax": {"transposed": 0.7, "missing_id": 0.7}},
        {"education": {"duplicate": 0.1}},
        {"hrss": "high"},
        ["hrss"],
    ],
)
def test_bad_overrides_are_usage_errors(overrides: Any) -> None:
    with pytest.raises(UsageError):
        DirtRates.with_overrides(overrides)


def test_overrides_keep_other_defaults() -> None:
    rates = DirtRates.with_overrides({"hrss": {"legacy15": 0.5}})
    assert rates.hrss.legacy15 == 0.5
    assert rates.hrss.lower_x == DirtRates().hrss.lower_x
    assert rates.tax == DirtRates().tax
