"""``make bench``: every figure of the product brief, each beside its baseline.

Gas comes from real receipts on anvil: append and audit gas are whole transactions'
gas (the 21,000 base included, which aggregation amortises) over their records, for
payers, merchants and terminals whose storage slots already hold values and payer
addresses spread over all 20 bytes, as real ones are; settle gas is append plus
whole-block audit. The baseline is one transaction per record carrying the same
checks: the append of a one-record block. Proof gas is the execution gas of the
library call alone, read with ``gasleft()`` around it, against the sha256 precompile's
floor of 196 gas per level. The off-chain and end-to-end figures are in
:mod:`posaudit.bench_offchain` and :mod:`posaudit.bench_e2e`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable
from typing import Any

from web3 import Web3

from posaudit.audit import AuditClient
from posaudit.audittree import AuditTree, leaf_hash
from posaudit.bench_e2e import payer_address, run_e2e
from posaudit.bench_offchain import run_offchain
from posaudit.bench_report import with_derived
from posaudit.chain.deploy import deploy, deploy_contract, open_chain
from posaudit.ledger import AppendResult, LedgerClient
from posaudit.records import (
    Domain,
    SettlementRecord,
    SignedRecord,
    encode_record,
)
from posaudit.signing import generate_key, sign

BLOCK_SIZES = (1, 16, 64, 256, 1024)
PROOF_DEPTHS = (8, 16, 20)
# The sha256 precompile costs 60 + 12 per word; a node is 65 bytes, 3 words: 96 gas,
# plus 100 for the call to a precompile, which is always warm.
PRECOMPILE_GAS_PER_LEVEL = 196
TERMINALS = 8
BALANCE = 10**9
# Records settled one by one per block: a sample, since each is a transaction.
SINGLE_SETTLES = 64
# Gas limits of the set-up calls, sent without estimates.
OPEN_GAS = 120_000
DEPOSIT_GAS = 80_000


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
        """Open and fund ``count`` new payers, sent without waiting for each."""
        ledger = self.client.ledger.functions
        sender = self.client.operator
        payers = [payer_address(self.payer_count + i) for i in range(count)]
        self.payer_count += count
        hashes = []
        for payer in payers:
            address = Web3.to_checksum_address(payer)
            hashes.append(
                _send(ledger.openAccount(address, BALANCE, 1980_01_01, True), sender)
            )
            hashes.append(_send(ledger.deposit(address, BALANCE), sender, DEPOSIT_GAS))
        _wait_all(self.client.w3, hashes)
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


def _send(call: Any, sender: str, gas: int = OPEN_GAS) -> Any:
    return call.transact({"from": sender, "gas": gas})


def _wait_all(w3: Web3, hashes: Iterable[Any]) -> None:
    for transaction_hash in hashes:
        receipt = w3.eth.wait_for_transaction_receipt(transaction_hash)
        if receipt["status"] != 1:
            raise RuntimeError(f"Set-up transaction {transaction_hash.hex()} failed.")


def _gas_figures(
    client: LedgerClient, audit: AuditClient, merchant: str, tick: Callable[[], None]
) -> dict[str, float]:
    now = int(client.w3.eth.get_block("latest")["timestamp"])
    workload = _Workload(client, merchant, now)
    # One warm-up block gives every terminal a last sequence and the merchant a hold.
    client.append(workload.records(workload.fund_payers(TERMINALS)))
    figures: dict[str, float] = {}
    for size in BLOCK_SIZES:
        payers = workload.fund_payers(size)
        records = workload.records(payers)
        appended = _append_approved(client, records)
        block_gas = _audit_block_gas(audit, appended, records)
        figures[f"append_gas_per_record_n{size}"] = round(appended.gas_used / size)
        figures[f"audit_gas_per_record_block_n{size}"] = round(block_gas / size)
        figures[f"settle_gas_per_record_n{size}"] = round(
            (appended.gas_used + block_gas) / size
        )

        # The same payers again: their slots hold values, as before.
        records = workload.records(payers)
        appended = _append_approved(client, records)
        figures[f"audit_gas_per_record_single_n{size}"] = round(
            _audit_single_gas(audit, appended, records)
        )
        figures[f"proof_bytes_n{size}"] = _mean_proof_bytes(size)
        tick()
    figures["baseline_gas_per_record_one_tx"] = figures["append_gas_per_record_n1"]
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
    receipt = audit.audit_block(
        appended.block_hash, leaf_hashes, appended.holds, appended.releases
    )
    return receipt.gas_used


def _audit_single_gas(
    audit: AuditClient, appended: AppendResult, records: list[SignedRecord]
) -> float:
    """Mean gas of settling a record alone with its proof, as a merchant with a
    receipt does, over up to ``SINGLE_SETTLES`` records drawn with a fixed seed."""
    tree = AuditTree.from_leaves(signed.leaf for signed in records)
    proofs = tree.inclusion_proofs()
    chosen = random.Random(len(records)).sample(
        range(len(records)), min(SINGLE_SETTLES, len(records))
    )
    gas = 0
    for index in chosen:
        receipt = audit.settle_record(
            appended.block_hash, index, records[index].leaf, proofs[index]
        )
        gas += receipt.gas_used
    return gas / len(chosen)


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
        figures[f"verify_floor_gas_depth{depth}"] = depth * PRECOMPILE_GAS_PER_LEVEL
        tick()
    return figures


def run_gas(
    rpc_url: str | None = None, tick: Callable[[], None] = lambda: None
) -> dict[str, float]:
    """The gas figures, on ``rpc_url`` (a fresh anvil when omitted)."""
    with open_chain(rpc_url) as w3:
        operator, bookkeeper, merchant = w3.eth.accounts[:3]
        deployment = deploy(w3, operator, bookkeeper)
        client = LedgerClient(w3, deployment, operator, bookkeeper)
        audit = AuditClient(w3, deployment, operator)
        figures = _gas_figures(client, audit, merchant, tick)
        figures.update(_verify_gas(w3, operator, tick))
    return figures


def run_bench(
    rpc_url: str | None = None, progress: Callable[[], None] = lambda: None
) -> dict[str, float]:
    """Every figure: gas, off-chain and end to end, with the derived baselines."""
    figures = run_gas(rpc_url, progress)
    figures.update(run_offchain(progress))
    figures.update(run_e2e(tick=progress))
    return with_derived(figures)
