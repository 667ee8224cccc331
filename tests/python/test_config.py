"""Configuration: defaults, a TOML file, environment variables over it, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from posaudit.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "posaudit.toml"
    path.write_text(text)
    return path


def test_defaults_run_everything_locally():
    config = load_config(environ={})

    assert config.chain.rpc_url == ""
    assert config.chain.devnet_state == Path("out/devnet-state.json")
    assert config.store.path == Path("out/posaudit.db")
    assert config.bookkeeper.policy().aggregate_size == 64
    assert config.monitor.settings().min_hold_seconds == 20.0


def test_file_sets_and_environment_overrides(tmp_path):
    path = write(
        tmp_path,
        '[chain]\nrpc_url = "http://file:8545"\n[bookkeeper]\naggregate_size = 128\n',
    )

    config = load_config(path, environ={"POSAUDIT_CHAIN_RPC_URL": "http://env:8545"})

    assert config.chain.rpc_url == "http://env:8545"
    assert config.bookkeeper.aggregate_size == 128


def test_hysteresis_off_sets_leave_levels_to_enter_levels(tmp_path):
    config = load_config(environ={"POSAUDIT_MONITOR_HYSTERESIS": "false"})

    settings = config.monitor.settings()
    assert settings.leave_block_rate == settings.enter_block_rate
    assert settings.min_hold_seconds == 0


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("[chian]\n", {}, "Unknown section"),
        ("[chain]\nrpc = 1\n", {}, "Unknown key"),
        ("[gateway]\nport = 'eighty'\n", {}, r"\[gateway\] port must be a int"),
        ("[bookkeeper]\naggregate_size = 1.5\n", {}, "aggregate_size"),
        ("", {"POSAUDIT_MONITOR_HYSTERESIS": "maybe"}, "true or false"),
        ("[chain\n", {}, "not valid TOML"),
        ("[bookkeeper]\nmode = 'turbo'\n", {}, "mode must be one of"),
    ],
    ids=["section", "key", "type", "float-for-int", "bool", "syntax", "mode"],
)
def test_bad_configuration_is_named(tmp_path, text, environ, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), environ=environ)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read"):
        load_config(tmp_path / "nope.toml", environ={})
