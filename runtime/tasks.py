"""Background tasks of a program: named, owned, logged when they die, awaited on stop.

Every long-running loop of an agent, a controller or `fusionctl` (a ticker, a watcher, a
publisher) is started through the `BackgroundTasks` of the object that owns it, never with a
bare `create_task`: a task nobody holds can be collected mid-flight, a task nobody awaits hides
its exception until the interpreter exits, and a task nobody cancels outlives its program's
shutdown. Tasks that belong to one request (a forwarded op, a stream's reader) stay with the
code that awaits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["BackgroundTasks"]


class BackgroundTasks:
    """The background tasks of one owner (`owner` names it in logs), by name.

    A task that ends with an exception is logged at once, with its traceback; one that returns
    is simply forgotten (a ticker with nothing left to tick). `stop` cancels every task and
    waits for all of them; nothing starts after it.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._stopping = False

    def start(self, name: str, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `work` as the task `name`; a task of that name must not be running."""
        if self._stopping:
            work.close()
            raise RuntimeError(f"{self.owner} is stopping: {name} not started")
        if self.running(name):
            work.close()
            raise RuntimeError(f"{self.owner}: a task named {name} is already running")
        task = asyncio.get_running_loop().create_task(work, name=f"{self.owner}:{name}")
        self._tasks[name] = task
        task.add_done_callback(lambda done: self._ended(name, done))
        return task

    def ensure(self, name: str, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Start `work()` as `name` unless a task of that name runs (or the owner stops)."""
        if not self._stopping and not self.running(name):
            self.start(name, work())

    def running(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    def names(self) -> list[str]:
        """The names of the tasks running now."""
        return [name for name, task in self._tasks.items() if not task.done()]

    def _ended(self, name: str, task: asyncio.Task[Any]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("%s: background task %s died", self.owner, name, exc_info=error)

    async def stop(self) -> None:
        """Cancel every task and wait until all have ended; start no more."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            # Its death, if any, was logged by _ended; stopping goes on regardless.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
