#!/usr/bin/env python3
"""Mutation check of the forge invariant suite: every guard it covers must matter.

Each mutant is a copy of the contracts with ONE guard removed (or one rule edge moved
by one). For each, this script builds a throwaway forge project in a temporary
directory (foundry.toml, forge/test, the mutated contracts, OpenZeppelin, and the
cache of the unmutated build, so that only the mutated contract recompiles) and runs
the invariant campaign there with the repository's settings: fixed seed, same runs and
depth, no shrinking.

By default that campaign is forge/test/AllInvariants.t.sol, which checks every
property after every call and names those broken at the first call that breaks any.
With --each it is forge/test/Invariants.t.sol, one campaign per property as
`make forge-test` runs it, which names every property that eventually fails (about
five times slower). A mutant that no property catches has survived: the suite does
not protect that guard.

Usage:
    python3 forge/mutants.py [--rev REV] [--only NAME ...] [--jobs N] [--each] [--keep]

The contracts come from the working tree, or from git revision REV with --rev. Every
pattern must match its file exactly once, or the script stops before running anything.
Exits 0 when every mutant was caught, 1 when one survived or could not be built, 2
when a pattern does not match or the unmutated suite fails.

Standard library only. It needs the forge platform binary and the solc shim that
`make setup` installs (or FORGE and SOLC in the environment).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOLC_VERSION = "0.8.28"
COMBINED = "forge/test/AllInvariants.t.sol"
EACH = "forge/test/Invariants.t.sol"


@dataclass(frozen=True)
class Mutant:
    """One edit of one contract: the regex `pattern` replaced by `replacement`."""

    name: str
    file: str
    pattern: str
    replacement: str
    breaks: str


MUTANTS = (
    Mutant(
        "append-unguarded",
        "Ledger.sol",
        r"(function appendBlock\([^)]*\)\s*external)\s*onlyRole\(BOOKKEEPER_ROLE\)",
        r"\1",
        "anyone may append blocks (onlyRole on appendBlock removed)",
    ),
    Mutant(
        "release-unguarded",
        "Ledger.sol",
        r"(function release\([^)]*\)\s*external)\s*onlyRole\(AUDIT_ROLE\)",
        r"\1",
        "anyone may release holds (onlyRole on release removed)",
    ),
    Mutant(
        "refund-unguarded",
        "Ledger.sol",
        r"(function refund\([^)]*\)\s*external)\s*onlyRole\(AUDIT_ROLE\)",
        r"\1",
        "anyone may refund holds (onlyRole on refund removed)",
    ),
    Mutant(
        "reject-unguarded",
        "SettlementAudit.sol",
        r"(\)\s*external)\s*onlyRole\(AUDITOR_ROLE\)",
        r"\1",
        "anyone may audit-reject records (onlyRole on rejectRecord removed)",
    ),
    Mutant(
        "register-unguarded",
        "TerminalRegistry.sol",
        r"(function registerTerminal\([^)]*\)\s*external)\s*onlyRole\(OPERATOR_ROLE\)",
        r"\1",
        "anyone may register terminals (onlyRole on registerTerminal removed)",
    ),
    Mutant(
        "header-link",
        "Ledger.sol",
        r"\n[ \t]*if \(header\.prevHash != _head\)[^;]*;",
        "",
        "a header need not link to the head",
    ),
    Mutant(
        "settle-resolved-bit",
        "SettlementAudit.sol",
        r"\n[ \t]*if \(_isResolved\(blockHash, index\)\) return false;",
        "",
        "settleRecord ignores the resolved bit",
    ),
    Mutant(
        "audit-pays-resolved",
        "SettlementAudit.sol",
        r"if \(!untouched\) _subtractResolved\(blockHash, owed\);",
        "",
        "a block audit pays again what records settled one by one took",
    ),
    Mutant(
        "audit-settlement-digest",
        "SettlementAudit.sol",
        r"(_checkBlockProof\(stored, leafHashes\);)\s*"
        r"_checkSettlement\(stored, holdsDigest, _releasesDigest\(releases\)\);",
        r"\1",
        "auditBlock trusts the caller's releases (settlement digest check removed)",
    ),
    Mutant(
        "take-hold-check",
        "Ledger.sol",
        r"\n[ \t]*if \(amount > held\) revert LedgerHoldTooSmall\([^;]*;",
        "",
        "release and refund may take more than a merchant holds",
    ),
    Mutant(
        "balance-rule",
        "Ledger.sol",
        r"\n[ \t]*if \((?:record\.)?amount > [^;]*\) "
        r"return \(?StatusCode\.InsufficientBalance[^;]*;",
        "",
        "a payment may exceed the payer's balance",
    ),
    Mutant(
        "sequence-rule",
        "Ledger.sol",
        r"\n[ \t]*if \(record\.sequence <= [^;]*\) "
        r"return StatusCode\.SequenceNotAbove;",
        "",
        "a terminal's sequence number may repeat (replays approved)",
    ),
    Mutant(
        "balance-edge",
        "Ledger.sol",
        r"(if \((?:record\.)?amount) > "
        r"([^;]*\) return \(?StatusCode\.InsufficientBalance)",
        r"\1 >= \2",
        "spending the balance exactly is refused (> became >=)",
    ),
    Mutant(
        "daily-limit-edge",
        "Ledger.sol",
        r"(if \([^;{]*?) > ([^;{]*\)\s*\{?\s*return \(?StatusCode\.DailyLimitExceeded)",
        r"\1 >= \2",
        "reaching the daily limit exactly is refused (> became >=)",
    ),
    Mutant(
        "valid-until-edge",
        "Ledger.sol",
        r"record\.validUntil < (\w+)\.now_",
        r"record.validUntil <= \1.now_",
        "a record valid until this very second is refused (< became <=)",
    ),
)


class Stop(Exception):
    """Ends the run early with a message and an exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Outcome:
    """What the suite made of one mutant."""

    mutant: Mutant
    caught_by: list[str]
    error: str
    seconds: float


