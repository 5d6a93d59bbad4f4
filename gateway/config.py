"""The gateway's one configuration model: a TOML (or JSON) file validated by pydantic, with
environment overrides.

    node = "gw1"
    home = "/var/lib/dsgw"                  # keys, consent store, audit logs, receipts

    [server]
    listen = "127.0.0.1:7443"
    workers = 1                             # server processes sharing the port (SO_REUSEPORT)
    metrics_listen = "127.0.0.1:9464"       # Prometheus; loopback only

    [tls]                                   # default: HOME/pki/{ca.crt,server.crt,server.key,crl.pem}

    [providers.education]                   # one per agency the gateway reaches
    url = "sqlite:////data/education.sqlite"

    [[agreements]]
    id = "hrss-education-graduation"
    consumer = "hrss"
    provider = "education"
    dataset = "graduation"
    fields = ["level", "school_name", "graduation_date"]
    purposes = ["graduate_employment"]
    legal_basis = "consent"                 # or "statutory_duty" with duty_reference
    valid_from = 2026-01-01
    rate_limit_per_s = 200
    mask = { school_name = "first2" }

Environment variables ``DSGW_<KEY>`` override the file, nested keys joined by ``__``
(``DSGW_SERVER__LISTEN=0.0.0.0:7443``, ``DSGW_NODE=gw2``). Every error names the bad key
(:class:`ConfigError`, exit 2 from the CLI): unknown keys, unknown agencies, datasets, fields,
predicates or purposes, masks on fields not shared, and overlapping agreements (two agreements
for the same consumer and provider dataset whose validity periods overlap).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tomllib
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from adapters.agencies import Agency
from adapters.contract import DatasetDescriptor, PredicateDescriptor
from adapters.sources import SCHEMA_NAME, SourceConfig, check_source_url
from gateway.errors import UsageError
from gateway.pipeline.mask import MASKS
from gateway.purposes import DEFAULT_CATALOGUE, PurposeCatalogue, load_catalogue

__all__ = [
    "Agreement",
    "ConfigError",
    "GatewayConfig",
    "ServerSection",
    "TlsSection",
    "load_config",
]

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


def _no_nul(path: Path) -> Path:
    if "\0" in str(path):
        raise ValueError("a path must not contain a NUL character")
    return path


#: A file or directory path of the configuration (one the operating system can take).
ConfigPath = Annotated[Path, AfterValidator(_no_nul)]


class ConfigError(UsageError):
    """The configuration is invalid; the message names the key."""

    reason = "CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSection(_Section):
    listen: str = "127.0.0.1:7443"
    #: Server processes sharing the listening port (SO_REUSEPORT), each with its own audit log.
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    #: Development only: listen without TLS (a warning is logged; callers are then identified
    #: by the ``x-dsgw-dev-agency`` metadata header). Never in production.
    insecure_dev_plaintext: bool = False
    #: Prometheus metrics over HTTP; "" turns them off. Loopback addresses only.
    metrics_listen: str = "127.0.0.1:9464"
    #: How long SIGTERM waits for in-flight calls before cancelling them.
    drain_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    #: Threads that run adapter and store calls.
    io_threads: Annotated[int, Field(ge=1, le=256)] = 32
    #: How long an answer is kept for a retried request id (seconds).
    idempotency_ttl_s: Annotated[float, Field(gt=0, le=7 * 86400)] = 600.0
    #: Read embedded (SQLite) sources and the SQLite consent store on the event loop instead of
    #: handing each call to an I/O thread (faster: no hand-off, no lock contention; each call
    #: stays bounded by its deadline). Server databases always use the I/O threads.
    inline_local_io: bool = True
    #: The event loop a worker runs on: "uvloop" (libuv; grpc.aio's per-call work is cheaper on
    #: it) or "asyncio" (the standard library's). Falls back to asyncio, with a warning, where
    #: uvloop is not installed.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    #: The interpreter's thread switch interval in a worker, milliseconds (Python's default, 5).
    #: Shorter makes the event loop hand the interpreter lock to the audit and I/O threads
    #: sooner, and more often: at 70 % of the peak, 0.5 ms gave the paced load a longer tail
    #: (docs/gateway.md, "The interpreter's switch interval").
    gil_switch_interval_ms: Annotated[float, Field(ge=0.05, le=100)] = 5.0
    #: Where a worker's threads run: "spread" keeps each worker process (every thread of it) on
    #: one CPU, worker i on the i-th CPU the gateway may use, so that the hand-overs between its
    #: threads on every call do not wake another CPU; "none" leaves them to the kernel. For a
    #: gateway that has the machine to itself, with ``workers`` as many as its CPUs
    #: (docs/gateway.md, "Keeping a worker on one CPU"). Linux only.
    cpu_affinity: Literal["none", "spread"] = "none"
    #: How often a worker collects its young garbage generation itself, milliseconds; 0 leaves
    #: collections to the interpreter's thresholds. Short, frequent collections instead of one
    #: of 6-17 ms every few thousand calls (gateway/server/gc_pacing.py).
    gc_young_every_ms: Annotated[float, Field(ge=0, le=10_000)] = 50.0
    #: Most Queries and Verifies decided and fetched (or evaluated) together: waiting calls
    #: share one consent-store read and one provider query per dataset and field list, or per
    #: predicate and parameters (each still gets the decision, values, yes/no or error it would
    #: get alone, and its own audit entry). Over embedded sources (``inline_local_io``) a batch
    #: runs on the event loop and waits as below; over server databases it runs on the I/O
    #: threads as a group commit: the calls that come while one batch runs form the next, one
    #: lane per set of providers (no wait). 1 turns both off.
    query_batch: Annotated[int, Field(ge=1, le=1000)] = 64
    #: How long a batch may wait for more calls after its first, milliseconds. gRPC hands a
    #: worker one new call per turn of its event loop, so a batch runs only once nothing else is
    #: ready on the loop and no call is due (by the recent arrival rate) before this is over:
    #: under load it gathers the calls of a few turns; a lone call on an idle worker is not held
    #: up. 0: only the calls of one turn. Part of a batch's cost in event loop (its store read,
    #: provider transaction and queries) does not grow with its size; a longer wait spreads it
    #: over more calls, for that much more latency (docs/gateway.md, "How long a batch waits").
    #: A batch holding every Query and Verify in progress in the worker does not wait.
    query_batch_wait_ms: Annotated[float, Field(ge=0, le=20)] = 4.0
    #: The wait follows the event loop's load: none while the worker's loop thread is busy (on a
    #: CPU or queued for one) at most 45 % of the time, the whole ``query_batch_wait_ms`` from
    #: 60 % on, a share in between (gateway/batch_wait.py). A quiet worker then answers a few
    #: concurrent callers at once instead of holding each call for a partner; a busy one
    #: batches as before. false: always the whole wait.
    query_batch_adaptive: bool = True
    #: Most items a BatchVerify evaluates per adapter query.
    batch_chunk: Annotated[int, Field(ge=1, le=5000)] = 500
    #: Seconds after which a client connection is asked to reconnect (HTTP/2 GOAWAY: calls in
    #: flight finish, the client's channel opens a new connection for the next ones; 0: never).
    #: With several workers the kernel gives each new connection to a worker, so a few long-lived
    #: agency channels are spread over the workers again and again instead of once.
    max_connection_age_s: Annotated[float, Field(ge=0, le=2_147_483)] = 600.0  # gRPC: int milliseconds

    @model_validator(mode="after")
    def _addresses(self) -> ServerSection:
        if 0 < self.max_connection_age_s < 0.1:
            raise ValueError("server.max_connection_age_s must be 0 (never) or at least 0.1 seconds")
        split_address(self.listen, "server.listen")
        if self.metrics_listen:
            host, _ = split_address(self.metrics_listen, "server.metrics_listen")
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError("server.metrics_listen must be a loopback address")
        return self


def split_address(value: str, key: str = "address") -> tuple[str, int]:
    """(host, port) of ``HOST:PORT`` (an IPv6 host without its brackets); ValueError naming
    ``key`` otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"{key} must be HOST:PORT, not {value!r}")
    return host, int(port)


