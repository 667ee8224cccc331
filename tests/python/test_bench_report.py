"""The benchmark's verdict: ratios against same-run baselines, targets met or not."""

from __future__ import annotations

from posaudit.bench_report import markdown, rows, with_derived

MEASURED = {
    "settle_gas_per_record_n256": 9_000,
    "baseline_gas_per_record_one_tx": 90_000,
    "verify_gas_depth20": 8_000,
    "verify_floor_gas_depth20": 3_920,
    "latency_p99_s_aggregate": 0.3,
    "flush_timeout_s": 0.25,
    "block_time_s_aggregate": 0.04,
}


def by_figure() -> dict[str, tuple[str, ...]]:
    return {row[0]: row for row in rows(with_derived(MEASURED))}


def test_report_rows_give_the_ratio_to_the_baseline_and_the_verdict():
    gas = by_figure()["settle_gas_per_record_n256"]

    assert gas[1] == "9,000"
    assert gas[3] == "10.00 x"
    assert gas[5] == "yes"


def test_report_says_no_where_a_figure_misses_its_target():
    verify = by_figure()["verify_gas_depth20"]
    latency = by_figure()["latency_p99_s_aggregate"]

    assert verify[3] == "2.04 x"
    assert verify[5] == "NO"
    assert latency[2] == "flush_plus_block_s 0.290"
    assert latency[5] == "NO"


def test_report_leaves_out_comparisons_whose_figures_were_not_measured():
    assert "e2e_records_per_s_batch_aggregate" not in by_figure()
    assert "| e2e_records_per_s_batch_aggregate" not in markdown(MEASURED)
