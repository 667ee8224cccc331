"""The benchmark's verdict: each figure beside its baseline, measured in the same run,
and against its target.

Targets are the product brief's; a comparison whose figures a run did not produce is
left out rather than reported as met.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

Figures = Mapping[str, float]


@dataclass(frozen=True)
class Comparison:
    """One row of the verdict.

    Attributes:
        figure: The measured figure.
        baseline: The figure it is held against, or None.
        ratio: How the ratio is formed: ``"baseline/figure"`` (how many times better
            a smaller figure is) or ``"figure/baseline"``.
        target: The target in words.
        met: Whether the figures meet the target; None for a comparison without one.
    """

    figure: str
    baseline: str | None
    ratio: str
    target: str
    met: Callable[[Figures], bool] | None

    def applies(self, figures: Figures) -> bool:
        """Whether ``figures`` hold what this row needs."""
        needed = (
            [self.figure] if self.baseline is None else [self.figure, self.baseline]
        )
        return all(name in figures for name in needed)

    def ratio_of(self, figures: Figures) -> float | None:
        """Baseline over figure, or figure over baseline, as ``ratio`` says."""
        if self.baseline is None:
            return None

        figure, baseline = figures[self.figure], figures[self.baseline]
        if self.ratio == "baseline/figure":
            figure, baseline = baseline, figure
        return figure / baseline if baseline else None


def _ratio(figures: Figures, top: str, bottom: str) -> float:
    return figures[top] / figures[bottom]


COMPARISONS = (
    Comparison(
        "settle_gas_per_record_n256",
        "baseline_gas_per_record_one_tx",
        "baseline/figure",
        "<= 10,000 gas, >= 8 x below one transaction per record",
        lambda f: (
            f["settle_gas_per_record_n256"] <= 10_000
            and _ratio(
                f, "baseline_gas_per_record_one_tx", "settle_gas_per_record_n256"
            )
            >= 8
        ),
    ),
    Comparison(
        "verify_gas_depth20",
        "verify_floor_gas_depth20",
        "figure/baseline",
        "<= 2 x the sha256 precompile floor",
        lambda f: f["verify_gas_depth20"] <= 2 * f["verify_floor_gas_depth20"],
    ),
    Comparison(
        "tree_build_s_2p20",
        "hashlib_floor_s_2p20",
        "figure/baseline",
        "<= 1.5 x the bare hashlib floor",
        lambda f: f["tree_build_s_2p20"] <= 1.5 * f["hashlib_floor_s_2p20"],
    ),
    Comparison(
        "tree_build_s_2p20",
        "pymerkle_build_s_2p20",
        "baseline/figure",
        ">= 6 x faster than pymerkle",
        lambda f: _ratio(f, "pymerkle_build_s_2p20", "tree_build_s_2p20") >= 6,
    ),
    Comparison(
        "tree_all_proofs_s_2p20",
        "pymerkle_all_proofs_s_2p20",
        "baseline/figure",
        ">= 10 x faster than pymerkle",
        lambda f: (
            _ratio(f, "pymerkle_all_proofs_s_2p20", "tree_all_proofs_s_2p20") >= 10
        ),
    ),
    Comparison(
        "e2e_records_per_s_batch_aggregate",
        "e2e_records_per_s_single_normal",
        "figure/baseline",
        ">= 10,000 records/s",
        lambda f: f["e2e_records_per_s_batch_aggregate"] >= 10_000,
    ),
    Comparison(
        "e2e_records_per_s_single_aggregate",
        "e2e_records_per_s_single_normal",
        "figure/baseline",
        ">= 1,500 records/s",
        lambda f: f["e2e_records_per_s_single_aggregate"] >= 1_500,
    ),
    Comparison(
        "latency_p99_s_aggregate",
        "flush_plus_block_s",
        "figure/baseline",
        "<= flush timeout + one block",
        lambda f: f["latency_p99_s_aggregate"] <= f["flush_plus_block_s"],
    ),
    Comparison(
        "peak_rss_mb_service",
        None,
        "",
        "<= 500 MB",
        lambda f: f["peak_rss_mb_service"] <= 500,
    ),
    Comparison(
        "rsa_verify_per_s_gateway",
        "rsa_verify_per_s_primitive",
        "figure/baseline",
        "(no target: the gateway's share of the primitive)",
        None,
    ),
)


def with_derived(figures: Figures) -> dict[str, float]:
    """``figures`` and the baselines derived from them."""
    derived = dict(figures)
    if "flush_timeout_s" in figures and "block_time_s_aggregate" in figures:
        derived["flush_plus_block_s"] = round(
            figures["flush_timeout_s"] + figures["block_time_s_aggregate"], 3
        )
    return derived


def rows(figures: Figures) -> list[tuple[str, str, str, str, str, str]]:
    """The verdict's rows: figure, value, baseline, ratio, target, met."""
    table = []
    for comparison in COMPARISONS:
        if not comparison.applies(figures):
            continue

        ratio = comparison.ratio_of(figures)
        baseline = comparison.baseline
        table.append(
            (
                comparison.figure,
                format_value(figures[comparison.figure]),
                ""
                if baseline is None
                else f"{baseline} {format_value(figures[baseline])}",
                "" if ratio is None else f"{ratio:.2f} x",
                comparison.target,
                "" if comparison.met is None else _verdict(comparison.met(figures)),
            )
        )
    return table


def _verdict(met: bool) -> str:
    return "yes" if met else "NO"


def format_value(value: float) -> str:
    """A figure as the report prints it: integers with separators."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}"


def markdown(figures: Figures) -> str:
    """The verdict and every figure, as Markdown."""
    lines = [
        "# posaudit benchmark",
        "",
        "| figure | value | baseline (same run) | ratio | target | met |",
        "|---|---:|---|---:|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows(figures)]
    lines += ["", "## Every figure", "", "| figure | value |", "|---|---:|"]
    lines += [f"| {name} | {format_value(value)} |" for name, value in figures.items()]
    return "\n".join(lines) + "\n"
