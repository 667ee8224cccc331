"""The demonstration run: a few dozen signed records, every rejection kind, on anvil.

Each record carries the outcome the independent rules model expects; the bookkeeper
appends the records (first one per block, then in aggregate blocks) and audits every
block; the run reads the Ledger's verdict from the events and compares the two, record
by record and balance by balance, and checks that every block's settlement completed.

The run leaves its chain, store and deployment in an output folder, so that receipts
can be written and verified, and auditors' queries run, after it ends.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from web3 import Web3

from posaudit.audit import AuditClient, SettlementStatus
from posaudit.bookkeeper import Bookkeeper
from posaudit.chain.deploy import Deployment, deploy, open_chain
from posaudit.exceptions import SignatureError
from posaudit.ledger import LedgerClient
from posaudit.records import Domain, SettlementRecord, SignedRecord, encode_record
from posaudit.rules import LedgerModel, PayerAccount, StatusCode, TerminalEntry
from posaudit.signing import TerminalKeyring, generate_key, sign
from posaudit.store import Store

log = logging.getLogger(__name__)

ALCOHOL = 7
AGGREGATE_SIZE = 8
# One block hash in 16 meets this target, so the bookkeeper searches a few nonces.
DEMO_TARGET = 2**252


@dataclass(frozen=True)
class Payer:
    """A payer of the demo: name, address and account settings."""

    name: str
    address: str
    deposit: int
    daily_limit: int
    birth_date: int
    kyc: bool = True
    frozen: bool = False
    opened: bool = True


PAYERS = (
    Payer("alice", "0x" + "a1" * 20, 60_000, 20_000, 1985_06_01),
    Payer("bob", "0x" + "b0" * 20, 3_000, 100_000, 1972_11_23),
    Payer("carol", "0x" + "ca" * 20, 10_000, 10_000, 1990_01_01, frozen=True),
    Payer("dave", "0x" + "da" * 20, 10_000, 10_000, 1990_01_01, kyc=False),
    Payer("erin", "0x" + "e1" * 20, 10_000, 10_000, 2013_04_02),
    Payer("frank", "0x" + "f0" * 20, 0, 0, 0, opened=False),
)


@dataclass
class DemoRecord:
    """A record of the run: what was sent, what was expected, what the chain said."""

    label: str
    signed: SignedRecord
    payer: str
    expected: StatusCode | None = None
    actual: StatusCode | None = None
    refused: str | None = None
    block_height: int | None = None
    block_size: int | None = None
    settlement: SettlementStatus | None = None

    @property
    def matches(self) -> bool:
        """Whether the chain's verdict, or the gateway's refusal, was expected, and an
        approved record was settled."""
        if self.refused is not None:
            return self.expected is None

        settled = self.settlement == (
            SettlementStatus.SETTLED
            if self.actual == StatusCode.APPROVED
            else SettlementStatus.REJECTED_BY_RULES
        )
        return self.actual == self.expected and settled


@dataclass
class DemoResult:
    """Everything the demo table prints."""

    records: list[DemoRecord]
    balances: dict[str, tuple[int, int]] = field(default_factory=dict)
    credits: dict[str, tuple[int, int]] = field(default_factory=dict)
    held: int = 0
    blocks: int = 0
    blocks_complete: int = 0
    gas_used: int = 0
    audit_gas_used: int = 0
    out: Path | None = None

    @property
    def ok(self) -> bool:
        """Whether every record, balance and credit matched the model, no money is
        left held, and every block's settlement completed."""
        return (
            all(record.matches for record in self.records)
            and all(
                chain == model
                for chain, model in [*self.balances.values(), *self.credits.values()]
            )
            and self.held == 0
            and self.blocks_complete == self.blocks
        )


class _Shop:
    """Terminals, keys and the model, with a factory for signed records."""

    def __init__(self, w3: Web3, deployment: Deployment, merchants: list[str]) -> None:
        self.domain = Domain(deployment.chain_id, deployment.ledger)
        self.merchants = merchants
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.owner: dict[str, str] = {}
        self.sequence: dict[str, int] = {}
        self.model = LedgerModel(self.domain, deployment.currency)
        self.now = int(w3.eth.get_block("latest")["timestamp"])

    def record(
        self, terminal_id: str, payer: Payer, amount: int, **overrides: object
    ) -> SignedRecord:
        self.sequence[terminal_id] = self.sequence.get(terminal_id, 0) + 1
        fields: dict[str, object] = {
            "domain": self.domain,
            "record_id": os.urandom(16),
            "terminal_id": terminal_id,
            "sequence": self.sequence[terminal_id],
            "payer": payer.address,
            "merchant": self.owner.get(terminal_id, self.merchants[0]),
            "amount": amount,
            "currency": "EUR",
            "timestamp": self.now,
            "valid_until": self.now + 86_400,
        }
        fields.update(overrides)
        record = SettlementRecord(**fields)  # type: ignore[arg-type]
        key = self.keys.get(terminal_id) or self.keys["SHOP-A01"]
        return SignedRecord(record, sign(key, encode_record(record)))


