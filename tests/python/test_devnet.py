"""The anvil devnet: start on a free loopback port, answer, stop without leftovers,
start again on the same port from its state file."""

import json
import socket
import time
from pathlib import Path

import pytest
from web3 import Web3
from web3.exceptions import TransactionNotFound

from posaudit.chain.deploy import connect
from posaudit.chain.devnet import Devnet
from posaudit.exceptions import DevnetError


def port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def transfer(w3: Web3) -> bytes:
    sender, receiver = w3.eth.accounts[:2]
    transaction = w3.eth.send_transaction({"from": sender, "to": receiver, "value": 1})
    return bytes(transaction)


def wait_for_dump(state: Path, height: int, timeout: float = 10.0) -> None:
    """Wait until ``state`` holds a whole dump of the chain at ``height`` or above."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(state.read_text())["best_block_number"] >= height:
                return
        except (OSError, ValueError, KeyError):
            pass  # not written yet, or being written
        time.sleep(0.02)
    raise TimeoutError(f"{state} held no dump at height {height} after {timeout} s.")


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


def test_devnet_restart_after_kill_comes_back_with_its_last_periodic_dump(
    tmp_path: Path,
) -> None:
    """SIGKILL loses what was mined after the last dump, nothing before it."""
    state = tmp_path / "state.json"
    with Devnet(state=state, state_interval=1) as devnet:
        w3 = connect(devnet.rpc_url)
        dumped = transfer(w3)
        wait_for_dump(state, height=1)
        lost = transfer(w3)

        url = devnet.restart(crash=True)
        w3 = connect(url)

        assert url == f"http://127.0.0.1:{devnet.port}"
        assert w3.eth.block_number == 1
        assert w3.eth.get_transaction_receipt(dumped)["status"] == 1
        with pytest.raises(TransactionNotFound):
            w3.eth.get_transaction_receipt(lost)


def test_devnet_restart_after_sigterm_keeps_every_block(tmp_path: Path) -> None:
    """SIGTERM dumps the whole state: the node comes back at the same height."""
    state = tmp_path / "state.json"
    with Devnet(state=state) as devnet:
        w3 = connect(devnet.rpc_url)
        sent = [transfer(w3) for _ in range(3)]

        w3 = connect(devnet.restart())

        assert w3.eth.block_number == 3
        assert [w3.eth.get_transaction_receipt(t)["status"] for t in sent] == [1] * 3
        assert port_is_open(devnet.port)


def test_devnet_state_interval_without_a_state_file_raises_value_error() -> None:
    with pytest.raises(ValueError, match="no state file"):
        Devnet(state_interval=1)
