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
FANOUT_P99_MS = 100.0
FANOUT_CPU_US = 50.0
FANOUT_MEASURED_AT = 1000  # subscribers (or the most below it that a mode runs)
FANOUT_NO_ERRORS_AT = 5000
IDLE_CPU_PERCENT = 10.0
IDLE_TRANSACTIONS_PER_SEC = 20.0
WAITER_RELEASE_MS = 50.0
WAITER_TIMEOUT_LATE_MS = 1000.0
WORKERS_FACTOR = 1.4
PUSH_P50_MS = 3.0
PUSH_P99_MS = 10.0
MESSAGE_P50_MS = 10.0
REQUEST_CPU_MS = {"health": 0.3, "status": 1.0, "events": 1.0, "stream_page": 1.0}


def _p(latency: dict[str, Any], key: str, stat: str) -> float | None:
    entry = latency.get(key)
    value: float | None = entry["summary"][stat] if entry else None
    return value


def _check(
    name: str,
    measured: float | None,
    limit: float,
    unit: str,
    at_most: bool = True,
    skipped: str | None = None,
) -> dict[str, Any]:
    met = None if measured is None else (measured <= limit if at_most else measured >= limit)
    return {
        "target": name,
        "measured": measured,
        "limit": limit,
        "unit": unit,
        "met": met,
        # Why it was not measured: the server lacks what the phase needs.
        "skipped": skipped,
    }


def _skip_reason(section: Any) -> str | None:
    return section.get("skipped") if isinstance(section, dict) else None


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
    # Issue 11's push targets, the writer running in the server (the bench's tick workflows):
    # the floor of each is DBOS's own write call (set_event_call / write_stream_call rows).
    for name, key, p50_limit, p99_limit in (
        ("stream push over SSE", "stream_sse_postgres", PUSH_P50_MS, PUSH_P99_MS),
        ("event wake", "event_http_postgres", PUSH_P50_MS, PUSH_P99_MS),
        ("message delivery", "message_http_postgres", MESSAGE_P50_MS, P99_MS),
    ):
        checks.append(
            _check(f"{name} p50 at most {p50_limit:g} ms", _p(latency, key, "p50"), p50_limit, "ms")
        )
        if key != "message_http_postgres":  # its p99 of 25 ms is checked above
            checks.append(
                _check(
                    f"{name} p99 at most {p99_limit:g} ms", _p(latency, key, "p99"), p99_limit, "ms"
                )
            )
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
    checks += _fanout_checks(results)
    checks += _idle_checks(results.get("idle"))
    checks += _waiter_checks(results.get("waiters"))
    workers = results.get("workers")
    checks.append(
        _check(
            "2 workers start at least 1.4x the workflows per second of 1 (same clients)",
            workers.get("ratio") if workers else None,
            WORKERS_FACTOR,
            "x 1 worker",
            at_most=False,
            skipped=_skip_reason(workers),
        )
    )
    requests = results.get("requests") or {}
    rows = {r["name"]: r for r in requests.get("rows", [])}
    for name, limit in REQUEST_CPU_MS.items():
        row = rows.get(name)
        checks.append(
            _check(
                f"server CPU per {row['request'] if row else name} at most {limit} ms",
                row["cpu_ms_per_request"] if row else None,
                limit,
                "ms",
                skipped=_skip_reason(requests),
            )
        )
    return checks


