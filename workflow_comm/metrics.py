"""Prometheus metrics, served at /metrics by routes/metrics.py (COMM_METRICS_ENABLED).

No FastAPI in here: the workflows module imports `count_finished`.

What is counted, and when:
- comm_http_requests_total{method,route,status} and comm_http_request_duration_seconds
  {method,route}: every HTTP request, labelled by its route template
  ("/workflows/{workflow_id}", never the raw path, so the number of series stays bounded;
  "unmatched" for paths no route serves; an answer given before routing, such as the body
  limit's 413, carries the template of the route the path matches). The duration runs
  until the response starts: for a long-poll that includes its wait, for an SSE response
  it is the time to subscribe.
- comm_live_connections, comm_live_watched_workflows: open SSE and WebSocket connections,
  and the workflows they watch, read from the live hub at scrape time.
- comm_waiting_requests: event reads waiting for a value now (COMM_MAX_WAITS_PER_CLIENT
  bounds them per client address).
- comm_workflows_started_total{kind}: workflows this process created (a repeated start of
  an existing ID is not counted); exactly once per workflow, by the instance that created it.
- comm_workflows_finished_total{kind,status}: SUCCESS or ERROR is counted by the process
  whose run of the workflow function returned or raised; a workflow recovered after a crash
  is counted by the process that finishes it. Once per workflow, except if a process dies in
  the moment between the function's end and DBOS recording the outcome: the recovered run
  then ends again and is counted again. CANCELLED is counted by the process that answered
  POST /workflows/{id}/cancel (a cancelled run stops at its next step wherever it runs); if
  the workflow is resumed, its final status is counted too. Not counted: workflows cancelled
  outside this API (DBOS CLI) or exceeding their recovery attempts.
- comm_messages_sent_total{transport}: messages accepted for a workflow (http or websocket).
- comm_live_pushed_total{transport,type}: stream entries (type="stream"), event changes and
  status changes handed to live clients (sse or websocket).
- comm_live_overflows_total: live clients cut off (`overflow`) for falling COMM_LIVE_BUFFER
  items behind.
- comm_db_probe_duration_seconds, comm_db_probe_failures_total: GET /health's database probe
  (`SELECT 1` on a connection of its own), timed when it answered, counted when it did not
  within its 2 s. Once per probe, not per request: requests that arrive while a probe is under
  way share it. Probes run only when /health is asked (a load balancer, not the scrape).
- comm_webhook_deliveries_total{outcome}, comm_webhook_attempts_total{result},
  comm_webhook_attempt_duration_seconds, comm_webhook_enqueued_total{event}: webhook
  deliveries that ended (delivered, failed), each POST by result and its time, and the
  deliveries the dispatcher started (webhooks/). An attempt is counted by the process that
  made it; an outcome by the process whose run of the delivery ended (once, unless a process
  dies between recording it and the workflow's end).
Counters are per process and start at zero: sum them over instances with rate().

Access: with no API keys configured /metrics is open, like everything else. With keys it
needs a key without a tenant (metrics span every tenant); a Prometheus scrape config sends
one with `authorization: {credentials: <key>}`. COMM_METRICS_PUBLIC=true opens it anyway.
"""

import functools
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workflow_comm.names import WorkflowKind

# No `*_created` series: Prometheus needs none of them, and they double the output.
disable_created_metrics()  # type: ignore[no-untyped-call]

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"

