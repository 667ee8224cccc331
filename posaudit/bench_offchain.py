"""Off-chain figures: the audit tree against its floor and pymerkle, and RSA checks.

The audit tree's floor is the hashing no RFC 6962 tree can avoid: one bare SHA-256 per
leaf and per inner node (2^(depth+1) calls) on inputs of the same lengths. pymerkle
(PyPI), an RFC 9162 tree whose roots equal ours, builds and proves the same leaves;
being much slower, it runs once where ours runs three times.

The gateway's signature figure is its whole check of a batch (key lookup, signature
length, verification), one thread, against ``cryptography``'s verify alone.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from pymerkle import InmemoryTree

from posaudit.audittree import AuditTree
from posaudit.gateway import check_signature
from posaudit.records import (
    LEAF_LENGTH,
    Domain,
    SettlementRecord,
    SignedRecord,
    encode_record,
)
from posaudit.signing import generate_key, sign
from posaudit.terminal_keys import StaticKeys

TREE_DEPTHS = (16, 20)
TIMING_RUNS = 3
SIGNATURES = 2_000


def median_seconds(work: Callable[[], object], runs: int = TIMING_RUNS) -> float:
    """The median wall time of ``runs`` calls of ``work``."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _bare_hashes(inputs: list[bytes]) -> list[bytes]:
    sha256 = hashlib.sha256
    return [sha256(data).digest() for data in inputs]


def _pymerkle(leaves: Sequence[bytes]) -> tuple[float, float, bytes]:
    """pymerkle's build time, all-proofs time and root for ``leaves``."""
    tree = InmemoryTree(algorithm="sha256")
    started = time.perf_counter()
    for leaf in leaves:
        tree.append_entry(leaf)
    built = time.perf_counter()
    for index in range(1, len(leaves) + 1):
        tree.prove_inclusion(index)
    proved = time.perf_counter()
    return built - started, proved - built, tree.get_root()


def tree_figures(depth: int) -> dict[str, float]:
    """Build and all proofs for 2^depth leaves, beside the floor and pymerkle.

    Raises:
        RuntimeError: pymerkle's root differs from ours (the comparison would be of
            two different trees).
    """
    leaves = [os.urandom(LEAF_LENGTH) for _ in range(2**depth)]
    floor_inputs = [b"\x00" + leaf for leaf in leaves] + [b"\x01" + bytes(64)] * len(
        leaves
    )
    tree = AuditTree.from_leaves(leaves)
    build = median_seconds(lambda: AuditTree.from_leaves(leaves))
    floor = median_seconds(lambda: _bare_hashes(floor_inputs))
    proofs = median_seconds(tree.inclusion_proofs)
    their_build, their_proofs, their_root = _pymerkle(leaves)
    if their_root != tree.root:
        raise RuntimeError(
            f"pymerkle's root {their_root.hex()} differs from ours {tree.root.hex()}"
            f" for the same 2^{depth} leaves."
        )

    suffix = f"2p{depth}"
    return {
        f"tree_build_s_{suffix}": round(build, 3),
        f"hashlib_floor_s_{suffix}": round(floor, 3),
        f"pymerkle_build_s_{suffix}": round(their_build, 3),
        f"tree_all_proofs_s_{suffix}": round(proofs, 3),
        f"pymerkle_all_proofs_s_{suffix}": round(their_proofs, 3),
    }


def rsa_figures(count: int = SIGNATURES) -> dict[str, float]:
    """Verifications per second: the gateway's check, and the primitive alone."""
    key = generate_key()
    public = key.public_key()
    domain = Domain(31337, "0x" + "1e" * 20)
    records = []
    for sequence in range(1, count + 1):
        record = SettlementRecord(
            domain=domain,
            record_id=os.urandom(16),
            terminal_id="BENCH000",
            sequence=sequence,
            payer="0x" + os.urandom(20).hex(),
            merchant="0x" + "4d" * 20,
            amount=1_000,
            currency="EUR",
            timestamp=1_900_000_000,
            valid_until=1_900_003_600,
        )
        records.append(SignedRecord(record, sign(key, encode_record(record))))
    keys = StaticKeys({"BENCH000": public})

    def gateway() -> None:
        for signed in records:
            check_signature(keys, signed)

    def primitive() -> None:
        verify, pkcs1, sha256 = public.verify, padding.PKCS1v15(), hashes.SHA256()
        for signed in records:
            verify(signed.signature, signed.encoding, pkcs1, sha256)

    return {
        "rsa_verify_per_s_gateway": round(count / median_seconds(gateway)),
        "rsa_verify_per_s_primitive": round(count / median_seconds(primitive)),
    }


def run_offchain(tick: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Every off-chain figure, named with its unit."""
    figures: dict[str, float] = {}
    for depth in TREE_DEPTHS:
        figures.update(tree_figures(depth))
        tick()
    figures.update(rsa_figures())
    tick()
    return figures
