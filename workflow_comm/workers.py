"""Several worker processes on one port: what `python server.py --workers N` runs.

The supervisor (the process started) serves nothing and runs no DBOS. It checks that the port
is free and starts N workers: each runs the supervisor's own command line again, with its
index in the environment variable COMM_WORKER_INDEX, so `server.main()` serves as worker i
(whatever script called it: `python -m bench.server` gets workers with its routes too). Then
it only waits: for a worker to exit, which it replaces with a new process of the same index
(so the same executor ID: DBOS recovers that worker's PENDING workflows as it starts), or for
SIGTERM or SIGINT, which it passes on to every worker as SIGTERM (each ends its live
connections with `shutdown`, as one process does) before it waits for them and exits.

Each worker opens a listening socket of its own on the port with SO_REUSEPORT
(`listening_socket`), and uvicorn starts listening on it only once the worker's app has
started: the kernel spreads new connections over the workers that listen, by a hash of each
connection's addresses and ports, and a worker that exits drops out of that set.

A worker that exits within STABLE_SEC of its start is started again after a delay that
doubles with each such exit in a row (RESTART_DELAY_MIN_SEC to RESTART_DELAY_MAX_SEC), so a
crash loop does not spin; one that ran longer is started again at once. If the supervisor
itself is killed, the kernel sends its workers SIGTERM (Linux's parent-death signal).
"""

import ctypes
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("workflow_comm.workers")

# Set by the supervisor in each worker's environment: the worker's index, 0 to N - 1.
WORKER_INDEX_VARIABLE = "COMM_WORKER_INDEX"

STABLE_SEC = 10.0
RESTART_DELAY_MIN_SEC = 1.0
RESTART_DELAY_MAX_SEC = 30.0
# How long the workers get to shut down after the SIGTERM before they are killed: uvicorn's
# 5 s for open connections, DBOS's shutdown, or a start still waiting for its executor lock.
STOP_GRACE_SEC = 20.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def worker_index() -> int | None:
    """This process's index if the supervisor started it as a worker, else None."""
    value = os.environ.get(WORKER_INDEX_VARIABLE)
    return int(value) if value is not None else None


def listening_socket(host: str, port: int) -> socket.socket:
    """A worker's socket: bound to the port it shares with the other workers, not listening
    yet (uvicorn listens once the app has started, and only then do connections come)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def check_port_free(host: str, port: int) -> None:
    """Raise OSError if something listens on the port already: without this, workers would
    share it with any other SO_REUSEPORT listener of the same user."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def describe_exit(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:  # a signal without a name, such as a real-time one
        return f"was killed by signal {-returncode}"