def _fanout_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    skipped = results.get("fanout_skipped", {})
    for via in ("sse", "ws"):
        name = {"sse": "SSE", "ws": "WebSocket"}[via]
        fan = {
            r["subscribers"]: r
            for r in results.get("fanout", [])
            if r.get("transport", "sse") == via
        }
        at = max((n for n in fan if n <= FANOUT_MEASURED_AT), default=None)
        top, one = fan.get(at) if at else None, fan.get(1)
        reason = skipped.get(via)
        checks += [
            _check(
                f"fan-out {name}: p99 at {at or FANOUT_MEASURED_AT} subscribers at most 3x "
                "that at 1",
                ratio(top["latency"]["p99"], one["latency"]["p99"]) if top and one else None,
                FANOUT_FACTOR,
                "x 1 subscriber",
                skipped=reason,
            ),
            _check(
                f"fan-out {name}: p99 at {at or FANOUT_MEASURED_AT} subscribers at most 100 ms",
                top["latency"]["p99"] if top else None,
                FANOUT_P99_MS,
                "ms",
                skipped=reason,
            ),
            _check(
                f"fan-out {name}: server CPU per delivery at {at or FANOUT_MEASURED_AT} "
                "subscribers at most 50 us",
                top["server_cpu_us_per_delivery"] if top else None,
                FANOUT_CPU_US,
                "us",
                skipped=reason,
            ),
        ]
        most = fan.get(FANOUT_NO_ERRORS_AT)
        checks.append(
            _check(
                f"fan-out {name}: {FANOUT_NO_ERRORS_AT} subscribers, none failed or missed a "
                "value (full mode)",
                most["failures"] + most["subscribers"] - most["complete_subscribers"]
                if most
                else None,
                0,
                "subscribers",
                skipped=reason,
            )
        )
        if via == "sse":
            # "Independent of the subscriber count": stream reads per value at the most
            # subscribers exceed those at 1 subscriber by less than one read per value.
            checks.append(
                _check(
                    f"stream reads per value at {at or FANOUT_MEASURED_AT} subscribers minus "
                    "at 1 (SSE)",
                    round(top["stream_reads_per_value"] - one["stream_reads_per_value"], 2)
                    if top and one
                    else None,
                    1.0,
                    "reads/value",
                )
            )
    return checks


def _idle_checks(idle: dict[str, Any] | None) -> list[dict[str, Any]]:
    watched = idle.get("watched") if idle else None
    n = idle.get("watchers", "N") if idle else "N"
    reason = _skip_reason(idle)
    return [
        _check(
            f"idle: server CPU with {n} SSE watchers at most 10% of a core",
            watched["cpu_percent_of_core"] if watched else None,
            IDLE_CPU_PERCENT,
            "% of a core",
            skipped=reason,
        ),
        _check(
            f"idle: database transactions with {n} SSE watchers at most 20/s",
            watched["transactions_per_sec"] if watched else None,
            IDLE_TRANSACTIONS_PER_SEC,
            "/s",
            skipped=reason,
        ),
        _check(
            f"idle: /health p99 with {n} SSE watchers at most 50 ms",
            watched["health"]["p99"] if watched else None,
            HEALTH_P99_MS,
            "ms",
            skipped=reason,
        ),
    ]


