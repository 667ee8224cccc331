"""Sending transactions from one account with its own nonce and gas handling.

A service that sends many transactions cannot rely on the node's count alone (two
sends in flight would get the same nonce), nor trust a bare gas estimate (the state
can change between estimate and inclusion). The sender keeps the next nonce itself,
never below the node's pending count (the account may also send elsewhere), and adds
a margin to each estimate. With a
local key it signs itself; with an address it lets the node sign (a devnet's unlocked
accounts).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractCustomError, Web3Exception

from posaudit.chain.deploy import decode_error
from posaudit.exceptions import ChainError

log = logging.getLogger(__name__)

GAS_MARGIN = 1.2


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

    def send(self, call: Any) -> bytes:
        """Estimate, sign if local, and send ``call``; returns the transaction hash.

        Raises:
            ChainError: The estimate shows the call would revert (the message names
                the custom error), or the node refused the transaction.
        """
        with self._lock:
            params = self._params(call)
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

    def transact(self, call: Any, timeout: float = 120.0) -> Any:
        """Send ``call`` and wait for its receipt.

        Raises:
            ChainError: It would revert, was refused, or reverted when mined.
        """
        transaction_hash = self.send(call)
        receipt = self.w3.eth.wait_for_transaction_receipt(
            transaction_hash, timeout=timeout
        )
        if receipt["status"] != 1:
            raise ChainError(
                f"Transaction 0x{transaction_hash.hex()} ({call.fn_name}) reverted"
                f" after {receipt['gasUsed']:,} gas."
            )

        return receipt

    def _params(self, call: Any) -> dict[str, Any]:
        # Our own count keeps two sends in flight apart; the node's pending count
        # covers transactions sent from the same account by anyone else.
        pending = self.w3.eth.get_transaction_count(self.address, "pending")
        self._nonce = max(self._nonce or 0, pending)

        try:
            estimate = call.estimate_gas({"from": self.address})
        except ContractCustomError as err:
            reason = decode_error(call.contract_abi, err.data)
            raise ChainError(f"{call.fn_name} would revert: {reason}.") from err

        return {
            "from": self.address,
            "nonce": self._nonce,
            "gas": int(estimate * self.gas_margin),
        }

    def _send(self, call: Any, params: dict[str, Any]) -> bytes:
        if isinstance(self.account, str):
            return bytes(call.transact(params))

        transaction = call.build_transaction(params)
        signed = self.account.sign_transaction(transaction)
        return bytes(self.w3.eth.send_raw_transaction(signed.raw_transaction))
