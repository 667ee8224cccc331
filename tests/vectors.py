"""RFC 6962 proof vectors of an independent implementation (../shared/vectors)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / "rfc6962"
HASH_FIELDS = ("root", "leafHash", "root1", "root2")


def load_vectors(kind: str) -> list[tuple[str, dict[str, Any]]]:
    """Every case under ``rfc6962/<kind>/`` as (relative path, case), hashes decoded."""
    cases = []
    for path in sorted((VECTORS / kind).rglob("*.json")):
        case = json.loads(path.read_text())
        for field in HASH_FIELDS:
            if field in case:
                case[field] = base64.b64decode(case[field])

        case["proof"] = [base64.b64decode(h) for h in case["proof"] or []]
        cases.append((path.relative_to(VECTORS).as_posix(), case))

    return cases
