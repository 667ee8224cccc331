"""The report of a simulated day: one JSON document and one self-contained HTML page.

``report.json`` holds the figures: the summary of the verdict, the day's timeline as
the run sampled it, every settlement block, the audit latencies and the differences.
``report.html`` shows the same with plots made by matplotlib and embedded as base64
PNG, so that the page opens from disk in any browser, without a server or network.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from posaudit.simulate import SimulationResult, StateChange

_CONGESTED = "#f4a261"
_NORMAL = "#2a9d8f"
_AGGREGATE = "#e76f51"
_PLANNED = "#264653"


def report_document(result: SimulationResult) -> dict[str, Any]:
    """The figures of the run as one JSON-ready document."""
    scenario = result.scenario
    sent = _sent_per_second(result)
    return {
        "scenario": dataclasses.asdict(scenario),
        "summary": result.summary(),
        "offered_load": {
            "bin_seconds": 1,
            "sent_per_second": sent,
            "planned_per_second": [
                round(scenario.offered_rate(second + 0.5), 3)
                for second in range(len(sent))
            ],
        },
        "timeline": [dataclasses.asdict(sample) for sample in result.samples],
        "state_changes": [dataclasses.asdict(change) for change in result.changes],
        "blocks": [
            {**dataclasses.asdict(block), "gas_per_record": block.gas_per_record}
            for block in result.blocks
        ],
        "latency_seconds": result.latencies,
        "differences": [difference.as_dict() for difference in result.differences],
        "records": [
            {
                "index": planned.index,
                "kind": str(planned.kind),
                "sender": planned.sender,
                "terminal_id": planned.record.terminal_id,
                "sequence": planned.record.sequence,
                "record_id": planned.record.record_id.hex(),
                "sent_at": outcome.sent_at,
                "expected": planned.expected.describe(),
                "actual": outcome.describe(),
                "settlement": None
                if outcome.settlement is None
                else outcome.settlement.name,
                "block_height": outcome.block_height,
            }
            for planned, outcome in zip(
                result.workload.records, result.outcomes, strict=True
            )
        ],
    }


def _sent_per_second(result: SimulationResult) -> list[int]:
    seconds = Counter(
        int(outcome.sent_at)
        for outcome in result.outcomes
        if outcome.http_status is not None
    )
    length = max(int(result.scenario.duration), max(seconds, default=0) + 1)
    return [seconds.get(second, 0) for second in range(length)]


def _congested_spans(
    changes: Sequence[StateChange], end: float
) -> list[tuple[float, float]]:
    spans, since = [], None
    for change in changes:
        if change.state == "congested" and since is None:
            since = change.at
        elif change.state == "normal" and since is not None:
            spans.append((since, change.at))
            since = None

    if since is not None:
        spans.append((since, end))

    return spans


def _shade(axes: Axes, result: SimulationResult, label: bool = True) -> None:
    for number, (start, stop) in enumerate(
        _congested_spans(result.changes, result.day_seconds)
    ):
        axes.axvspan(
            start,
            stop,
            color=_CONGESTED,
            alpha=0.25,
            label="congested" if label and number == 0 else None,
        )


def _clock_axis(axes: Axes, result: SimulationResult) -> None:
    scenario = result.scenario
    end = max(result.day_seconds, scenario.duration)
    ticks = [hour * scenario.seconds_per_hour for hour in range(0, 13, 2)]
    ticks = [tick for tick in ticks if tick <= end]
    axes.set_xticks(ticks)
    axes.set_xticklabels([scenario.clock_at(tick) for tick in ticks])
    axes.set_xlim(0, end)
    axes.set_xlabel(
        f"business time (the day 08:00-20:00 runs in {scenario.duration:g} s)"
    )


def _png(figure: Figure) -> str:
    # A bare Figure draws with the Agg canvas: no pyplot, no global state.
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_load(result: SimulationResult) -> str:
    """Offered load against the plan, with the congested period shaded."""
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    axes = figure.subplots()
    sent = _sent_per_second(result)
    scenario = result.scenario
    axes.bar(
        [second + 0.5 for second in range(len(sent))],
        sent,
        width=1.0,
        color=_NORMAL,
        alpha=0.8,
        label="records sent per second",
    )
    steps = [step / 4 for step in range(int(scenario.duration * 4) + 1)]
    axes.plot(
        steps,
        [scenario.offered_rate(step) for step in steps],
        color=_PLANNED,
        linewidth=1.2,
        label="planned load",
    )
    _shade(axes, result)
    _clock_axis(axes, result)
    axes.set_ylabel("records / s")
    axes.set_title("Offered load and network state")
    axes.legend(loc="upper right")
    return _png(figure)


def plot_blocks(result: SimulationResult) -> str:
    """Every settlement block's size against the time its audit finished."""
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    axes = figure.subplots()
    for mode, color in (("normal", _NORMAL), ("aggregate", _AGGREGATE)):
        chosen = [block for block in result.blocks if block.mode == mode]
        axes.scatter(
            [block.appended_at for block in chosen],
            [block.records for block in chosen],
            s=14,
            color=color,
            label=f"{mode} ({len(chosen)} blocks)",
        )

    _shade(axes, result)
    _clock_axis(axes, result)
    axes.set_yscale("log", base=2)
    sizes = [2**power for power in range(result.scenario.aggregate_size.bit_length())]
    axes.set_yticks(sizes, [str(size) for size in sizes])
    axes.set_ylabel("records per block")
    axes.set_title("Settlement blocks: one record each when normal, n when congested")
    axes.legend(loc="upper right")
    return _png(figure)


