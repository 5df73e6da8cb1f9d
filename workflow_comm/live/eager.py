"""Run a coroutine's first step now, and a task only for what is left when it has to wait.

Python 3.12's `asyncio.eager_task_factory` does this for every task; this project runs on
3.11 too. The live feed uses it to write a frame straight to a subscriber's connection from
the task that has the value: an ASGI `send` whose transport takes the bytes at once finishes
in its first step, with no task created, no loop round and no wake of the subscriber's own
task. Only a send that has to wait (the client reads slowly and the transport's buffer is
full) becomes a task, which finishes it as `await` would have.
"""

import asyncio
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any


def start_eagerly(coro: Awaitable[None]) -> asyncio.Task[None] | None:
    """Run `coro` until it first waits: None if it finished without waiting, else the task
    that finishes it. An exception it raises before waiting is raised here. (An awaitable
    that is not a coroutine gets a task straight away.)"""
    if not isinstance(coro, Coroutine):
        return asyncio.ensure_future(coro)
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    except BaseException:
        coro.close()
        raise
    return asyncio.ensure_future(_Rest(coro, waiting_on))


class _Rest:
    """The rest of a coroutine that has already run up to `waiting_on` (what it yielded to
    the event loop: a future). Awaited by a task, it hands the task that future first, then
    carries on exactly as the coroutine would under the task: the task sends in each result
    and throws in each exception (a cancellation too), and they go on to the coroutine."""

    def __init__(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, None, None]:
        waiting_on = self._waiting_on
        while True:
            try:
                yield waiting_on
            except BaseException as exc:  # noqa: BLE001 - handed on to the coroutine
                try:
                    waiting_on = self._coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                waiting_on = self._coro.send(None)
            except StopIteration:
                return