def _setup(client: LedgerClient, shop: _Shop) -> TerminalKeyring:
    keyring = TerminalKeyring()
    terminals = {"SHOP-A01": 0, "SHOP-A02": 0, "CAFE-B01": 1, "KIOSK-C1": 2}
    for terminal_id, merchant_index in terminals.items():
        key = generate_key()
        shop.keys[terminal_id] = key
        shop.owner[terminal_id] = shop.merchants[merchant_index]
        client.register_terminal(
            terminal_id, shop.merchants[merchant_index], key.public_key()
        )
        keyring.add(terminal_id, key.public_key())
        shop.model.terminals[terminal_id] = TerminalEntry(
            shop.merchants[merchant_index]
        )

    client.deactivate_terminal("SHOP-A02")
    shop.model.terminals["SHOP-A02"].active = False
    shop.keys["GHOST-01"] = generate_key()
    client.set_minimum_age(ALCOHOL, 18)
    shop.model.minimum_age[ALCOHOL] = 18
    for payer in PAYERS:
        if payer.opened:
            _open(client, shop.model, payer)

    return keyring


def _open(client: LedgerClient, model: LedgerModel, payer: Payer) -> None:
    client.open_account(payer.address, payer.daily_limit, payer.birth_date, payer.kyc)
    client.deposit(payer.address, payer.deposit)
    if payer.frozen:
        client.update_account(payer.address, payer.daily_limit, payer.kyc, True)

    model.accounts[payer.address] = PayerAccount(
        balance=payer.deposit,
        daily_limit=payer.daily_limit,
        birth_date=payer.birth_date,
        kyc=payer.kyc,
        frozen=payer.frozen,
    )


def _scenario(shop: _Shop) -> list[DemoRecord]:
    alice, bob, carol, dave, erin, frank = PAYERS
    r = shop.record
    records = [
        DemoRecord("coffee", r("CAFE-B01", alice, 450), "alice"),
        DemoRecord("groceries", r("SHOP-A01", bob, 2_180), "bob"),
        DemoRecord("newspaper", r("KIOSK-C1", erin, 250), "erin"),
        DemoRecord(
            "wine, adult", r("SHOP-A01", alice, 1_299, goods_category=ALCOHOL), "alice"
        ),
        DemoRecord("lunch", r("CAFE-B01", alice, 1_150), "alice"),
    ]
    records += [
        DemoRecord(f"shopping {i}", r("SHOP-A01", alice, 2_500 + 100 * i), "alice")
        for i in range(6)
    ]
    replayed = records[1].signed
    later = r("KIOSK-C1", bob, 100)
    earlier = r("KIOSK-C1", bob, 100)
    foreign = Domain(shop.domain.chain_id + 1, shop.domain.ledger)
    other_ledger = Domain(shop.domain.chain_id, "0x" + "0d" * 20)
    records += [
        DemoRecord("over balance", r("SHOP-A01", bob, 5_000), "bob"),
        DemoRecord("over daily limit", r("SHOP-A01", alice, 9_000), "alice"),
        DemoRecord(
            "expired",
            r(
                "CAFE-B01",
                bob,
                90,
                timestamp=shop.now - 7_200,
                valid_until=shop.now - 3_600,
            ),
            "bob",
        ),
        DemoRecord(
            "dated ahead",
            r(
                "CAFE-B01",
                bob,
                90,
                timestamp=shop.now + 3_600,
                valid_until=shop.now + 7_200,
            ),
            "bob",
        ),
        DemoRecord("frozen payer", r("SHOP-A01", carol, 500), "carol"),
        DemoRecord("no KYC", r("SHOP-A01", dave, 500), "dave"),
        DemoRecord(
            "beer, minor", r("KIOSK-C1", erin, 300, goods_category=ALCOHOL), "erin"
        ),
        DemoRecord("no account", r("KIOSK-C1", frank, 300), "frank"),
        DemoRecord("replay", replayed, "bob"),
        DemoRecord("out of order (late)", later, "bob"),
        DemoRecord("out of order (early)", earlier, "bob"),
        DemoRecord("other chain", r("CAFE-B01", alice, 10, domain=foreign), "alice"),
        DemoRecord(
            "other ledger", r("CAFE-B01", alice, 10, domain=other_ledger), "alice"
        ),
        DemoRecord(
            "unknown terminal",
            r("GHOST-01", alice, 10, merchant=shop.merchants[0]),
            "alice",
        ),
        DemoRecord("inactive terminal", r("SHOP-A02", alice, 10), "alice"),
        DemoRecord(
            "wrong merchant",
            r("CAFE-B01", alice, 10, merchant=shop.merchants[2]),
            "alice",
        ),
        DemoRecord("wrong currency", r("CAFE-B01", alice, 10, currency="USD"), "alice"),
    ]
    forged = r("CAFE-B01", alice, 10)
    records.append(
        DemoRecord(
            "forged signature",
            SignedRecord(forged.record, forged.signature[::-1]),
            "alice",
        )
    )
    records += [
        DemoRecord(f"snack {i}", r("KIOSK-C1", erin, 120 + i), "erin") for i in range(8)
    ]
    return records


