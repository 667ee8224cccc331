"""The auditor's queries against a real anvil: blocks, records, histories, the CLI.

One deployment per module, built as an auditor meets it: three settlement blocks on
chain (approvals and rule rejections in each), the first audited whole, one record of
the second settled alone and one rejected by the audit, the third left unaudited. The
chain's clock jumps 1,000 s before every transaction, so that each has a time of its
own for the time-range queries.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa
from web3 import Web3
from web3.types import RPCEndpoint

from posaudit.audit import AuditClient, BlockAuditState, SettlementStatus
from posaudit.auditor import Auditor, AuditState, RecordRow, Step
from posaudit.audittree import AuditTree
from posaudit.chain.deploy import Deployment, connect, deploy
from posaudit.chain.devnet import Devnet, free_port
from posaudit.chain.sender import Receipt
from posaudit.cli import cli
from posaudit.exceptions import (
    DeploymentMismatchError,
    FieldRangeError,
    NodeUnreachableError,
)
from posaudit.ledger import AppendResult, LedgerClient
from posaudit.records import (
    Domain,
    SettlementRecord,
    SignedRecord,
    encode_record,
)
from posaudit.rules import StatusCode
from posaudit.signing import sign

RICH = "0x" + "a1" * 20
POOR = "0x" + "b0" * 20
STRANGER = "0x" + "5e" * 20  # no account: UNKNOWN_PAYER
CLOCK_STEP = 1_000

OK = StatusCode.APPROVED
BROKE = StatusCode.INSUFFICIENT_BALANCE
NO_PAYER = StatusCode.UNKNOWN_PAYER
MISMATCH = StatusCode.PROOF_MISMATCH
HELD = SettlementStatus.HELD
SETTLED = SettlementStatus.SETTLED
BY_RULES = SettlementStatus.REJECTED_BY_RULES
BY_AUDIT = SettlementStatus.REJECTED_BY_AUDIT

# Every outcome on chain, in chain order: terminal, sequence, code, status, merchant
# ("a" or "b"), the outcome's transaction and the settling one (see Scene.txs). "T2.2!"
# is the audit's rejection of T2.2.
ROWS = {
    "T1.1": ("TERM0001", 1, OK, SETTLED, "a", "a1", "s1"),
    "T1.2": ("TERM0001", 2, BROKE, BY_RULES, "a", "a1", None),
    "T2.1": ("TERM0002", 1, OK, SETTLED, "b", "a1", "s1"),
    "T1.3": ("TERM0001", 3, OK, SETTLED, "a", "a2", "s2"),
    "T2.2": ("TERM0002", 2, OK, BY_AUDIT, "b", "a2", "r1"),
    "T2.3": ("TERM0002", 3, OK, HELD, "b", "a2", None),
    "T2.2!": ("TERM0002", 2, MISMATCH, BY_AUDIT, "b", "r1", "r1"),
    "T2.4": ("TERM0002", 4, OK, HELD, "b", "a3", None),
    "T1.4": ("TERM0001", 4, NO_PAYER, BY_RULES, "a", "a3", None),
    "T2.5": ("TERM0002", 5, BROKE, BY_RULES, "b", "a3", None),
}


@dataclass
class Block:
    """A settlement block the scene appended, with what its bookkeeper keeps."""

    records: list[SignedRecord]
    result: AppendResult
    tree: AuditTree

    @property
    def block_hash(self) -> bytes:
        return self.result.block_hash


@dataclass
class Scene:
    """The chain the tests query, and what the tests expect of it."""

    w3: Web3
    rpc_url: str
    deployment: Deployment
    deployment_file: Path
    shops: dict[str, str]
    audits: AuditClient
    blocks: list[Block] = field(default_factory=list)
    # Transactions by name: a1..a3 appended blocks, s1 audited block 1, s2 settled
    # one record of block 2, r1 rejected one by the audit.
    txs: dict[str, bytes] = field(default_factory=dict)
    numbers: dict[str, int] = field(default_factory=dict)
    times: dict[str, int] = field(default_factory=dict)

    def expected(self, *labels: str) -> list[tuple[Any, ...]]:
        """The brief rows of ``ROWS`` entries, with merchants and hashes filled in."""
        rows = []
        for label in labels:
            terminal_id, sequence, code, status, shop, tx, settled = ROWS[label]
            rows.append(
                (
                    terminal_id,
                    sequence,
                    code,
                    status,
                    self.shops[shop],
                    self.txs[tx],
                    None if settled is None else self.txs[settled],
                )
            )

        return rows

    def auditor(self, **options: Any) -> Auditor:
        return Auditor(self.w3, self.deployment, **options)


def brief(rows: Sequence[RecordRow]) -> list[tuple[Any, ...]]:
    """What identifies a row's outcome: record, code, status, merchant, the txs."""
    return [
        (
            row.terminal_id,
            row.sequence,
            row.code,
            row.status,
            row.merchant,
            row.tx_hash,
            row.settlement_tx,
        )
        for row in rows
    ]


