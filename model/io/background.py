"""The reader and writer threads of prediction: a bounded queue ahead of the network and a writer
behind it, each handing its failure back to the calling thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Callable

import numpy as np


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


class Prefetcher:
    """Runs a producer in a background thread, ``depth`` items ahead of the consumer, so reading
    overlaps compute. Errors in the producer surface in the consumer; ``close`` stops it early."""

    def __init__(self, produce: Callable[[], Iterator], depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(produce,), daemon=True, name="unet-reader")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, produce: Callable[[], Iterator]) -> None:
        try:
            for item in produce():
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as error:  # handed to the consumer, which re-raises it
            self._put(_Failure(error))

    def __iter__(self) -> Iterator:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class BackgroundWriter:
    """Hands blocks of rows to ``write(col_off, row_off, rows)`` in a background thread
    (compression and disk writes overlap compute). The first error is re-raised on the next
    ``put`` or on ``finish``."""

    def __init__(self, write: Callable[[int, int, np.ndarray], None], depth: int = 1) -> None:
        self._write = write
        self._queue: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="unet-writer")
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:  # after an error keep draining so ``put`` never blocks forever
                try:
                    self._write(*item)
                except BaseException as error:
                    self._error = error

    def put(self, col_off: int, row_off: int, rows: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((col_off, row_off, rows))

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