def _admit(keyring: TerminalKeyring, records: list[DemoRecord]) -> list[DemoRecord]:
    """The gateway's check: a record whose signature fails never reaches the chain."""
    admitted = []
    for item in records:
        signed = item.signed
        try:
            if signed.record.terminal_id in keyring:
                keyring.verify(
                    signed.record.terminal_id, signed.encoding, signed.signature
                )
        except SignatureError as err:
            item.refused = type(err).__name__
            continue

        admitted.append(item)

    return admitted


def _blocks(records: list[DemoRecord], singles: int) -> Iterator[list[DemoRecord]]:
    for item in records[:singles]:
        yield [item]

    rest = records[singles:]
    for start in range(0, len(rest), AGGREGATE_SIZE):
        yield rest[start : start + AGGREGATE_SIZE]


def _settle(
    bookkeeper: Bookkeeper,
    shop: _Shop,
    admitted: list[DemoRecord],
    result: DemoResult,
    progress: Callable[[int], None],
) -> None:
    audit = bookkeeper.audit_client
    for block in _blocks(admitted, singles=5):
        appended, audited = bookkeeper.settle([item.signed for item in block])
        now = int(audit.w3.eth.get_block(appended.block_number)["timestamp"])
        for item, outcome in zip(block, appended.outcomes, strict=True):
            item.expected = shop.model.decide(item.signed.record, now)
            item.actual = outcome.code
            item.block_height = appended.height
            item.block_size = len(block)
            item.settlement = audit.status_of(appended.block_hash, outcome.index)

        result.blocks += 1
        result.blocks_complete += audit.audit_of(appended.block_hash).complete
        result.gas_used += appended.gas_used
        result.audit_gas_used += audited.gas_used
        progress(len(block))


def run_demo(
    rpc_url: str | None = None,
    out: Path = Path("out"),
    progress: Callable[[int], None] = lambda _: None,
) -> DemoResult:
    """Deploy, register, fund, sign, settle and audit the demo records.

    Args:
        rpc_url: A node with unlocked accounts; a fresh anvil is started when omitted,
            and its chain kept in ``out/devnet-state.json``.
        out: Folder for the store (``posaudit.db``), the deployment file and the
            devnet's chain; what a previous run left there is replaced.
        progress: Called with the number of records after each block.

    Returns:
        Every record with its expected and actual outcome, and the balances.
    """
    paths = _fresh_outputs(out)
    with (
        open_chain(rpc_url, state=paths["state"]) as w3,
        Store(paths["store"]) as store,
    ):
        operator, bookkeeper_account, *merchants = w3.eth.accounts[:5]
        deployment = deploy(w3, operator, bookkeeper_account, target=DEMO_TARGET)
        deployment.save(paths["deployment"])
        client = LedgerClient(w3, deployment, operator, bookkeeper_account)
        bookkeeper = Bookkeeper(store, client, AuditClient(w3, deployment, operator))
        shop = _Shop(w3, deployment, [m.lower() for m in merchants])
        keyring = _setup(client, shop)
        records = _scenario(shop)
        result = DemoResult(records, out=out)
        _settle(bookkeeper, shop, _admit(keyring, records), result, progress)
        _compare_money(client, shop, result)
        return result


def _fresh_outputs(out: Path) -> dict[str, Path]:
    paths = {
        "state": out / "devnet-state.json",
        "store": out / "posaudit.db",
        "deployment": out / "deployment.json",
    }
    out.mkdir(parents=True, exist_ok=True)
    for path in [*paths.values(), out / "posaudit.db-wal", out / "posaudit.db-shm"]:
        path.unlink(missing_ok=True)

    return paths


def _compare_money(client: LedgerClient, shop: _Shop, result: DemoResult) -> None:
    """Balances against the model; after the audit, the model's holds are credits."""
    for payer in PAYERS:
        model = shop.model.accounts.get(payer.address)
        result.balances[payer.name] = (
            client.balance_of(payer.address),
            model.balance if model else 0,
        )

    for merchant in shop.merchants:
        result.credits[merchant] = (
            client.credit_of(merchant),
            shop.model.held.get(merchant, 0),
        )
        result.held += client.held_for(merchant)
