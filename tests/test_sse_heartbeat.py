"""COMM_SSE_HEARTBEAT_SEC is the heartbeat on the wire: one `: ping` per idle interval, one source.

FastAPI's EventSourceResponse has a keep-alive of its own (15 s by default). The server sets it
to the setting and sends no pings of its own; with the setting at 1 s, the raw bytes of an idle
SSE response show exactly that: a ping about every second, and no more than that.
"""

import threading
import time

import httpx
import pytest

from tests.support import OwnServer, ServerProcess, unique_id, wait_until

HEARTBEAT = 1.0
IDLE_WINDOW = 6.0  # seconds of idle connection the test reads

pytestmark = pytest.mark.needs_own_server


@pytest.fixture(scope="module")
def heartbeat_server(own_server: OwnServer) -> ServerProcess:
    return own_server(env={"COMM_SSE_HEARTBEAT_SEC": f"{HEARTBEAT:g}"}, backend="sqlite")


class RawSse:
    """The SSE messages of one response as they arrive, each with its arrival time."""

    def __init__(self, url: str) -> None:
        self.messages: list[tuple[float, bytes]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()

    def _read(self, url: str) -> None:
        pending = b""
        try:
            with httpx.stream("GET", url, timeout=httpx.Timeout(5, read=30)) as answer:
                if answer.status_code != 200:
                    self.error = f"HTTP {answer.status_code}"
                    return
                for chunk in answer.iter_raw():
                    pending += chunk.replace(b"\r\n", b"\n")
                    while b"\n\n" in pending:
                        message, pending = pending.split(b"\n\n", 1)
                        self.messages.append((time.monotonic(), message))
                    if self._stop.is_set():
                        return
        except httpx.HTTPError as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self._stop.set()


def test_idle_sse_gets_one_ping_per_configured_interval(heartbeat_server: ServerProcess) -> None:
    base = heartbeat_server.base_url
    wf = unique_id("heartbeat")
    # Waits 60 s for an approval nobody sends: after its first events the response is idle.
    answer = httpx.post(
        f"{base}/start-workflow-messaging/{wf}/1?step_seconds=0&approval_timeout=60"
    )
    assert answer.status_code == 200, answer.text
    reader = RawSse(f"{base}/workflow-events/{wf}/live")
    try:
        wait_until(
            lambda: any(b"waiting_for_approval" in m for _, m in reader.messages) or reader.error,
            timeout=15,
            what="the waiting status on the live response",
        )
        assert reader.error is None, reader.error
        idle_from = reader.messages[-1][0]
        time.sleep(IDLE_WINDOW)
        seen = list(reader.messages)
    finally:
        reader.stop()
        httpx.post(f"{base}/workflows/{wf}/cancel")

    later = [(at, message) for at, message in seen if at > idle_from]
    others = [message for _, message in later if message != b": ping"]
    assert not others, f"an idle response carried {others}; every idle message must be `: ping`"
    times = [idle_from] + [at for at, _ in later]
    gaps = [round(b - a, 2) for a, b in zip(times, times[1:], strict=False)]
    # One source at 1 s: about six pings in six seconds, each at least a second after the last
    # on the server (the client may read two at once after a stall, so only counts are checked
    # from below). FastAPI's default would send none in six seconds; two sources, up to twice
    # as many.
    assert 2 <= len(later) <= IDLE_WINDOW / HEARTBEAT + 2, f"{len(later)} pings, gaps {gaps}"
    assert max(gaps) <= HEARTBEAT * 5, f"a ping came late: gaps {gaps}"
