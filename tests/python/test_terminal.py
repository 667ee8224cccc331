"""The terminal client and ``posaudit terminal`` against a real gateway on loopback."""

from __future__ import annotations

import itertools
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa

from posaudit.chain.deploy import Deployment
from posaudit.cli import cli
from posaudit.exceptions import (
    FieldRangeError,
    GatewayUnavailableError,
    SequenceFileError,
    UploadRejectedError,
)
from posaudit.gateway import create_app, serve_in_background
from posaudit.records import MAX_UINT64, Domain
from posaudit.signing import load_private_key, load_public_key, save_key_pair
from posaudit.terminal import SequenceFile, TerminalClient
from posaudit.terminal_keys import StaticKeys

DOMAIN = Domain(31337, "0x" + "1e" * 20)
PAYER = "0x" + "a1" * 20
MERCHANT = "0x" + "b2" * 20
PASSPHRASE = "correct horse battery staple"


@dataclass
class Gateway:
    url: str
    db: Path

    def count(self) -> int:
        with sqlite3.connect(self.db) as db:
            return int(db.execute("SELECT COUNT(*) FROM records").fetchone()[0])


@pytest.fixture(scope="module")
def gateway(
    terminal_key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    db = tmp_path_factory.mktemp("terminal") / "posaudit.db"
    keys = StaticKeys({"TERM0001": terminal_key.public_key()})
    with serve_in_background(create_app(db, keys, domain=DOMAIN)) as url:
        yield Gateway(url, db)


@pytest.fixture
def client(
    gateway: Gateway, terminal_key: rsa.RSAPrivateKey
) -> Iterator[TerminalClient]:
    with TerminalClient(gateway.url, "TERM0001", terminal_key, DOMAIN) as client:
        yield client


_sequences = itertools.count(1)


def next_sequence() -> int:
    return next(_sequences)


class SlowFirstAnswerProxy:
    """Forwards each request to the gateway; holds the first answer past the timeout.

    The first request reaches the gateway, which stores the record, but its answer
    comes too late: the client has given up, as behind a congested link.
    """

    def __init__(self, upstream: str, delay: float) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.delay = delay
        self.bodies: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._closed = threading.Event()
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        count = 0
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue

            connection.settimeout(None)

            threading.Thread(
                target=self._forward, args=(connection, count == 0), daemon=True
            ).start()
            count += 1

    def _forward(self, connection: socket.socket, slow: bool) -> None:
        with connection:
            request = _read_request(connection)
            self.bodies.append(request.split(b"\r\n\r\n", 1)[1])
            request = _closing(request)
            with socket.create_connection(self.upstream) as upstream:
                upstream.sendall(request)
                answer = b"".join(iter(lambda: upstream.recv(65_536), b""))

            if slow:
                time.sleep(self.delay)

            try:
                connection.sendall(answer)
            except OSError:
                return


def _closing(request: bytes) -> bytes:
    """``request`` asking the upstream to close the connection after its answer, so
    that the proxy reads the answer to its end."""
    head, body = request.split(b"\r\n\r\n", 1)
    lines = [
        line
        for line in head.split(b"\r\n")
        if not line.lower().startswith(b"connection:")
    ]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body


def _read_request(connection: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65_536)

    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(65_536)

    return head + b"\r\n\r\n" + body


# Sequence file.


def test_sequence_file_hands_out_increasing_numbers_across_instances(tmp_path):
    path = tmp_path / "keys" / "TERM0001.sequence.json"

    first = SequenceFile(path, "TERM0001").take()
    block = SequenceFile(path, "TERM0001").take(10)
    after = SequenceFile(path, "TERM0001").peek()

    assert (first, block, after) == (1, 2, 12)
    assert json.loads(path.read_text()) == {"terminal_id": "TERM0001", "next": 12}


def test_sequence_file_of_another_terminal_is_refused(tmp_path):
    path = tmp_path / "TERM0001.sequence.json"
    SequenceFile(path, "TERM0001").take()

    with pytest.raises(SequenceFileError, match="TERM0002"):
        SequenceFile(path, "TERM0002").take()


def test_sequence_file_refuses_to_pass_2_64(tmp_path):
    path = tmp_path / "TERM0001.sequence.json"
    path.write_text(json.dumps({"terminal_id": "TERM0001", "next": MAX_UINT64}))
    sequences = SequenceFile(path, "TERM0001")

    assert sequences.take() == MAX_UINT64
    with pytest.raises(SequenceFileError, match="at most"):
        sequences.take()


# Client.


def test_client_submit_stores_once_and_repeat_gets_the_first_answer(client, gateway):
    signed = client.make_record(next_sequence(), PAYER, MERCHANT, 1_500, "EUR")
    before = gateway.count()

    first = client.submit(signed)
    again = client.submit(signed)

    assert (first.created, again.created) == (True, False)
    assert first.record_id == again.record_id == signed.record.record_id
    assert first.status == again.status == "accepted"
    assert gateway.count() == before + 1
    assert client.status(signed.record.record_id)["status"] == "in_outbox"


def test_client_conflict_raises_with_the_gateways_code(client):
    sequence = next_sequence()
    client.submit(client.make_record(sequence, PAYER, MERCHANT, 100, "EUR"))
    changed = client.make_record(sequence, PAYER, MERCHANT, 200, "EUR")

    with pytest.raises(UploadRejectedError) as caught:
        client.submit(changed)

    assert (caught.value.code, caught.value.status) == ("RECORD_CONFLICT", 409)


def test_client_record_for_another_domain_raises_wrong_domain(gateway, terminal_key):
    other = Domain(1, DOMAIN.ledger)
    with TerminalClient(gateway.url, "TERM0001", terminal_key, other) as client:
        signed = client.make_record(next_sequence(), PAYER, MERCHANT, 100, "EUR")

        with pytest.raises(UploadRejectedError) as caught:
            client.submit(signed)

    assert (caught.value.code, caught.value.field) == (
        "WRONG_DOMAIN",
        "record.chain_id",
    )


def test_client_refuses_to_build_an_out_of_range_record(client):
    with pytest.raises(FieldRangeError, match="amount"):
        client.make_record(next_sequence(), PAYER, MERCHANT, 2**63, "EUR")


def test_client_batch_reports_each_outcome(client, gateway, other_key):
    records = [
        client.make_record(next_sequence(), PAYER, MERCHANT, 10 + i, "EUR")
        for i in range(3)
    ]
    with TerminalClient(gateway.url, "TERM0001", other_key, DOMAIN) as forger:
        forged = forger.make_record(next_sequence(), PAYER, MERCHANT, 99, "EUR")

    client.submit(records[0])
    before = gateway.count()

    answer = client.submit_batch([*records, forged])

    assert (answer.accepted, answer.duplicates, answer.rejected) == (2, 1, 1)
    assert [o.created for o in answer.outcomes] == [False, True, True, None]
    error = answer.outcomes[3].error
    assert error is not None
    assert (error.code, error.status) == ("BAD_SIGNATURE", 422)
    assert gateway.count() == before + 2


def test_client_retries_a_timed_out_request_with_the_same_body(
    client, gateway, terminal_key
):
    """The first answer is lost; the retry gets the gateway's exactly-once answer."""
    proxy = SlowFirstAnswerProxy(gateway.url, delay=1.0)
    signed = client.make_record(next_sequence(), PAYER, MERCHANT, 700, "EUR")
    before = gateway.count()
    try:
        with TerminalClient(
            proxy.url,
            "TERM0001",
            terminal_key,
            DOMAIN,
            timeout=0.4,
            retries=2,
            backoff=0.05,
        ) as slow:
            answer = slow.submit(signed)
    finally:
        proxy.close()

    assert answer.attempts == 2
    assert answer.created is False
    assert answer.record_id == signed.record.record_id
    assert len(proxy.bodies) == 2
    assert proxy.bodies[0] == proxy.bodies[1]
    assert gateway.count() == before + 1


def test_client_gives_up_when_nothing_answers(terminal_key):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]

    url = f"http://127.0.0.1:{port}"

    with TerminalClient(
        url, "TERM0001", terminal_key, DOMAIN, timeout=0.2, retries=1, backoff=0.01
    ) as client:
        signed = client.make_record(1, PAYER, MERCHANT, 100, "EUR")

        with pytest.raises(GatewayUnavailableError, match="2 attempts"):
            client.submit(signed)


