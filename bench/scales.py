"""How many samples each mode takes. Smoke, quick and full run the same code."""

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Scale:
    name: str
    floor: int  # (1) NOTIFY round trips
    messages: int  # (2) message deliveries
    events: int  # (3) event wakes
    stream_workflows: int  # (4) workflows streaming to one live subscriber each
    stream_values: int  # values per stream workflow
    stream_interval: float  # seconds between values
    poll_workflows: int  # (4) workflows read by a client polling once a second
    poll_values: int
    poll_interval: float
    throughput_seconds: float  # (6) per concurrency level
    throughput_levels: tuple[int, ...]
    conc_workflows: int  # (7) workflows parked in recv
    conc_waiters: int  # waiting GETs on their `message` event
    conc_subscribers: int  # events SSE subscribers
    fanout_levels: tuple[int, ...]  # (8) subscribers to one stream
    fanout_values: int
    fanout_interval: float
    sqlite_share: float  # (9) share of the Postgres sample counts run on SQLite
    idle_workflows: int  # (10) waiting workflows, each followed by one SSE watcher
    idle_window_sec: float  # the quiet window measured, with and without the watchers
    idle_settle_sec: float  # quiet before each window (Postgres publishes counts late)
    idle_probe_sec: float  # then /health probed for this long
    waiters: int  # (11) waiting GETs on event keys of one workflow
    waiter_workflows: int  # ... and spread over this many workflows, one each
    waiter_timeout_sec: float  # their ?timeout= (half of the keys are never set)
    workers_clients: int  # (12) concurrent clients starting workflows, 1 and 2 workers
    workers_seconds: float
    request_clients: int  # (13) concurrent clients per request kind
    request_seconds: float

    def baseline_plan(self) -> dict[str, Any]:
        """What the in-process baseline runs: the same counts as the HTTP side."""
        return {
            "messages": self.messages,
            "events": self.events,
            "stream_workflows": self.stream_workflows,
            "stream_values": self.stream_values,
            "stream_interval": self.stream_interval,
            "throughput_seconds": self.throughput_seconds,
            "throughput_levels": list(self.throughput_levels),
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SCALES = {
    "smoke": Scale(
        name="smoke",
        floor=20,
        messages=5,
        events=5,
        stream_workflows=1,
        stream_values=10,
        stream_interval=0.02,
        poll_workflows=1,
        poll_values=6,
        poll_interval=0.2,
        throughput_seconds=0.5,
        throughput_levels=(1, 10),
        conc_workflows=20,
        conc_waiters=10,
        conc_subscribers=10,
        fanout_levels=(1, 10),
        fanout_values=5,
        fanout_interval=0.02,
        sqlite_share=1.0,
        idle_workflows=6,
        idle_window_sec=1.0,
        idle_settle_sec=0.3,
        idle_probe_sec=0.5,
        waiters=10,
        waiter_workflows=6,
        waiter_timeout_sec=1.5,
        workers_clients=10,
        workers_seconds=0.5,
        request_clients=20,
        request_seconds=0.25,
    ),
    "quick": Scale(
        name="quick",
        floor=300,
        messages=100,
        events=100,
        stream_workflows=2,
        stream_values=50,
        stream_interval=0.02,
        poll_workflows=1,
        poll_values=30,
        poll_interval=0.1,
        throughput_seconds=3.0,
        throughput_levels=(1, 10, 50),
        conc_workflows=400,
        conc_waiters=200,
        conc_subscribers=200,
        fanout_levels=(1, 100, 1000),
        fanout_values=20,
        fanout_interval=0.05,
        sqlite_share=0.5,
        idle_workflows=300,
        idle_window_sec=10.0,
        idle_settle_sec=11.0,
        idle_probe_sec=5.0,
        waiters=1000,
        waiter_workflows=300,
        waiter_timeout_sec=10.0,
        workers_clients=50,
        workers_seconds=5.0,
        request_clients=20,
        request_seconds=3.0,
    ),
    "full": Scale(
        name="full",
        floor=2000,
        messages=500,
        events=500,
        stream_workflows=10,
        stream_values=100,
        stream_interval=0.02,
        poll_workflows=3,
        poll_values=50,
        poll_interval=0.1,
        throughput_seconds=15.0,
        throughput_levels=(1, 10, 50),
        conc_workflows=1000,
        conc_waiters=500,
        conc_subscribers=500,
        fanout_levels=(1, 100, 1000, 5000),
        fanout_values=100,
        fanout_interval=0.02,
        sqlite_share=1.0,
        idle_workflows=1000,
        # One whole period of DBOS's own polling of waiting recvs (60 s) in each window.
        idle_window_sec=60.0,
        idle_settle_sec=11.0,
        idle_probe_sec=10.0,
        waiters=1000,
        waiter_workflows=1000,
        waiter_timeout_sec=30.0,
        workers_clients=50,
        workers_seconds=15.0,
        request_clients=20,
        request_seconds=5.0,
    ),
}
