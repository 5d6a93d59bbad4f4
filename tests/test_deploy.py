"""The shipped example configuration stays valid as the configuration model evolves."""

from __future__ import annotations

from pathlib import Path

from gateway.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_example_configuration_is_valid() -> None:
    config = load_config(ROOT / "deploy" / "gateway.example.toml")
    assert config.server.workers == 2
    assert config.audit_dirs() == [Path("/var/lib/dsgw/audit/gw-a"), Path("/var/lib/dsgw/audit/gw-a-w1")]
    assert {a.id for a in config.agreements} >= {"hrss-education-graduation", "hrss-civil-assistance"}
    assert config.consent_store_url().startswith("postgresql://")
