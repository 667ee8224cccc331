"""Receipts: written from the store and the chain, verified by anyone.

The pure tests build a receipt from a real audit tree and a real RSA signature and
damage it one bit at a time, checking which checks notice. The chain tests run the
``posaudit receipt`` and ``posaudit verify`` commands against records a bookkeeper
settled on a real anvil.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric import rsa
from web3 import Web3

from posaudit.audit import AuditClient, SettlementStatus
from posaudit.audittree import AuditTree, leaf_hash
from posaudit.blocks import BlockHeader
from posaudit.bookkeeper import Bookkeeper
from posaudit.chain.deploy import EASIEST_TARGET, Deployment, connect, deploy
from posaudit.chain.devnet import Devnet, free_port
from posaudit.cli import cli
from posaudit.exceptions import (
    MalformedReceiptError,
    RecordNotFoundError,
    RecordNotInBlockError,
)
from posaudit.ledger import LedgerClient
from posaudit.receipts import (
    DEPLOYMENT_CHECK,
    OFFLINE_CHECKS,
    ONLINE_CHECKS,
    HeaderFields,
    Receipt,
    Verdict,
    build_receipt,
    verdict_of,
    verify_receipt,
)
from posaudit.records import Domain, SettlementRecord, SignedRecord, encode_record
from posaudit.rules import StatusCode
from posaudit.signing import public_key_pem, sign
from posaudit.store import Store

from .world import MERCHANT, PAYERS, World

LEDGER = "0x" + "1e" * 20
DOMAIN = Domain(31337, LEDGER)
TREE_SIZE = 7
INDEX = 5


def flip(data: bytes, position: int) -> bytes:
    """``data`` with bit ``position % 8`` of byte ``position`` inverted."""
    damaged = bytearray(data)
    damaged[position] ^= 1 << (position % 8)
    return bytes(damaged)


def failed(receipt: Receipt) -> set[str]:
    return {
        check.name
        for check in verify_receipt(receipt)
        if check.verdict is Verdict.FAILED
    }


def make_record(sequence: int, **overrides: Any) -> SettlementRecord:
    fields: dict[str, Any] = {
        "domain": DOMAIN,
        "record_id": bytes([sequence]) * 16,
        "terminal_id": "TERM0001",
        "sequence": sequence,
        "payer": PAYERS[sequence % 4],
        "merchant": MERCHANT,
        "amount": 1_000 + sequence,
        "currency": "EUR",
        "timestamp": 1_900_000_000,
        "valid_until": 1_900_003_600,
        "goods_category": 2,
        "operator_id": 77,
    }
    fields.update(overrides)
    return SettlementRecord(**fields)


@pytest.fixture(scope="module")
def genuine(terminal_key: rsa.RSAPrivateKey) -> Receipt:
    """Record 5 of a block of 7, signed, proven and put under a mined header."""
    signed = [
        SignedRecord(record, sign(terminal_key, encode_record(record)))
        for record in (make_record(sequence) for sequence in range(1, TREE_SIZE + 1))
    ]
    tree = AuditTree.from_leaves(item.leaf for item in signed)
    header = BlockHeader(
        prev_hash=bytes(range(32)),
        records_root=tree.root,
        record_count=tree.size,
        timestamp=1_900_000_010,
        target=EASIEST_TARGET,
        nonce=12,
    )
    mine = signed[INDEX]
    return Receipt(
        encoding=mine.encoding,
        record=mine.record,
        signature=mine.signature,
        public_key=public_key_pem(terminal_key).decode("ascii"),
        block_hash=header.block_hash,
        chain_block=42,
        height=3,
        transaction_hash=bytes([0xAB]) * 32,
        records_root=tree.root,
        header=HeaderFields(
            header.version, header.prev_hash, header.timestamp, header.target, 12
        ),
        leaf_index=INDEX,
        tree_size=TREE_SIZE,
        leaf_hash=leaf_hash(mine.leaf),
        proof=tuple(tree.inclusion_proof(INDEX)),
        chain_id=DOMAIN.chain_id,
        registry=Web3.to_checksum_address("0x" + "2e" * 20),
        ledger=Web3.to_checksum_address(LEDGER),
        audit=Web3.to_checksum_address("0x" + "4e" * 20),
        code=StatusCode.APPROVED,
        settlement=SettlementStatus.SETTLED,
    )


class TestOffline:
    """Checks from the receipt alone, on a receipt damaged one bit at a time."""

    def test_genuine_receipt_passes_every_offline_check(self, genuine):
        checks = verify_receipt(genuine)

        verdicts = {check.name: check.verdict for check in checks}
        assert [check.name for check in checks] == [
            *OFFLINE_CHECKS,
            DEPLOYMENT_CHECK,
            *ONLINE_CHECKS,
        ]
        assert all(verdicts[name] is Verdict.PASSED for name in OFFLINE_CHECKS)
        assert all(verdicts[name] is Verdict.NOT_CHECKED for name in ONLINE_CHECKS)
        assert verdict_of(checks) is Verdict.PASSED

    def test_offline_says_root_and_key_were_not_checked_on_chain(self, genuine):
        checks = {check.name: check for check in verify_receipt(genuine)}

        for name in ("registered key", "root on chain"):
            assert checks[name].verdict is Verdict.NOT_CHECKED
            assert "not checked against the chain" in checks[name].message

    def test_every_encoding_bit_flip_fails_fields_signature_leaf_and_proof(
        self, genuine
    ):
        for position in range(len(genuine.encoding)):
            damaged = dataclasses.replace(
                genuine, encoding=flip(genuine.encoding, position)
            )

            expected = {"fields", "signature", "leaf", "proof"}
            if position < 28:  # chain id and Ledger address: the domain
                expected.add("domain")

            assert failed(damaged) == expected, position

    def test_every_signature_bit_flip_fails_signature_leaf_and_proof(self, genuine):
        for position in range(len(genuine.signature)):
            damaged = dataclasses.replace(
                genuine, signature=flip(genuine.signature, position)
            )

            assert failed(damaged) == {"signature", "leaf", "proof"}, position

    def test_every_proof_hash_bit_flip_fails_the_proof(self, genuine):
        for level, digest in enumerate(genuine.proof):
            for position in range(len(digest)):
                proof = list(genuine.proof)
                proof[level] = flip(digest, position)
                damaged = dataclasses.replace(genuine, proof=tuple(proof))

                assert failed(damaged) == {"proof"}, (level, position)

    def test_every_root_bit_flip_fails_the_proof_and_the_header(self, genuine):
        for position in range(32):
            damaged = dataclasses.replace(
                genuine, records_root=flip(genuine.records_root, position)
            )

            assert failed(damaged) == {"proof", "header"}, position

    def test_every_leaf_hash_bit_flip_fails_the_leaf(self, genuine):
        for position in range(32):
            damaged = dataclasses.replace(
                genuine, leaf_hash=flip(genuine.leaf_hash, position)
            )

            assert failed(damaged) == {"leaf"}, position

    def test_every_block_hash_bit_flip_fails_the_header(self, genuine):
        for position in range(32):
            damaged = dataclasses.replace(
                genuine, block_hash=flip(genuine.block_hash, position)
            )

            assert failed(damaged) == {"header"}, position

    @pytest.mark.parametrize(
        "change",
        [
            {"version": 2},
            {"prev_hash": bytes(32)},
            {"timestamp": 1_900_000_011},
            {"target": EASIEST_TARGET - 1},
            {"nonce": 13},
        ],
        ids=lambda change: next(iter(change)),
    )
    def test_altered_header_field_fails_the_header(self, genuine, change):
        header = dataclasses.replace(genuine.header, **change)

        assert failed(dataclasses.replace(genuine, header=header)) == {"header"}

    def test_every_other_leaf_index_fails_the_proof(self, genuine):
        for index in range(TREE_SIZE + 2):
            if index == INDEX:
                continue

            damaged = dataclasses.replace(genuine, leaf_index=index)

            assert failed(damaged) == {"proof"}, index

    def test_altered_tree_size_fails_the_proof_or_the_header(self, genuine):
        """A proof alone does not bind the size; the header does, offline."""
        for size in range(1, 4 * TREE_SIZE):
            if size == TREE_SIZE:
                continue

            damaged = dataclasses.replace(genuine, tree_size=size)

            assert "header" in failed(damaged), size
            assert failed(damaged) <= {"proof", "header"}, size

        # Index 5 of 6 is on the right border: a 2-hash path, where 7 needs 3.
        assert failed(dataclasses.replace(genuine, tree_size=6)) == {"proof", "header"}

    def test_tree_size_that_keeps_the_path_is_caught_by_the_header(self, genuine):
        """Index 5 of 8 has the same 3-hash path as of 7: only the header notices."""
        checks = {
            check.name: check
            for check in verify_receipt(dataclasses.replace(genuine, tree_size=8))
        }

        assert checks["proof"].verdict is Verdict.PASSED
        assert checks["header"].verdict is Verdict.FAILED
        assert "8 records" in checks["header"].message

    @pytest.mark.parametrize(
        "field, value",
        [
            ("domain", Domain(1, LEDGER)),
            ("domain", Domain(31337, "0x" + "1f" * 20)),
            ("record_id", bytes(16)),
            ("terminal_id", "TERM0002"),
            ("sequence", 99),
            ("payer", PAYERS[3]),
            ("merchant", "0x" + "3f" * 20),
            ("amount", 1),
            ("currency", "USD"),
            ("timestamp", 1_899_999_999),
            ("valid_until", 1_900_003_601),
            ("goods_category", 3),
            ("operator_id", 78),
        ],
        ids=lambda value: value if isinstance(value, str) else None,
    )
    def test_changed_decoded_field_fails_fields(self, genuine, field, value):
        record = dataclasses.replace(genuine.record, **{field: value})

        checks = {
            c.name: c
            for c in verify_receipt(dataclasses.replace(genuine, record=record))
        }

        assert {n for n, c in checks.items() if c.verdict is Verdict.FAILED} == {
            "fields"
        }
        assert "the receipt says" in checks["fields"].message

    def test_domain_other_than_the_receipts_deployment_fails_domain(self, genuine):
        other_chain = dataclasses.replace(genuine, chain_id=1)
        other_ledger = dataclasses.replace(genuine, ledger=genuine.audit)

        assert failed(other_chain) == {"domain"}
        assert failed(other_ledger) == {"domain"}

    def test_record_of_another_domain_passes_when_rejected_as_wrong_domain(
        self, genuine
    ):
        """The receipt then proves the rejection, and says why."""
        rejected = dataclasses.replace(
            genuine,
            chain_id=1,
            code=StatusCode.WRONG_DOMAIN,
            settlement=SettlementStatus.REJECTED_BY_RULES,
        )

        checks = {check.name: check for check in verify_receipt(rejected)}

        assert checks["domain"].verdict is Verdict.PASSED
        assert "rejected it as WRONG_DOMAIN" in checks["domain"].message

    def test_key_swapped_with_a_consistent_signature_fails_leaf_and_proof(
        self, genuine, other_key
    ):
        """The signature verifies, but the chain committed to the terminal's own."""
        signature = sign(other_key, genuine.encoding)
        swapped = dataclasses.replace(
            genuine,
            public_key=public_key_pem(other_key).decode("ascii"),
            signature=signature,
        )

        assert failed(swapped) == {"leaf", "proof"}

    def test_failure_message_quotes_expected_and_actual_values(self, genuine):
        root = flip(genuine.records_root, 0)

        checks = {
            c.name: c
            for c in verify_receipt(dataclasses.replace(genuine, records_root=root))
        }

        assert f"0x{root.hex()}" in checks["proof"].message
        assert f"0x{genuine.records_root.hex()}" in checks["proof"].message

    def test_trusted_deployment_pins_the_addresses(self, genuine):
        trusted = Deployment(
            genuine.chain_id, genuine.registry, genuine.ledger, genuine.audit, "EUR"
        )
        other = dataclasses.replace(trusted, audit=genuine.registry)

        mine = {c.name: c.verdict for c in verify_receipt(genuine, trusted=trusted)}
        theirs = {c.name: c for c in verify_receipt(genuine, trusted=other)}

        assert mine[DEPLOYMENT_CHECK] is Verdict.PASSED
        assert theirs[DEPLOYMENT_CHECK].verdict is Verdict.FAILED
        assert genuine.audit in theirs[DEPLOYMENT_CHECK].message