# The posaudit terminal commands.


def test_keygen_writes_an_encrypted_key_pair(tmp_path, monkeypatch):
    monkeypatch.setenv("POSAUDIT_KEY_PASSPHRASE", PASSPHRASE)

    result = CliRunner().invoke(
        cli,
        ["terminal", "keygen", "--out", str(tmp_path), "--terminal-id", "TERM0007"],
    )

    assert result.exit_code == 0, result.output
    private = (tmp_path / "TERM0007.key.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in private
    assert (tmp_path / "TERM0007.key.pem").stat().st_mode & 0o777 == 0o600
    key = load_private_key(private, PASSPHRASE.encode())
    public = load_public_key((tmp_path / "TERM0007.pub.pem").read_bytes())
    assert key.public_key().public_numbers() == public.public_numbers()


def test_keygen_rejects_a_bad_terminal_id(tmp_path):
    result = CliRunner().invoke(
        cli, ["terminal", "keygen", "--out", str(tmp_path), "--terminal-id", "T1"]
    )

    assert result.exit_code == 2
    assert "8 printable ASCII" in result.output


def test_submit_command_uploads_one_record_and_a_file(
    gateway, terminal_key, tmp_path, monkeypatch
):
    monkeypatch.setenv("POSAUDIT_KEY_PASSPHRASE", PASSPHRASE)
    save_key_pair(terminal_key, tmp_path, "TERM0001", PASSPHRASE.encode())
    deployment = tmp_path / "deployment.json"
    Deployment(
        DOMAIN.chain_id, "0x" + "11" * 20, DOMAIN.ledger, "0x" + "22" * 20, "EUR"
    ).save(deployment)
    sequences = tmp_path / "TERM0001.sequence.json"
    sequences.write_text(json.dumps({"terminal_id": "TERM0001", "next": 500_000}))
    lines = tmp_path / "records.jsonl"
    lines.write_text(
        "\n".join(
            json.dumps({"payer": PAYER, "merchant": MERCHANT, "amount": amount})
            for amount in (5, 6, 2**63)
        )
        + "\n"
    )
    common = [
        "terminal",
        "submit",
        "--terminal-id",
        "TERM0001",
        "--key-dir",
        str(tmp_path),
        "--gateway",
        gateway.url,
        "--deployment",
        str(deployment),
        "--json",
    ]
    before = gateway.count()

    one = CliRunner().invoke(
        cli, [*common, "--payer", PAYER, "--merchant", MERCHANT, "--amount", "42"]
    )
    bad_file = CliRunner().invoke(cli, [*common, "--file", str(lines)])
    lines.write_text(lines.read_text().splitlines()[0] + "\n")
    good_file = CliRunner().invoke(cli, [*common, "--file", str(lines)])

    assert one.exit_code == 0, one.output
    assert json.loads(one.output)[0]["outcome"] == "stored"
    assert json.loads(one.output)[0]["sequence"] == 500_000
    assert bad_file.exit_code == 1
    assert "amount" in bad_file.output
    assert good_file.exit_code == 0, good_file.output
    assert json.loads(good_file.output)[0]["sequence"] == 500_004
    assert gateway.count() == before + 2
