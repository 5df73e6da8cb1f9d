"""Targets, and the result files: <mode>.json, <mode>.md and <mode>-*.png."""

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bench.stats import ratio  # noqa: E402

FLOOR_FACTOR = 10
P99_MS = 25.0
EVENT_P50_MS = 10.0
THROUGHPUT_SHARE = 0.7
HEALTH_P99_MS = 50.0
FANOUT_FACTOR = 3.0


def _p(latency: dict[str, Any], key: str, stat: str) -> float | None:
    entry = latency.get(key)
    value: float | None = entry["summary"][stat] if entry else None
    return value


def _check(
    name: str, measured: float | None, limit: float, unit: str, at_most: bool = True
) -> dict[str, Any]:
    met = None if measured is None else (measured <= limit if at_most else measured >= limit)
    return {
        "target": name,
        "measured": measured,
        "limit": limit,
        "unit": unit,
        "met": met,
    }


def evaluate(latency: dict[str, Any], results: dict[str, Any]) -> list[dict[str, Any]]:
    floor = _p(latency, "floor", "p50")
    checks = [
        _check(
            "message delivery p50 within 10x the floor",
            ratio(_p(latency, "message_http_postgres", "p50"), floor),
            FLOOR_FACTOR,
            "x floor",
        ),
        _check(
            "message delivery p99 at most 25 ms (Postgres)",
            _p(latency, "message_http_postgres", "p99"),
            P99_MS,
            "ms",
        ),
        _check(
            "stream push p50 within 10x the floor",
            ratio(_p(latency, "stream_sse_postgres", "p50"), floor),
            FLOOR_FACTOR,
            "x floor",
        ),
        _check(
            "stream push p99 at most 25 ms (Postgres)",
            _p(latency, "stream_sse_postgres", "p99"),
            P99_MS,
            "ms",
        ),
        _check(
            "event wake p50 at most 10 ms (Postgres)",
            _p(latency, "event_http_postgres", "p50"),
            EVENT_P50_MS,
            "ms",
        ),
    ]
    http = {r["concurrency"]: r["per_sec"] for r in results.get("throughput_http", [])}
    local = {r["concurrency"]: r["per_sec"] for r in results.get("throughput_inprocess", [])}
    checks.append(
        _check(
            "HTTP starts at 50 clients at least 70% of in-process",
            ratio(http.get(50), local.get(50)),
            THROUGHPUT_SHARE,
            "x in-process",
            at_most=False,
        )
    )
    conc = results.get("concurrency")
    checks.append(
        _check(
            "/health p99 at most 50 ms during the concurrency scenario",
            conc["under_load"]["health"]["p99"] if conc else None,
            HEALTH_P99_MS,
            "ms",
        )
    )
    fan = {r["subscribers"]: r for r in results.get("fanout", [])}
    most = max(fan) if fan else None
    one = fan.get(1)
    checks.append(
        _check(
            f"fan-out p99 at {most or 1000} subscribers at most 3x that at 1",
            ratio(fan[most]["latency"]["p99"], one["latency"]["p99"]) if one and most else None,
            FANOUT_FACTOR,
            "x 1 subscriber",
        )
    )
    # "Independent of the subscriber count": stream reads per value at the most subscribers
    # exceed those at 1 subscriber by less than one read per value.
    extra = (
        round(fan[most]["stream_reads_per_value"] - one["stream_reads_per_value"], 2)
        if one and most
        else None
    )
    checks.append(
        _check(
            f"stream reads per value at {most or 1000} subscribers minus at 1",
            extra,
            1.0,
            "reads/value",
        )
    )
    return checks


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


# Rows of the latency table: (key, baseline key for the ratio column).
LATENCY_ROWS = [
    ("floor", None),
    ("message_inprocess_postgres", "floor"),
    ("message_http_postgres", "message_inprocess_postgres"),
    ("send_inprocess_postgres", None),
    ("send_http_postgres", "send_inprocess_postgres"),
    ("event_inprocess_postgres", "floor"),
    ("event_http_postgres", "event_inprocess_postgres"),
    ("stream_inprocess_postgres", "floor"),
    ("stream_sse_postgres", "stream_inprocess_postgres"),
    ("stream_poll_postgres", "stream_sse_postgres"),
    ("message_http_sqlite", "message_http_postgres"),
    ("send_http_sqlite", "send_http_postgres"),
    ("event_http_sqlite", "event_http_postgres"),
    ("stream_sse_sqlite", "stream_sse_postgres"),
    ("stream_poll_sqlite", "stream_poll_postgres"),
]