class TestDocument:
    """The JSON document: exact round trip, and a named error for each defect."""

    def test_json_round_trip_is_exact(self, genuine):
        assert Receipt.from_json(genuine.to_json()) == genuine

    def test_large_integers_are_decimal_strings_and_small_ones_numbers(self, genuine):
        document = json.loads(genuine.to_json())

        fields = document["record"]["fields"]
        assert document["receipt_version"] == 1
        assert fields["amount"] == str(genuine.record.amount)
        assert fields["sequence"] == "6"
        assert document["block"]["header"]["target"] == str(EASIEST_TARGET)
        assert fields["goods_category"] == 2
        assert document["proof"]["leaf_index"] == INDEX
        assert document["record"]["encoding"].startswith("0x")

    @pytest.mark.parametrize(
        "path, damage",
        [
            ("receipt_version", lambda d: d.update(receipt_version=2)),
            ("proof.hashes", lambda d: d["proof"].pop("hashes")),
            ("proof.leaf_index", lambda d: d["proof"].update(leaf_index="5")),
            ("proof.tree_size", lambda d: d["proof"].update(tree_size=0)),
            ("proof.hashes[1]", lambda d: d["proof"]["hashes"].__setitem__(1, "0x1")),
            ("proof.hashes[2]", lambda d: d["proof"]["hashes"].__setitem__(2, 7)),
            ("proof.leaf_hash", lambda d: d["proof"].update(leaf_hash="ab" * 32)),
            ("signature", lambda d: d.update(signature="0xzz")),
            ("signature", lambda d: d.update(signature=d["signature"][:-2])),
            ("record.encoding", lambda d: d["record"].update(encoding="0x00" * 132)),
            ("record.fields", lambda d: d["record"].update(fields=[])),
            (
                "record.fields.amount",
                lambda d: d["record"]["fields"].update(amount=1006),
            ),
            (
                "record.fields.amount",
                lambda d: d["record"]["fields"].update(amount="0"),
            ),
            (
                "record.fields.currency",
                lambda d: d["record"]["fields"].update(currency="QQQ"),
            ),
            (
                "record.fields.payer",
                lambda d: d["record"]["fields"].update(payer="0x12"),
            ),
            ("record.fields.ledger", lambda d: d["record"]["fields"].pop("ledger")),
            ("block.hash", lambda d: d["block"].update(hash="0x" + "00" * 31)),
            ("block.height", lambda d: d["block"].update(height=3)),
            ("block.chain_block", lambda d: d["block"].update(chain_block="15\n")),
            (
                "record.fields.sequence",
                lambda d: d["record"]["fields"].update(sequence="9" * 5_000),
            ),
            ("public_key", lambda d: d.update(public_key="\ud800")),
            ("block.header.nonce", lambda d: d["block"]["header"].update(nonce="-1")),
            ("contracts.audit", lambda d: d["contracts"].update(audit=None)),
            ("chain_id", lambda d: d.pop("chain_id")),
            ("public_key", lambda d: d.update(public_key="not a key")),
            ("status.code", lambda d: d["status"].update(code="FINE")),
            ("status.settlement", lambda d: d["status"].update(settlement=3)),
        ],
        ids=lambda value: value if isinstance(value, str) else None,
    )
    def test_malformed_document_names_the_field(self, genuine, path, damage):
        document = json.loads(genuine.to_json())
        damage(document)

        with pytest.raises(MalformedReceiptError) as caught:
            Receipt.from_json(json.dumps(document))

        assert caught.value.field == path
        assert path in str(caught.value)

    @pytest.mark.parametrize(
        "text", ["", "{", "[1, 2]", "null", '"receipt"', b"\xff\xfe"]
    )
    def test_document_that_is_not_a_json_object_is_refused(self, text):
        with pytest.raises(MalformedReceiptError) as caught:
            Receipt.from_json(text)

        assert caught.value.field == "(document)"


