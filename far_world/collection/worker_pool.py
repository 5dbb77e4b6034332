"""Spawned collector processes behind two queues, started and stopped as one."""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Iterable
from typing import Any

from far_world.collection.plan import EpisodeTask
from far_world.collection.worker import Event, worker_main


class WorkerDiedError(RuntimeError):
    """A worker process failed (its traceback is in the message) or died without a word."""


class WorkerPool:
    """``count`` worker processes collecting ``world`` with ``policy``, ``steps`` steps an episode.

    Spawn, not fork: MuJoCo's EGL context and vizdoom's game process do not survive a fork, and
    a spawned worker imports only what it needs.
    """

    def __init__(self, count: int, world: str, world_kwargs: dict[str, Any], policy: str, steps: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.tasks = context.Queue()
        self.events = context.Queue()
        self.processes = [
            context.Process(
                target=worker_main, args=(i, world, world_kwargs, policy, steps, self.tasks, self.events),
                name=f"collect-worker-{i}", daemon=True,
            )
            for i in range(count)
        ]
        self.started_at = time.perf_counter()
        for process in self.processes:
            process.start()

    def submit(self, tasks: Iterable[EpisodeTask]) -> None:
        """Queue the tasks, then one stop sign per worker."""
        for task in tasks:
            self.tasks.put(task)
        for _ in self.processes:
            self.tasks.put(None)

    def next_event(self, timeout: float = 1.0) -> Event | None:
        """The next worker event, or None after ``timeout`` s of silence; raises if a worker failed."""
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            # A worker killed by a signal (segfault, out of memory) sends nothing: look for one.
            for process in self.processes:
                if process.exitcode not in (None, 0):
                    raise WorkerDiedError(f"{process.name} died with exit code {process.exitcode}") from None
            return None
        if event[0] == "error":
            raise WorkerDiedError(f"collect-worker-{event[1]} failed:\n{event[2]}")
        return event

    def close(self, timeout: float = 30.0) -> list[Event]:
        """Wait for the workers to finish (terminating them after ``timeout`` s); returns unread events.

        The queue is drained while waiting: a process cannot exit while its queue buffer is unsent.
        """
        leftover: list[Event] = []
        deadline = time.perf_counter() + timeout
        while any(p.is_alive() for p in self.processes) and time.perf_counter() < deadline:
            leftover += self._drain()
            for process in self.processes:
                process.join(0.05)
        self.terminate()
        return leftover + self._drain()

    def terminate(self) -> None:
        """Stop every live worker now; each closes its world on the way out."""
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(10.0)
            if process.is_alive():
                process.kill()
                process.join()

    def _drain(self) -> list[Event]:
        events = []
        while True:
            try:
                events.append(self.events.get_nowait())
            except queue.Empty:
                return events
