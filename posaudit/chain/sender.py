"""Sending transactions from one account with its own nonce and gas handling.

A service that sends many transactions cannot rely on the node's count alone (two
sends in flight would get the same nonce), nor trust a bare gas estimate (the state
can change between estimate and inclusion). The sender keeps the next nonce itself,
never below the node's pending count (the account may also send elsewhere), and adds
a margin to each estimate. With a
local key it signs itself; with an address it lets the node sign (a devnet's unlocked
accounts).

A pending count below the sender's own means that the node has lost transactions the
sender sent (a rollback, or a restart from an older state). A transaction with the
sender's nonce would then wait behind the gap and never be mined, so the send fails
at once, and the next one takes the node's count. A wait for a receipt likewise fails
as soon as it finds its transaction dropped, or stuck behind such a gap.

A caller that knows a safe gas limit passes it and saves the estimate, which costs the
node several executions of the call (three times the mining of a 512-record block on
anvil). Receipts are read raw and polled every few milliseconds: web3.py's wait sleeps
0.1 s between polls, longer than a devnet takes to mine a block.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.abi import get_abi_input_types
from web3 import Web3
from web3.exceptions import ContractCustomError, Web3Exception, Web3RPCError

from posaudit.chain.deploy import decode_error, revert_reason
from posaudit.exceptions import ChainError, OutOfGasError

log = logging.getLogger(__name__)

GAS_MARGIN = 1.2
FIRST_POLL = 0.005
MAX_POLL = 0.1
# Seconds between two checks, while a receipt is awaited, that the node still knows
# the transaction: one a rollback or a restart dropped will never be mined.
KNOWN_CHECK = 1.0


@dataclass(frozen=True)
class Receipt:
    """A mined transaction, as the node reported it; logs stay raw JSON-RPC logs.

    Attributes:
        gas_limit: The transaction's gas limit when it failed; its gas used when it
            succeeded (the limit then tells nothing).
    """

    transaction_hash: bytes
    block_number: int
    gas_used: int
    gas_limit: int
    status: int
    logs: tuple[Mapping[str, Any], ...]

    @property
    def out_of_gas(self) -> bool:
        """Whether it failed having used (almost) all its gas."""
        return self.status != 1 and self.gas_used * 64 >= self.gas_limit * 63

    @classmethod
    def from_json(cls, receipt: Mapping[str, Any], gas_limit: int) -> Receipt:
        """From an ``eth_getTransactionReceipt`` result."""
        return cls(
            transaction_hash=bytes.fromhex(receipt["transactionHash"][2:]),
            block_number=int(receipt["blockNumber"], 16),
            gas_used=int(receipt["gasUsed"], 16),
            gas_limit=gas_limit,
            status=int(receipt["status"], 16),
            logs=tuple(receipt["logs"]),
        )


class Sender:
    """Sends contract calls from one account.

    Args:
        w3: Connection to the node.
        account: A local account (signed here) or the address of an account the node
            holds unlocked.
        gas_margin: Factor applied to every gas estimate.
    """

    def __init__(
        self, w3: Web3, account: LocalAccount | str, gas_margin: float = GAS_MARGIN
    ) -> None:
        self.w3 = w3
        self.account = account
        self.gas_margin = gas_margin
        self._lock = threading.Lock()
        self._nonce: int | None = None

    @property
    def address(self) -> str:
        """The checksummed address that sends."""
        if isinstance(self.account, str):
            return Web3.to_checksum_address(self.account)

        return self.account.address

    def resync(self) -> None:
        """Take the nonce from the node again at the next send (after a restart, or a
        node that lost recent blocks)."""
        with self._lock:
            self._nonce = None

    def send(self, call: Any, gas: int | None = None) -> bytes:
        """Sign if local and send ``call``; returns the transaction hash.

        Args:
            call: A bound contract function.
            gas: The gas limit; estimated (with the margin) when omitted.

        Raises:
            ChainError: The estimate shows the call would revert (the message names
                the custom error), the node refused the transaction, or the node
                has lost transactions this sender sent (nothing is sent).
        """
        with self._lock:
            params = self._params(call, gas)
            try:
                transaction_hash = self._send(call, params)
            except Web3Exception as err:
                # The node may have seen a nonce we did not: ask again next time.
                self._nonce = None
                raise ChainError(f"{call.fn_name} was not sent: {err}.") from err

            self._nonce = params["nonce"] + 1

        log.debug(
            "transaction sent",
            extra={
                "call": call.fn_name,
                "nonce": params["nonce"],
                "gas": params["gas"],
            },
        )
        return transaction_hash

    def transact(
        self, call: Any, timeout: float = 120.0, gas: int | None = None
    ) -> Receipt:
        """Send ``call`` and wait for its receipt.

        Raises:
            ChainError: It would revert, was refused, or reverted when mined (the
                message names the custom error, found by replaying the call).
        """
        transaction_hash = self.send(call, gas)
        receipt = self.wait(transaction_hash, timeout)
        if receipt.status != 1:
            failure = OutOfGasError if receipt.out_of_gas else ChainError
            raise failure(self.failure(call, receipt))

        return receipt

    def wait(self, transaction_hash: bytes, timeout: float = 120.0) -> Receipt:
        """The receipt of a sent transaction, once it is mined.

        Raises:
            ChainError: It is not mined within ``timeout`` seconds, or never will
                be (checked every ``KNOWN_CHECK`` seconds): the node has dropped it,
                or it waits behind transactions the node has lost.
        """
        deadline = time.monotonic() + timeout
        check = time.monotonic() + KNOWN_CHECK
        poll = FIRST_POLL
        while True:
            found = self.w3.provider.make_request(  # type: ignore[arg-type]
                "eth_getTransactionReceipt", ["0x" + transaction_hash.hex()]
            ).get("result")
            if found:
                return Receipt.from_json(
                    found, self._gas_limit(found, transaction_hash)
                )

            if time.monotonic() > deadline:
                raise ChainError(
                    f"Transaction 0x{transaction_hash.hex()} was not mined within"
                    f" {timeout:g} s."
                )

            if time.monotonic() > check:
                self._check_known(transaction_hash)
                check = time.monotonic() + KNOWN_CHECK

            time.sleep(poll)
            poll = min(poll * 1.25, MAX_POLL)

    def _check_known(self, transaction_hash: bytes) -> None:
        """Raise if a transaction sent and not mined never will be: the node has
        dropped it, or it waits behind nonces the node has lost.

        Raises:
            ChainError: It will never be mined.
        """
        known = self.w3.provider.make_request(  # type: ignore[arg-type]
            "eth_getTransactionByHash", ["0x" + transaction_hash.hex()]
        ).get("result")
        if known is None:
            raise ChainError(
                f"Transaction 0x{transaction_hash.hex()} is not mined and the node no"
                " longer knows it: a rollback, or a restart from an older state,"
                " dropped it."
            )

        if known.get("blockNumber") is not None:
            return

        nonce, counted = int(known["nonce"], 16), self._pending_count()
        if nonce > counted:
            with self._lock:
                self._nonce = None
            raise ChainError(
                f"Transaction 0x{transaction_hash.hex()} has nonce {nonce}, but the"
                f" node counts {counted} transactions from {self.address}: it waits"
                " behind transactions the node has lost (a rollback, or a restart"
                " from an older state)."
            )

    def _pending_count(self) -> int:
        """The node's count of this account's transactions, pending ones included."""
        counted = self.w3.provider.make_request(  # type: ignore[arg-type]
            "eth_getTransactionCount", [self.address, "pending"]
        )["result"]
        return int(counted, 16)

    def _gas_limit(self, receipt: Mapping[str, Any], transaction_hash: bytes) -> int:
        """The gas limit of a mined transaction; asked of the node only when it
        failed, where it tells an out-of-gas from a revert."""
        if int(receipt["status"], 16) == 1:
            return int(receipt["gasUsed"], 16)

        transaction = self.w3.provider.make_request(  # type: ignore[arg-type]
            "eth_getTransactionByHash", ["0x" + transaction_hash.hex()]
        )["result"]
        return int(transaction["gas"], 16)

    def failure(self, call: Any, receipt: Receipt) -> str:
        """Why a mined ``call`` failed, as a sentence."""
        if receipt.out_of_gas:
            why = f"it ran out of its {receipt.gas_limit:,} gas"
        else:
            why = revert_reason(
                call, {"from": self.address}, receipt.block_number - 1
            ).rstrip(".")
        return (
            f"Transaction 0x{receipt.transaction_hash.hex()} ({call.fn_name}) reverted"
            f" after {receipt.gas_used:,} gas: {why}."
        )

    def _params(self, call: Any, gas: int | None) -> dict[str, Any]:
        # Our own count keeps two sends in flight apart; the node's pending count
        # covers transactions sent from the same account by anyone else.
        pending = self._pending_count()
        if self._nonce is not None and pending < self._nonce:
            ahead, self._nonce = self._nonce, None
            raise ChainError(
                f"The node counts {pending} transactions from {self.address} where"
                f" this sender has sent {ahead}: it has lost some (a rollback, or a"
                " restart from an older state). Nothing was sent; the next send"
                " takes the node's count."
            )

        self._nonce = max(self._nonce or 0, pending)
        if gas is None:
            gas = self._estimate(call)

        return {"from": self.address, "nonce": self._nonce, "gas": gas}

    def _estimate(self, call: Any) -> int:
        try:
            estimate = call.estimate_gas({"from": self.address})
        except ContractCustomError as err:
            reason = decode_error(call.contract_abi, err.data)
            raise ChainError(f"{call.fn_name} would revert: {reason}.") from err

        return int(estimate * self.gas_margin)

    def _send(self, call: Any, params: dict[str, Any]) -> bytes:
        if isinstance(self.account, str):
            # Straight to the node: web3.py's transact asks the node for its chain id
            # and reformats the call's arguments on every send.
            transaction = {
                "from": params["from"],
                "to": call.address,
                "data": _calldata(call),
                "gas": hex(params["gas"]),
                "nonce": hex(params["nonce"]),
            }
            return self._request("eth_sendTransaction", transaction)

        signed = self.account.sign_transaction(call.build_transaction(params))
        return self._request(
            "eth_sendRawTransaction", signed.raw_transaction.to_0x_hex()
        )

    def _request(self, method: str, argument: Any) -> bytes:
        answer = self.w3.provider.make_request(method, [argument])  # type: ignore[arg-type]
        if "error" in answer:
            raise Web3RPCError(str(answer["error"].get("message", answer["error"])))

        return bytes.fromhex(answer["result"][2:])


def _calldata(call: Any) -> str:
    """The ABI-encoded input of a bound contract function, as 0x-prefixed hex."""
    encoded = abi_encode(get_abi_input_types(call.abi), call.args)
    return call.selector + encoded.hex()
