"""The purpose catalogue: the default, files in JSON and TOML, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.purposes import DEFAULT_CATALOGUE, CatalogueError, UnknownPurpose, load_catalogue

SEED = {
    "employment_subsidy_review": "就业补贴审核",
    "social_insurance_subsidy": "社会保险补贴",
    "startup_loan": "创业担保贷款",
    "training_subsidy": "职业培训补贴",
    "unemployment_benefit": "失业保险待遇",
    "employment_assistance": "就业援助",
    "graduate_employment": "高校毕业生就业服务",
    "proactive_policy_push": "政策主动推送",
}


def test_default_catalogue_has_the_seed_purposes() -> None:
    for code, name in SEED.items():
        purpose = DEFAULT_CATALOGUE.require(code)
        assert purpose.name_zh == name and purpose.name_en and purpose.description
    assert "nope" not in DEFAULT_CATALOGUE
    with pytest.raises(UnknownPurpose) as info:
        DEFAULT_CATALOGUE.require("nope")
    assert info.value.reason == "UNKNOWN_PURPOSE"
    for p in DEFAULT_CATALOGUE:
        assert p.category is None or DEFAULT_CATALOGUE.category(p.category) is not None


def test_round_trip_json_and_toml(tmp_path: Path) -> None:
    path = tmp_path / "purposes.json"
    path.write_text(json.dumps(DEFAULT_CATALOGUE.to_json(), ensure_ascii=False), encoding="utf-8")
    assert load_catalogue(path) == DEFAULT_CATALOGUE
    toml = tmp_path / "purposes.toml"
    toml.write_text(
        """
version = "local-1"

[[categories]]
code = "training"
name_zh = "职业培训"
name_en = "Vocational training"

[[purposes]]
code = "training_subsidy"
name_zh = "职业培训补贴"
name_en = "Vocational training subsidy"
description = "Eligibility for a training subsidy."
category = "training"
""",
        encoding="utf-8",
    )
    cat = load_catalogue(toml)
    assert cat.version == "local-1" and cat.codes() == ("training_subsidy",)
    assert cat.category_codes() == ("training",)


@pytest.mark.parametrize(
    "content",
    [
        "{",
        "[]",
        '{"version": "1", "purposes": []}',
        '{"version": "1", "purposes": [{"code": "Bad", "name_zh": "x", "name_en": "x", "description": "x"}]}',
        '{"version": "1", "purposes": [{"code": "a", "name_zh": "x", "name_en": "x", "description": "x"},'
        ' {"code": "a", "name_zh": "x", "name_en": "x", "description": "x"}]}',
        '{"version": "1", "purposes": [{"code": "a", "name_zh": "x", "name_en": "x", "description": "x",'
        ' "category": "missing"}]}',
        '{"version": "1", "extra": 1, "purposes": [{"code": "a", "name_zh": "x", "name_en": "x",'
        ' "description": "x"}]}',
    ],
)
def test_bad_catalogues_are_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(CatalogueError):
        load_catalogue(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="cannot read"):
        load_catalogue(tmp_path / "none.json")
