"""A complete development gateway home in one call: synthetic agency data, a development PKI
with every agency's client certificate, audit keys, and a configuration with a realistic set of
data-sharing agreements. ``dsgw demo``, the integration tests and ``benchmarks/gateway.py`` use
it; ``dsgw demo --home DIR`` leaves one in DIR for a person to try the gateway by hand.

    home/
      data/<agency>.sqlite, truth.sqlite   synthetic sources (dsgw data generate)
      pki/                                 dsgw pki init + one certificate per agency
      keys/                                audit and receipt keys (0600)
      gateway.toml                         the configuration (listen on a free loopback port)
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.agencies import Agency
from adapters.synthetic.generate import GenerateConfig, generate
from gateway import pki

__all__ = ["DEFAULT_AGREEMENTS", "DevHome", "ensure_dev_pki", "make_dev_home", "write_config"]

_FROM = "2026-01-01"

#: The development catalogue (共享目录): who may read what, why and on which basis.
DEFAULT_AGREEMENTS: tuple[Mapping[str, Any], ...] = (
    {
        "id": "hrss-education-graduation",
        "consumer": "hrss",
        "provider": "education",
        "dataset": "graduation",
        "fields": ["level", "school_name", "graduation_date"],
        "predicates": ["graduated_within_years", "degree_at_least"],
        "purposes": ["graduate_employment", "employment_subsidy_review"],
        "legal_basis": "consent",
        "mask": {"school_name": "first2"},
    },
    {
        "id": "hrss-civil-assistance",
        "consumer": "hrss",
        "provider": "civil_affairs",
        "dataset": "assistance",
        "fields": ["household_category", "zero_employment_household"],
        "predicates": ["receives_subsistence_allowance", "near_subsistence", "zero_employment_household"],
        "purposes": ["employment_assistance", "employment_subsidy_review"],
        "legal_basis": "statutory_duty",
        "duty_reference": "Tianjin employment promotion measures, clause 19 (data sharing for assistance)",
    },
    {
        "id": "hrss-market-registration",
        "consumer": "hrss",
        "provider": "market_regulation",
        "dataset": "business_registration",
        "fields": ["name", "entity_type", "size_class", "status", "registered_on"],
        "predicates": ["enterprise_is_small_or_micro", "is_active", "registered_within_years"],
        "purposes": ["hiring_subsidy", "startup_subsidy", "job_stabilisation_refund"],
        "legal_basis": "statutory_duty",
        "duty_reference": "public business registration (enterprise information publicity regulation)",
    },
    {
        "id": "hrss-tax-employer",
        "consumer": "hrss",
        "provider": "tax",
        "dataset": "employer_tax",
        "fields": ["headcount_band", "revenue_band"],
        "predicates": ["employer_headcount_at_most"],
        "purposes": ["hiring_subsidy", "job_stabilisation_refund"],
        "legal_basis": "consent",
        "mask": {"revenue_band": "redact"},
    },
    {
        "id": "civil-hrss-employment",
        "consumer": "civil_affairs",
        "provider": "hrss",
        "dataset": "employment_status",
        "fields": ["registered_unemployed", "unemployed_since", "hard_to_employ"],
        "predicates": ["registered_unemployed", "hard_to_employ"],
        "purposes": ["employment_assistance"],
        "legal_basis": "consent",
    },
    {
        "id": "education-hrss-insurance",
        "consumer": "education",
        "provider": "hrss",
        "dataset": "person_insurance",
        "fields": ["currently_insured", "current_employer"],
        "predicates": ["currently_insured"],
        "purposes": ["graduate_employment"],
        "legal_basis": "consent",
        "rate_limit_per_s": 50,
        "mask": {"current_employer": "last4"},
    },
    {
        "id": "tax-hrss-insurance-2025",
        "consumer": "tax",
        "provider": "hrss",
        "dataset": "employer_insurance",
        "fields": ["insured_headcount"],
        "predicates": ["employer_insured_headcount_at_least"],
        "purposes": ["job_stabilisation_refund"],
        "legal_basis": "statutory_duty",
        "duty_reference": "unemployment insurance job-stabilisation refund rules",
        "valid_from": "2025-01-01",
        "valid_to": "2026-01-01",
    },
)


@dataclass(frozen=True)
class DevHome:
    home: Path
    config: Path
    data: Path
    pki: Path

    def agency_credentials(self, agency: Agency | str) -> tuple[Path, Path, Path]:
        """(ca, cert, key) of an agency's client certificate."""
        code = Agency(agency).value
        return (
            self.pki / "ca.crt",
            self.pki / "agencies" / f"{code}.crt",
            self.pki / "agencies" / f"{code}.key",
        )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def write_config(
    path: Path,
    *,
    home: Path,
    data: Path,
    agreements: Sequence[Mapping[str, Any]] = DEFAULT_AGREEMENTS,
    server: Mapping[str, Any] | None = None,
    providers: Mapping[str, Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    resilience: Mapping[str, Any] | None = None,
) -> Path:
    """Write a gateway configuration (TOML) for ``home`` over the SQLite sources in ``data``."""
    lines = [f"node = {_toml_value('gw1')}", f"home = {_toml_value(str(home))}"]
    for key, value in (extra or {}).items():
        lines.append(f"{key} = {_toml_value(value)}")
    lines += ["", "[server]"]
    for key, value in {"listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0", **(server or {})}.items():
        lines.append(f"{key} = {_toml_value(value)}")
    if resilience:
        lines += ["", "[resilience]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in resilience.items()]
    for agency in Agency:
        section = {"url": f"sqlite:///{(data / f'{agency.value}.sqlite').resolve()}"}
        section.update((providers or {}).get(agency.value, {}))
        lines += ["", f"[providers.{agency.value}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in section.items()]
    for agreement in agreements:
        lines += ["", "[[agreements]]"]
        merged = {"valid_from": _FROM, **agreement}
        for key, value in merged.items():
            if key in ("valid_from", "valid_to"):
                lines.append(f"{key} = {value}")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ensure_dev_pki(pki_dir: Path) -> Path:
    """A development CA in ``pki_dir`` (with the gateway's certificate) and a client
    certificate for each agency, each made unless it is there; returns ``pki_dir``."""
    if not (pki_dir / "ca.crt").exists():
        pki.init_pki(pki_dir)
    for agency in Agency:
        if not (pki_dir / "agencies" / f"{agency.value}.crt").exists():
            pki.issue_agency(pki_dir, agency)
    return pki_dir


def make_dev_home(
    home: Path,
    *,
    persons: int = 5000,
    employers: int = 500,
    seed: int = 7,
    server: Mapping[str, Any] | None = None,
    agreements: Sequence[Mapping[str, Any]] = DEFAULT_AGREEMENTS,
    resilience: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> DevHome:
    """Create (or complete) a development home: data, PKI, certificates, configuration
    (``extra``: further top-level keys or sections, as ``write_config``)."""
    home.mkdir(parents=True, exist_ok=True)
    data = home / "data"
    if not (data / "truth.sqlite").exists():
        generate(GenerateConfig(persons=persons, employers=employers, seed=seed, out=data, force=True))
    pki_dir = ensure_dev_pki(home / "pki")
    config = write_config(
        home / "gateway.toml",
        home=home,
        data=data,
        agreements=agreements,
        server=server,
        resilience=resilience,
        extra=extra,
    )
    return DevHome(home=home, config=config, data=data, pki=pki_dir)
