"""Service configuration: one TOML file, environment variables over it, defaults under.

Every setting has a default that runs the whole service locally: the devnet the demo
left in ``out/``, its deployment file, the store beside it, the devnet's unlocked
accounts. A file (``posaudit serve --config posaudit.toml``) sets what differs, and an
environment variable ``POSAUDIT_<SECTION>_<KEY>`` (``POSAUDIT_CHAIN_RPC_URL``,
``POSAUDIT_STORE_PATH``, ...) overrides the file, which is how a deployment passes
secrets such as key files without writing them into the file.

Example::

    [chain]
    rpc_url = "https://node.example:8545"
    bookkeeper_key_file = "/run/secrets/bookkeeper.key"

    [bookkeeper]
    aggregate_size = 128

    [monitor]
    hysteresis = false
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from posaudit.bookkeeper import BatchPolicy
from posaudit.exceptions import PosauditError
from posaudit.monitor_policy import MonitorSettings


class ConfigError(PosauditError, ValueError):
    """The configuration file or an environment variable is not usable."""


@dataclass(frozen=True)
class ChainConfig:
    """Which node and which accounts.

    Attributes:
        rpc_url: The node; empty starts the local devnet from ``devnet_state``.
        devnet_state: The devnet's chain file (written by ``posaudit demo``).
        deployment: The deployment file (chain id and contract addresses).
        bookkeeper: Address of an account the node holds unlocked; empty takes the
            devnet's second account.
        bookkeeper_key_file: A file holding the bookkeeper's private key (hex); it
            wins over ``bookkeeper`` and signs locally.
        auditor: Like ``bookkeeper``, for the account that pays for the audits and
            holds the auditor role; empty takes the devnet's first account.
        auditor_key_file: Like ``bookkeeper_key_file``, for the auditor.
    """

    rpc_url: str = ""
    devnet_state: Path = Path("out/devnet-state.json")
    deployment: Path = Path("out/deployment.json")
    bookkeeper: str = ""
    bookkeeper_key_file: str = ""
    auditor: str = ""
    auditor_key_file: str = ""


@dataclass(frozen=True)
class StoreConfig:
    """Where the outbox and archive live."""

    path: Path = Path("out/posaudit.db")


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens."""

    host: str = "127.0.0.1"
    port: int = 8000


MODES = ("adaptive", "normal", "aggregate")


@dataclass(frozen=True)
class BookkeeperConfig:
    """Block sizes; see :class:`posaudit.bookkeeper.BatchPolicy`.

    Attributes:
        mode: ``adaptive`` follows the network monitor (claim 6); ``normal`` always
            sends one record per block and ``aggregate`` always aggregates, for
            benchmarks and tests that compare the two.
    """

    mode: str = "adaptive"
    aggregate_size: int = BatchPolicy.aggregate_size
    flush_timeout: float = BatchPolicy.flush_timeout
    max_block_records: int = BatchPolicy.max_block_records

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(
                f"[bookkeeper] mode must be one of {', '.join(MODES)};"
                f" got {self.mode!r}."
            )

    def policy(self) -> BatchPolicy:
        """The batch policy these settings describe."""
        return BatchPolicy(
            self.aggregate_size, self.flush_timeout, self.max_block_records
        )


@dataclass(frozen=True)
class MonitorConfig:
    """Thresholds; see :class:`posaudit.monitor_policy.MonitorSettings`.

    Attributes:
        hysteresis: False sets the leave levels to the enter levels and the hold time
            to 0, to compare with a monitor that flaps.
    """

    window_seconds: float = MonitorSettings.window_seconds
    enter_block_rate: float = MonitorSettings.enter_block_rate
    leave_block_rate: float = MonitorSettings.leave_block_rate
    enter_link_rate: float = MonitorSettings.enter_link_rate
    leave_link_rate: float = MonitorSettings.leave_link_rate
    min_hold_seconds: float = MonitorSettings.min_hold_seconds
    hysteresis: bool = True

    def settings(self) -> MonitorSettings:
        """The monitor settings these values describe."""
        settings = MonitorSettings(
            window_seconds=self.window_seconds,
            enter_block_rate=self.enter_block_rate,
            leave_block_rate=self.leave_block_rate,
            enter_link_rate=self.enter_link_rate,
            leave_link_rate=self.leave_link_rate,
            min_hold_seconds=self.min_hold_seconds,
        )
        return settings if self.hysteresis else settings.without_hysteresis()


@dataclass(frozen=True)
class Config:
    """The whole service configuration."""

    chain: ChainConfig = field(default_factory=ChainConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    bookkeeper: BookkeeperConfig = field(default_factory=BookkeeperConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)


def load_config(
    path: Path | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Defaults, then the file at ``path`` (if given), then ``POSAUDIT_*`` variables.

    Raises:
        ConfigError: The file cannot be read or parsed, names an unknown section or
            key, or a value has the wrong type.
    """
    table = _read_file(path) if path is not None else {}
    environ = os.environ if environ is None else environ
    sections = {}
    for section in fields(Config):
        values = dict(table.pop(section.name, {}))
        section_type = section.default_factory  # type: ignore[misc]
        sections[section.name] = _section(
            section.name, section_type, values, environ, path
        )

    if table:
        raise ConfigError(
            f"Unknown section(s) {sorted(table)} in {path}; known: "
            f"{[section.name for section in fields(Config)]}."
        )

    return Config(**sections)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except OSError as err:
        raise ConfigError(f"Cannot read the configuration {path}: {err}.") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}.") from err


def _section(
    name: str,
    section_type: Any,
    values: dict[str, Any],
    environ: Mapping[str, str],
    path: Path | None,
) -> Any:
    known = {item.name: item for item in fields(section_type)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(
            f"Unknown key(s) {sorted(unknown)} in section [{name}] of {path}; known: "
            f"{sorted(known)}."
        )

    for key in known:
        variable = f"POSAUDIT_{name.upper()}_{key.upper()}"
        if variable in environ:
            values[key] = environ[variable]

    default = section_type()
    converted = {
        key: _convert(name, key, value, type(getattr(default, key)))
        for key, value in values.items()
    }
    return dataclasses.replace(default, **converted)


def _convert(section: str, key: str, value: Any, kind: type) -> Any:
    where = f"[{section}] {key}"
    if kind is bool:
        if isinstance(value, bool):
            return value

        if str(value).lower() in ("1", "true", "yes", "on"):
            return True

        if str(value).lower() in ("0", "false", "no", "off"):
            return False

        raise ConfigError(f"{where} must be true or false, got {value!r}.")

    if issubclass(kind, Path):
        return Path(str(value))

    try:
        if kind is int and isinstance(value, float):
            raise ValueError("not a whole number")

        return kind(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"{where} must be a {kind.__name__}, got {value!r}: {err}."
        ) from err
