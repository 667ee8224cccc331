"""Deploy the registry, the Ledger and the audit module with web3.py; wire roles."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
from eth_abi import decode as abi_decode
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError, Web3Exception

from posaudit.chain.artifacts import load_contract_type
from posaudit.chain.devnet import Devnet
from posaudit.exceptions import ChainError

log = logging.getLogger(__name__)

OPERATOR_ROLE = Web3.keccak(text="OPERATOR_ROLE")
BOOKKEEPER_ROLE = Web3.keccak(text="BOOKKEEPER_ROLE")
AUDIT_ROLE = Web3.keccak(text="AUDIT_ROLE")
AUDITOR_ROLE = Web3.keccak(text="AUDITOR_ROLE")

# Any block hash meets this target: the devnet default, so that tests need no nonce
# search. Operators raise the difficulty with Ledger.setTarget.
EASIEST_TARGET = 2**256 - 1


def rpc_session(rpc_url: str) -> requests.Session:
    """An HTTP session for JSON-RPC calls to ``rpc_url``.

    The proxy for the URL is taken from the environment once, here: requests would
    look it up again on every call, which cost 0.2 ms per call (more than anvil takes
    to answer most calls).
    """
    session = requests.Session()
    session.proxies.update(requests.utils.get_environ_proxies(rpc_url))
    session.trust_env = False
    return session


def connect(rpc_url: str, timeout: float = 30.0) -> Web3:
    """A Web3 over HTTP to ``rpc_url``.

    Raises:
        ChainError: The node does not answer.
    """
    provider = Web3.HTTPProvider(
        rpc_url, request_kwargs={"timeout": timeout}, session=rpc_session(rpc_url)
    )
    w3 = Web3(provider)
    if not w3.is_connected():
        raise ChainError(f"No Ethereum node answers at {rpc_url}.")

    return w3


@contextmanager
def open_chain(rpc_url: str | None, state: Path | None = None) -> Iterator[Web3]:
    """A connection to ``rpc_url``, or to a local anvil devnet, stopped on exit.

    Args:
        rpc_url: The node to use; None starts a devnet.
        state: For a devnet: the file it loads its chain from, when the file exists,
            and saves it to on exit, so that the next command finds the same chain.
    """
    if rpc_url is not None:
        yield connect(rpc_url)
        return

    if state is not None:
        state.parent.mkdir(parents=True, exist_ok=True)

    with Devnet(state=state) as devnet:
        yield connect(devnet.rpc_url)


def contract_at(w3: Web3, name: str, address: str) -> Contract:
    """Bind the compiled ``name`` ABI to ``address``."""
    return w3.eth.contract(
        address=Web3.to_checksum_address(address), abi=load_contract_type(name).abi
    )


def decode_error(abi: list[dict[str, Any]], data: str | bytes) -> str:
    """Name and arguments of a custom error from its revert data, as text."""
    raw = bytes.fromhex(data[2:]) if isinstance(data, str) else bytes(data)
    for entry in abi:
        if entry.get("type") != "error":
            continue

        types = [item["type"] for item in entry["inputs"]]
        signature = f"{entry['name']}({','.join(types)})"
        if Web3.keccak(text=signature)[:4] == raw[:4]:
            values = abi_decode(types, raw[4:])
            shown = [f"0x{v.hex()}" if isinstance(v, bytes) else str(v) for v in values]
            return f"{entry['name']}({', '.join(shown)})"

    return f"unknown error 0x{raw.hex()}"


def transact(w3: Web3, call: Any, sender: str, gas: int | None = None) -> Any:
    """Send a contract call from an unlocked ``sender`` and wait for success.

    Raises:
        ChainError: The transaction reverted; the message names the custom error.
    """
    params: dict[str, Any] = {"from": sender}
    if gas is not None:
        params["gas"] = gas

    try:
        receipt = w3.eth.wait_for_transaction_receipt(call.transact(params))
    except ContractCustomError as err:
        reason = decode_error(call.contract_abi, err.data)
        raise ChainError(f"{call.fn_name} reverted: {reason}.") from err

    if receipt["status"] != 1:
        raise ChainError(
            f"Transaction {receipt['transactionHash'].hex()} ({call.fn_name}) reverted "
            f"after {receipt['gasUsed']:,} of {params.get('gas', 'estimated')} gas: "
            f"{revert_reason(call, params)}"
        )

    return receipt


def revert_reason(
    call: Any, params: dict[str, Any], block: int | str = "latest"
) -> str:
    """Why a mined transaction reverted, found by running it again as a call on the
    state of ``block`` (the one before it, to see what it saw)."""
    try:
        call.call(params, block_identifier=block)
    except ContractCustomError as err:
        return decode_error(call.contract_abi, err.data)
    except Web3Exception as err:
        return str(err)

    return "it succeeds when replayed, so it ran out of gas or lost a race."


def deploy_contract(w3: Web3, name: str, sender: str, *args: Any) -> Contract:
    """Deploy the compiled ``name`` with constructor ``args`` from ``sender``."""
    contract_type = load_contract_type(name)
    factory = w3.eth.contract(abi=contract_type.abi, bytecode=contract_type.bytecode)
    receipt = transact(w3, factory.constructor(*args), sender)
    log.info(
        "contract deployed",
        extra={"contract": name, "address": receipt["contractAddress"]},
    )
    return contract_at(w3, name, receipt["contractAddress"])


@dataclass(frozen=True)
class Deployment:
    """Addresses of one posaudit deployment."""

    chain_id: int
    registry: str
    ledger: str
    audit: str
    currency: str

    def save(self, path: Path) -> None:
        """Write the deployment as JSON (what the other commands read)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Deployment:
        """Read a deployment written by :meth:`save`.

        Raises:
            ChainError: The file is missing, not JSON, or lacks an address.
        """
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as err:
            raise ChainError(
                f"Cannot read the deployment file {path}: {err}. Deploy first with "
                "'ape run deploy deploy' or pass the file written by it."
            ) from err


def deploy(
    w3: Web3,
    admin: str,
    bookkeeper: str,
    currency: str = "EUR",
    target: int = EASIEST_TARGET,
    auditor: str | None = None,
) -> Deployment:
    """Deploy the registry, the Ledger and the audit module.

    ``admin`` operates; ``bookkeeper`` appends blocks; ``auditor`` (``admin`` when not
    given) may reject records whose bookkeeper proofs fail. Anyone may settle.

    Returns:
        The addresses, chain id and currency of the new deployment.
    """
    registry = deploy_contract(w3, "TerminalRegistry", admin, admin)
    ledger = deploy_contract(
        w3, "Ledger", admin, admin, registry.address, currency.encode("ascii"), target
    )
    audit = deploy_contract(
        w3, "SettlementAudit", admin, admin, ledger.address, registry.address
    )
    transact(w3, ledger.functions.grantRole(BOOKKEEPER_ROLE, bookkeeper), admin)
    transact(w3, ledger.functions.grantRole(AUDIT_ROLE, audit.address), admin)
    if auditor is not None and auditor != admin:
        transact(w3, audit.functions.grantRole(AUDITOR_ROLE, auditor), admin)
    return Deployment(
        chain_id=w3.eth.chain_id,
        registry=registry.address,
        ledger=ledger.address,
        audit=audit.address,
        currency=currency,
    )