def markdown(latency: dict[str, Any], results: dict[str, Any], plots: list[str]) -> str:
    meta = results["meta"]
    lines = [
        f"# Benchmark: {meta['mode']} mode, {meta['started_at']}",
        "",
        f"{meta['cpus']} CPUs, Python {meta['python']}, dbos {meta['versions']['dbos']}, "
        f"{meta['database']}; run took {meta['duration_sec']} s; 1-minute load average "
        f"{meta['load_average_1m']['start']:.1f} at the start, "
        f"{meta['load_average_1m']['end']:.1f} at the end, niceness {meta['nice']}. "
        "Driver, server and in-process "
        "baseline are separate processes on one machine (time.time() stamps compare).",
        "",
        "## Latency (ms)",
        "",
        "| measurement | backend | n | p50 | p99 | max | p50 ratio | vs |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    floor = _p(latency, "floor", "p50")
    for key, base in LATENCY_ROWS:
        entry = latency.get(key)
        if not entry:
            continue
        s = entry["summary"]
        against = ratio(s["p50"], _p(latency, base, "p50")) if base else None
        base_label = latency[base]["label"] if base and base in latency else ""
        lines.append(
            f"| {entry['label']} | {entry['backend']} | {s['n']} | {_fmt(s['p50'])} | "
            f"{_fmt(s['p99'])} | {_fmt(s['max'])} | {_fmt(against)} | {base_label} |"
        )
    if floor:
        lines += ["", f"Floor p50 {floor} ms: 10x the floor is {10 * floor:.2f} ms."]

    http = {r["concurrency"]: r for r in results.get("throughput_http", [])}
    local = {r["concurrency"]: r for r in results.get("throughput_inprocess", [])}
    if http or local:
        lines += [
            "",
            "## Workflow starts per second (events workflow, 1 step, 0 s)",
            "",
            "| clients | HTTP /s | HTTP errors | left PENDING (HTTP) | in-process /s | "
            "in-process errors | HTTP / in-process |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for level in sorted(set(http) | set(local)):
            h, b = http.get(level, {}), local.get(level, {})
            lines.append(
                f"| {level} | {_fmt(h.get('per_sec'))} | {_fmt(h.get('errors'))} | "
                f"{_fmt(h.get('stuck_pending'))} | {_fmt(b.get('per_sec'))} | "
                f"{_fmt(b.get('errors'))} | {_fmt(ratio(h.get('per_sec'), b.get('per_sec')))} |"
            )
        first = next((r["first_error"] for r in http.values() if r.get("first_error")), None)
        if first:
            lines += ["", f"First HTTP error: `{first}`"]

    fan = results.get("fanout", [])
    if fan:
        one = next((r["latency"]["p99"] for r in fan if r["subscribers"] == 1), None)
        lines += [
            "",
            "## Fan-out: one stream, many SSE subscribers",
            "",
            "| subscribers | values received | p50 | p99 | max | p99 / 1 subscriber | "
            "stream reads per value | all SQL per value | server CPU per delivery | "
            "failed subscribers |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in fan:
            s = r["latency"]
            lines.append(
                f"| {r['subscribers']} | {s['n']} | {_fmt(s['p50'])} | {_fmt(s['p99'])} | "
                f"{_fmt(s['max'])} | {_fmt(ratio(s['p99'], one))} | "
                f"{_fmt(r['stream_reads_per_value'])} | {_fmt(r['statements_per_value'])} | "
                f"{_fmt(r['server_cpu_us_per_delivery'])} us | {r['failures']} |"
            )

    conc = results.get("concurrency")
    if conc:
        load = conc["under_load"]
        h = load["health"]
        lines += [
            "",
            "## Concurrency",
            "",
            f"{conc['workflows']} workflows parked in recv, {conc['waiting_gets']} waiting GETs "
            f"and {conc['sse_subscribers']} events SSE subscribers on their `message` event; "
            "then one message to every workflow (50 senders).",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| start {conc['workflows']} workflows (25 clients) | {conc['start_sec']} s |",
            f"| send all messages | {conc['send_all_sec']} s |",
            f"| deliver to all {conc['delivered_to_watchers']} watchers | "
            f"{conc['deliver_all_sec']} s |",
            f"| every workflow finished | {conc['all_finished_sec']} s |",
            f"| delivery latency p50 / p99 / max | {_fmt(conc['delivery']['p50'])} / "
            f"{_fmt(conc['delivery']['p99'])} / {_fmt(conc['delivery']['max'])} ms |",
            f"| /health p50 / p99 / max (n={h['n']}) | {_fmt(h['p50'])} / {_fmt(h['p99'])} / "
            f"{_fmt(h['max'])} ms |",
            f"| /health errors | {load['health_errors']} |",
            f"| a route with no database call, p50 / p99 | {_fmt(load['no_db_route']['p50'])} / "
            f"{_fmt(load['no_db_route']['p99'])} ms |",
            f"| server peak RSS | {_fmt(load['peak_rss_mb'])} MB |",
            f"| server peak threads | {_fmt(load['peak_threads'])} |",
            f"| peak database connections | {_fmt(load['peak_db_connections'])} |",
            f"| SQL statements per second (server) | {_fmt(load['statements_per_sec'])} |",
            f"| watcher errors | {conc['watcher_errors']} |",
            f"| workflows left PENDING | {conc.get('stuck_pending', 0)} |",
        ]

    lines += ["", "## Targets", "", "| target | measured | limit | met |", "|---|---:|---:|---|"]
    for t in results["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(
            f"| {t['target']} | {_fmt(t['measured'])} {t['unit']} | {_fmt(t['limit'])} | {met} |"
        )
    for err in results.get("errors", []):
        lines.append(f"\nFailed phase {err['phase']}: {err['error']}")
    lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in plots), ""]
    return "\n".join(lines)


def _cdf(ax: Any, samples: list[float], label: str) -> None:
    if samples:
        xs = np.sort(np.asarray(samples))
        ax.plot(xs, np.arange(1, xs.size + 1) / xs.size, label=f"{label} (n={xs.size})")


def _plotted(key: str) -> bool:
    """The first panel: deliveries, not the send calls or the once-a-second poller."""
    return not key.startswith(("send", "stream_poll"))


def plot_latency(latency: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    panels = [
        (
            "Postgres: server over HTTP vs in-process DBOS vs floor",
            [k for k, _ in LATENCY_ROWS if k.endswith("postgres") and _plotted(k)] + ["floor"],
        ),
        (
            "SQLite default vs Postgres, and polling once a second",
            [k for k, _ in LATENCY_ROWS if k.endswith("sqlite") and not k.startswith("send")]
            + [k for k, _ in LATENCY_ROWS if k.startswith("stream_poll")]
            + ["message_http_postgres", "event_http_postgres"],
        ),
    ]
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in dict.fromkeys(keys):
            if key in latency:
                entry = latency[key]
                _cdf(ax, entry["samples"], f"{entry['label']}, {entry['backend']}")
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("fraction of samples at or below")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_throughput(results: dict[str, Any], path: Path) -> None:
    http = {r["concurrency"]: r["per_sec"] for r in results.get("throughput_http", [])}
    local = {r["concurrency"]: r["per_sec"] for r in results.get("throughput_inprocess", [])}
    levels = sorted(set(http) | set(local))
    x = np.arange(len(levels))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(x - 0.2, [http.get(lv, 0) for lv in levels], 0.4, label="HTTP (server process)")
    ax.bar(x + 0.2, [local.get(lv, 0) for lv in levels], 0.4, label="in-process DBOS")
    ax.set_xticks(x, [str(lv) for lv in levels])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("workflow starts per second")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fanout(results: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results["fanout"]:
        _cdf(ax, r["samples"], f"{r['subscribers']} subscribers")
    ax.set_xscale("log")
    ax.set_xlabel("write_stream -> SSE subscriber (ms, log scale)")
    ax.set_ylabel("fraction of deliveries")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_concurrency(conc: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    points = conc["health_samples"]
    ax.plot([p[0] for p in points], [p[1] for p in points], ".", markersize=3)
    for name, at in conc["marks"].items():
        ax.axvline(at, color="grey", linestyle=":", linewidth=1)
        ax.text(at, ax.get_ylim()[1], name, rotation=90, va="top", fontsize=7)
    ax.set_xlabel("seconds since the scenario began")
    ax.set_ylabel("GET /health latency (ms)")
    ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(out_dir: Path, latency: dict[str, Any], results: dict[str, Any]) -> list[Path]:
    """Write <mode>.json, <mode>.md and the plots; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mode = results["meta"]["mode"]
    results["targets"] = evaluate(latency, results)
    plots = [out_dir / f"{mode}-latency.png"]
    plot_latency(latency, plots[0])
    if results.get("throughput_http") or results.get("throughput_inprocess"):
        plots.append(out_dir / f"{mode}-throughput.png")
        plot_throughput(results, plots[-1])
    if results.get("fanout"):
        plots.append(out_dir / f"{mode}-fanout.png")
        plot_fanout(results, plots[-1])
    if results.get("concurrency"):
        plots.append(out_dir / f"{mode}-concurrency.png")
        plot_concurrency(results["concurrency"], plots[-1])
    json_path, md_path = out_dir / f"{mode}.json", out_dir / f"{mode}.md"
    json_path.write_text(json.dumps({**results, "latency": latency}, indent=1))
    md_path.write_text(markdown(latency, results, [p.name for p in plots]))
    return [json_path, md_path, *plots]