class TlsSection(_Section):
    """Files of the server's TLS identity; empty: under ``HOME/pki`` as ``dsgw pki init`` writes
    them. They are re-read when they change (no restart); the CRL is checked on every call."""

    ca: ConfigPath | None = None
    cert: ConfigPath | None = None
    key: ConfigPath | None = None
    crl: ConfigPath | None = None


class AuditSection(_Section):
    #: Directory of the logs; worker N of node X writes ``DIR/X`` (N = 0) or ``DIR/X-wN``.
    directory: ConfigPath | None = None
    suite: Literal["default", "gm"] = "default"
    checkpoint_every: Annotated[int, Field(ge=1)] = 1000
    checkpoint_seconds: Annotated[float, Field(gt=0)] = 10.0
    #: Group commit of a busy server: how long a commit may wait for the next calls' entries
    #: (milliseconds; 0: each at once). See docs/audit-log.md.
    commit_delay_ms: Annotated[float, Field(ge=0, le=50)] = 2.0


class ConsentSection(_Section):
    #: Store URL (PostgreSQL for several replicas); empty: ``HOME/consent.sqlite``.
    store: str = ""
    #: PostgreSQL schema of the store's tables (as ``dsgw consent --store-schema``); none: the
    #: connection's default.
    store_schema: Annotated[str, StringConstraints(pattern=SCHEMA_NAME.pattern)] | None = None

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        return check_source_url(value) if value else value

    @model_validator(mode="after")
    def _schema_needs_a_server(self) -> ConsentSection:
        if self.store_schema is not None and not self.store.startswith("postgresql"):
            raise ValueError("store_schema needs a PostgreSQL store (consent.store)")
        return self