def tool(variable: str, default: Path) -> str:
    """The executable named by environment `variable`, else `default`."""
    path = os.environ.get(variable) or str(default)
    if not os.access(path, os.X_OK):
        raise Stop(f"{variable}: '{path}' is not executable; run `make setup`.", 2)

    return path


def mutate(text: str, mutant: Mutant) -> str:
    """Applies `mutant` to `text`.

    Raises:
        Stop: the pattern does not match exactly once.
    """
    matches = len(re.findall(mutant.pattern, text))
    if matches != 1:
        raise Stop(
            f"mutant {mutant.name}: its pattern matches contracts/{mutant.file} "
            f"{matches} times, want exactly 1; make MUTANTS in forge/mutants.py "
            f"match the current text. Pattern: {mutant.pattern!r}",
            2,
        )

    return re.sub(mutant.pattern, mutant.replacement, text, count=1)


def copy_contracts(rev: str | None, root: Path) -> None:
    """Puts contracts/ under `root`: from the working tree, or from git `rev`."""
    if rev is None:
        ignore = shutil.ignore_patterns(".cache")
        shutil.copytree(REPO / "contracts", root / "contracts", ignore=ignore)
        return

    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "contracts"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        error = archive.stderr.decode().strip()
        raise Stop(f"git archive {rev} contracts failed: {error}", 2)

    subprocess.run(["tar", "x", "-C", str(root)], input=archive.stdout, check=True)


def make_project(root: Path, rev: str | None) -> None:
    """Lays out a forge project with the repository's suite and settings at `root`."""
    root.mkdir(parents=True)
    shutil.copy2(REPO / "foundry.toml", root / "foundry.toml")
    shutil.copytree(REPO / "forge" / "test", root / "forge" / "test")
    copy_contracts(rev, root)
    openzeppelin = Path("node_modules") / "@openzeppelin" / "contracts"
    shutil.copytree(REPO / openzeppelin, root / openzeppelin)
    # forge's cache keys sources by relative path and content hash: a build left by
    # `make forge-test` spares recompiling whatever has not changed since.
    for built in ("cache", "out"):
        if (REPO / "forge" / built).is_dir():
            shutil.copytree(REPO / "forge" / built, root / "forge" / built)