def test_verify_with_both_rpc_and_state_exits_2(genuine, tmp_path: Path):
    path = tmp_path / "receipt.json"
    path.write_text(genuine.to_json())

    result = invoke("verify", path, "--rpc", "http://127.0.0.1:1", "--state", path)

    assert result.exit_code == 2
    assert "Pass --rpc or --state, not both." in result.output


def test_verify_without_a_node_or_devnet_state_exits_2(genuine, tmp_path: Path):
    path = tmp_path / "receipt.json"
    path.write_text(genuine.to_json())
    runner = CliRunner()

    with runner.isolated_filesystem(tmp_path):
        result = runner.invoke(cli, ["verify", str(path)])

    assert result.exit_code == 2
    assert "pass --rpc URL of a node of the receipt's chain, --state PATH, or " in (
        result.output
    )


# Against a real anvil: the commands as a merchant and a verifier run them.


@dataclass
class Scene:
    """A world with a store, its bookkeeper and one settled block of five records."""

    world: World
    rpc_url: str
    deployment_path: Path
    db_path: Path
    store: Store
    bookkeeper: Bookkeeper
    settled: list[SignedRecord]


@pytest.fixture(scope="module")
def scene(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    folder = tmp_path_factory.mktemp("receipts")
    world.deployment.save(folder / "deployment.json")
    with Store(folder / "posaudit.db") as store:
        bookkeeper = Bookkeeper(store, world.ledger, world.audit)
        settled = [world.record(100 * (i + 1), PAYERS[i]) for i in range(4)]
        settled.append(world.record(999_999))  # insufficient balance
        bookkeeper.settle(settled)
        yield Scene(
            world=world,
            rpc_url=world.w3.provider.endpoint_uri,
            deployment_path=folder / "deployment.json",
            db_path=folder / "posaudit.db",
            store=store,
            bookkeeper=bookkeeper,
            settled=settled,
        )


def invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def write_receipt(scene: Scene, signed: SignedRecord, folder: Path) -> Path:
    out = folder / f"{signed.record.record_id.hex()}.json"
    result = invoke(
        "receipt",
        signed.record.record_id.hex(),
        "--db",
        scene.db_path,
        "--deployment",
        scene.deployment_path,
        "--rpc",
        scene.rpc_url,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output

    return out


def verify_json(scene: Scene, path: Path, *args: object) -> tuple[int, dict[str, Any]]:
    result = invoke("verify", path, "--rpc", scene.rpc_url, "--json", *args)
    return result.exit_code, json.loads(result.output)


def checks_of(document: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {check["name"]: check for check in document["checks"]}


@pytest.fixture(scope="module")
def genuine_path(scene: Scene, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_receipt(scene, scene.settled[1], tmp_path_factory.mktemp("genuine"))


def test_receipt_command_writes_a_receipt_that_verifies(scene, genuine_path: Path):
    result = invoke("verify", genuine_path, "--rpc", scene.rpc_url)

    assert result.exit_code == 0, result.output
    assert "Every check that was run passed." in result.output
    written = Receipt.from_json(genuine_path.read_text())
    assert written.encoding == scene.settled[1].encoding
    assert written.settlement is SettlementStatus.SETTLED
    assert written.code is StatusCode.APPROVED
    assert written.tree_size == 5


def test_verify_json_reports_every_check_passed_on_chain(scene, genuine_path: Path):
    code, document = verify_json(
        scene, genuine_path, "--deployment", scene.deployment_path
    )

    assert code == 0
    assert document["verdict"] == "passed"
    assert {c["verdict"] for c in document["checks"]} == {"passed"}
    assert list(checks_of(document)) == [
        *OFFLINE_CHECKS,
        DEPLOYMENT_CHECK,
        *ONLINE_CHECKS,
    ]


def _alter_record(receipt: Receipt, key: rsa.RSAPrivateKey) -> Receipt:
    record = dataclasses.replace(receipt.record, amount=receipt.record.amount + 1)
    return dataclasses.replace(receipt, record=record, encoding=encode_record(record))


def _swap_key(receipt: Receipt, key: rsa.RSAPrivateKey) -> Receipt:
    signature = sign(key, receipt.encoding)
    return dataclasses.replace(
        receipt,
        public_key=public_key_pem(key).decode("ascii"),
        signature=signature,
        leaf_hash=leaf_hash(receipt.encoding + hashlib.sha256(signature).digest()),
    )


ALTERATIONS: dict[
    str, tuple[Callable[[Receipt, rsa.RSAPrivateKey], Receipt], set[str]]
] = {
    "record": (_alter_record, {"signature", "leaf", "proof", "events", "dispute view"}),
    "signature": (
        lambda r, k: dataclasses.replace(r, signature=flip(r.signature, 100)),
        {"signature", "leaf", "proof", "dispute view"},
    ),
    "index": (
        lambda r, k: dataclasses.replace(r, leaf_index=r.leaf_index + 1),
        {"proof", "events"},
    ),
    "size": (
        lambda r, k: dataclasses.replace(r, tree_size=r.tree_size + 1),
        {"header", "root on chain"},
    ),
    "root": (
        lambda r, k: dataclasses.replace(r, records_root=flip(r.records_root, 3)),
        {"proof", "header", "root on chain"},
    ),
    "public key": (_swap_key, {"registered key", "proof", "dispute view"}),
    "block hash": (
        lambda r, k: dataclasses.replace(r, block_hash=flip(r.block_hash, 0)),
        {"header", "root on chain", "events"},
    ),
}


@pytest.mark.parametrize("kind", list(ALTERATIONS))
def test_altered_receipt_exits_1_naming_the_failing_check(
    scene, genuine_path: Path, other_key, tmp_path: Path, kind: str
):
    alter, expected = ALTERATIONS[kind]
    altered = alter(Receipt.from_json(genuine_path.read_text()), other_key)
    path = tmp_path / "altered.json"
    path.write_text(altered.to_json())

    result = invoke("verify", path, "--rpc", scene.rpc_url)

    assert result.exit_code == 1, result.output
    for name in expected:
        assert f"FAILED {name}:" in result.output


def test_unreachable_node_exits_2_naming_the_url(genuine_path: Path):
    url = f"http://127.0.0.1:{free_port()}"

    result = invoke("verify", genuine_path, "--rpc", url, "--timeout", 2)

    assert result.exit_code == 2, result.output
    assert (
        f"COULD NOT CHECK {', '.join(ONLINE_CHECKS)}: No node answers at {url}: "
        "[Errno 111] Connection refused." in result.output
    )


def test_offline_genuine_receipt_exits_0_and_says_what_was_not_checked(
    genuine_path: Path,
):
    result = invoke("verify", genuine_path, "--offline")

    assert result.exit_code == 0, result.output
    assert (
        "Offline: the root and the key were not checked against the chain."
        in result.output
    )


def test_receipt_of_a_record_rejected_by_the_rules_verifies_with_its_code(
    scene, tmp_path: Path
):
    path = write_receipt(scene, scene.settled[4], tmp_path)

    code, document = verify_json(scene, path)

    written = Receipt.from_json(path.read_text())
    checks = checks_of(document)
    assert code == 0, document
    assert written.code is StatusCode.INSUFFICIENT_BALANCE
    assert written.settlement is SettlementStatus.REJECTED_BY_RULES
    assert "rejected (INSUFFICIENT_BALANCE)" in checks["events"]["message"]
    assert "REJECTED_BY_RULES on chain" in checks["settlement"]["message"]


def test_receipt_claiming_another_code_fails_the_events(scene, tmp_path: Path):
    path = write_receipt(scene, scene.settled[4], tmp_path)
    claimed = dataclasses.replace(
        Receipt.from_json(path.read_text()), code=StatusCode.DAILY_LIMIT_EXCEEDED
    )
    path.write_text(claimed.to_json())

    code, document = verify_json(scene, path)

    assert code == 1
    message = checks_of(document)["events"]["message"]
    assert "'INSUFFICIENT_BALANCE'" in message
    assert "'DAILY_LIMIT_EXCEEDED'" in message


def test_dispute_view_agrees_with_the_audit_module(
    scene, genuine_path: Path, other_key, tmp_path: Path
):
    genuine = Receipt.from_json(genuine_path.read_text())
    forged = dataclasses.replace(genuine, signature=sign(other_key, genuine.encoding))
    path = tmp_path / "forged.json"
    path.write_text(forged.to_json())

    _, mine = verify_json(scene, genuine_path)
    _, theirs = verify_json(scene, path)

    assert checks_of(mine)["dispute view"]["verdict"] == "passed"
    assert scene.world.audit.verify_signature(genuine.encoding, genuine.signature)
    assert checks_of(theirs)["dispute view"]["verdict"] == "failed"
    assert not scene.world.audit.verify_signature(forged.encoding, forged.signature)


def test_held_receipt_passes_while_held_and_after_settlement(scene, tmp_path: Path):
    signed = scene.world.record(25, PAYERS[2])
    appended = scene.bookkeeper.append([signed])
    path = write_receipt(scene, signed, tmp_path)
    claims_settled = tmp_path / "claims-settled.json"
    claims_settled.write_text(
        dataclasses.replace(
            Receipt.from_json(path.read_text()),
            settlement=SettlementStatus.SETTLED,
        ).to_json()
    )

    held_code, held = verify_json(scene, path)
    claim_code, claim = verify_json(scene, claims_settled)
    scene.bookkeeper.audit(appended.block_hash)
    later_code, later = verify_json(scene, path)

    assert held_code == 0
    assert (
        "HELD on chain, as the receipt says" in checks_of(held)["settlement"]["message"]
    )
    assert claim_code == 1
    assert checks_of(claim)["settlement"]["message"] == (
        "The receipt says SETTLED, the audit module says HELD."
    )
    assert later_code == 0
    assert checks_of(later)["settlement"]["message"] == (
        "SETTLED on chain; the receipt was written while it was HELD."
    )


def test_receipt_for_another_deployment_fails_the_deployment_check(
    scene, genuine_path: Path, tmp_path: Path
):
    other = dataclasses.replace(
        scene.world.deployment, ledger=scene.world.deployment.audit
    )
    other.save(tmp_path / "trusted.json")

    code, document = verify_json(
        scene, genuine_path, "--deployment", tmp_path / "trusted.json"
    )

    assert code == 1
    assert checks_of(document)[DEPLOYMENT_CHECK]["verdict"] == "failed"


def test_malformed_receipt_exits_1_naming_the_field(genuine_path: Path, tmp_path):
    document = json.loads(genuine_path.read_text())
    document["proof"]["hashes"][0] = "0x1234"
    path = tmp_path / "malformed.json"
    path.write_text(json.dumps(document))

    result = invoke("verify", path, "--offline")

    assert result.exit_code == 1
    assert "'proof.hashes[0]': must be 32 bytes, got 2." in result.output


def test_receipt_of_an_unknown_record_exits_1(scene):
    result = invoke(
        "receipt",
        "00" * 16,
        "--db",
        scene.db_path,
        "--deployment",
        scene.deployment_path,
        "--rpc",
        scene.rpc_url,
    )

    assert result.exit_code == 1
    assert f"No record 0x{'00' * 16} in the store" in result.output


def test_receipt_of_a_record_in_no_block_yet_exits_1(scene):
    signed = scene.world.record(10)
    scene.store.add(signed)

    result = invoke(
        "receipt",
        signed.record.record_id.hex(),
        "--db",
        scene.db_path,
        "--deployment",
        scene.deployment_path,
        "--rpc",
        scene.rpc_url,
    )

    assert result.exit_code == 1
    assert "in no settlement block yet" in result.output
    with pytest.raises(RecordNotInBlockError):
        build_receipt(
            scene.store, signed.record.record_id, scene.world.w3, scene.world.deployment
        )

    with pytest.raises(RecordNotFoundError):
        build_receipt(scene.store, bytes(16), scene.world.w3, scene.world.deployment)


def test_record_of_an_unregistered_terminal_gets_no_receipt(scene, other_key):
    """Nothing on chain holds its key, so nothing could attest its signature."""
    record = dataclasses.replace(scene.world.record(10).record, terminal_id="GHOST-01")
    signed = SignedRecord(record, sign(other_key, encode_record(record)))
    scene.bookkeeper.settle([signed])

    result = invoke(
        "receipt",
        record.record_id.hex(),
        "--db",
        scene.db_path,
        "--deployment",
        scene.deployment_path,
        "--rpc",
        scene.rpc_url,
    )

    assert result.exit_code == 1, result.output
    assert "Terminal GHOST-01 has no registered key" in result.output
    assert "UNKNOWN_TERMINAL" in result.output


def test_receipt_without_rpc_or_devnet_state_exits_2(scene, tmp_path: Path):
    result = invoke(
        "receipt",
        scene.settled[0].record.record_id.hex(),
        "--db",
        scene.db_path,
        "--deployment",
        scene.deployment_path,
        "--state",
        tmp_path / "missing-state.json",
    )

    assert result.exit_code == 2
    assert "pass --rpc URL" in result.output
    assert "make demo" in result.output


def test_receipt_and_verify_start_the_devnet_from_its_state_file(
    terminal_key: rsa.RSAPrivateKey, tmp_path: Path
):
    """Without --rpc both commands reopen the chain ``make demo`` left behind."""
    state = tmp_path / "devnet-state.json"
    with Devnet(state=state) as devnet, Store(tmp_path / "posaudit.db") as store:
        w3 = connect(devnet.rpc_url)
        admin, bookkeeper = w3.eth.accounts[:2]
        deployment = deploy(w3, admin, bookkeeper)
        deployment.save(tmp_path / "deployment.json")
        ledger = LedgerClient(w3, deployment, admin, bookkeeper)
        ledger.register_terminal("TERM0001", MERCHANT, terminal_key.public_key())
        ledger.open_account(PAYERS[0], 50_000, 1990_01_01)
        ledger.deposit(PAYERS[0], 1_000)
        audit = AuditClient(w3, deployment, admin)
        world = World(w3, deployment, ledger, audit, terminal_key, itertools.count(1))
        signed = world.record(300)
        Bookkeeper(store, ledger, audit).settle([signed])

    out = tmp_path / "receipt.json"

    made = invoke(
        "receipt",
        signed.record.record_id.hex(),
        "--db",
        tmp_path / "posaudit.db",
        "--deployment",
        tmp_path / "deployment.json",
        "--state",
        state,
        "--out",
        out,
    )
    checked = invoke("verify", out, "--state", state)

    assert made.exit_code == 0, made.output
    assert f"written to {out}" in made.output
    assert checked.exit_code == 0, checked.output
