"""The gateway configuration (gateway.config): the development configuration loads, the
environment overrides the file, and every bad configuration is a one-line ConfigError naming the
key."""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from adapters.agencies import Agency
from gateway.config import ConfigError, ServerSection, config_from, load_config
from gateway.devsetup import DEFAULT_AGREEMENTS, write_config
from gateway.errors import UsageError


@pytest.fixture(autouse=True)
def _no_dsgw_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("DSGW_"):
            monkeypatch.delenv(name)


def agreements(**by_id: dict[str, Any]) -> list[dict[str, Any]]:
    """DEFAULT_AGREEMENTS with some agreements' keys changed (a value None removes the key)."""
    out = []
    for a in DEFAULT_AGREEMENTS:
        merged = {**copy.deepcopy(dict(a)), **by_id.get(str(a["id"]), {})}
        out.append({k: v for k, v in merged.items() if v is not None})
    return out


def write(tmp_path: Path, **kwargs: Any) -> Path:
    return write_config(tmp_path / "gateway.toml", home=tmp_path / "home", data=tmp_path / "data", **kwargs)


def as_data(tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    return tomllib.loads(write(tmp_path, **kwargs).read_text(encoding="utf-8"))


def write_json(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(data, default=str), encoding="utf-8")
    return path


def test_development_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path))
    assert config.node == "gw1"
    assert config.server.listen == "127.0.0.1:0"
    assert [a.id for a in config.agreements] == [a["id"] for a in DEFAULT_AGREEMENTS]
    assert set(config.providers) == set(Agency)
    graduation = config.agreements[0]
    assert graduation.mask == {"school_name": "first2"}
    assert config.audit_dir(0) == tmp_path / "home" / "audit" / "gw1"
    assert config.audit_dir(2) == tmp_path / "home" / "audit" / "gw1-w2"
    assert config.tls_file("crl") == tmp_path / "home" / "pki" / "crl.pem"


def test_json_config_loads_too(tmp_path: Path) -> None:
    config = load_config(write_json(tmp_path, as_data(tmp_path)))
    assert len(config.agreements) == len(DEFAULT_AGREEMENTS)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, server={"workers": 2})
    monkeypatch.setenv("DSGW_SERVER__LISTEN", "0.0.0.0:7443")
    monkeypatch.setenv("DSGW_NODE", "gw2")
    config = load_config(path)
    assert config.server.listen == "0.0.0.0:7443"
    assert config.node == "gw2"
    # The rest of the section still comes from the file.
    assert config.server.workers == 2
    assert config.server.metrics_listen == "127.0.0.1:0"
    assert config.audit_dir(0).name == "gw2"


def test_bad_environment_value_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSGW_SERVER__LISTEN", "nowhere")
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path))
    assert "server.listen" in str(exc.value)


@pytest.mark.parametrize("value", ["-1", "51", "soon"])
def test_an_audit_commit_delay_out_of_range_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    assert load_config(write(tmp_path)).audit.commit_delay_ms == 2.0
    monkeypatch.setenv("DSGW_AUDIT__COMMIT_DELAY_MS", value)
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path))
    assert "audit.commit_delay_ms" in str(exc.value) and "\n" not in str(exc.value)


def test_a_typo_in_an_environment_section_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSGW_SERVR__LISTEN", "0.0.0.0:7443")  # would be ignored silently
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path))
    assert str(exc.value).startswith("DSGW_SERVR__LISTEN: unknown section 'servr'")


@pytest.mark.parametrize(("name", "value"), [("DSGW_SERVER", "notjson"), ("DSGW_AGREEMENTS", "[")])
def test_a_whole_section_in_the_environment_that_is_not_json_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path))
    assert str(exc.value).startswith(f"{name}: not valid JSON") and "\n" not in str(exc.value)


@pytest.mark.parametrize("key", ["home", "purposes_file", "tls.ca", "audit.directory"])
def test_a_path_with_a_nul_character_is_a_config_error(tmp_path: Path, key: str) -> None:
    section, _, name = key.rpartition(".")
    data = as_data(tmp_path)
    (data.setdefault(section, {}) if section else data)[name] = "a\0b"
    with pytest.raises(ConfigError) as exc:
        config_from(data)
    assert key in str(exc.value) and "NUL" in str(exc.value)


def test_unknown_log_level_or_format_in_the_environment_is_a_usage_error() -> None:
    from gateway.logs import check_environment

    check_environment({"DSGW_LOG_LEVEL": "Debug", "DSGW_LOG_FORMAT": "json"})
    check_environment({"DSGW_LOG_LEVEL": "warn"})  # every name the logging module takes
    check_environment({"DSGW_LOG_LEVEL": "", "DSGW_LOG_FORMAT": ""})  # empty: as if unset
    with pytest.raises(UsageError, match=r"^DSGW_LOG_LEVEL: unknown level 'bogus'"):
        check_environment({"DSGW_LOG_LEVEL": "bogus"})
    with pytest.raises(UsageError, match=r"^DSGW_LOG_FORMAT: unknown format 'xml'"):
        check_environment({"DSGW_LOG_FORMAT": "xml"})