class ProviderSection(_Section):
    url: str
    db_schema: str | None = None
    call_timeout_s: Annotated[float, Field(gt=0, le=300)] = 2.0
    connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0

    _url_supported = field_validator("url")(check_source_url)

    def source(self) -> SourceConfig:
        return SourceConfig(
            url=self.url,
            db_schema=self.db_schema,
            call_timeout_s=self.call_timeout_s,
            connect_timeout_s=self.connect_timeout_s,
        )


class ResilienceSection(_Section):
    attempts: Annotated[int, Field(ge=1, le=10)] = 3
    fail_max: Annotated[int, Field(ge=1, le=1000)] = 5
    reset_timeout_s: Annotated[float, Field(ge=0, le=3600)] = 30.0


class Agreement(_Section):
    """One data-sharing agreement (共享目录 entry): ``consumer`` may read ``fields`` of
    ``provider.dataset`` (and verify ``predicates`` over it) for ``purposes``, on ``legal_basis``,
    from ``valid_from`` until ``valid_to`` (exclusive; None: open-ended), at most
    ``rate_limit_per_s`` calls per second (0: unlimited), with ``mask`` applied per field."""

    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    consumer: Agency
    provider: Agency
    dataset: Name
    fields: tuple[Name, ...] = ()
    predicates: tuple[Name, ...] = ()
    purposes: Annotated[tuple[Name, ...], Field(min_length=1)]
    legal_basis: Literal["consent", "statutory_duty"] = "consent"
    duty_reference: str = ""
    valid_from: dt.date
    valid_to: dt.date | None = None
    rate_limit_per_s: Annotated[float, Field(ge=0)] = 0.0
    rate_burst: Annotated[int, Field(ge=0)] = 0
    mask: Mapping[Name, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shape(self) -> Agreement:
        if not self.fields and not self.predicates:
            raise ValueError("an agreement shares at least one field or predicate")
        if self.legal_basis == "statutory_duty" and not self.duty_reference.strip():
            raise ValueError("a statutory_duty agreement needs duty_reference")
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be after valid_from")
        for name, mask in self.mask.items():
            if name not in self.fields:
                raise ValueError(f"mask names field {name!r}, which the agreement does not share")
            if mask not in MASKS:
                raise ValueError(f"unknown mask {mask!r} (known: {', '.join(sorted(MASKS))})")
        return self

    def overlaps(self, other: Agreement) -> bool:
        far = dt.date.max
        return self.valid_from < (other.valid_to or far) and other.valid_from < (self.valid_to or far)


class GatewayConfig(BaseSettings):
    """The whole configuration (see the module docstring)."""

    model_config = SettingsConfigDict(
        env_prefix="DSGW_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    node: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")] = "gw1"
    home: ConfigPath = Path("~/.dsgw")
    #: A purpose catalogue file (JSON); empty: the built-in catalogue.
    purposes_file: ConfigPath | None = None
    server: ServerSection = ServerSection()
    tls: TlsSection = TlsSection()
    audit: AuditSection = AuditSection()
    consent: ConsentSection = ConsentSection()
    resilience: ResilienceSection = ResilienceSection()
    providers: Mapping[Agency, ProviderSection] = Field(default_factory=dict)
    agreements: tuple[Agreement, ...] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (which arrives as init keywords).
        return (env_settings, init_settings)

    # --- derived paths --------------------------------------------------------------------------

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    def tls_file(self, which: Literal["ca", "cert", "key", "crl"]) -> Path:
        given: Path | None = getattr(self.tls, which)
        default = {"ca": "ca.crt", "cert": "server.crt", "key": "server.key", "crl": "crl.pem"}[which]
        return (given or self.home_dir / "pki" / default).expanduser()

    def audit_dir(self, worker: int = 0) -> Path:
        base = (self.audit.directory or self.home_dir / "audit").expanduser()
        return base / (self.node if worker == 0 else f"{self.node}-w{worker}")

    def audit_dirs(self) -> list[Path]:
        return [self.audit_dir(w) for w in range(self.server.workers)]

    def consent_store_url(self) -> str:
        return self.consent.store or f"sqlite:///{(self.home_dir / 'consent.sqlite').resolve()}"

    @cached_property
    def catalogue(self) -> PurposeCatalogue:
        return load_catalogue(self.purposes_file) if self.purposes_file else DEFAULT_CATALOGUE


# --- cross checks against the adapters and the purpose catalogue --------------------------------


