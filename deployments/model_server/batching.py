"""Dynamic batching: concurrent requests share one model call.

Requests put their (already scrubbed) texts on a queue and await a future. One worker thread
takes the first waiting request, then whatever else arrives within `serving.max_wait_ms`, up to
`serving.max_batch_size` inputs (a single larger request runs alone), runs the model once on
all of them and hands each request its slice. Under load the queue is never empty, so batches
fill without waiting and throughput grows with concurrency; an idle server answers a lone
request after at most `max_wait_ms`. The model reference is taken once per batch (see
`source.ModelHolder`), so a hot swap lands between batches.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from deployments.model_server.source import ModelHolder, NoModel, Served

log = logging.getLogger("tunegate.model_server")


@dataclass
class _Item:
    texts: list[str]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future, result: object, error: BaseException | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Batcher:
    """The queue and its worker thread; `submit` is awaited by the request handlers."""

    def __init__(
        self,
        holder: ModelHolder,
        max_batch_size: int,
        max_wait_ms: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.holder = holder
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.on_batch = on_batch or (lambda size: None)
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._held: _Item | None = None  # did not fit the last batch: first in the next

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="tunegate-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        """Answer what is queued, then end the worker."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    async def submit(self, texts: list[str]) -> tuple[Served, list[dict]]:
        """(the model that answered, one answer per text); raises `NoModel` or the model's error."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Item(list(texts), future, loop))
        return await future

    def _collect(self, first: _Item) -> tuple[list[_Item], bool]:
        items, size, stop = [first], len(first.texts), False
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            if size + len(item.texts) > self.max_batch_size:
                self._held = item
                break
            items.append(item)
            size += len(item.texts)
        return items, stop

    def _work(self) -> None:
        stop = False
        while not stop:
            first, self._held = self._held or self._queue.get(), None
            if first is None:
                break
            items, stop = self._collect(first)
            served = self.holder.current
            texts = [t for item in items for t in item.texts]
            error: BaseException | None = None
            answers: list[dict] = []
            try:
                if served is None:
                    raise NoModel("no model loaded yet")
                answers = served.answer(texts)
                if len(answers) != len(texts):
                    raise RuntimeError(f"the model gave {len(answers)} answers for {len(texts)}")
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request (503)
                error = exc
            self.on_batch(len(texts))
            start = 0
            for item in items:
                part = answers[start : start + len(item.texts)]
                start += len(item.texts)
                item.loop.call_soon_threadsafe(_settle, item.future, (served, part), error)