class _Builder:
    """Puts the scene on chain, one named transaction at a time, each 1,000 s after
    the one before."""

    def __init__(
        self, scene: Scene, ledger: LedgerClient, keys: dict[str, rsa.RSAPrivateKey]
    ) -> None:
        self.scene = scene
        self.ledger = ledger
        self.keys = keys
        self.merchants = {"TERM0001": scene.shops["a"], "TERM0002": scene.shops["b"]}
        self.domain = Domain(scene.deployment.chain_id, scene.deployment.ledger)
        self.start = int(scene.w3.eth.get_block("latest")["timestamp"])

    def record(
        self, terminal_id: str, sequence: int, payer: str, amount: int
    ) -> SignedRecord:
        fields = SettlementRecord(
            domain=self.domain,
            record_id=os.urandom(16),
            terminal_id=terminal_id,
            sequence=sequence,
            payer=payer,
            merchant=self.merchants[terminal_id],
            amount=amount,
            currency="EUR",
            timestamp=self.start - 60,
            valid_until=self.start + 86_400,
        )
        return SignedRecord(fields, sign(self.keys[terminal_id], encode_record(fields)))

    def append(
        self, name: str, records: list[SignedRecord], codes: list[StatusCode]
    ) -> Block:
        self._tick()
        result = self.ledger.append(records)
        assert [outcome.code for outcome in result.outcomes] == codes
        tree = AuditTree.from_leaves(signed.leaf for signed in records)
        block = Block(records, result, tree)
        self.scene.blocks.append(block)
        self._note(name, result.block_number, result.transaction_hash)
        return block

    def send(self, name: str, action: Callable[..., Receipt], *args: Any) -> None:
        """Run an audit ``action`` that returns its receipt."""
        self._tick()
        receipt = action(*args)
        self._note(name, receipt.block_number, receipt.transaction_hash)

    def _tick(self) -> None:
        self.scene.w3.provider.make_request(
            RPCEndpoint("evm_increaseTime"), [CLOCK_STEP]
        )

    def _note(self, name: str, number: int, transaction_hash: bytes) -> None:
        self.scene.txs[name] = transaction_hash
        self.scene.numbers[name] = number
        self.scene.times[name] = int(self.scene.w3.eth.get_block(number)["timestamp"])


@pytest.fixture(scope="module")
def scene(
    terminal_key: rsa.RSAPrivateKey,
    other_key: rsa.RSAPrivateKey,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scene]:
    with Devnet() as devnet:
        w3 = connect(devnet.rpc_url)
        admin, bookkeeper, shop_a, shop_b = list(w3.eth.accounts)[:4]
        deployment = deploy(w3, admin, bookkeeper)
        deployment_file = tmp_path_factory.mktemp("audit") / "deployment.json"
        deployment.save(deployment_file)
        client = LedgerClient(w3, deployment, admin, bookkeeper)
        client.register_terminal("TERM0001", shop_a, terminal_key.public_key())
        client.register_terminal("TERM0002", shop_b, other_key.public_key())
        for payer, deposit in ((RICH, 100_000), (POOR, 1_000)):
            client.open_account(payer, 50_000, 1990_05_17)
            client.deposit(payer, deposit)

        audits = AuditClient(w3, deployment, admin)
        scene = Scene(
            w3,
            devnet.rpc_url,
            deployment,
            deployment_file,
            {"a": shop_a, "b": shop_b},
            audits,
        )
        keys = {"TERM0001": terminal_key, "TERM0002": other_key}
        build = _Builder(scene, client, keys)
        one = build.append(
            "a1",
            [
                build.record("TERM0001", 1, RICH, 1_000),
                build.record("TERM0001", 2, POOR, 5_000),
                build.record("TERM0002", 1, RICH, 200),
            ],
            [OK, BROKE, OK],
        )
        two = build.append(
            "a2",
            [
                build.record("TERM0001", 3, RICH, 300),
                build.record("TERM0002", 2, POOR, 100),
                build.record("TERM0002", 3, RICH, 400),
            ],
            [OK, OK, OK],
        )
        build.send(
            "s1",
            audits.audit_block,
            one.block_hash,
            one.tree.leaf_hashes,
            one.result.holds,
            one.result.releases,
        )
        build.send(
            "s2",
            audits.settle_record,
            two.block_hash,
            0,
            two.records[0].leaf,
            two.tree.inclusion_proof(0),
        )
        bad_proof = [bytes(32)] * len(two.tree.inclusion_proof(1))
        build.send(
            "r1",
            audits.reject_record,
            two.block_hash,
            1,
            two.records[1].leaf,
            bad_proof,
            two.result.holds,
            two.result.releases,
        )
        build.append(
            "a3",
            [
                build.record("TERM0002", 4, POOR, 50),
                build.record("TERM0001", 4, STRANGER, 10),
                build.record("TERM0002", 5, POOR, 5_000),
            ],
            [OK, NO_PAYER, BROKE],
        )
        yield scene


