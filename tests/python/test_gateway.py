"""The gateway on a real uvicorn server on loopback, its store in a temporary folder.

Most tests take terminal keys from a table; the last ones read them from the registry
on a real anvil. Every refused request must leave the store exactly as it was.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

from posaudit.audittree import AuditTree
from posaudit.chain.deploy import contract_at
from posaudit.cli import cli
from posaudit.exceptions import RecordNotInBlockError, UnknownTerminalError
from posaudit.gateway import create_app, create_chain_app, serve_in_background
from posaudit.records import (
    MAX_AMOUNT,
    Domain,
    SettlementRecord,
    SignedRecord,
    encode_record,
)
from posaudit.rules import StatusCode
from posaudit.signing import public_key_pem, sign
from posaudit.store import Store, StoredBlock
from posaudit.terminal_keys import RegistryKeys, StaticKeys
from posaudit.upload import ERROR_CODES, MAX_BATCH_RECORDS, upload_document

from .world import MERCHANT, PAYERS, World

DOMAIN = Domain(31337, "0x" + "1e" * 20)
JSON = {"Content-Type": "application/json"}
_sequences = itertools.count(1)


@dataclass
class Gateway:
    url: str
    db: Path

    def post(
        self,
        path: str,
        body: bytes | dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return requests.post(
            self.url + path, data=data, headers=JSON if headers is None else headers
        )

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path)

    def outbox(self) -> int:
        with sqlite3.connect(self.db) as db:
            query = "SELECT COUNT(*) FROM records WHERE block_hash IS NULL"
            return int(db.execute(query).fetchone()[0])

    def rows(self) -> list[tuple[bytes, bytes, bytes]]:
        """Every stored record as the SQLite file holds it, read past the gateway."""
        with sqlite3.connect(self.db) as db:
            return db.execute(
                "SELECT record_id, encoding, signature FROM records ORDER BY id"
            ).fetchall()


def make_signed(
    key: rsa.RSAPrivateKey,
    terminal_id: str = "TERM0001",
    sequence: int | None = None,
    **overrides: Any,
) -> SignedRecord:
    fields: dict[str, Any] = {
        "domain": DOMAIN,
        "record_id": os.urandom(16),
        "terminal_id": terminal_id,
        "sequence": next(_sequences) if sequence is None else sequence,
        "payer": "0x" + "a1" * 20,
        "merchant": "0x" + "b2" * 20,
        "amount": 1_000,
        "currency": "EUR",
        "timestamp": 1_900_000_000,
        "valid_until": 1_900_003_600,
    }
    fields.update(overrides)
    record = SettlementRecord(**fields)
    return SignedRecord(record, sign(key, encode_record(record)))


class FakeReceipt:
    def __init__(self, record_id: bytes) -> None:
        self.record_id = record_id

    def to_json(self) -> str:
        return json.dumps({"receipt_version": 1, "record": self.record_id.hex()})


def fake_receipts(store: Store, record_id: bytes) -> FakeReceipt:
    if store.record(record_id).block_hash is None:
        raise RecordNotInBlockError(f"Record {record_id.hex()} is in the outbox.")

    return FakeReceipt(record_id)


@pytest.fixture(scope="module")
def gateway(
    terminal_key: rsa.RSAPrivateKey,
    other_key: rsa.RSAPrivateKey,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    db = tmp_path_factory.mktemp("gateway") / "posaudit.db"
    keys = StaticKeys(
        {
            "TERM0001": terminal_key.public_key(),
            "TERM0002": other_key.public_key(),
            "TERM0003": terminal_key.public_key(),
        },
        inactive={"TERM0003"},
    )
    app = create_app(
        db,
        keys,
        domain=DOMAIN,
        network_state=lambda: {"state": "congested", "block_rate": 4.5},
        receipts=fake_receipts,
    )
    with serve_in_background(app) as url:
        yield Gateway(url, db)


@pytest.fixture(scope="module")
def stored(gateway: Gateway, terminal_key: rsa.RSAPrivateKey) -> SignedRecord:
    """A record already in the outbox, for the conflict cases."""
    signed = make_signed(terminal_key)
    assert gateway.post("/v1/records", upload_document(signed)).status_code == 201
    return signed


def assert_error(
    response: requests.Response, status: int, code: str, field: str | None
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert set(document) == {"error"}
    assert set(document["error"]) == {"code", "field", "message"}
    assert document["error"]["code"] == code
    assert document["error"]["field"] == field
    assert ERROR_CODES[code].status == status
    message = document["error"]["message"]
    assert message.endswith(".")
    if field is not None:
        assert field.split(".")[-1] in message


# Malformed uploads.

RAW = "@@raw@@"


def setting(path: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    """Set ``record.amount`` (or a top-level member) to ``value``."""

    def mutate(document: dict[str, Any]) -> dict[str, Any]:
        *parents, name = path.split(".")
        target = document
        for parent in parents:
            target = target[parent]

        target[name] = value
        return document

    return mutate


def dropping(path: str) -> Callable[[dict[str, Any]], Any]:
    def mutate(document: dict[str, Any]) -> dict[str, Any]:
        *parents, name = path.split(".")
        target = document
        for parent in parents:
            target = target[parent]

        del target[name]
        return document

    return mutate


def literal(path: str, text: str) -> Callable[[dict[str, Any]], Any]:
    """Write ``text`` into the JSON verbatim at ``path``: numbers no dumps can write."""

    def mutate(document: dict[str, Any]) -> bytes:
        body = json.dumps(setting(path, RAW)(document))
        return body.replace(f'"{RAW}"', text).encode()

    return mutate


def raw(body: bytes) -> Callable[[dict[str, Any]], Any]:
    return lambda document: body


def duplicate_amount(document: dict[str, Any]) -> bytes:
    body = json.dumps(document)
    return body.replace('"amount": 1000', '"amount": 1000, "amount": 1').encode()


def duplicate_signature(document: dict[str, Any]) -> bytes:
    body = json.dumps(document)
    return (body[:-1] + ', "signature": "0x00"}').encode()


def flip_signature_bit(document: dict[str, Any]) -> dict[str, Any]:
    signature = bytearray(bytes.fromhex(document["signature"][2:]))
    signature[100] ^= 0x01
    document["signature"] = "0x" + signature.hex()
    return document


HEX_ID = "ab" * 16
MALFORMED = [
    # (id, mutation, status, code, field)
    ("record-missing", dropping("record"), 422, "MISSING_FIELD", "record"),
    ("signature-missing", dropping("signature"), 422, "MISSING_FIELD", "signature"),
    (
        "amount-missing",
        dropping("record.amount"),
        422,
        "MISSING_FIELD",
        "record.amount",
    ),
    (
        "operator-missing",
        dropping("record.operator_id"),
        422,
        "MISSING_FIELD",
        "record.operator_id",
    ),
    (
        "extra-record-field",
        setting("record.tip", 5),
        422,
        "UNKNOWN_FIELD",
        "record.tip",
    ),
    ("extra-top-field", setting("note", "hi"), 422, "UNKNOWN_FIELD", "note"),
    ("amount-0", setting("record.amount", 0), 422, "OUT_OF_RANGE", "record.amount"),
    (
        "amount-minus-1",
        setting("record.amount", -1),
        422,
        "OUT_OF_RANGE",
        "record.amount",
    ),
    (
        "amount-2^63",
        setting("record.amount", 2**63),
        422,
        "OUT_OF_RANGE",
        "record.amount",
    ),
    (
        "amount-2^64",
        setting("record.amount", 2**64),
        422,
        "OUT_OF_RANGE",
        "record.amount",
    ),
    (
        "amount-2^256",
        setting("record.amount", 2**256),
        422,
        "OUT_OF_RANGE",
        "record.amount",
    ),
    (
        "amount-5000-digits",
        literal("record.amount", "9" * 5000),
        422,
        "OUT_OF_RANGE",
        "record.amount",
    ),
    (
        "amount-minus-5000-digits",
        literal("record.amount", "-" + "9" * 5000),
        422,
        "OUT_OF_RANGE",
        "record.amount",
    ),
    ("amount-1.5", setting("record.amount", 1.5), 422, "WRONG_TYPE", "record.amount"),
    (
        "amount-100.0",
        literal("record.amount", "100.0"),
        422,
        "WRONG_TYPE",
        "record.amount",
    ),
    ("amount-1e3", literal("record.amount", "1e3"), 422, "WRONG_TYPE", "record.amount"),
    (
        "amount-1e400",
        literal("record.amount", "1e400"),
        422,
        "WRONG_TYPE",
        "record.amount",
    ),
    (
        "amount-string",
        setting("record.amount", "100"),
        422,
        "WRONG_TYPE",
        "record.amount",
    ),
    ("amount-true", setting("record.amount", True), 422, "WRONG_TYPE", "record.amount"),
    ("amount-null", setting("record.amount", None), 422, "WRONG_TYPE", "record.amount"),
    ("amount-array", setting("record.amount", [1]), 422, "WRONG_TYPE", "record.amount"),
    ("amount-NaN", literal("record.amount", "NaN"), 400, "INVALID_JSON", None),
    (
        "sequence-0",
        setting("record.sequence", 0),
        422,
        "OUT_OF_RANGE",
        "record.sequence",
    ),
    (
        "sequence-2^64",
        setting("record.sequence", 2**64),
        422,
        "OUT_OF_RANGE",
        "record.sequence",
    ),
    (
        "timestamp-negative",
        setting("record.timestamp", -1),
        422,
        "OUT_OF_RANGE",
        "record.timestamp",
    ),
    (
        "valid-until-before-timestamp",
        setting("record.valid_until", 1_899_999_999),
        422,
        "OUT_OF_RANGE",
        "record.valid_until",
    ),
    (
        "goods-category-2^16",
        setting("record.goods_category", 2**16),
        422,
        "OUT_OF_RANGE",
        "record.goods_category",
    ),
    (
        "operator-id-2^32",
        setting("record.operator_id", 2**32),
        422,
        "OUT_OF_RANGE",
        "record.operator_id",
    ),
    (
        "chain-id-0",
        setting("record.chain_id", 0),
        422,
        "OUT_OF_RANGE",
        "record.chain_id",
    ),
    (
        "chain-id-other",
        setting("record.chain_id", 1),
        422,
        "WRONG_DOMAIN",
        "record.chain_id",
    ),
    (
        "ledger-other",
        setting("record.ledger", "0x" + "2f" * 20),
        422,
        "WRONG_DOMAIN",
        "record.ledger",
    ),
    (
        "record-id-31-digits",
        setting("record.record_id", HEX_ID[:31]),
        422,
        "BAD_LENGTH",
        "record.record_id",
    ),
    (
        "record-id-34-digits",
        setting("record.record_id", HEX_ID + "cd"),
        422,
        "BAD_LENGTH",
        "record.record_id",
    ),
    (
        "record-id-not-hex",
        setting("record.record_id", "zz" * 16),
        422,
        "BAD_FORMAT",
        "record.record_id",
    ),
    (
        "record-id-number",
        setting("record.record_id", 12345),
        422,
        "WRONG_TYPE",
        "record.record_id",
    ),
    (
        "terminal-id-7-chars",
        setting("record.terminal_id", "TERM001"),
        422,
        "BAD_LENGTH",
        "record.terminal_id",
    ),
    (
        "terminal-id-9-chars",
        setting("record.terminal_id", "TERM00001"),
        422,
        "BAD_LENGTH",
        "record.terminal_id",
    ),
    (
        "terminal-id-space",
        setting("record.terminal_id", "TERM 001"),
        422,
        "BAD_FORMAT",
        "record.terminal_id",
    ),
    (
        "terminal-id-non-ascii",
        setting("record.terminal_id", "TERMÄ001"),
        422,
        "BAD_FORMAT",
        "record.terminal_id",
    ),
    (
        "payer-39-digits",
        setting("record.payer", "0x" + "a1" * 19 + "a"),
        422,
        "BAD_LENGTH",
        "record.payer",
    ),
    (
        "payer-21-bytes",
        setting("record.payer", "0x" + "a1" * 21),
        422,
        "BAD_LENGTH",
        "record.payer",
    ),
    (
        "payer-without-0x",
        setting("record.payer", "a1" * 20),
        422,
        "BAD_FORMAT",
        "record.payer",
    ),
    (
        "merchant-not-hex",
        setting("record.merchant", "0x" + "g2" * 20),
        422,
        "BAD_FORMAT",
        "record.merchant",
    ),
    (
        "currency-unknown",
        setting("record.currency", "QQQ"),
        422,
        "OUT_OF_RANGE",
        "record.currency",
    ),
    (
        "currency-lowercase",
        setting("record.currency", "eur"),
        422,
        "OUT_OF_RANGE",
        "record.currency",
    ),
    (
        "signature-255-bytes",
        setting("signature", "0x" + "00" * 255),
        422,
        "BAD_LENGTH",
        "signature",
    ),
    (
        "signature-257-bytes",
        setting("signature", "0x" + "00" * 257),
        422,
        "BAD_LENGTH",
        "signature",
    ),
    ("signature-empty", setting("signature", "0x"), 422, "BAD_LENGTH", "signature"),
    (
        "signature-not-hex",
        setting("signature", "0x" + "zz" * 256),
        422,
        "BAD_FORMAT",
        "signature",
    ),
    (
        "signature-without-0x",
        setting("signature", "00" * 256),
        422,
        "BAD_FORMAT",
        "signature",
    ),
    (
        "signature-odd-digits",
        setting("signature", "0x" + "0" * 511),
        422,
        "BAD_FORMAT",
        "signature",
    ),
    ("signature-number", setting("signature", 7), 422, "WRONG_TYPE", "signature"),
    ("bad-signature", flip_signature_bit, 422, "BAD_SIGNATURE", "signature"),
    ("record-array", setting("record", []), 422, "WRONG_TYPE", "record"),
    ("record-string", setting("record", "x"), 422, "WRONG_TYPE", "record"),
    ("body-array", raw(b"[]"), 422, "WRONG_TYPE", None),
    ("body-number", raw(b"42"), 422, "WRONG_TYPE", None),
    ("body-null", raw(b"null"), 422, "WRONG_TYPE", None),
    ("body-empty", raw(b""), 400, "EMPTY_BODY", None),
    ("body-whitespace", raw(b" \r\n "), 400, "EMPTY_BODY", None),
    ("body-not-utf8", raw(b'{"record": "\xff\xfe"}'), 400, "BODY_NOT_UTF8", None),
    ("body-utf16", raw('{"a": 1}'.encode("utf-16")), 400, "BODY_NOT_UTF8", None),
    ("body-truncated", raw(b'{"record": {'), 400, "INVALID_JSON", None),
    ("body-trailing-garbage", raw(b"{} x"), 400, "INVALID_JSON", None),
    ("body-deep-nesting", raw(b"[" * 5_000 + b"]" * 5_000), 400, "INVALID_JSON", None),
    ("duplicate-key-record", duplicate_amount, 400, "DUPLICATE_KEY", "amount"),
    ("duplicate-key-top", duplicate_signature, 400, "DUPLICATE_KEY", "signature"),
]


@pytest.mark.parametrize(
    ("mutate", "status", "code", "field"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_upload_is_refused_with_its_code_and_nothing_stored(
    gateway, terminal_key, mutate, status, code, field
):
    document = upload_document(make_signed(terminal_key))
    body = mutate(copy.deepcopy(document))
    before = gateway.rows()

    response = gateway.post("/v1/records", body)

    assert_error(response, status, code, field)
    assert gateway.rows() == before


def test_upload_signed_by_another_terminals_key_is_refused(gateway, other_key):
    signed = make_signed(other_key, "TERM0001")
    before = gateway.rows()

    response = gateway.post("/v1/records", upload_document(signed))

    assert_error(response, 422, "BAD_SIGNATURE", "signature")
    assert gateway.rows() == before


@pytest.mark.parametrize(
    ("terminal_id", "code"),
    [("TERM0099", "UNKNOWN_TERMINAL"), ("TERM0003", "TERMINAL_INACTIVE")],
    ids=["unknown-terminal", "inactive-terminal"],
)
def test_upload_of_unknown_or_inactive_terminal_is_forbidden(
    gateway, terminal_key, terminal_id, code
):
    signed = make_signed(terminal_key, terminal_id)
    before = gateway.rows()

    response = gateway.post("/v1/records", upload_document(signed))

    assert_error(response, 403, code, "record.terminal_id")
    assert terminal_id in response.json()["error"]["message"]
    assert gateway.rows() == before


@pytest.mark.parametrize(
    "changed",
    [
        {"amount": 2_000},
        {"record_id": os.urandom(16)},
        {"sequence": 10**9},
    ],
    ids=["replay-changed-amount", "same-sequence-new-id", "same-id-new-sequence"],
)
def test_replay_with_changed_content_is_a_conflict(
    gateway, stored, terminal_key, changed
):
    original = stored.record
    fields = {
        "record_id": original.record_id,
        "sequence": original.sequence,
        "amount": original.amount,
    }
    fields.update(changed)
    replay = make_signed(terminal_key, **fields)
    before = gateway.rows()

    response = gateway.post("/v1/records", upload_document(replay))

    assert_error(response, 409, "RECORD_CONFLICT", None)
    assert gateway.rows() == before


@pytest.mark.parametrize(
    ("headers", "code", "status"),
    [
        ({"Content-Type": "text/plain"}, "UNSUPPORTED_MEDIA_TYPE", 415),
        ({}, "UNSUPPORTED_MEDIA_TYPE", 415),
        (
            {"Content-Type": "application/json; charset=latin-1"},
            "UNSUPPORTED_MEDIA_TYPE",
            415,
        ),
    ],
    ids=["text-plain", "no-content-type", "latin-1"],
)
def test_upload_with_wrong_content_type_is_refused(
    gateway, terminal_key, headers, code, status
):
    body = json.dumps(upload_document(make_signed(terminal_key))).encode()
    before = gateway.rows()

    response = gateway.post("/v1/records", body, headers)

    assert_error(response, status, code, None)
    assert gateway.rows() == before


def test_oversized_body_is_refused_by_its_declared_length(gateway, terminal_key):
    document = upload_document(make_signed(terminal_key))
    body = json.dumps(document).encode() + b" " * 16 * 1024
    before = gateway.rows()

    response = gateway.post("/v1/records", body)

    assert_error(response, 413, "BODY_TOO_LARGE", None)
    assert gateway.rows() == before


def test_oversized_chunked_body_is_refused_by_its_bytes(gateway, terminal_key):
    document = upload_document(make_signed(terminal_key))
    chunks = [json.dumps(document).encode()] + [b" " * 1024] * 20
    before = gateway.rows()

    response = requests.post(
        gateway.url + "/v1/records", data=iter(chunks), headers=JSON
    )

    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert_error(response, 413, "BODY_TOO_LARGE", None)
    assert gateway.rows() == before


# Good uploads.


def test_good_record_is_on_disk_before_the_201(gateway, terminal_key):
    signed = make_signed(terminal_key, amount=MAX_AMOUNT, operator_id=2**32 - 1)

    response = gateway.post("/v1/records", upload_document(signed))

    assert response.status_code == 201
    assert response.json() == {
        "record_id": signed.record.record_id.hex(),
        "status": "accepted",
    }
    row = (signed.record.record_id, signed.encoding, signed.signature)
    assert row in gateway.rows()


def test_exact_repeat_gets_the_first_answer_and_stores_nothing(gateway, terminal_key):
    body = json.dumps(upload_document(make_signed(terminal_key))).encode()
    first = gateway.post("/v1/records", body)
    rows = gateway.rows()

    again = gateway.post("/v1/records", body)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert gateway.rows() == rows


def test_batch_stores_the_good_records_and_reports_each_bad_one(
    gateway, stored, terminal_key, other_key
):
    good = [make_signed(terminal_key) for _ in range(3)]
    bad_amount = upload_document(make_signed(terminal_key))
    bad_amount["record"]["amount"] = 2**64
    forged = make_signed(other_key)
    conflict = make_signed(terminal_key, sequence=stored.record.sequence)
    uploads = [
        upload_document(good[0]),
        bad_amount,
        upload_document(good[1]),
        upload_document(forged),
        upload_document(stored),
        upload_document(conflict),
        upload_document(good[2]),
        upload_document(good[0]),
        "not an upload",
    ]
    before = gateway.rows()

    response = gateway.post("/v1/records/batch", {"records": uploads})

    assert response.status_code == 200
    reply = response.json()
    assert (reply["accepted"], reply["duplicates"], reply["rejected"]) == (3, 2, 4)
    results = reply["results"]
    assert [r["index"] for r in results] == list(range(len(uploads)))
    assert [r["status"] for r in results] == [
        "accepted",
        "rejected",
        "accepted",
        "rejected",
        "accepted",
        "rejected",
        "accepted",
        "accepted",
        "rejected",
    ]
    assert [r.get("created") for r in results] == [
        True,
        None,
        True,
        None,
        False,
        None,
        True,
        False,
        None,
    ]
    errors = {r["index"]: r["error"] for r in results if r["status"] == "rejected"}
    assert {i: (e["code"], e["field"]) for i, e in errors.items()} == {
        1: ("OUT_OF_RANGE", "record.amount"),
        3: ("BAD_SIGNATURE", "signature"),
        5: ("RECORD_CONFLICT", None),
        8: ("WRONG_TYPE", None),
    }
    added = gateway.rows()[len(before) :]
    assert added == [(g.record.record_id, g.encoding, g.signature) for g in good]


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"records": []}, "BATCH_EMPTY", "records"),
        ({"records": {}}, "WRONG_TYPE", "records"),
        ({"uploads": []}, "UNKNOWN_FIELD", "uploads"),
        ({}, "MISSING_FIELD", "records"),
        ([], "WRONG_TYPE", None),
    ],
    ids=["empty", "records-object", "unknown-member", "no-records", "array"],
)
def test_malformed_batch_is_refused_whole(gateway, body, code, field):
    before = gateway.rows()

    response = gateway.post("/v1/records/batch", body)

    assert_error(response, 422, code, field)
    assert gateway.rows() == before


def test_batch_over_the_maximum_is_refused_whole(gateway, terminal_key):
    upload = upload_document(make_signed(terminal_key))
    before = gateway.rows()

    response = gateway.post(
        "/v1/records/batch", {"records": [upload] * (MAX_BATCH_RECORDS + 1)}
    )

    assert_error(response, 422, "BATCH_TOO_LARGE", "records")
    assert str(MAX_BATCH_RECORDS) in response.json()["error"]["message"]
    assert gateway.rows() == before


# Status, receipts and the rest.


def test_status_follows_a_record_from_outbox_to_block_to_audit(gateway, terminal_key):
    signed = make_signed(terminal_key)
    record_id = signed.record.record_id.hex()
    gateway.post("/v1/records", upload_document(signed))

    in_outbox = gateway.get(f"/v1/records/{record_id}").json()
    not_ready = gateway.get(f"/v1/records/{record_id}/receipt")
    block = StoredBlock(
        block_hash=os.urandom(32),
        height=1,
        records_root=AuditTree.from_leaves([signed.leaf]).root,
        record_count=1,
        chain_block=7,
        transaction_hash=b"\x01" * 32,
        timestamp=1_900_000_000,
        audit_transaction=None,
    )
    with Store(gateway.db) as store:
        store.save_block(
            block, [signed], AuditTree.from_leaves([signed.leaf]), [StatusCode.APPROVED]
        )
        held = gateway.get(f"/v1/records/{record_id}").json()
        store.save_audit(block.block_hash, b"\x02" * 32)

    audited = gateway.get(f"/v1/records/{record_id}").json()
    receipt = gateway.get(f"/v1/records/0x{record_id.upper()}/receipt")

    assert in_outbox["status"] == "in_outbox"
    assert in_outbox["sequence"] == signed.record.sequence
    assert_error(not_ready, 409, "RECEIPT_NOT_READY", "record_id")
    assert held["status"] == "in_block"
    assert held["block"]["hash"] == "0x" + block.block_hash.hex()
    assert (held["leaf_index"], held["code"], held["settlement"]) == (
        0,
        "APPROVED",
        "HELD",
    )
    assert audited["settlement"] == "AUDITED"
    assert audited["audit_transaction"] == "0x" + "02" * 32
    assert receipt.status_code == 200
    assert receipt.json() == {"receipt_version": 1, "record": record_id}


@pytest.mark.parametrize(
    ("path", "status", "code", "field"),
    [
        ("/v1/records/" + "ab" * 16, 404, "RECORD_NOT_FOUND", "record_id"),
        ("/v1/records/" + "ab" * 15, 422, "BAD_LENGTH", "record_id"),
        ("/v1/records/" + "zz" * 16, 422, "BAD_FORMAT", "record_id"),
        ("/v1/records/" + "ab" * 16 + "/receipt", 404, "RECORD_NOT_FOUND", "record_id"),
        ("/v2/records", 404, "NOT_FOUND", None),
    ],
    ids=["unknown-id", "short-id", "non-hex-id", "receipt-unknown-id", "no-path"],
)
def test_bad_lookups_get_their_codes(gateway, path, status, code, field):
    assert_error(gateway.get(path), status, code, field)


def test_wrong_method_is_not_allowed(gateway):
    response = requests.delete(gateway.url + "/v1/records")

    assert_error(response, 405, "METHOD_NOT_ALLOWED", None)


def test_network_health_and_openapi(gateway):
    network = gateway.get("/v1/network").json()
    health = gateway.get("/health").json()
    document = gateway.get("/openapi.json").json()

    assert network == {"state": "congested", "block_rate": 4.5}
    assert health["status"] == "ok"
    assert health["outbox"] == gateway.outbox()
    assert set(document["paths"]) == {
        "/v1/records",
        "/v1/records/batch",
        "/v1/records/{record_id}",
        "/v1/records/{record_id}/receipt",
        "/v1/network",
        "/health",
        "/metrics",
    }
    upload = document["paths"]["/v1/records"]["post"]
    assert {
        "200",
        "201",
        "400",
        "403",
        "409",
        "413",
        "415",
        "422",
        "500",
        "503",
    } <= set(upload["responses"])
    for code in ("BAD_SIGNATURE", "OUT_OF_RANGE", "DUPLICATE_KEY", "RECORD_CONFLICT"):
        status = str(ERROR_CODES[code].status)
        assert code in upload["responses"][status]["description"]

    schema = upload["requestBody"]["content"]["application/json"]["schema"]
    amount = schema["properties"]["record"]["properties"]["amount"]
    assert (amount["minimum"], amount["maximum"]) == (1, MAX_AMOUNT)


def test_network_state_is_unknown_without_a_monitor(tmp_path):
    app = create_app(tmp_path / "posaudit.db", StaticKeys({}))

    with serve_in_background(app) as url:
        network = requests.get(url + "/v1/network").json()
        receipt = requests.get(url + "/v1/records/" + "ab" * 16 + "/receipt")

    assert network["state"] == "unknown"
    assert_error(receipt, 404, "NOT_FOUND", None)


def metric_values(gateway: Gateway) -> dict[tuple[str, tuple[str, ...]], float]:
    text = gateway.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_accepted_duplicate_and_rejected_by_code(gateway, terminal_key):
    signed = make_signed(terminal_key)
    bad = upload_document(make_signed(terminal_key))
    bad["record"]["amount"] = True
    before = metric_values(gateway)

    gateway.post("/v1/records", upload_document(signed))
    gateway.post("/v1/records", upload_document(signed))
    gateway.post("/v1/records", bad)
    after = metric_values(gateway)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("posaudit_gateway_records_accepted_total") == 1
    assert grew("posaudit_gateway_records_duplicate_total") == 1
    assert grew("posaudit_gateway_records_rejected_total", code="WRONG_TYPE") == 1
    assert after[("posaudit_gateway_outbox_depth", ())] == gateway.outbox()
    latency = (
        "posaudit_gateway_request_duration_seconds_count",
        (("method", "POST"), ("route", "/v1/records"), ("status", "201")),
    )
    assert after[latency] - before.get(latency, 0.0) == 1


# The registry on a real chain.


def test_registry_keys_pick_up_a_new_terminal_and_refuse_a_deactivated_one(
    world: World, other_key: rsa.RSAPrivateKey, tmp_path: Path
):
    """TERM0042, registered after the gateway started, is accepted; then refused."""
    db = tmp_path / "posaudit.db"
    app = create_chain_app(db, world.w3, world.deployment, refresh_interval=0.0)
    domain = Domain(world.deployment.chain_id, world.deployment.ledger)
    now = int(world.w3.eth.get_block("latest")["timestamp"])

    def upload(sequence: int) -> dict[str, Any]:
        return upload_document(
            make_signed(
                other_key,
                "TERM0042",
                sequence,
                domain=domain,
                payer=PAYERS[0],
                merchant=MERCHANT,
                timestamp=now,
                valid_until=now + 3_600,
            )
        )

    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    (key_dir / "TERM0042.pub.pem").write_bytes(public_key_pem(other_key))
    world.deployment.save(tmp_path / "deployment.json")
    with serve_in_background(app) as url:
        gateway = Gateway(url, db)
        unknown = gateway.post("/v1/records", upload(1))
        registered = CliRunner().invoke(
            cli,
            [
                "terminal",
                "register",
                "--terminal-id",
                "TERM0042",
                "--key-dir",
                str(key_dir),
                "--merchant",
                MERCHANT,
                "--deployment",
                str(tmp_path / "deployment.json"),
                "--rpc",
                world.w3.provider.endpoint_uri,
            ],
        )
        accepted = gateway.post("/v1/records", upload(2))
        world.ledger.deactivate_terminal("TERM0042")
        refused = gateway.post("/v1/records", upload(3))
        rows = gateway.rows()

    assert_error(unknown, 403, "UNKNOWN_TERMINAL", "record.terminal_id")
    assert registered.exit_code == 0, registered.output
    assert accepted.status_code == 201, accepted.text
    assert_error(refused, 403, "TERMINAL_INACTIVE", "record.terminal_id")
    assert len(rows) == 1
    registry = contract_at(world.w3, "TerminalRegistry", world.deployment.registry)
    assert registry.functions.terminalStatus(b"TERM0042").call()[1] is False


def test_chain_gateway_refuses_another_domain_and_serves_the_receipt(
    world: World, tmp_path: Path
):
    """A record through the gateway, put on chain by the bookkeeper, has a receipt."""
    from posaudit.bookkeeper import Bookkeeper

    db = tmp_path / "posaudit.db"
    app = create_chain_app(db, world.w3, world.deployment)
    signed = world.record(100)
    foreign = upload_document(signed)
    foreign["record"]["chain_id"] = 1
    record_id = signed.record.record_id.hex()

    with serve_in_background(app) as url:
        gateway = Gateway(url, db)
        wrong_domain = gateway.post("/v1/records", foreign)
        accepted = gateway.post("/v1/records", upload_document(signed))
        with Store(db) as store:
            Bookkeeper(store, world.ledger, world.audit).step(1)

        status = gateway.get(f"/v1/records/{record_id}").json()
        receipt = gateway.get(f"/v1/records/{record_id}/receipt")

    assert_error(wrong_domain, 422, "WRONG_DOMAIN", "record.chain_id")
    assert accepted.status_code == 201
    assert (status["status"], status["code"], status["settlement"]) == (
        "in_block",
        "APPROVED",
        "AUDITED",
    )
    assert receipt.status_code == 200, receipt.text
    document = receipt.json()
    assert document["receipt_version"] == 1
    assert document["record"]["fields"]["record_id"] == "0x" + record_id
    assert document["status"] == {"code": "APPROVED", "settlement": "SETTLED"}


def test_registry_keys_read_the_chain_at_most_once_per_interval(
    world: World, other_key: rsa.RSAPrivateKey
):
    """A terminal registered within the interval is unknown until the interval ends."""
    now = [100.0]
    keys = RegistryKeys(world.w3, world.deployment, clock=lambda: now[0])
    known = keys.key_of("TERM0001")
    world.ledger.register_terminal("TERM0043", MERCHANT, other_key.public_key())

    with pytest.raises(UnknownTerminalError, match="TERM0043"):
        keys.key_of("TERM0043")

    now[0] += 0.999
    with pytest.raises(UnknownTerminalError):
        keys.key_of("TERM0043")

    now[0] += 0.001
    found = keys.key_of("TERM0043")

    assert known.public_numbers() == world.key.public_key().public_numbers()
    assert found.public_numbers() == other_key.public_key().public_numbers()