def _describe_all() -> tuple[
    dict[tuple[Agency, str], DatasetDescriptor], dict[tuple[Agency, str], PredicateDescriptor]
]:
    from adapters.registry import ADAPTER_CLASSES

    datasets: dict[tuple[Agency, str], DatasetDescriptor] = {}
    predicates: dict[tuple[Agency, str], PredicateDescriptor] = {}
    for agency, cls in ADAPTER_CLASSES.items():
        for spec in cls.DATASETS:
            datasets[(agency, spec.descriptor.name)] = spec.descriptor
        for pspec in cls.PREDICATES:
            predicates[(agency, pspec.descriptor.name)] = pspec.descriptor
    return datasets, predicates


def check_config(config: GatewayConfig) -> None:
    """Cross-check agreements against what the providers offer, the purpose catalogue and each
    other. Raises :class:`ConfigError` naming the agreement and key."""
    datasets, predicates = _describe_all()
    catalogue = config.catalogue
    seen: dict[str, int] = {}
    for i, a in enumerate(config.agreements):
        where = f"agreements[{i}] ({a.id})"
        if a.id in seen:
            raise ConfigError(f"{where}.id: duplicate of agreements[{seen[a.id]}]")
        seen[a.id] = i
        if a.consumer is a.provider:
            raise ConfigError(f"{where}: an agency does not need an agreement to read its own data")
        descriptor = datasets.get((a.provider, a.dataset))
        if descriptor is None:
            raise ConfigError(f"{where}.dataset: {a.provider.value} offers no dataset {a.dataset!r}")
        offered = set(descriptor.field_names())
        for f in a.fields:
            if f not in offered:
                raise ConfigError(f"{where}.fields: {a.provider.value}.{a.dataset} offers no field {f!r}")
        for p in a.predicates:
            pd = predicates.get((a.provider, p))
            if pd is None:
                raise ConfigError(f"{where}.predicates: {a.provider.value} offers no predicate {p!r}")
            if pd.dataset != a.dataset:
                raise ConfigError(
                    f"{where}.predicates: {p!r} reads {a.provider.value}.{pd.dataset}, not {a.dataset}"
                )
        for code in a.purposes:
            if code not in catalogue:
                raise ConfigError(f"{where}.purposes: unknown purpose code {code!r}")
        if a.provider not in config.providers:
            raise ConfigError(f"{where}.provider: no [providers.{a.provider.value}] section")
        for j, b in enumerate(config.agreements[:i]):
            if (b.consumer, b.provider, b.dataset) == (a.consumer, a.provider, a.dataset) and a.overlaps(b):
                raise ConfigError(
                    f"{where}: overlaps agreements[{j}] ({b.id}) for {a.consumer.value} -> "
                    f"{a.provider.value}.{a.dataset} (validity periods intersect)"
                )


def _describe_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(x) for x in first["loc"]) or "config"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "enum" and any(
        k in ("consumer", "provider", "providers") for k in map(str, first["loc"])
    ):
        msg = f"unknown agency {first.get('input')!r} (known: {', '.join(a.value for a in Agency)})"
    more = len(exc.errors()) - 1
    return f"{loc}: {msg}" + (f" (and {more} more error{'s' if more > 1 else ''})" if more else "")


def _unknown_env_sections(environ: Mapping[str, str]) -> list[str]:
    """``DSGW_<SECTION>__<KEY>`` variables whose section is not one of the configuration's (a
    typo there would otherwise be ignored silently: the settings loader reads only known names)."""
    sections = set(GatewayConfig.model_fields)
    bad = []
    for name in environ:
        head, nested, _ = name.partition("__")
        if nested and head.upper().startswith("DSGW_") and head[5:].lower() not in sections:
            bad.append(name)
    return sorted(bad)


def config_from(data: Mapping[str, Any], *, check: bool = True) -> GatewayConfig:
    """A validated configuration from plain data (the parsed file) and the environment."""
    unknown = _unknown_env_sections(os.environ)
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: unknown section {unknown[0].partition('__')[0][5:].lower()!r} "
            f"(known: {', '.join(sorted(GatewayConfig.model_fields))})"
        )
    try:
        config = GatewayConfig(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_describe_error(exc)}") from None
    except SettingsError as exc:  # DSGW_<SECTION>=... that is not JSON
        found = re.search(r'field "([^"]+)"', str(exc))
        name = f"DSGW_{found.group(1).upper()}" if found else "a DSGW_* variable"
        raise ConfigError(
            f"{name}: not valid JSON for the whole section (or set one key: {name}__KEY=value)"
        ) from None
    if check:
        check_config(config)
    return config


def load_config(path: str | os.PathLike[str], *, check: bool = True) -> GatewayConfig:
    """Read, validate and cross-check the configuration file (TOML, or JSON by extension)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {p}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw) if p.suffix == ".json" else tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the configuration must be a table of keys")
    return config_from(data, check=check)