EVERY_ROW = list(ROWS)

Spied = tuple[Web3, list[dict[str, Any]]]


@pytest.fixture
def spied(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> Spied:
    """A connection of its own to the scene's node that keeps every log filter."""
    w3 = Web3(Web3.HTTPProvider(scene.rpc_url))
    filters: list[dict[str, Any]] = []
    read = w3.eth.get_logs

    def spy(params: Any) -> Any:
        filters.append(dict(params))
        return read(params)

    monkeypatch.setattr(w3.eth, "get_logs", spy)
    return w3, filters


class TestRecords:
    """Each filter returns exactly the outcomes that match it, in chain order."""

    @pytest.mark.parametrize(
        ("filters", "labels"),
        [
            pytest.param({}, EVERY_ROW, id="all"),
            pytest.param(
                {"terminal": "TERM0001"},
                ["T1.1", "T1.2", "T1.3", "T1.4"],
                id="terminal",
            ),
            pytest.param(
                {"merchant": "a"}, ["T1.1", "T1.2", "T1.3", "T1.4"], id="merchant-a"
            ),
            pytest.param(
                {"merchant": "b"},
                ["T2.1", "T2.2", "T2.3", "T2.2!", "T2.4", "T2.5"],
                id="merchant-b",
            ),
            pytest.param(
                {"payer": POOR}, ["T1.2", "T2.2", "T2.2!", "T2.4", "T2.5"], id="payer"
            ),
            pytest.param({"code": BROKE}, ["T1.2", "T2.5"], id="code-rules"),
            pytest.param({"code": MISMATCH}, ["T2.2!"], id="code-audit"),
            pytest.param(
                {"code": OK},
                ["T1.1", "T2.1", "T1.3", "T2.2", "T2.3", "T2.4"],
                id="code-approved",
            ),
            pytest.param(
                {"terminal": "TERM0002", "payer": POOR, "code": OK},
                ["T2.2", "T2.4"],
                id="three-filters",
            ),
            pytest.param(
                {"merchant": "b", "code": BROKE}, ["T2.5"], id="merchant-rejected"
            ),
            pytest.param({"merchant": "nobody"}, [], id="merchant-without-terminals"),
        ],
    )
    def test_records_filter_returns_exact_rows(
        self, scene: Scene, filters: dict[str, Any], labels: list[str]
    ) -> None:
        if "merchant" in filters:
            shop = scene.shops.get(filters["merchant"], RICH)
            filters = {**filters, "merchant": shop}

        rows = scene.auditor().records(**filters)

        assert brief(rows) == scene.expected(*labels)

    @pytest.mark.parametrize(
        ("since", "until", "labels"),
        [
            ("a2", "s1", ["T1.3", "T2.2", "T2.3"]),
            ("r1", None, ["T2.2!", "T2.4", "T1.4", "T2.5"]),
            (None, "a2", ["T1.1", "T1.2", "T2.1"]),
            (None, "a1", []),
        ],
        ids=["between", "since", "until", "until-is-exclusive"],
    )
    def test_records_time_range_returns_rows_of_those_blocks(
        self, scene: Scene, since: str | None, until: str | None, labels: list[str]
    ) -> None:
        window: dict[str, Any] = {
            "since": None if since is None else scene.times[since],
            "until": None if until is None else scene.times[until],
        }

        rows = scene.auditor().records(**window)

        assert brief(rows) == scene.expected(*labels)

    def test_records_time_range_reads_only_its_blocks(
        self, scene: Scene, spied: Spied
    ) -> None:
        """The range goes to the node as block numbers, not as a filter afterwards."""
        w3, filters = spied
        auditor = Auditor(w3, scene.deployment)

        auditor.records(since=scene.times["a2"], until=scene.times["s1"], code=BROKE)

        ledger_reads = [
            (params["fromBlock"], params["toBlock"])
            for params in filters
            if params["address"] != [scene.deployment.registry]
        ]
        assert ledger_reads == [(scene.numbers["a2"], scene.numbers["a2"])]

    def test_rejected_row_carries_the_registered_merchant_and_block(
        self, scene: Scene
    ) -> None:
        three = scene.blocks[2]

        (row,) = scene.auditor().records(terminal="TERM0002", code=BROKE)

        assert (row.payer.lower(), row.merchant, row.amount) == (
            POOR,
            scene.shops["b"],
            5_000,
        )
        assert (row.block_hash, row.index) == (three.block_hash, 2)
        assert row.block_number == scene.numbers["a3"]
        assert row.timestamp == scene.times["a3"]

    def test_record_status_matches_the_audit_contract_view(self, scene: Scene) -> None:
        rows = scene.auditor().records()

        assert [row.status for row in rows] == [
            scene.audits.status_of(row.block_hash, row.index) for row in rows
        ]

    def test_malformed_terminal_id_is_refused(self, scene: Scene) -> None:
        with pytest.raises(FieldRangeError, match="terminal_id"):
            scene.auditor().records(terminal="TERM1")


class TestBlocks:
    def test_blocks_show_audit_state_and_counts(self, scene: Scene) -> None:
        one, two, three = scene.blocks

        rows = scene.auditor().blocks()

        assert [(row.height, row.block_hash, row.tx_hash) for row in rows] == [
            (1, one.block_hash, scene.txs["a1"]),
            (2, two.block_hash, scene.txs["a2"]),
            (3, three.block_hash, scene.txs["a3"]),
        ]
        assert [(row.record_count, row.records_root) for row in rows] == [
            (3, block.tree.root) for block in scene.blocks
        ]
        assert [(row.audit, row.settled, row.rejected) for row in rows] == [
            (AuditState.COMPLETE, 2, 0),
            (AuditState.PARTIAL, 1, 1),
            (AuditState.NOT_AUDITED, 0, 0),
        ]
        assert [(row.block_number, row.timestamp) for row in rows] == [
            (scene.numbers[name], scene.times[name]) for name in ("a1", "a2", "a3")
        ]
        assert rows[1].prev_hash == one.block_hash

    def test_block_counts_match_the_audit_contract_view(self, scene: Scene) -> None:
        rows = scene.auditor().blocks()

        assert [
            BlockAuditState(row.settled, row.rejected, row.audit is AuditState.COMPLETE)
            for row in rows
        ] == [scene.audits.audit_of(row.block_hash) for row in rows]

    def test_blocks_in_a_chain_block_range_are_only_those(self, scene: Scene) -> None:
        number = scene.numbers["a2"]

        rows = scene.auditor().blocks(from_block=number, to_block=number)

        assert [row.height for row in rows] == [2]


class TestHistory:
    def test_history_of_block_audited_record_ends_settled_with_its_block(
        self, scene: Scene
    ) -> None:
        history = scene.auditor().history("TERM0001", 1)

        assert [(s.step, s.code, s.tx_hash) for s in history.steps] == [
            (Step.APPROVED, OK, scene.txs["a1"]),
            (Step.SETTLED_WITH_BLOCK, OK, scene.txs["s1"]),
        ]
        assert {(s.block_hash, s.index, s.amount) for s in history.steps} == {
            (scene.blocks[0].block_hash, 0, 1_000)
        }

    def test_history_of_record_settled_alone_ends_settled(self, scene: Scene) -> None:
        history = scene.auditor().history("TERM0001", 3)

        assert [(s.step, s.code, s.tx_hash) for s in history.steps] == [
            (Step.APPROVED, OK, scene.txs["a2"]),
            (Step.SETTLED, OK, scene.txs["s2"]),
        ]

    def test_history_of_rule_rejected_record_is_its_rejection(
        self, scene: Scene
    ) -> None:
        history = scene.auditor().history("TERM0001", 2)

        assert [(s.step, s.code, s.tx_hash, s.merchant) for s in history.steps] == [
            (Step.REJECTED_BY_RULES, BROKE, scene.txs["a1"], scene.shops["a"])
        ]

    def test_history_of_audit_rejected_record_ends_rejected(self, scene: Scene) -> None:
        history = scene.auditor().history("TERM0002", 2)

        assert [(s.step, s.code, s.tx_hash) for s in history.steps] == [
            (Step.APPROVED, OK, scene.txs["a2"]),
            (Step.REJECTED_BY_AUDIT, StatusCode.PROOF_MISMATCH, scene.txs["r1"]),
        ]
        assert [s.timestamp for s in history.steps] == [
            scene.times["a2"],
            scene.times["r1"],
        ]

    def test_history_of_held_record_stops_at_its_approval(self, scene: Scene) -> None:
        history = scene.auditor().history("TERM0002", 3)

        assert [s.step for s in history.steps] == [Step.APPROVED]

    def test_history_of_unknown_record_is_empty(self, scene: Scene) -> None:
        history = scene.auditor().history("TERM0001", 99)

        assert history.steps == ()


class TestPagingAndFinality:
    def test_page_size_one_reads_one_block_per_request_and_agrees(
        self, scene: Scene, spied: Spied
    ) -> None:
        w3, filters = spied
        paged = Auditor(w3, scene.deployment, page_size=1)
        whole = scene.auditor(page_size=10_000)

        assert paged.blocks() == whole.blocks()
        assert paged.records() == whole.records()
        assert paged.records(merchant=scene.shops["b"]) == whole.records(
            merchant=scene.shops["b"]
        )
        assert paged.history("TERM0002", 2) == whole.history("TERM0002", 2)
        assert {params["toBlock"] - params["fromBlock"] for params in filters} == {0}

    def test_more_blocks_than_one_filter_holds_agree(
        self, scene: Scene, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past the filter's limit, every block's audit events are read and sifted."""
        narrow = scene.auditor()
        expected = (narrow.blocks(), narrow.records())

        monkeypatch.setattr("posaudit.auditor.HASHES_PER_FILTER", 1)
        wide = scene.auditor()

        assert (wide.blocks(), wide.records()) == expected

    @pytest.mark.parametrize(
        ("confirmations", "final"),
        [
            pytest.param(0, [True, True, True], id="0-confirmations"),
            pytest.param(1, [True, True, False], id="1-confirmation"),
            pytest.param(2, [True, False, False], id="2-confirmations"),
            pytest.param(6, [False, False, False], id="6-confirmations"),
        ],
    )
    def test_confirmations_mark_the_newest_blocks_not_final(
        self, scene: Scene, confirmations: int, final: list[bool]
    ) -> None:
        """Block 2 rests on the audit rejection, one block below the head."""
        rows = scene.auditor(confirmations=confirmations).blocks()

        assert [row.final for row in rows] == final

    def test_rows_resting_on_recent_events_are_not_final(self, scene: Scene) -> None:
        rows = scene.auditor(confirmations=2).records()

        not_final = [
            f"{row.terminal_id[-1]}.{row.sequence}" for row in rows if not row.final
        ]
        assert not_final == ["2.2", "2.2", "2.4", "1.4", "2.5"]

    def test_query_is_logged_with_its_row_count(
        self, scene: Scene, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="posaudit.auditor")

        rows = scene.auditor().records(payer=POOR)

        (entry,) = [r for r in caplog.records if r.getMessage() == "records queried"]
        assert entry.rows == len(rows) == 5  # type: ignore[attr-defined]
        assert entry.head == scene.numbers["a3"]  # type: ignore[attr-defined]


class TestErrors:
    def test_unreachable_node_raises_node_unreachable(self, scene: Scene) -> None:
        url = f"http://127.0.0.1:{free_port()}"

        with pytest.raises(
            NodeUnreachableError, match=f"No Ethereum node answers at {url}"
        ):
            Auditor.connect(url, scene.deployment)

    def test_deployment_without_code_raises_mismatch(self, scene: Scene) -> None:
        empty = Deployment(
            scene.deployment.chain_id, RICH, POOR, STRANGER, scene.deployment.currency
        )

        with pytest.raises(DeploymentMismatchError, match="No contract code at"):
            Auditor(scene.w3, empty)

    def test_deployment_of_another_chain_raises_mismatch(self, scene: Scene) -> None:
        other = dataclasses.replace(scene.deployment, chain_id=1)

        with pytest.raises(DeploymentMismatchError, match=r"chain 31337.*chain 1\."):
            Auditor(scene.w3, other)


class TestCli:
    def invoke(self, scene: Scene, command: str, *args: str) -> Any:
        """Run ``posaudit audit COMMAND`` against the scene's node and deployment."""
        connection = [
            "--deployment",
            str(scene.deployment_file),
            "--rpc",
            scene.rpc_url,
        ]
        return CliRunner().invoke(
            cli, ["audit", command, *connection, *args], env={"COLUMNS": "200"}
        )

    @pytest.mark.parametrize(
        "code", ["INSUFFICIENT_BALANCE", "14", "insufficient-balance"]
    )
    def test_records_json_parses_and_matches(self, scene: Scene, code: str) -> None:
        expected = scene.auditor().records(code=BROKE)

        result = self.invoke(scene, "records", "--code", code, "--json")

        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == [row.as_dict() for row in expected]
        assert [row["sequence"] for row in json.loads(result.output)] == [2, 5]

    def test_records_since_accepts_iso_8601(self, scene: Scene) -> None:
        moment = dt.datetime.fromtimestamp(scene.times["r1"], dt.UTC).isoformat()
        expected = scene.auditor().records(since=scene.times["r1"])

        result = self.invoke(scene, "records", "--since", moment, "--json")

        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == [row.as_dict() for row in expected]

    def test_blocks_json_parses_and_matches(self, scene: Scene) -> None:
        expected = scene.auditor(confirmations=0, page_size=1).blocks()

        result = self.invoke(
            scene, "blocks", "--json", "--confirmations", "0", "--page-size", "1"
        )

        assert result.exit_code == 0, result.output
        parsed = json.loads(result.output)
        assert parsed == [row.as_dict() for row in expected]
        assert [row["audit"] for row in parsed] == [
            "complete",
            "partial",
            "not audited",
        ]

    def test_history_json_names_the_rejecting_transaction(self, scene: Scene) -> None:
        result = self.invoke(scene, "history", "TERM0002", "2", "--json")

        assert result.exit_code == 0, result.output
        steps = json.loads(result.output)["steps"]
        assert [(s["step"], s["code_name"], s["tx_hash"]) for s in steps] == [
            ("approved", "APPROVED", "0x" + scene.txs["a2"].hex()),
            ("rejected by audit", "PROOF_MISMATCH", "0x" + scene.txs["r1"].hex()),
        ]

    def test_records_table_lists_the_rows(self, scene: Scene) -> None:
        result = self.invoke(scene, "records", "--terminal", "TERM0001")

        assert result.exit_code == 0, result.output
        assert result.output.count("TERM0001") == 4
        assert "INSUFFICIENT_BALANCE" in result.output
        assert "UNKNOWN_PAYER" in result.output

    def test_unknown_record_exits_1(self, scene: Scene) -> None:
        result = self.invoke(scene, "history", "TERM0001", "99")

        assert result.exit_code == 1
        assert "No record TERM0001 #99 on chain." in result.output

    def test_unreachable_rpc_exits_2_with_a_clear_message(self, scene: Scene) -> None:
        url = f"http://127.0.0.1:{free_port()}"

        result = CliRunner().invoke(
            cli,
            [
                "audit",
                "blocks",
                "--deployment",
                str(scene.deployment_file),
                "--rpc",
                url,
            ],
        )

        assert result.exit_code == 2
        assert f"Error: No Ethereum node answers at {url}" in result.output

    def test_missing_deployment_file_exits_2(self, tmp_path: Path) -> None:
        missing = tmp_path / "nowhere.json"

        result = CliRunner().invoke(
            cli, ["audit", "blocks", "--deployment", str(missing)]
        )

        assert result.exit_code == 2
        assert f"Cannot read the deployment file {missing}" in result.output

    def test_unknown_code_name_is_a_usage_error(self, scene: Scene) -> None:
        result = self.invoke(scene, "records", "--code", "BROKE")

        assert result.exit_code == 2
        assert "'BROKE' is not a status code" in result.output
