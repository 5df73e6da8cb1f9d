"""The Grafana board and the Prometheus config in deploy/ match the server they watch.

Every metric name and label the board's PromQL asks for (in its panels and its template
variables) is a series name and label of a live server's /metrics, after requests that make
every labelled series appear; every metric family of the server's own has a panel; each panel
is a titled query of the board's Prometheus data source; deploy/prometheus.yml scrapes the
server at localhost:8000/metrics.

    .venv/bin/pytest tests/test_grafana.py -q
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML, a dependency of dbos; no stubs installed
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT, unique_id, wait_until

DASHBOARD = ROOT / "deploy" / "grafana" / "workflow-communication.json"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"
# Prometheus attaches these to every series it scrapes (the job and the target's address).
TARGET_LABELS = frozenset({"job", "instance"})
# What the server's own metrics are called; process_* and python_* come with the client library.
OWN_PREFIX = "comm_"

# PromQL, read just far enough to find names: string literals (matcher values, whatever they
# hold) are emptied first, then selectors `name{label="..."}` give a name and its matchers'
# labels, `by (...)` and the like give grouping labels, ranges `[5m]` go, and what is left of
# the identifiers, but for functions (followed by `(`) and keywords, are bare metric names.
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
RANGE = re.compile(r"\[[^\]]*\]")
IDENTIFIER = re.compile(r"(?<![\w:$.])([A-Za-z_:][\w:]*)(\s*\()?")
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
)
# A Grafana variable query: label_values(label) or label_values(selector, label).
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*),)?\s*([A-Za-z_]\w*)\s*\)\s*$")

Queried = tuple[dict[str, set[str]], set[str]]  # (metric -> its matchers' labels, grouping)


def queried(expr: str) -> Queried:
    """The series names an expression reads, each with the labels its matchers name, and the
    labels it groups or matches by."""
    text = STRING.sub('""', expr)
    series: dict[str, set[str]] = {}
    for name, matchers in SELECTOR.findall(text):
        assert name, f"a selector without a metric name in {expr!r}"
        series.setdefault(name, set()).update(MATCHER.findall(matchers))
    text = RANGE.sub("", SELECTOR.sub(lambda m: m.group(1), text))
    grouping = {
        label.strip() for labels in GROUPING.findall(text) for label in labels.split(",")
    } - {""}
    text = GROUPING.sub("", text)
    for name, call in IDENTIFIER.findall(text):
        if not call and name.lower() not in KEYWORDS:
            series.setdefault(name, set())
    return series, grouping


def problems(where: str, query: Queried, exported: dict[str, set[str]]) -> list[str]:
    """What `query` asks for that the exported series (name -> its labels) do not have."""
    series, grouping = query
    found = []
    for name, labels in series.items():
        if name not in exported:
            found.append(f"{where}: {name} is not exported")
            continue
        found += [
            f"{where}: {name} has no label {label!r}"
            for label in sorted(labels - exported[name] - TARGET_LABELS)
        ]
    offered = set(TARGET_LABELS).union(*(exported.get(name, set()) for name in series))
    found += [f"{where}: no series it reads has a label {g!r}" for g in sorted(grouping - offered)]
    return found


def load_dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def board_queries(board: dict[str, Any]) -> list[tuple[str, Queried]]:
    """(where, what it asks for) of every panel target and every query variable."""
    found = [
        (f"panel {panel['title']!r} {target['refId']}", queried(target["expr"]))
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = LABEL_VALUES.match(text)
        assert match, f"variable {variable['name']}: not a label_values() query: {text!r}"
        series, grouping = queried(match.group(1) or "")
        found.append((f"variable {variable['name']!r}", (series, grouping | {match.group(2)})))
    return found


def exported_series(text: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """From /metrics: series name -> its label names, and metric family -> its series names."""
    series: dict[str, set[str]] = {}
    families: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
            families.setdefault(family.name, set()).add(sample.name)
    return series, families


# --- The parser, on its own -------------------------------------------------------------------


def test_promql_reader_finds_every_name_and_label() -> None:
    """Names in selectors, bare names, matchers' labels and grouping labels are all found;
    functions, keywords, ranges, numbers and what strings hold are not taken for names."""
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route=~"/x{2}", '
        'instance=~"$instance"}[$__rate_interval]))) / on (route) group_left '
        "sum(rate(b_total[5m] offset 1h)) without (method) and bool c > 1e3"
    )
    series, grouping = queried(expr)
    assert series == {"a_bucket": {"route", "instance"}, "b_total": set(), "c": set()}, series
    assert grouping == {"le", "route", "method"}, grouping


def test_check_reports_what_the_server_does_not_export() -> None:
    """A metric the server lacks, a label its series lack, and a grouping label no series
    read offers are each reported; Prometheus's target labels are allowed."""
    exported = {"comm_http_requests_total": {"method", "route", "status"}}
    expr = (
        'sum by (kind, job) (rate(comm_http_requests_total{tenant="x", instance=~".*"}[1m])) '
        "+ comm_webhook_deliveries_total"
    )
    found = problems("p", queried(expr), exported)
    assert found == [
        "p: comm_http_requests_total has no label 'tenant'",
        "p: comm_webhook_deliveries_total is not exported",
        "p: no series it reads has a label 'kind'",
    ], found