def plot_monitor(result: SimulationResult) -> str:
    """What the network monitor measured, against its thresholds."""
    scenario = result.scenario
    figure = Figure(figsize=(10, 5), layout="constrained")
    rates, links = figure.subplots(2, 1, sharex=True)
    times = [sample.at for sample in result.samples]
    rates.plot(times, [s.block_rate for s in result.samples], color=_PLANNED)
    rates.axhline(scenario.enter_block_rate, color="red", linestyle="--", lw=1)
    rates.axhline(scenario.leave_block_rate, color="gray", linestyle=":", lw=1)
    rates.set_ylabel("blocks / s")
    rates.set_title(
        "Network monitor: congested when the block rate and a link are above their "
        "enter levels (dashed)"
    )
    links.plot(times, [s.link_rate / 1000 for s in result.samples], color=_PLANNED)
    links.axhline(scenario.enter_link_rate / 1000, color="red", linestyle="--", lw=1)
    links.axhline(scenario.leave_link_rate / 1000, color="gray", linestyle=":", lw=1)
    links.set_ylabel("busiest link, kB / s")
    for axes in (rates, links):
        _shade(axes, result, label=False)

    _clock_axis(links, result)
    return _png(figure)


def plot_progress(result: SimulationResult) -> str:
    """Records sent, appended and settled over the day."""
    figure = Figure(figsize=(10, 3.4), layout="constrained")
    axes = figure.subplots()
    times = [sample.at for sample in result.samples]
    axes.plot(times, [s.sent for s in result.samples], label="sent", color=_PLANNED)
    axes.plot(
        times, [s.appended for s in result.samples], label="appended", color=_NORMAL
    )
    axes.plot(
        times,
        [s.settled for s in result.samples],
        label="settled",
        color=_AGGREGATE,
        linestyle="--",
    )
    _shade(axes, result)
    _clock_axis(axes, result)
    axes.set_ylabel("records")
    axes.set_title("Records sent, appended and settled")
    axes.legend(loc="lower right")
    return _png(figure)


def plot_gas(result: SimulationResult) -> str:
    """Gas per record by mode, and against block size."""
    summary = result.summary()
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    bars, scatter = figure.subplots(1, 2)
    modes = summary["blocks"]
    labels = ["normal (n = 1)", "aggregate"]
    values = [modes["normal"]["gas_per_record"], modes["aggregate"]["gas_per_record"]]
    bars.bar(labels, values, color=[_NORMAL, _AGGREGATE])
    for position, value in enumerate(values):
        bars.text(position, value, f"{value:,.0f}", ha="center", va="bottom")

    bars.set_ylabel("gas per record (append + audit)")
    bars.set_title("Gas per record by mode")
    scatter.scatter(
        [block.records for block in result.blocks],
        [block.gas_per_record for block in result.blocks],
        s=14,
        c=[_AGGREGATE if b.mode == "aggregate" else _NORMAL for b in result.blocks],
    )
    scatter.set_xscale("log", base=2)
    scatter.set_yscale("log")
    scatter.set_xlabel("records per block")
    scatter.set_ylabel("gas per record")
    scatter.set_title("Gas per record against block size")
    return _png(figure)


def plot_latency(result: SimulationResult) -> str:
    """Audit latency, from the gateway accepting a record to its block's audit, as
    the share of records settled within a time, by mode."""
    figure = Figure(figsize=(10, 3.4), layout="constrained")
    axes = figure.subplots()
    for mode, color in (("normal", _NORMAL), ("aggregate", _AGGREGATE)):
        values = sorted(result.latencies.get(mode, []))
        if values:
            shares = [(rank + 1) / len(values) for rank in range(len(values))]
            axes.step(
                values,
                shares,
                where="post",
                color=color,
                label=f"{mode} blocks ({len(values):,} records)",
            )

    axes.set_xlabel("seconds from accepted by the gateway to settled")
    axes.set_ylabel("share of records")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.set_title("Audit latency: records settled within a time")
    axes.legend(loc="lower right")
    return _png(figure)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"

    if isinstance(value, int):
        return f"{value:,}"

    return "-" if value is None else str(value)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; }
