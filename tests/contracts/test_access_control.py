"""Every state-changing function, called without its role, reverts with the access
error.

The functions are read from the compiled ABIs, so a function added later is covered
without editing this file: it must either revert for an outsider or be added, with its
reason, to ``OPEN_TO_ANYONE``.
"""

from __future__ import annotations

from typing import Any

import ape
import pytest

from posaudit.chain.artifacts import load_contract_type

CONTRACTS = ("TerminalRegistry", "Ledger", "SettlementAudit")

# Functions anyone may call, and why that is safe.
OPEN_TO_ANYONE = {
    # Settlement moves money only as the Ledger committed when it appended the block.
    ("SettlementAudit", "auditBlock"),
    ("SettlementAudit", "settleRecord"),
    # Renouncing applies to the caller's own roles only (AccessControlBadConfirmation).
    ("TerminalRegistry", "renounceRole"),
    ("Ledger", "renounceRole"),
    ("SettlementAudit", "renounceRole"),
}


def state_changing(name: str) -> list[dict[str, Any]]:
    return [
        entry
        for entry in load_contract_type(name).abi
        if entry["type"] == "function"
        and entry["stateMutability"] in ("nonpayable", "payable")
    ]


def zero_value(abi_type: dict[str, Any]) -> Any:
    """A well-formed argument of ``abi_type`` that means nothing in particular."""
    kind = abi_type["type"]
    if kind.endswith("]"):
        return []
    if kind == "tuple":
        return tuple(zero_value(component) for component in abi_type["components"])
    if kind.startswith(("uint", "int")):
        return 1
    if kind == "bool":
        return False
    if kind == "address":
        return "0x" + "11" * 20
    if kind == "bytes" or kind == "string":
        return b"" if kind == "bytes" else ""
    return bytes(int(kind[5:]))  # bytesN


GUARDED = [
    pytest.param(name, entry, id=f"{name}.{entry['name']}")
    for name in CONTRACTS
    for entry in state_changing(name)
    if (name, entry["name"]) not in OPEN_TO_ANYONE
]


@pytest.fixture
def deployed(registry: Any, ledger: Any, audit: Any) -> dict[str, Any]:
    return {"TerminalRegistry": registry, "Ledger": ledger, "SettlementAudit": audit}


@pytest.mark.parametrize(("name", "entry"), GUARDED)
def test_outsider_is_refused_with_the_access_error(deployed, outsider, name, entry):
    contract = deployed[name]
    args = [zero_value(item) for item in entry["inputs"]]

    with ape.reverts(contract.AccessControlUnauthorizedAccount):
        getattr(contract, entry["name"])(*args, sender=outsider)


def test_every_contract_has_guarded_functions():
    """The ABIs were read: an empty list would make the test above vacuous."""
    guarded = {(param.values[0], param.values[1]["name"]) for param in GUARDED}

    assert {name for name, _ in guarded} == set(CONTRACTS)
    assert {
        ("TerminalRegistry", "registerTerminal"),
        ("Ledger", "appendBlock"),
        ("Ledger", "release"),
        ("Ledger", "refund"),
        ("Ledger", "deposit"),
        ("SettlementAudit", "rejectRecord"),
    } <= guarded


def test_open_functions_are_exactly_the_listed_ones():
    """A new function that anyone may call has to be listed here, with its reason."""
    every = {
        (name, entry["name"]) for name in CONTRACTS for entry in state_changing(name)
    }

    assert OPEN_TO_ANYONE <= every


@pytest.mark.parametrize("name", CONTRACTS)
def test_renouncing_another_accounts_role_is_refused(deployed, outsider, owner, name):
    contract = deployed[name]

    with ape.reverts(contract.AccessControlBadConfirmation):
        contract.renounceRole(contract.DEFAULT_ADMIN_ROLE(), owner, sender=outsider)


def test_open_settlement_calls_with_junk_change_nothing(audit, ledger, outsider):
    with ape.reverts(audit.AuditUnknownBlock):
        audit.auditBlock(bytes(32), [], bytes(32), [], sender=outsider)

    with ape.reverts(audit.AuditUnknownBlock):
        audit.settleRecord(bytes(32), 0, bytes(165), [], sender=outsider)
