"""The purpose catalogue: the codes a caller states as the purpose of a request, and consents cover.

Every data-sharing agreement, consent and request names purposes by code (lower-case, as in the
audit log's ``Name``: ``^[a-z][a-z0-9_]{0,63}$``). The catalogue gives each code its Chinese and
English names, a description and, for purposes that serve a policy, the **policy category** a
person or employer may refuse proactive contact for (opt-out, :mod:`gateway.consent`).

:data:`DEFAULT_CATALOGUE` is drawn from the employment-policy seed (就业补贴, 社会保险补贴,
创业担保贷款, 职业培训补贴, 失业保险待遇, 就业援助, 高校毕业生就业, 政策主动推送, ...). A gateway's
configuration may name another catalogue file, JSON or TOML, of the same shape::

    version = "2025-06"

    [[categories]]
    code = "training"
    name_zh = "职业培训"
    name_en = "Vocational training"

    [[purposes]]
    code = "training_subsidy"
    name_zh = "职业培训补贴"
    name_en = "Vocational training subsidy"
    description = "..."
    category = "training"

:func:`load_catalogue` reads one; unknown keys, duplicate codes and categories that do not exist
are refused with :class:`CatalogueError`.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from gateway.errors import UsageError

__all__ = [
    "DEFAULT_CATALOGUE",
    "CatalogueError",
    "PolicyCategory",
    "Purpose",
    "PurposeCatalogue",
    "UnknownPurpose",
    "load_catalogue",
]

Code = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=500)]


class UnknownPurpose(UsageError, LookupError):
    """A purpose code that is not in the catalogue."""

    reason = "UNKNOWN_PURPOSE"

    def __init__(self, code: str) -> None:
        shown = (
            code if len(code) <= 64 and code.isprintable() else code[:64].encode("unicode_escape").decode()
        )
        super().__init__(f"unknown purpose code {shown!r}")
        self.code = code


class CatalogueError(UsageError):
    """A catalogue file that cannot be read or is not a valid catalogue."""

    reason = "INVALID_PURPOSE_CATALOGUE"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PolicyCategory(_Model):
    """A category of policies (opt-out of proactive contact is per category or per channel)."""

    code: Code
    name_zh: Text
    name_en: Text


class Purpose(_Model):
    """One purpose: its code, names, what it covers and (optional) the policy category it serves."""

    code: Code
    name_zh: Text
    name_en: Text
    description: Text
    category: Code | None = None


class PurposeCatalogue(_Model):
    """A versioned list of purposes and policy categories, codes unique."""

    version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    categories: tuple[PolicyCategory, ...] = ()
    purposes: tuple[Purpose, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        codes = [p.code for p in self.purposes]
        dupes = sorted({c for c in codes if codes.count(c) > 1})
        if dupes:
            raise ValueError(f"duplicate purpose codes: {', '.join(dupes)}")
        cats = [c.code for c in self.categories]
        dupes = sorted({c for c in cats if cats.count(c) > 1})
        if dupes:
            raise ValueError(f"duplicate category codes: {', '.join(dupes)}")
        missing = sorted({p.category for p in self.purposes if p.category and p.category not in cats})
        if missing:
            raise ValueError(f"purposes name unknown categories: {', '.join(missing)}")
        return self

    # pydantic models are frozen: lookups are built once per instance, lazily.
    def _index(self) -> Mapping[str, Purpose]:
        index: dict[str, Purpose] | None = self.__dict__.get("_purpose_index")
        if index is None:
            index = {p.code: p for p in self.purposes}
            self.__dict__["_purpose_index"] = index
        return index

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and code in self._index()

    def __iter__(self) -> Iterator[Purpose]:  # type: ignore[override]
        return iter(self.purposes)

    def __len__(self) -> int:
        return len(self.purposes)

    def get(self, code: str) -> Purpose | None:
        return self._index().get(code)

    def require(self, code: str) -> Purpose:
        """The purpose of ``code``; :class:`UnknownPurpose` if the catalogue has none."""
        purpose = self._index().get(code)
        if purpose is None:
            raise UnknownPurpose(code)
        return purpose

    def codes(self) -> tuple[str, ...]:
        return tuple(p.code for p in self.purposes)

    def category(self, code: str) -> PolicyCategory | None:
        for c in self.categories:
            if c.code == code:
                return c
        return None

    def category_codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.categories)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def load_catalogue(path: str | Path) -> PurposeCatalogue:
    """Read a catalogue from a ``.json`` or ``.toml`` file; :class:`CatalogueError` if it is not one."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise CatalogueError(f"cannot read purpose catalogue {p}: {exc.strerror or exc}") from None
    try:
        if p.suffix.lower() == ".toml":
            data: Any = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise CatalogueError(
            f"purpose catalogue {p} is not valid {p.suffix.lstrip('.') or 'json'}: {exc}"
        ) from None
    return catalogue_from(data, source=str(p))