# --- The board and the config ------------------------------------------------------------------


def test_dashboard_imports_with_a_prometheus_data_source() -> None:
    """The board is JSON of a current schema that asks for a Prometheus data source on import,
    and every panel is titled, has a unique id and queries through that data source."""
    board = load_dashboard()
    assert board["schemaVersion"] >= 36, board["schemaVersion"]
    assert [(i["name"], i["pluginId"]) for i in board["__inputs"]] == [
        ("DS_PROMETHEUS", "prometheus")
    ], board["__inputs"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    chooser = variables["datasource"]
    assert (chooser["type"], chooser["query"]) == ("datasource", "prometheus"), chooser
    assert chooser["current"]["value"] == "${DS_PROMETHEUS}", chooser["current"]
    source = {"type": "prometheus", "uid": "${datasource}"}
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {sorted(ids)}"
    queries = 0
    for panel in panels(board):
        assert panel.get("title"), f"panel {panel['id']} has no title"
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == source, f"{panel['title']}: {panel.get('datasource')}"
        assert panel.get("description"), f"{panel['title']} has no description"
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target.get("datasource") == source, f"{panel['title']}: {target}"
            assert target["expr"].strip(), f"{panel['title']}: an empty query"
            queries += 1
    assert queries >= 10, f"only {queries} queries"


def test_every_queried_metric_and_label_is_exported(client: httpx.Client) -> None:
    """Each metric name and label the board queries is exported by the server's /metrics, and
    each metric family of the server's own appears on the board."""
    streamed, messaged = unique_id("grafana-stream"), unique_id("grafana-msg")
    # Labelled series appear once counted: run a workflow of two kinds to the end, push a
    # stream live, send a message, ask /health (the database probe).
    started = [
        client.post(f"/start-workflow-streaming/{streamed}/1", params={"step_seconds": 0}),
        client.post(f"/start-workflow-messaging/{messaged}/1", params={"step_seconds": 0}),
    ]
    assert [r.status_code for r in started] == [200, 200], [r.text for r in started]
    assert client.get(f"/workflow-stream/{streamed}/live").status_code == 200
    sent = client.post(f"/send-message/{messaged}", json={"approved": True})
    assert sent.status_code == 200, sent.text
    wait_until(
        lambda: client.get(f"/workflows/{messaged}").json()["status"] == "SUCCESS",
        what=f"{messaged} SUCCESS",
    )
    assert client.get("/health").status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    exported, families = exported_series(response.text)

    queries = board_queries(load_dashboard())
    found = [problem for where, query in queries for problem in problems(where, query, exported)]
    assert not found, "\n".join(found)
    read = {name for _, (series, _) in queries for name in series}
    unshown = sorted(
        family
        for family, names in families.items()
        if family.startswith(OWN_PREFIX) and not names & read
    )
    assert not unshown, f"metric families without a panel: {unshown}"


def test_prometheus_config_scrapes_the_server() -> None:
    """deploy/prometheus.yml has a job scraping /metrics at localhost:8000."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = config["scrape_configs"]
    targets = [
        (job.get("metrics_path", "/metrics"), target)
        for job in jobs
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    assert targets == [("/metrics", "localhost:8000")], targets


@pytest.mark.parametrize("path", [DASHBOARD, PROMETHEUS_CONFIG], ids=lambda p: p.name)
def test_deploy_file_is_named_in_the_readme(path: Path) -> None:
    """The README tells where each file is."""
    assert str(path.relative_to(ROOT)) in (ROOT / "README.md").read_text(), path
