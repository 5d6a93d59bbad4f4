"""The agency adapters by agency code, and how to open them from configuration.

Each agency is a package ``adapters.<code>`` whose module ``adapter`` exports ``ADAPTER_CLASS``;
an agency added to ``adapters.agencies.Agency`` (e.g. the planned ``public_security``) becomes
available here as soon as its package exists, and is opened for every source configured under its
code. Nothing else in this module knows the agencies.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping

from adapters.agencies import Agency
from adapters.base import SqlAdapter
from adapters.contract import Adapter
from adapters.resilience import DEFAULT_POLICY, ResiliencePolicy
from adapters.sources import SourceConfig


def load_adapter_class(agency: Agency) -> type[SqlAdapter]:
    """``adapters.<agency>.adapter.ADAPTER_CLASS``; LookupError when the package does not exist."""
    name = f"adapters.{agency.value}.adapter"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            raise LookupError(f"no adapter package for agency {agency.value!r}") from None
        raise
    cls = getattr(module, "ADAPTER_CLASS", None)
    if not (isinstance(cls, type) and issubclass(cls, SqlAdapter)) or cls.agency is not agency:
        raise LookupError(f"{name} does not export an ADAPTER_CLASS for {agency.value!r}")
    return cls


def _available() -> dict[Agency, type[SqlAdapter]]:
    out: dict[Agency, type[SqlAdapter]] = {}
    for agency in Agency:
        try:
            out[agency] = load_adapter_class(agency)
        except LookupError:
            continue
    return out


#: Every agency with an adapter package, by code.
ADAPTER_CLASSES: Mapping[Agency, type[SqlAdapter]] = _available()


def open_adapter(
    agency: Agency | str, source: SourceConfig, policy: ResiliencePolicy = DEFAULT_POLICY
) -> SqlAdapter:
    """One agency's adapter over ``source``. Nothing is connected yet: the first call connects
    (a missing database is then a ProviderUnavailable, not a failure to start)."""
    try:
        code = Agency(agency)
    except ValueError:
        raise LookupError(f"unknown agency {agency!r}") from None
    cls = ADAPTER_CLASSES.get(code)
    if cls is None:
        raise LookupError(f"no adapter for agency {code.value!r}")
    return cls(source, policy)


def open_adapters(
    sources: Mapping[str, SourceConfig],
    *,
    policy: ResiliencePolicy = DEFAULT_POLICY,
    agencies: Iterable[Agency | str] | None = None,
) -> dict[Agency, Adapter]:
    """The adapters of every agency configured in ``sources`` (keys are agency codes, as from
    ``adapters.sources.sqlite_sources`` / ``server_sources``; other keys such as ``truth`` are
    ignored), or only of ``agencies``. Each has its own circuit breaker."""
    wanted = None if agencies is None else {Agency(a) for a in agencies}
    out: dict[Agency, Adapter] = {}
    for agency, cls in ADAPTER_CLASSES.items():
        if (wanted is None or agency in wanted) and agency.value in sources:
            out[agency] = cls(sources[agency.value], policy)
    if wanted is not None:
        missing = sorted(a.value for a in wanted - set(out))
        if missing:
            raise LookupError(f"no source configured for {', '.join(missing)}")
    return out


def close_adapters(adapters: Mapping[Agency, Adapter]) -> None:
    for adapter in adapters.values():
        adapter.close()