def end_by_signal(sig: int) -> None:
    """Exit as the signal's default action would, as uvicorn does after a graceful stop: a
    process manager sees the process ended by SIGTERM (or SIGINT), not an error code."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(sig, signal.SIG_DFL)
    signal.raise_signal(sig)


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_exits: int = 0  # exits in a row within STABLE_SEC of a start
    restart_at: float | None = None  # when to start it again, while it is down


class Supervisor:
    """Starts `count` workers (each runs `command`, with its index in COMM_WORKER_INDEX),
    keeps them running, and stops them all at SIGTERM or SIGINT. Run it on the main thread."""

    def __init__(
        self,
        command: list[str],
        count: int,
        *,
        name: Callable[[int], str] = str,
    ) -> None:
        self._command = command
        self._name = name  # how the log names worker i (its executor ID)
        self._workers = [Worker(i) for i in range(count)]
        self._stop_signal: int | None = None
        self._wakeup_read = -1
        self._prctl = _load_prctl()

    def run(self) -> int:
        """Supervise until a stop signal; return that signal once every worker has exited."""
        self._wakeup_read, wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_read, False)
        os.set_blocking(wakeup_write, False)
        previous_fd = signal.set_wakeup_fd(wakeup_write, warn_on_full_buffer=False)
        previous = {sig: signal.getsignal(sig) for sig in (*STOP_SIGNALS, signal.SIGCHLD)}
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_stop_signal)
        # A handler of its own, so that a worker's exit writes to the wakeup pipe too.
        signal.signal(signal.SIGCHLD, lambda sig, frame: None)
        try:
            for worker in self._workers:
                self._start(worker)
            while self._stop_signal is None:
                self._sleep(self._next_restart_in())
                self._tend()
            return self._stop_all(self._stop_signal)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(self._wakeup_read)
            os.close(wakeup_write)

    def _on_stop_signal(self, sig: int, frame: object) -> None:
        if self._stop_signal is not None:
            # A second signal while stopping: pass it on as it is (a second SIGINT makes
            # uvicorn stop at once, without waiting for open connections).
            self._signal_all(sig)
        self._stop_signal = sig

    def _start(self, worker: Worker) -> None:
        worker.restart_at = None
        worker.started_at = time.monotonic()
        parent = os.getpid()
        try:
            worker.process = subprocess.Popen(
                self._command,
                env={**os.environ, WORKER_INDEX_VARIABLE: str(worker.index)},
                stdin=subprocess.DEVNULL,
                preexec_fn=lambda: self._die_with(parent),
            )
        except OSError as error:
            logger.error("worker %s could not be started: %s", self._name(worker.index), error)
            worker.process = None
            self._schedule_restart(worker, quick=True)
            return
        logger.info("worker %s started (pid %d)", self._name(worker.index), worker.process.pid)

    def _die_with(self, parent: int) -> None:
        """In the new worker, before it runs: SIGTERM when the supervisor dies."""
        if self._prctl is not None:
            self._prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the supervisor died before the line above
            os._exit(1)

    def _tend(self) -> None:
        """Notice workers that exited; start those whose restart is due."""
        now = time.monotonic()
        for worker in self._workers:
            if worker.process is not None and worker.process.poll() is not None:
                returncode = worker.process.returncode
                worker.process = None
                quick = now - worker.started_at < STABLE_SEC
                delay = self._schedule_restart(worker, quick=quick)
                logger.error(
                    "worker %s %s; starting it again in %.1fs",
                    self._name(worker.index),
                    describe_exit(returncode),
                    delay,
                )
        for worker in self._workers:
            if worker.restart_at is not None and worker.restart_at <= now:
                self._start(worker)

    def _schedule_restart(self, worker: Worker, *, quick: bool) -> float:
        worker.quick_exits = worker.quick_exits + 1 if quick else 0
        delay = 0.0
        if worker.quick_exits:
            delay = RESTART_DELAY_MIN_SEC * 2 ** (worker.quick_exits - 1)
            delay = min(RESTART_DELAY_MAX_SEC, delay)
        worker.restart_at = time.monotonic() + delay
        return delay

    def _next_restart_in(self) -> float | None:
        due = [w.restart_at for w in self._workers if w.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _sleep(self, timeout: float | None) -> None:
        """Wait until a signal comes (a stop, or a worker's exit) or `timeout` passes."""
        select.select([self._wakeup_read], [], [], timeout)
        try:
            while os.read(self._wakeup_read, 512):
                pass
        except BlockingIOError:
            pass

    def _running(self) -> list[subprocess.Popen[bytes]]:
        return [w.process for w in self._workers if w.process and w.process.poll() is None]

    def _signal_all(self, sig: int) -> None:
        for process in self._running():
            process.send_signal(sig)

    def _stop_all(self, sig: int) -> int:
        logger.info("%s: stopping %d workers", signal.Signals(sig).name, len(self._running()))
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SEC
        while self._running() and time.monotonic() < deadline:
            self._sleep(max(0.0, deadline - time.monotonic()))
        for process in self._running():
            logger.error(
                "worker pid %d did not stop in %gs; killing it", process.pid, STOP_GRACE_SEC
            )
            process.kill()
        for worker in self._workers:
            if worker.process is not None:
                worker.process.wait()
        return sig


def _load_prctl() -> Callable[[int, int], int] | None:
    """Linux's prctl(2), loaded before any worker is forked; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    prctl: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    return prctl
