"""Setting up a simulated day on chain, and reading it back quickly.

:func:`open_day` registers the day's terminals and opens its payers' accounts: a few
hundred transactions, sent without waiting for each. :func:`reading_web3` is a
connection for reading settled history many times over, as the verdict and the
receipts do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.eth import Eth
from web3.exceptions import ContractCustomError, Web3Exception
from web3.main import get_default_modules
from web3.types import RPCEndpoint

from posaudit.chain.deploy import Deployment, contract_at, decode_error, rpc_session
from posaudit.ledger import terminal_bytes
from posaudit.signing import public_numbers
from posaudit.simulation import MINIMUM_AGES, Scenario, SimulationError, Workload

log = logging.getLogger(__name__)

SETUP_GAS_MARGIN = 1.5
# Transaction receipts asked for in one JSON-RPC batch (reads batch safely).
RECEIPTS_PER_BATCH = 100
# Room around the day for set-up, draining and the verdict, so that the day stays
# inside one UTC date, which daily limits and ages are counted in.
DAY_MARGIN = 1_800


def chain_time(w3: Web3) -> int:
    """The time of the node's latest block, Unix seconds."""
    return int(w3.eth.get_block("latest")["timestamp"])


def day_start(w3: Web3, scenario: Scenario) -> int:
    """Chain time to start the day at; a devnet close to UTC midnight is moved past
    it first, so that the whole run falls on one date.

    Raises:
        SimulationError: The node would cross midnight and cannot move its clock.
    """
    now = chain_time(w3)
    if now % 86_400 + scenario.duration + DAY_MARGIN < 86_400:
        return now

    skip = 86_400 - now % 86_400 + 60
    try:
        w3.provider.make_request("evm_increaseTime", [skip])  # type: ignore[arg-type]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    except (Web3Exception, OSError) as err:
        raise SimulationError(
            f"The day would cross UTC midnight at chain time {now}, and the node "
            f"cannot move its clock: {err}. Run again after midnight UTC."
        ) from err

    return chain_time(w3)


class _ReusedContracts(Eth):
    """The ``eth`` module, handing out one contract object per address and ABI.

    Building a web3 contract object parses its whole ABI, which costs more than
    the calls a receipt makes; settled history needs each contract once.
    """

    _contracts: dict[tuple[Any, int], Any] | None = None

    def contract(self, address: Any = None, **kwargs: Any) -> Any:
        """A contract object, reused when the address and ABI were seen before."""
        if address is None or set(kwargs) != {"abi"}:
            return super().contract(address, **kwargs)

        if self._contracts is None:
            self._contracts = {}

        key = (address, id(kwargs["abi"]))
        if key not in self._contracts:
            self._contracts[key] = super().contract(address, **kwargs)

        return self._contracts[key]


def reading_web3(rpc_url: str, timeout: float = 30.0) -> Web3:
    """A connection for reading settled history many times over.

    It caches the chain id, mined transactions and blocks by number (none of which
    change once mined), and reuses contract objects, which makes writing thousands
    of receipts several times faster than a plain connection.

    NOTE: Only for history that is final, as on a devnet after the day: a cached
    transaction or block is never asked for again.
    """
    modules = get_default_modules()
    modules["eth"] = _ReusedContracts
    provider = HTTPProvider(
        rpc_url,
        request_kwargs={"timeout": timeout},
        session=rpc_session(rpc_url),
        cache_allowed_requests=True,
        request_cache_validation_threshold=None,
    )
    return Web3(provider, modules=modules)


@dataclass(frozen=True)
class _Call:
    """One contract call of the day's set-up."""

    contract: Contract
    name: str
    args: tuple[Any, ...]


def _send_all(w3: Web3, calls: Sequence[_Call], sender: str) -> None:
    """Send the set-up calls without waiting for each, with numbered nonces, and
    wait until every one is mined.

    Gas is estimated once per function, after the calls before it are mined (the
    estimate rests on their effects), and given to each call with a margin. Each
    transaction is one request, in nonce order: anvil loses transactions when a
    JSON-RPC batch of them arrives at once.

    Raises:
        SimulationError: The node refused a call, or a call reverted.
    """
    priority = int(w3.eth.max_priority_fee)
    base_fee = int(w3.eth.get_block("latest").get("baseFeePerGas", 0))
    fees = {
        "maxPriorityFeePerGas": hex(priority),
        "maxFeePerGas": hex(priority + 2 * base_fee),
    }
    nonce = int(w3.eth.get_transaction_count(Web3.to_checksum_address(sender)))
    gas: dict[str, int] = {}
    sent: list[tuple[_Call, str]] = []
    for call in calls:
        if call.name not in gas:
            _wait_mined(w3, sent)
            sent = []
            gas[call.name] = _estimate(call, sender)

        transaction = {
            "from": sender,
            "to": call.contract.address,
            "data": call.contract.encode_abi(call.name, args=list(call.args)),
            "gas": hex(gas[call.name]),
            "nonce": hex(nonce),
            **fees,
        }
        response = w3.provider.make_request(
            RPCEndpoint("eth_sendTransaction"), [transaction]
        )
        if "error" in response:
            raise SimulationError(
                f"Setting up the day failed: {call.name} was refused: "
                f"{response['error']}."
            )

        sent.append((call, str(response["result"])))
        nonce += 1

    _wait_mined(w3, sent)