h1 { margin-bottom: 0.2em; }
.ok { color: #1b7f3b; } .bad { color: #b00020; }
table { border-collapse: collapse; margin: 0.8em 0 1.6em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; margin: 0.5em 0 1.5em; }
.grid { display: flex; gap: 2em; flex-wrap: wrap; }
"""


def render_html(result: SimulationResult, document: dict[str, Any]) -> str:
    """The report page, with its plots embedded."""
    summary = document["summary"]
    scenario = result.scenario
    verdict = (
        '<h2 class="ok">Verdict: every record matched its expected outcome</h2>'
        if result.ok
        else f'<h2 class="bad">Verdict: {len(result.differences)} differences</h2>'
    )
    outcomes = sorted(
        set(summary["expected_outcomes"]) | set(summary["actual_outcomes"])
    )
    outcome_rows = [
        (
            name,
            summary["expected_outcomes"].get(name, 0),
            summary["actual_outcomes"].get(name, 0),
        )
        for name in outcomes
    ]
    kind_rows = [
        (kind, entry["records"], entry["matched"], entry["expected"])
        for kind, entry in summary["kinds"].items()
    ]
    blocks = summary["blocks"]
    gas = summary["gas"]
    block_rows = [
        (
            mode,
            blocks[mode]["blocks"],
            blocks[mode]["records"],
            _number(blocks[mode]["gas"]),
            _number(blocks[mode]["gas_per_record"]),
        )
        for mode in ("normal", "aggregate")
    ]
    figures = {
        "Offered load": plot_load(result),
        "Records": plot_progress(result),
        "Blocks": plot_blocks(result),
        "Monitor": plot_monitor(result),
        "Gas": plot_gas(result),
        "Latency": plot_latency(result),
    }
    images = "".join(
        f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
        for name, data in figures.items()
    )
    difference_rows = [
        (d.subject, d.kind, d.expected, d.actual) for d in result.differences[:200]
    ]
    settlement = summary["settlement"]
    latency = summary["latency_seconds"]
    network = summary["network_seconds"]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<title>posaudit: a simulated business day</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>posaudit: a simulated business day</h1>",
        f"<p>Seed {scenario.seed}: {summary['records']:,} submissions from "
        f"{scenario.terminals} terminals of {scenario.merchants} merchants, the day "
        f"08:00-20:00 in {scenario.duration:g} s, aggregate blocks of "
        f"{scenario.aggregate_size} (flush after {scenario.flush_timeout:g} s).</p>",
        verdict,
        images,
        "<div class='grid'><div><h3>Records by outcome</h3>",
        _table(("outcome", "expected", "on chain / gateway"), outcome_rows),
        "</div><div><h3>Records by kind</h3>",
        _table(("kind", "records", "matched", "built to be"), kind_rows),
        "</div></div>",
        "<h3>Blocks</h3>",
        _table(("mode", "blocks", "records", "gas", "gas per record"), block_rows),
        "<h3>Gas</h3>",
        _table(
            ("figure", "value"),
            [
                ("records on chain", _number(gas["records_on_chain"])),
                ("gas spent (append + audit)", _number(gas["total"])),
                ("gas per record", _number(gas["per_record"])),
                (
                    "one block per record, gas per record (n = 1, this run)",
                    _number(gas["one_block_per_record_gas_per_record"]),
                ),
                (
                    "one block per record, whole day",
                    _number(gas["one_block_per_record_total"]),
                ),
                ("saving factor", _number(gas["saving_factor"])),
            ],
        ),
        "<div class='grid'><div><h3>Network</h3>",
        _table(
            ("network", "seconds or count"),
            [(state, _number(seconds)) for state, seconds in network.items()]
            + [
                ("changes of state", _number(summary["state_changes"])),
                ("recorded on chain", _number(summary["state_changes_on_chain"])),
            ],
        ),
        "</div><div><h3>Settlement</h3>",
        _table(
            ("figure", "value"),
            [(name, _number(value)) for name, value in settlement.items()],
        ),
        "</div><div><h3>Audit latency (s)</h3>",
        _table(
            ("percentile", "seconds"),
            [(name, _number(value)) for name, value in latency.items()],
        ),
        "</div></div>",
    ]
    if difference_rows:
        parts += [
            "<h3 class='bad'>Differences</h3>",
            _table(("record", "kind", "expected", "actual"), difference_rows),
        ]

    parts += [
        "<p>Files beside this page: <code>report.json</code> (the figures), "
        "<code>receipts/</code> (one receipt per record on chain), "
        "<code>posaudit.db</code>, <code>deployment.json</code> and "
        "<code>devnet-state.json</code> (the chain, for "
        "<code>posaudit audit</code> and <code>posaudit verify</code>).</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(result: SimulationResult, out: Path) -> tuple[Path, Path]:
    """Write ``out/report.json`` and ``out/report.html``.

    Returns:
        The paths of the JSON document and the HTML page.
    """
    document = report_document(result)
    json_path = out / "report.json"
    html_path = out / "report.html"
    json_path.write_text(json.dumps(document, indent=1, default=str) + "\n")
    html_path.write_text(render_html(result, document))
    return json_path, html_path