def _waiter_checks(waiters: dict[str, Any] | None) -> list[dict[str, Any]]:
    checks = []
    reason = _skip_reason(waiters)
    for case, where in (("one_workflow", "on one workflow"), ("spread", "one per workflow")):
        row = waiters.get(case) if waiters else None
        n = row["waiters"] if row else "N"
        checks += [
            _check(
                f"waiters ({n} {where}): /health p99 while they arrive, wait and are released "
                "at most 50 ms",
                row["health"]["arrive_wait_release"]["p99"] if row else None,
                HEALTH_P99_MS,
                "ms",
                skipped=reason,
            ),
            _check(
                f"waiters ({n} {where}): every one answered within 50 ms of its key being set",
                row["released"]["max"] if row else None,
                WAITER_RELEASE_MS,
                "ms (max)",
                skipped=reason,
            ),
            _check(
                f"waiters ({n} {where}): keys never set answered within 1 s of the timeout",
                row["timeout_lateness"]["max"] if row else None,
                WAITER_TIMEOUT_LATE_MS,
                "ms late (max)",
                skipped=reason,
            ),
        ]
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
    ("set_event_call_inprocess_postgres", "floor"),
    ("write_stream_call_inprocess_postgres", "floor"),
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
        ones = {
            r.get("transport", "sse"): r["latency"]["p99"] for r in fan if r["subscribers"] == 1
        }
        lines += [
            "",
            "## Fan-out: one stream, many subscribers (SSE and WebSocket)",
            "",
            "Latency in ms from `write_stream` to the subscriber; the baseline is 1 subscriber "
            "of the same transport. Server CPU per delivery: from the first write until every "
            "value has reached every subscriber (the writing workflow's own DBOS calls "
            "included), per value received; then, per subscriber, what the end of the "
            "responses took (the `closed` frame, the connection's teardown).",
            "",
            "| transport | subscribers | values received | p50 | p99 | max | "
            "p99 / 1 subscriber | stream reads per value | all SQL per value | "
            "server CPU per delivery | server CPU per response's end | failed subscribers | "
            "incomplete |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in fan:
            s = r["latency"]
            via = r.get("transport", "sse")
            incomplete = r["subscribers"] - r.get("complete_subscribers", r["subscribers"])
            lines.append(
                f"| {via} | {r['subscribers']} | {s['n']} | {_fmt(s['p50'])} | "
                f"{_fmt(s['p99'])} | {_fmt(s['max'])} | {_fmt(ratio(s['p99'], ones.get(via)))} | "
                f"{_fmt(r['stream_reads_per_value'])} | {_fmt(r['statements_per_value'])} | "
                f"{_fmt(r['server_cpu_us_per_delivery'])} us | "
                f"{_fmt(r.get('server_cpu_us_per_end'))} us | {r['failures']} | {incomplete} |"
            )
        for via, reason in results.get("fanout_skipped", {}).items():
            lines += ["", f"Fan-out over {via} skipped: {reason}."]

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
            f"| starts and sends answered 503 and retried | {conc.get('retried_503') or 0} |",
            f"| workflows left PENDING | {conc.get('stuck_pending', 0)} |",
        ]

    lines += _capacity_markdown(results)
    lines += ["", "## Targets", "", "| target | measured | limit | met |", "|---|---:|---:|---|"]
    for t in results["targets"]:
        met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        if t.get("skipped"):
            met = f"skipped: {t['skipped']}"
        lines.append(
            f"| {t['target']} | {_fmt(t['measured'])} {t['unit']} | {_fmt(t['limit'])} | {met} |"
        )
    for err in results.get("errors", []):
        lines.append(f"\nFailed phase {err['phase']}: {err['error']}")
    lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in plots), ""]
    return "\n".join(lines)


def _summary_cell(s: dict[str, Any]) -> str:
    return f"{_fmt(s['p50'])} / {_fmt(s['p99'])} / {_fmt(s['max'])}"


