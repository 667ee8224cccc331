"""Compiled contract types, read from ape's manifest ``.build/__local__.json``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from posaudit.exceptions import ChainError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ContractType:
    """ABI and deployment bytecode of one compiled contract."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str


def manifest_path() -> Path:
    """``$POSAUDIT_BUILD`` or the project's ``.build/__local__.json``."""
    return Path(
        os.environ.get("POSAUDIT_BUILD", PROJECT_ROOT / ".build/__local__.json")
    )


@cache
def _manifest(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ChainError(
            f"No compiled contracts at {path}; run `make compile` first."
        ) from None


def load_contract_type(name: str) -> ContractType:
    """Return the compiled ``name`` contract.

    Raises:
        ChainError: The project is not compiled or has no such contract.
    """
    types = _manifest(manifest_path()).get("contractTypes", {})
    if name not in types:
        raise ChainError(
            f"Contract {name!r} is not in the build; known: {sorted(types)}."
        )

    entry = types[name]
    bytecode = (entry.get("deploymentBytecode") or {}).get("bytecode", "0x")
    return ContractType(name=name, abi=entry["abi"], bytecode=bytecode)