def _estimate(call: _Call, sender: str) -> int:
    function = call.contract.functions[call.name](*call.args)
    try:
        estimate = function.estimate_gas({"from": sender})
    except ContractCustomError as err:
        reason = decode_error(call.contract.abi, err.data)
        raise SimulationError(
            f"Setting up the day failed: {call.name} would revert with {reason}."
        ) from err

    return int(estimate * SETUP_GAS_MARGIN)


def _batch(w3: Web3, method: str, params: Sequence[Any]) -> list[Any]:
    """One JSON-RPC batch of ``method``, one request per item of ``params``.

    Returns:
        Each request's result, in order.

    Raises:
        SimulationError: The node refused the batch or one of its requests.
    """
    requests = [(RPCEndpoint(method), [item]) for item in params]
    responses = w3.provider.make_batch_request(requests)  # type: ignore[attr-defined]
    if not isinstance(responses, list):
        raise SimulationError(
            f"The node refused a batch of {method}: {responses.get('error')}."
        )

    for response in responses:
        if "error" in response:
            raise SimulationError(
                f"Setting up the day failed: {method} was refused: {response['error']}."
            )

    return [response.get("result") for response in responses]


def _wait_mined(
    w3: Web3, sent: Sequence[tuple[_Call, str]], timeout: float = 120.0
) -> None:
    deadline = time.time() + timeout
    waiting = list(sent)
    while waiting:
        still = []
        for start in range(0, len(waiting), RECEIPTS_PER_BATCH):
            part = waiting[start : start + RECEIPTS_PER_BATCH]
            receipts = _batch(w3, "eth_getTransactionReceipt", [h for _, h in part])
            for (call, transaction_hash), receipt in zip(part, receipts, strict=True):
                if receipt is None:
                    still.append((call, transaction_hash))
                elif int(receipt["status"], 16) != 1:
                    raise SimulationError(
                        f"Setting up the day failed: {call.name} in transaction "
                        f"{transaction_hash} reverted."
                    )

        waiting = still
        if waiting and time.time() > deadline:
            raise SimulationError(
                f"{len(waiting)} set-up transactions were not mined in {timeout} s."
            )

        if waiting:
            time.sleep(0.05)


def open_day(w3: Web3, deployment: Deployment, operator: str, day: Workload) -> None:
    """Register the terminals and open the payers' accounts, as planned."""
    registry = contract_at(w3, "TerminalRegistry", deployment.registry)
    ledger = contract_at(w3, "Ledger", deployment.ledger)
    calls = []
    for terminal in [*day.terminals, day.inactive_terminal]:
        numbers = public_numbers(terminal.key.public_key())
        merchant = Web3.to_checksum_address(terminal.merchant.address)
        calls.append(
            _Call(
                registry,
                "registerTerminal",
                (
                    terminal_bytes(terminal.terminal_id),
                    merchant,
                    numbers.modulus,
                    numbers.exponent,
                ),
            )
        )

    retired = terminal_bytes(day.inactive_terminal.terminal_id)
    calls.append(_Call(registry, "deactivateTerminal", (retired,)))
    for category, age in MINIMUM_AGES.items():
        calls.append(_Call(ledger, "setMinimumAge", (category, age)))

    for payer in day.payers:
        address = Web3.to_checksum_address(payer.address)
        limit = payer.daily_limit
        calls.append(
            _Call(ledger, "openAccount", (address, limit, payer.birth_date, payer.kyc))
        )
        calls.append(_Call(ledger, "deposit", (address, payer.balance)))
        if payer.frozen:
            calls.append(
                _Call(ledger, "updateAccount", (address, limit, payer.kyc, True))
            )

    _send_all(w3, calls, operator)
    log.info(
        "day set up",
        extra={"terminals": len(day.terminals), "payers": len(day.payers)},
    )