def forge_test(
    root: Path, forge: str, solc: str, suite: str
) -> tuple[list[str] | None, str]:
    """Runs the invariant `suite` of the project at `root`.

    Returns:
        The properties that failed (None when the suite did not run), and forge's
        output.
    """
    command = [forge, "test", "--root", str(root), "--match-path", suite]
    env = dict(os.environ, FOUNDRY_INVARIANT_SHRINK_RUN_LIMIT="0", NO_COLOR="1")
    run = subprocess.run(
        [*command, "--use", solc, "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    results: dict[str, dict] = {}
    for line in run.stdout.splitlines():
        if line.startswith("{"):
            for suite_result in json.loads(line).values():
                results.update(suite_result.get("test_results", {}))

    if not results:
        return None, (run.stderr or run.stdout).strip()

    failed: set[str] = set()
    for test, result in results.items():
        if result.get("status") == "Success":
            continue

        # The combined campaign names the broken properties in its revert reason.
        named = re.findall(r"invariant_[A-Za-z]+", result.get("reason") or "")
        if test.startswith("invariant_all(") and named:
            failed.update(named)
        else:
            failed.add(test.split("(")[0])

    return sorted(failed), run.stdout


def run_mutant(
    base: Path, work: Path, mutant: Mutant, forge: str, solc: str, suite: str
) -> Outcome:
    """Copies the unmutated project, applies `mutant` and runs `suite` on it."""
    start = time.monotonic()
    root = work / mutant.name
    shutil.copytree(base, root)
    source = root / "contracts" / mutant.file
    source.write_text(mutate(source.read_text(), mutant))

    failed, output = forge_test(root, forge, solc, suite)
    shutil.rmtree(root, ignore_errors=True)
    seconds = time.monotonic() - start
    if failed is None:
        return Outcome(mutant, [], "did not build or run: " + output[-400:], seconds)

    return Outcome(mutant, failed, "", seconds)


def table(outcomes: list[Outcome]) -> str:
    """The mutants, how long each took, and the properties that caught it."""
    width = max(len(outcome.mutant.name) for outcome in outcomes)
    lines = [
        f"{'mutant':<{width}}  {'time':>5}  caught by",
        f"{'-' * width}  -----  ---------",
    ]
    for outcome in outcomes:
        if outcome.error:
            verdict = "ERROR " + outcome.error.replace("\n", " ")[:160]
        elif outcome.caught_by:
            verdict = ", ".join(outcome.caught_by)
        else:
            verdict = "SURVIVED: " + outcome.mutant.breaks

        name = outcome.mutant.name
        lines.append(f"{name:<{width}}  {outcome.seconds:4.0f}s  {verdict}")

    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="take contracts/ from this git revision")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these mutants"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="mutants built and run at once (default: the cores, at most 4)",
    )
    parser.add_argument(
        "--each",
        action="store_true",
        help="one campaign per property, as make forge-test (slower, names all)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the unmutated project"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(
        platform.machine(), platform.machine()
    )
    forge = tool(
        "FORGE", REPO / f"node_modules/@foundry-rs/forge-linux-{arch}/bin/forge"
    )
    solc = tool("SOLC", REPO / f".solcx/solc-v{SOLC_VERSION}")
    unknown = set(args.only or ()) - {mutant.name for mutant in MUTANTS}
    if unknown:
        raise Stop(f"unknown mutants: {', '.join(sorted(unknown))}", 2)

    selected = [m for m in MUTANTS if not args.only or m.name in args.only]
    suite = EACH if args.each else COMBINED
    work = Path(tempfile.mkdtemp(prefix="posaudit-mutants-"))
    outcomes: list[Outcome] = []
    try:
        base = work / "base"
        make_project(base, args.rev)
        for mutant in selected:  # every pattern is checked before anything runs
            mutate((base / "contracts" / mutant.file).read_text(), mutant)

        start = time.monotonic()
        failed, output = forge_test(base, forge, solc, suite)
        if failed is None or failed:
            raise Stop(
                f"the unmutated suite fails, so mutants prove nothing:\n{output}", 2
            )

        print(
            f"unmutated: {suite} passes ({time.monotonic() - start:.0f}s)", flush=True
        )
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(run_mutant, base, work, mutant, forge, solc, suite)
                for mutant in selected
            ]
            for future in futures:
                outcome = future.result()
                outcomes.append(outcome)
                verdict = outcome.caught_by or outcome.error or "SURVIVED"
                print(f"  {outcome.mutant.name}: {verdict}", flush=True)

    finally:
        if args.keep:
            print(f"unmutated project kept in {work / 'base'}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(table(outcomes))
    missed = [o.mutant.name for o in outcomes if o.error or not o.caught_by]
    if missed:
        names = ", ".join(missed)
        print(f"\n{len(missed)} of {len(outcomes)} mutants not caught: {names}")
        return 1

    print(f"\nall {len(outcomes)} mutants caught")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Stop as stop:
        print(f"mutants: {stop}", file=sys.stderr)
        sys.exit(stop.status)
