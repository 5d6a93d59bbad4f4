"""The agency codes of the contract (../shared/CONTRACT.md), used in config, certificates, audit and proto."""

from __future__ import annotations

from enum import StrEnum


class Agency(StrEnum):
    HRSS = "hrss"
    EDUCATION = "education"
    CIVIL_AFFAIRS = "civil_affairs"
    TAX = "tax"
    MARKET_REGULATION = "market_regulation"


AGENCY_NAMES_ZH: dict[Agency, str] = {
    Agency.HRSS: "人力资源和社会保障局",
    Agency.EDUCATION: "教育委员会",
    Agency.CIVIL_AFFAIRS: "民政局",
    Agency.TAX: "税务局",
    Agency.MARKET_REGULATION: "市场监管委",
}