HTTP_REQUESTS = Counter(
    "comm_http_requests_total",
    "HTTP requests by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "comm_http_request_duration_seconds",
    "Seconds until the response started, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
LIVE_CONNECTIONS = Gauge("comm_live_connections", "Open SSE and WebSocket connections.")
WATCHED_WORKFLOWS = Gauge("comm_live_watched_workflows", "Workflows with live subscribers.")
WAITING_REQUESTS = Gauge(
    "comm_waiting_requests", "GET /workflow-events/{id}/{key} requests waiting for a value."
)
WORKFLOWS_STARTED = Counter(
    "comm_workflows_started_total", "Workflows created by this process, by kind.", ["kind"]
)
WORKFLOWS_FINISHED = Counter(
    "comm_workflows_finished_total",
    "Workflow runs that ended in this process, by kind and final status.",
    ["kind", "status"],
)
MESSAGES_SENT = Counter(
    "comm_messages_sent_total", "Messages accepted for a workflow, by transport.", ["transport"]
)


class _Tally:
    """One series of a TallyCounter: a plain int, added to on the event loop only."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def inc(self) -> None:
        self.count += 1


class TallyCounter(Collector):
    """A labelled counter for the per-delivery hot path, read at scrape time.

    A prometheus Counter takes a lock on every `inc()`: counted once per value per live
    subscriber, that was 7% of the server's CPU in a fan-out to 1,000 subscribers. Every
    push happens on the event loop, so a plain int per series is exact. The samples are the
    same as a Counter's (`<name>_total`; created series are off for all metrics here).
    """

    def __init__(self, name: str, documentation: str, labelnames: list[str]) -> None:
        self._name, self._documentation, self._labelnames = name, documentation, labelnames
        self._series: dict[tuple[str, ...], _Tally] = {}
        REGISTRY.register(self)

    def labels(self, *values: str) -> _Tally:
        return self._series.setdefault(values, _Tally())

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, series in list(self._series.items()):
            family.add_metric(list(values), series.count)
        yield family


LIVE_PUSHED = TallyCounter(
    "comm_live_pushed",
    "Stream entries, event changes and status changes sent to live clients.",
    ["transport", "type"],
)
LIVE_OVERFLOWS = Counter(
    "comm_live_overflows_total",
    "Live clients cut off (event `overflow`) for falling COMM_LIVE_BUFFER items behind.",
)

DB_PROBE_DURATION = Histogram(
    "comm_db_probe_duration_seconds",
    "Round-trip time of GET /health's database probe (SELECT 1), when the database answered.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2),
)
DB_PROBE_FAILURES = Counter(
    "comm_db_probe_failures_total",
    "GET /health's database probes that got no answer in time (an error or the 2 s timeout).",
)

Workflow = TypeVar("Workflow", bound=Callable[..., Coroutine[Any, Any, Any]])


def count_finished(kind: WorkflowKind) -> Callable[[Workflow], Workflow]:
    """Count the decorated workflow's runs that end here: SUCCESS (returned), ERROR (raised).

    Goes under @DBOS.workflow(), so it wraps the body DBOS runs (again, after a crash). DBOS's
    BaseExceptions pass uncounted: the run was cancelled (the cancel route counts that) or
    lost the workflow to another process (which counts its end).
    """

    def decorate(workflow: Workflow) -> Workflow:
        @functools.wraps(workflow)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await workflow(*args, **kwargs)
            except Exception:
                WORKFLOWS_FINISHED.labels(kind, "ERROR").inc()
                raise
            WORKFLOWS_FINISHED.labels(kind, "SUCCESS").inc()
            return result

        return counted  # type: ignore[return-value]

    return decorate


class HttpMetrics:
    """Count and time every HTTP request by its route template, never by its raw path.

    Routing leaves the matched route in the scope. An answer given before routing (the body
    limit's 413) has none: `match_route` then names the template the path matches, if any.
    Pure ASGI, and cheap per request: the labelled series are looked up once per (method,
    route, status) and kept, so a request costs a dictionary lookup, an increment and an
    observation.
    """

    def __init__(
        self, app: ASGIApp, match_route: Callable[[Scope], str | None] | None = None
    ) -> None:
        self.app = app
        self.match_route = match_route
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def route_template(self, scope: Scope) -> str:
        path = getattr(scope.get("route"), "path", None)
        if path is None and self.match_route is not None:
            path = self.match_route(scope)
        return path or UNMATCHED

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"]
        if method not in HTTP_METHODS:
            method = "other"
        key = (method, self.route_template(scope), status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                HTTP_REQUESTS.labels(method, key[1], str(status)),
                HTTP_DURATION.labels(method, key[1]),
            )
        series[0].inc()
        series[1].observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        recorded = False

        async def timed_send(message: Message) -> None:
            nonlocal recorded
            if not recorded and message["type"] == "http.response.start":
                recorded = True
                self.record(scope, message["status"], time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except Exception:
            if not recorded:
                # The server's catch-all answers 500 outside this middleware.
                self.record(scope, 500, time.perf_counter() - start)
            raise


# Outbound webhooks (workflow_comm/webhooks/). Every label value is created here, so each
# series is exported (at 0) before the first delivery.
WEBHOOK_OUTCOMES = ("delivered", "failed")
WEBHOOK_ATTEMPT_RESULTS = ("success", "http_error", "timeout", "connection_error", "refused")
WEBHOOK_DELIVERIES = Counter(
    "comm_webhook_deliveries_total",
    "Webhook deliveries that ended, by outcome: delivered (a 2xx), or failed (every attempt).",
    ["outcome"],
)
WEBHOOK_ATTEMPTS = Counter(
    "comm_webhook_attempts_total",
    "Webhook delivery attempts (HTTP POSTs) by result.",
    ["result"],
)
WEBHOOK_ATTEMPT_DURATION = Histogram(
    "comm_webhook_attempt_duration_seconds",
    "Seconds one webhook attempt took, to the receiver's answer or the failure.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
WEBHOOK_ENQUEUED = Counter(
    "comm_webhook_enqueued_total",
    "Webhook deliveries the dispatcher started, by event type.",
    ["event"],
)
for _outcome in WEBHOOK_OUTCOMES:
    WEBHOOK_DELIVERIES.labels(_outcome)
for _result in WEBHOOK_ATTEMPT_RESULTS:
    WEBHOOK_ATTEMPTS.labels(_result)