def catalogue_from(data: Any, *, source: str = "catalogue") -> PurposeCatalogue:
    """Validate a catalogue given as plain data (the parsed file)."""
    try:
        return PurposeCatalogue.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top)"
        raise CatalogueError(f"{source}: {where}: {first['msg']}") from None


_CATEGORIES = (
    PolicyCategory(code="employment_subsidy", name_zh="就业补贴", name_en="Employment subsidies"),
    PolicyCategory(code="social_insurance", name_zh="社会保险补贴", name_en="Social insurance subsidies"),
    PolicyCategory(code="entrepreneurship", name_zh="创业扶持", name_en="Entrepreneurship support"),
    PolicyCategory(code="training", name_zh="职业培训", name_en="Vocational training"),
    PolicyCategory(code="unemployment_insurance", name_zh="失业保险", name_en="Unemployment insurance"),
    PolicyCategory(code="employment_assistance", name_zh="就业援助", name_en="Employment assistance"),
    PolicyCategory(code="graduate", name_zh="高校毕业生就业", name_en="Graduate employment"),
)

_PURPOSES = (
    Purpose(
        code="employment_subsidy_review",
        name_zh="就业补贴审核",
        name_en="Employment subsidy review",
        description="Checking an application for an employment subsidy (hiring, post or job-seeking "
        "subsidies) against registration, insurance and hardship records.",
        category="employment_subsidy",
    ),
    Purpose(
        code="hiring_subsidy",
        name_zh="一次性吸纳就业补贴",
        name_en="One-off hiring subsidy",
        description="Employers hiring registered unemployed persons or graduates: headcount, "
        "insurance and business registration checks.",
        category="employment_subsidy",
    ),
    Purpose(
        code="social_insurance_subsidy",
        name_zh="社会保险补贴",
        name_en="Social insurance subsidy",
        description="Social insurance subsidies for hard-to-employ persons, flexible workers and "
        "employers hiring them.",
        category="social_insurance",
    ),
    Purpose(
        code="job_stabilisation_refund",
        name_zh="失业保险稳岗返还",
        name_en="Job stabilisation refund",
        description="Refund of unemployment-insurance contributions to employers that keep jobs: "
        "size class, headcount and layoff checks.",
        category="unemployment_insurance",
    ),
    Purpose(
        code="startup_loan",
        name_zh="创业担保贷款",
        name_en="Start-up guaranteed loan",
        description="Eligibility for a guaranteed start-up loan and its interest subsidy.",
        category="entrepreneurship",
    ),
    Purpose(
        code="startup_subsidy",
        name_zh="一次性创业补贴",
        name_en="One-off start-up subsidy",
        description="One-off subsidy for graduates and hardship groups who start a business.",
        category="entrepreneurship",
    ),
    Purpose(
        code="training_subsidy",
        name_zh="职业培训补贴",
        name_en="Vocational training subsidy",
        description="Eligibility for a vocational training subsidy and its living allowance.",
        category="training",
    ),
    Purpose(
        code="unemployment_benefit",
        name_zh="失业保险待遇",
        name_en="Unemployment insurance benefit",
        description="Entitlement to unemployment insurance benefits: contribution history and "
        "re-employment checks.",
        category="unemployment_insurance",
    ),
    Purpose(
        code="employment_assistance",
        name_zh="就业援助",
        name_en="Employment assistance",
        description="Assistance for hard-to-employ persons and zero-employment households, "
        "including public-welfare posts.",
        category="employment_assistance",
    ),
    Purpose(
        code="graduate_employment",
        name_zh="高校毕业生就业服务",
        name_en="Graduate employment services",
        description="Services and subsidies for recent higher-education graduates.",
        category="graduate",
    ),
    Purpose(
        code="proactive_policy_push",
        name_zh="政策主动推送",
        name_en="Proactive policy notification",
        description="Finding persons and employers who qualify for a policy and notifying them "
        "(政策找人); the policy's own category governs opt-out.",
    ),
    Purpose(
        code="identity_verification",
        name_zh="身份核验",
        name_en="Identity verification",
        description="Confirming that an identifier and a name belong together before a service.",
    ),
)

#: The built-in catalogue, used when the configuration names no catalogue file.
DEFAULT_CATALOGUE = PurposeCatalogue(version="2025-seed-1", categories=_CATEGORIES, purposes=_PURPOSES)