def test_a_consent_store_schema_needs_a_postgresql_store(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, extra={"consent": {"store_schema": "gw_consent"}}))
    assert "store_schema needs a PostgreSQL store" in str(exc.value) and "consent" in str(exc.value)
    with pytest.raises(ConfigError, match=r"consent\.store_schema"):
        load_config(
            write(tmp_path, extra={"consent": {"store": "postgresql://h/db", "store_schema": "Bad-Name"}})
        )


def test_a_development_home_takes_further_sections(tmp_path: Path) -> None:
    """make_dev_home passes ``extra`` to the configuration (the gateway benchmark's
    ``--commit-delay-ms`` sets ``audit.commit_delay_ms`` this way)."""
    from gateway.devsetup import make_dev_home

    data = tmp_path / "home" / "data"
    data.mkdir(parents=True)
    (data / "truth.sqlite").touch()  # the sources are there: none generated
    home = make_dev_home(tmp_path / "home", extra={"audit": {"commit_delay_ms": 6.0}})
    assert load_config(home.config).audit.commit_delay_ms == 6.0
    plain = make_dev_home(tmp_path / "home")
    assert load_config(plain.config).audit.commit_delay_ms == 2.0


def test_unrelated_environment_variables_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSGW_TEST_PG_URL", "postgresql://x@127.0.0.1/test")
    assert load_config(write(tmp_path)).node == "gw1"


def _extra(key: str, value: Any) -> Callable[[Path], Path]:
    return lambda tmp: write(tmp, extra={key: value})


def _agreements(**by_id: dict[str, Any]) -> Callable[[Path], Path]:
    return lambda tmp: write(tmp, agreements=agreements(**by_id))


def _added(**extra: Any) -> Callable[[Path], Path]:
    new = {**copy.deepcopy(dict(DEFAULT_AGREEMENTS[0])), **extra}
    return lambda tmp: write(tmp, agreements=[*DEFAULT_AGREEMENTS, new])


def _server(**values: Any) -> Callable[[Path], Path]:
    return lambda tmp: write(tmp, server=values)


