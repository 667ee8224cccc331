"""Gas figures from real receipts on anvil: appending, auditing, verifying proofs.

Every figure is measured, none assumed: append and audit gas are whole transactions'
gas (the 21,000 base included, which aggregation amortises) over their records, for
payers, merchants and terminals whose storage slots already hold values; settle gas is
append plus whole-block audit; proof gas is the execution gas of the library call
alone, read with ``gasleft()`` around it.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from collections.abc import Callable

from web3 import Web3

from posaudit.audit import AuditClient
from posaudit.audittree import AuditTree, leaf_hash
from posaudit.chain.deploy import deploy, deploy_contract, open_chain
from posaudit.ledger import AppendResult, LedgerClient
from posaudit.records import (
    LEAF_LENGTH,
    Domain,
    SettlementRecord,
    SignedRecord,
    encode_hold,
    encode_record,
)
from posaudit.signing import generate_key, sign

BLOCK_SIZES = (1, 16, 64, 256, 1024)
PROOF_DEPTHS = (8, 16, 20)
TREE_DEPTHS = (16, 20)
TIMING_RUNS = 3
TERMINALS = 8
BALANCE = 10**9


class _Workload:
    """Funded payers, registered terminals and a factory for signed records."""

    def __init__(self, client: LedgerClient, merchant: str, now: int) -> None:
        self.client = client
        self.domain = Domain(client.deployment.chain_id, client.deployment.ledger)
        self.merchant = merchant
        self.now = now
        self.keys = {f"BENCH{i:03d}": generate_key() for i in range(TERMINALS)}
        self.sequence = dict.fromkeys(self.keys, 0)
        self.payer_count = 0
        for terminal_id, key in self.keys.items():
            client.register_terminal(terminal_id, merchant, key.public_key())

    def fund_payers(self, count: int) -> list[str]:
        payers = []
        for _ in range(count):
            self.payer_count += 1
            payer = f"0x{0xBE7C4 << 120 | self.payer_count:040x}"
            self.client.open_account(payer, BALANCE, 1980_01_01, True)
            self.client.deposit(payer, BALANCE)
            payers.append(payer)
        return payers

    def records(self, payers: list[str]) -> list[SignedRecord]:
        signed = []
        terminals = list(self.keys)
        for index, payer in enumerate(payers):
            terminal_id = terminals[index % TERMINALS]
            self.sequence[terminal_id] += 1
            record = SettlementRecord(
                domain=self.domain,
                record_id=os.urandom(16),
                terminal_id=terminal_id,
                sequence=self.sequence[terminal_id],
                payer=payer,
                merchant=self.merchant,
                amount=1_000 + index,
                currency="EUR",
                timestamp=self.now,
                valid_until=self.now + 86_400,
            )
            signed.append(
                SignedRecord(
                    record, sign(self.keys[terminal_id], encode_record(record))
                )
            )
        return signed


def _append_gas(
    client: LedgerClient, audit: AuditClient, merchant: str, tick: Callable[[], None]
) -> dict[str, float]:
    now = int(client.w3.eth.get_block("latest")["timestamp"])
    workload = _Workload(client, merchant, now)
    # One warm-up block gives every terminal a last sequence and the merchant a hold.
    client.append(workload.records(workload.fund_payers(TERMINALS)))
    figures: dict[str, float] = {}
    for size in BLOCK_SIZES:
        records = workload.records(workload.fund_payers(size))
        appended = _append_approved(client, records)
        block_gas = _audit_block_gas(audit, appended, records)
        figures[f"append_gas_per_record_n{size}"] = round(appended.gas_used / size)
        figures[f"audit_gas_per_record_block_n{size}"] = round(block_gas / size)
        figures[f"settle_gas_per_record_n{size}"] = round(
            (appended.gas_used + block_gas) / size
        )

        records = workload.records(workload.fund_payers(size))
        appended = _append_approved(client, records)
        figures[f"audit_gas_per_record_single_n{size}"] = round(
            _audit_single_gas(audit, appended, records) / size
        )
        figures[f"proof_bytes_n{size}"] = _mean_proof_bytes(size)
        tick()
    return figures


def _append_approved(client: LedgerClient, records: list[SignedRecord]) -> AppendResult:
    result = client.append(records)
    approved = sum(outcome.code == 0 for outcome in result.outcomes)
    if approved != len(records):
        raise RuntimeError(
            f"Benchmark block of {len(records)} had {approved} approvals."
        )

    return result


def _audit_block_gas(
    audit: AuditClient, appended: AppendResult, records: list[SignedRecord]
) -> int:
    leaf_hashes = [leaf_hash(signed.leaf) for signed in records]
    holds = b"".join(encode_hold(signed.record) for signed in records)
    return audit.audit_block(appended.block_hash, leaf_hashes, holds).gas_used


def _audit_single_gas(
    audit: AuditClient, appended: AppendResult, records: list[SignedRecord]
) -> int:
    """Gas of settling every record of a block alone, as merchants with receipts."""
    tree = AuditTree.from_leaves(signed.leaf for signed in records)
    proofs = tree.inclusion_proofs()
    gas = 0
    for index, signed in enumerate(records):
        receipt = audit.settle_record(
            appended.block_hash, index, signed.leaf, proofs[index]
        )
        gas += receipt.gas_used
    return gas


def _mean_proof_bytes(size: int) -> float:
    tree = AuditTree([index.to_bytes(32, "big") for index in range(size)])
    total = sum(len(proof) for proof in tree.inclusion_proofs())
    return round(32 * total / size, 1)


def _verify_gas(w3: Web3, sender: str, tick: Callable[[], None]) -> dict[str, float]:
    harness = deploy_contract(w3, "AuditTreeHarness", sender)
    figures: dict[str, float] = {}
    for depth in PROOF_DEPTHS:
        size = 2**depth
        tree = AuditTree([index.to_bytes(32, "big") for index in range(size)])
        # Leaf 0 of a full tree is the costliest case: every level is an inner one.
        proof = tree.inclusion_proof(0)
        ok, gas = harness.functions.verifyInclusionGas(
            0, size, bytes(32), proof, tree.root
        ).call()
        if not ok:
            raise RuntimeError(f"Depth-{depth} proof did not verify on chain.")

        figures[f"verify_gas_depth{depth}"] = int(gas)
        tick()
    return figures


def _median_seconds(work: Callable[[], object], runs: int = TIMING_RUNS) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3)


def _bare_hashes(inputs: list[bytes]) -> list[bytes]:
    sha256 = hashlib.sha256
    return [sha256(data).digest() for data in inputs]


def _tree_figures(depth: int) -> dict[str, float]:
    """Build and all proofs for 2^depth leaves, beside the hashing they cannot avoid.

    The floor is one bare SHA-256 per leaf and per inner node (2^(depth+1) calls) on
    inputs of the same lengths: 0x00 and a leaf, 0x01 and two hashes.
    """
    leaves = [os.urandom(LEAF_LENGTH) for _ in range(2**depth)]
    floor_inputs = [b"\x00" + leaf for leaf in leaves] + [b"\x01" + bytes(64)] * len(
        leaves
    )
    tree = AuditTree.from_leaves(leaves)
    build = _median_seconds(lambda: AuditTree.from_leaves(leaves))
    floor = _median_seconds(lambda: _bare_hashes(floor_inputs))
    return {
        f"tree_build_s_2p{depth}": build,
        f"hashlib_floor_s_2p{depth}": floor,
        f"tree_build_over_floor_2p{depth}": round(build / floor, 2),
        f"tree_all_proofs_s_2p{depth}": _median_seconds(tree.inclusion_proofs),
    }


def _tree_speed(tick: Callable[[], None]) -> dict[str, float]:
    figures: dict[str, float] = {}
    for depth in TREE_DEPTHS:
        figures.update(_tree_figures(depth))
        tick()
    return figures


def run_bench(
    rpc_url: str | None = None, progress: Callable[[], None] = lambda: None
) -> dict[str, float]:
    """Measure on ``rpc_url`` (a fresh anvil when omitted) and return named figures."""
    with open_chain(rpc_url) as w3:
        operator, bookkeeper, merchant = w3.eth.accounts[:3]
        deployment = deploy(w3, operator, bookkeeper)
        client = LedgerClient(w3, deployment, operator, bookkeeper)
        audit = AuditClient(w3, deployment, operator)
        figures = _append_gas(client, audit, merchant, progress)
        figures.update(_verify_gas(w3, operator, progress))
    figures.update(_tree_speed(progress))
    return figures