def _capacity_markdown(results: dict[str, Any]) -> list[str]:
    """The idle, waiters, workers and requests sections (each may say it was skipped)."""
    lines: list[str] = []
    idle = results.get("idle")
    if idle:
        lines += ["", "## Idle watchers", ""]
        if _skip_reason(idle):
            lines.append(f"Skipped: {idle['skipped']}.")
        else:
            b, w = idle["baseline"], idle["watched"]
            lines += [
                f"{idle['workflows']} messaging workflows waiting for approval; nothing changes. "
                f"Baseline: the same server and workflows, no watcher. Then "
                f"{idle['status_watchers']} SSE on `/workflows/{{id}}/live` and "
                f"{idle['events_watchers']} on `/workflow-events/{{id}}/live`, one per "
                f"workflow (all {idle['watchers']} connected in {idle['connect_sec']} s, "
                f"{idle['watcher_failures']} failed). Each window: "
                f"{w['window_sec']} s with no request, then `/health` probed from a process "
                "of its own.",
                "",
                "| figure | no watcher | with watchers | difference |",
                "|---|---:|---:|---:|",
            ]
            for key, label in (
                ("cpu_percent_of_core", "server CPU, % of a core"),
                ("transactions_per_sec", "database transactions per second"),
                ("statements_per_sec", "SQL statements per second (server)"),
                ("live_hub_statements_per_sec", "of them, the live hub's"),
                (
                    "dbos_executor_statements_per_sec",
                    "of them, DBOS's executor threads' (each recv polls every 60 s)",
                ),
            ):
                if key not in w or key not in b:
                    continue
                diff = round(w[key] - b[key], 2)
                lines.append(f"| {label} | {_fmt(b[key])} | {_fmt(w[key])} | {_fmt(diff)} |")
            p99_ratio = ratio(w["health"]["p99"], b["health"]["p99"])
            lines.append(
                f"| /health p50 / p99 / max (ms) | {_summary_cell(b['health'])} | "
                f"{_summary_cell(w['health'])} | {_fmt(p99_ratio)}x p99 |"
            )
            lines.append(
                f"| events pushed during the quiet window | - | "
                f"{w.get('events_pushed_in_window')} | |"
            )
            for name, window in (("no watcher", b), ("with watchers", w)):
                top = window.get("top_statements_per_sec")
                if top:
                    lines += [
                        "",
                        f"Statements the server sent most in the window, {name} "
                        "(per second; by thread or connection):",
                        "",
                    ]
                    lines += [f"- {n}/s `{shape}`" for n, shape in top]
            if idle.get("retried_503"):
                lines += ["", f"Requests answered 503 and retried: {idle['retried_503']}"]
            if idle.get("cleanup_error"):
                lines += ["", f"Releasing the workflows afterwards failed: {idle['cleanup_error']}"]
    waiters = results.get("waiters")
    if waiters:
        lines += ["", "## Waiters: many clients in a waiting GET on event keys", ""]
        if _skip_reason(waiters):
            lines.append(f"Skipped: {waiters['skipped']}.")
        else:
            base = waiters["baseline"]
            lines += [
                "Half the waiters wait for a key a benchmark workflow sets (stamping the time) "
                "once all have arrived; the other half for a key never set before their "
                "timeout (their lateness is counted from when the driver sent the request, "
                "so it includes the time the request took to reach the server). "
                "Baseline: `/health` with no waiter "
                f"({_summary_cell(base['health'])} ms p50 / p99 / max) and one waiter at a "
                f"time (event wake {_summary_cell(base['single_waiter_wake'])} ms).",
                "",
                "| case | waiters | workflows | timeout s | released after set p50 / p99 / max "
                "ms | over 50 ms | timed out late by p50 / p99 / max ms | "
                "/health p50 / p99 / max ms: arriving+waiting | released | timing out | "
                "problems |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            ]
            single_p99 = base["single_waiter_wake"]["p99"]
            for case in ("one_workflow", "spread"):
                r = waiters[case]
                h = r["health"]
                lines.append(
                    f"| {case.replace('_', ' ')} | {r['waiters']} | {r['workflows']} | "
                    f"{r['timeout_sec']} | {_summary_cell(r['released'])} | "
                    f"{r['released_over_50ms']} | {_summary_cell(r['timeout_lateness'])} | "
                    f"{_summary_cell(h['arrive_and_wait'])} | {_summary_cell(h['release'])} | "
                    f"{_summary_cell(h['time_out'])} | {r['problems'] or '-'} |"
                )
            lines.append("")
            for case in ("one_workflow", "spread"):
                r = waiters[case]
                loaded = r["health"]["arrive_wait_release"]["p99"]
                lines.append(
                    f"{case.replace('_', ' ')}: {_fmt(r.get('waiting_at_go'))} waiting by the "
                    "server's count (comm_waiting_requests) when the keys were set; released p99 "
                    f"{_fmt(ratio(r['released']['p99'], single_p99))}x one waiter's; "
                    f"/health p99 while arriving, waiting and released {_fmt(loaded)} ms, "
                    f"{_fmt(ratio(loaded, base['health']['p99']))}x no waiter's."
                    + (
                        f" Answered 503 and retried: {r['retried_503']}."
                        if r.get("retried_503")
                        else ""
                    )
                    + (f" Clean-up failed: {r['cleanup_error']}" if r.get("cleanup_error") else "")
                )
                lines.append("")
    workers = results.get("workers")
    if workers:
        lines += ["", "## Workers: starts per second, 1 and 2 worker processes", ""]
        if _skip_reason(workers):
            lines.append(f"Skipped: {workers['skipped']}.")
        else:
            lines += [
                f"{workers['clients']} clients starting events workflows (1 step, 0 s) for "
                f"{workers['seconds']} s: the run's server, then a second bench server "
                "with `--workers 2` on the same database.",
                "",
                "| workers | starts/s | errors | server CPU per start (ms) | left PENDING |",
                "|---:|---:|---:|---:|---:|",
            ]
            for n, key in ((1, "one_worker"), (2, "two_workers")):
                r = workers[key]
                lines.append(
                    f"| {n} | {_fmt(r['per_sec'])} | {r['errors']} | "
                    f"{_fmt(r.get('server_cpu_ms_per_start'))} | {r['stuck_pending']} |"
                )
            lines += ["", f"2 workers / 1 worker: {_fmt(workers['ratio'])}x."]
    requests = results.get("requests")
    if requests:
        lines += ["", "## Requests: rate and server CPU per answered request", ""]
        if _skip_reason(requests):
            lines.append(f"Skipped: {requests['skipped']}.")
        else:
            rows = requests["rows"]
            health = next((r for r in rows if r["name"] == "health"), None)
            lines += [
                f"{rows[0]['clients']} concurrent clients per kind, back to back; CPU is the "
                "server process tree's (for starts, until the started workflows have run). "
                "Baseline: `/health`.",
                "",
                "| request | answered/s | CPU per request (ms) | CPU / /health's | "
                "latency p50 / p99 ms | errors |",
                "|---|---:|---:|---:|---:|---|",
            ]
            health_cpu = health["cpu_ms_per_request"] if health else None
            for r in rows:
                lines.append(
                    f"| {r['request']} | {_fmt(r['per_sec'])} | "
                    f"{_fmt(r['cpu_ms_per_request'])} | "
                    f"{_fmt(ratio(r['cpu_ms_per_request'], health_cpu))} | "
                    f"{_fmt(r['latency']['p50'])} / {_fmt(r['latency']['p99'])} | "
                    f"{r['errors'] or 0} |"
                )
            lines += ["", _reference_line(requests.get("reference") or {}, rows)]
    return lines


def _reference_line(ref: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Sends and starts against the previous reference run."""
    if not ref:
        return "No reference run to compare sends and starts with."
    now = {r["name"]: r for r in rows}
    if "rows" in ref:
        parts = [
            f"{name}: {_fmt(now[name]['per_sec'])}/s now, {_fmt(old['per_sec'])}/s then "
            f"({_fmt(ratio(now[name]['per_sec'], old['per_sec']))}x); CPU "
            f"{_fmt(now[name]['cpu_ms_per_request'])} ms now, "
            f"{_fmt(old['cpu_ms_per_request'])} ms then"
            for name, old in ref["rows"].items()
            if name in now
        ]
        return f"Against {ref['source']}: " + "; ".join(parts) + "."
    send = ref.get("send_call_ms_one_client") or {}
    starts = ref.get("starts_per_sec_by_clients") or {}
    return (
        f"Against {ref['source']}: a send call took {_fmt(send.get('p50'))} ms p50 "
        f"there (one client at a time); HTTP starts per second by clients: "
        + ", ".join(f"{c}: {_fmt(v)}" for c, v in starts.items())
        + "."
    )


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
        via = r.get("transport", "sse")
        _cdf(ax, r["samples"], f"{via}, {r['subscribers']} subscribers")
    ax.set_xscale("log")
    ax.set_xlabel("write_stream -> subscriber (ms, log scale)")
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