def _without_provider(agency: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        data = as_data(tmp)
        del data["providers"][agency]
        return write_json(tmp, data)

    return make


def _without_providers(tmp: Path) -> Path:
    data = as_data(tmp)
    del data["providers"]
    return write_json(tmp, data)


def _unknown_provider(tmp: Path) -> Path:
    data = as_data(tmp)
    data["providers"]["police"] = {"url": "sqlite:///x"}
    return write_json(tmp, data)


G = "hrss-education-graduation"
C = "hrss-civil-assistance"

BAD: list[tuple[str, Callable[[Path], Path], list[str]]] = [
    ("unknown top-level key", _extra("colour", "blue"), ["colour", "unknown key"]),
    ("unknown server key", _server(colour="blue"), ["server.colour", "unknown key"]),
    ("unknown agreement key", _agreements(**{G: {"colour": "blue"}}), ["agreements.0.colour", "unknown key"]),
    ("unknown consumer", _agreements(**{G: {"consumer": "police"}}), ["consumer", "unknown agency 'police'"]),
    ("unknown provider", _agreements(**{G: {"provider": "police"}}), ["provider", "unknown agency 'police'"]),
    ("unknown providers section", _unknown_provider, ["providers", "unknown agency 'police'"]),
    (
        "unknown dataset",
        _agreements(**{G: {"dataset": "diplomas"}}),
        ["agreements[0]", ".dataset", "diplomas"],
    ),
    (
        "field not offered",
        _agreements(**{G: {"fields": ["level", "school_name", "iq"]}}),
        ["agreements[0]", ".fields", "iq"],
    ),
    (
        "unknown predicate",
        _agreements(**{G: {"predicates": ["is_genius"]}}),
        ["agreements[0]", ".predicates", "is_genius"],
    ),
    (
        "predicate on another dataset",
        _agreements(**{C: {"predicates": ["has_disability"]}}),
        ["agreements[1]", ".predicates", "has_disability", "disability"],
    ),
    (
        "unknown purpose",
        _agreements(**{G: {"purposes": ["graduate_employment", "curiosity"]}}),
        ["agreements[0]", ".purposes", "curiosity"],
    ),
    (
        "overlapping agreements",
        _added(id="graduation-2", valid_from="2026-06-01"),
        ["agreements[7]", "overlaps", G],
    ),
    (
        "statutory_duty without duty_reference",
        _agreements(**{C: {"duty_reference": None}}),
        ["agreements.1", "duty_reference"],
    ),
    (
        "blank duty_reference",
        _agreements(**{C: {"duty_reference": "  "}}),
        ["agreements.1", "duty_reference"],
    ),
    (
        "mask on a field not shared",
        _agreements(**{G: {"mask": {"major": "first1"}}}),
        ["agreements.0", "mask", "major"],
    ),
    (
        "unknown mask",
        _agreements(**{G: {"mask": {"school_name": "sha256"}}}),
        ["agreements.0", "mask", "sha256"],
    ),
    ("bad listen address", _server(listen="localhost"), ["server.listen", "HOST:PORT"]),
    ("listen port out of range", _server(listen="127.0.0.1:70000"), ["server.listen"]),
    ("non-ASCII listen port", _server(listen="127.0.0.1:²"), ["server.listen"]),
    ("non-ASCII digits in the listen port", _server(listen="127.0.0.1:٣"), ["server.listen"]),
    (
        "metrics on a non-loopback address",
        _server(metrics_listen="0.0.0.0:9464"),
        ["server.metrics_listen", "loopback"],
    ),
    ("bad metrics address", _server(metrics_listen="9464"), ["server.metrics_listen"]),
    (
        "duplicate agreement ids",
        _added(id=C, dataset="graduation", valid_from="2030-01-01"),
        ["agreements[7]", ".id", "duplicate"],
    ),
    (
        "missing providers section",
        _without_providers,
        ["agreements[0]", ".provider", "[providers.education]"],
    ),
    ("missing one provider", _without_provider("tax"), ["agreements[3]", ".provider", "[providers.tax]"]),
    ("agreement with itself", _agreements(**{G: {"consumer": "education"}}), ["agreements[0]", "own data"]),
    (
        "valid_to before valid_from",
        _agreements(**{G: {"valid_to": "2025-01-01"}}),
        ["agreements.0", "valid_to"],
    ),
    (
        "nothing shared",
        _agreements(**{G: {"fields": [], "predicates": []}}),
        ["agreements.0", "at least one"],
    ),
    ("no purposes", _agreements(**{G: {"purposes": []}}), ["agreements.0.purposes"]),
    ("bad field name", _agreements(**{G: {"fields": ["Level"]}}), ["agreements.0.fields.0"]),
    ("bad node name", lambda tmp: write_json(tmp, {**as_data(tmp), "node": "-gw"}), ["node"]),
    ("too many workers", _server(workers=1000), ["server.workers"]),
]


@pytest.mark.parametrize(("make", "needles"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_is_a_one_line_config_error(
    tmp_path: Path, make: Callable[[Path], Path], needles: list[str]
) -> None:
    path = make(tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert isinstance(exc.value, UsageError) and exc.value.reason == "CONFIG"


def test_check_can_be_skipped(tmp_path: Path) -> None:
    config = load_config(_agreements(**{G: {"dataset": "diplomas"}})(tmp_path), check=False)
    assert config.agreements[0].dataset == "diplomas"


def test_adjacent_agreements_do_not_overlap(tmp_path: Path) -> None:
    old = {**dict(DEFAULT_AGREEMENTS[0]), "id": "old", "valid_from": "2024-01-01", "valid_to": "2026-01-01"}
    config = load_config(write(tmp_path, agreements=[*DEFAULT_AGREEMENTS, old]))
    assert config.agreements[-1].id == "old"


@pytest.mark.parametrize(
    ("content", "name", "needle"),
    [
        (None, "missing.toml", "cannot read"),
        ("node = ", "bad.toml", "not valid TOML"),
        ("{", "bad.json", "not valid JSON"),
        ("[1, 2]", "list.json", "table of keys"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: str | None, name: str, needle: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_config_from_plain_data(tmp_path: Path) -> None:
    config = config_from(as_data(tmp_path))
    assert config.server.metrics_listen == "127.0.0.1:0"
    with pytest.raises(ConfigError):
        config_from({"agreements": [{"id": "x"}]})


addresses = st.one_of(
    st.text(max_size=30),
    st.builds(
        "{}:{}".format,
        st.text(max_size=10),
        st.text(alphabet=st.characters(whitelist_categories=("Nd", "No")), max_size=6),
    ),
)


@given(addresses)
def test_listen_addresses_are_checked_or_refused_naming_the_key(listen: str) -> None:
    try:
        section = ServerSection(listen=listen, metrics_listen="")
    except ValidationError as exc:
        assert "server.listen" in str(exc)
    else:
        host, _, port = section.listen.rpartition(":")
        assert host.strip("[]")
        assert port.isascii() and port.isdigit() and 0 <= int(port) <= 65535


@pytest.mark.parametrize("address", ["127.0.0.1:9464", "localhost:1", "[::1]:9464", "::1:9464"])
def test_loopback_metrics_addresses(address: str) -> None:
    assert ServerSection(metrics_listen=address).metrics_listen == address


@pytest.mark.parametrize("value", ["0.05", "-1", "soon"])
def test_a_max_connection_age_out_of_range_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DSGW_SERVER__MAX_CONNECTION_AGE_S", value)
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path))
    assert "max_connection_age_s" in str(exc.value) and "\n" not in str(exc.value)


def test_an_unknown_event_loop_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config(write(tmp_path)).server.event_loop == "uvloop"
    monkeypatch.setenv("DSGW_SERVER__EVENT_LOOP", "tokio")
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path))
    assert "server.event_loop" in str(exc.value) and "\n" not in str(exc.value)
