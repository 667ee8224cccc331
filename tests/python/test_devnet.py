"""The anvil devnet: start on a free loopback port, answer, stop without leftovers."""

import socket

import pytest

from posaudit.chain.deploy import connect
from posaudit.chain.devnet import Devnet
from posaudit.exceptions import DevnetError


def port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_devnet_answers_then_stops_and_frees_its_port() -> None:
    with Devnet() as devnet:
        w3 = connect(devnet.rpc_url)

        assert w3.eth.chain_id == 31337
        assert len(w3.eth.accounts) == 10
        assert port_is_open(devnet.port)

    assert not port_is_open(devnet.port)


def test_devnet_kill_leaves_no_node() -> None:
    devnet = Devnet()
    devnet.start()

    devnet.kill()

    assert not port_is_open(devnet.port)


def test_missing_anvil_binary_raises_devnet_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSAUDIT_ANVIL", "/nonexistent/anvil")

    with pytest.raises(DevnetError, match="/nonexistent/anvil"):
        Devnet().start()


def test_busy_port_raises_devnet_error() -> None:
    with Devnet() as first, pytest.raises(DevnetError, match="already in use"):
        Devnet(port=first.port, startup_timeout=5).start()
