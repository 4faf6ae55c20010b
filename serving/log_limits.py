"""Repeated errors logged once per interval, with a count of those left out, so a client that
makes the server fail the same way thousands of times a second cannot flood its log."""
import logging
import threading
import time
from typing import Callable, Dict, Tuple


class RateLimitedLog:
    """Logs each message format at most once every `interval_seconds` of `clock`."""

    def __init__(self, logger: logging.Logger, interval_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self._logger, self._interval, self._clock = logger, interval_seconds, clock
        self._lock = threading.Lock()
        self._seen: Dict[str, Tuple[float, int]] = {}  # format -> (last logged, left out since)

    def warning(self, message: str, *args) -> None:
        self.log(logging.WARNING, message, *args)

    def error(self, message: str, *args) -> None:
        self.log(logging.ERROR, message, *args)

    def log(self, level: int, message: str, *args) -> None:
        now = self._clock()
        with self._lock:
            last, left_out = self._seen.get(message, (float('-inf'), 0))
            if now - last < self._interval:
                self._seen[message] = (last, left_out + 1)
                return
            self._seen[message] = (now, 0)
        if left_out:
            message += f' [and {left_out} more like it in the last {self._interval:.0f} s]'
        self._logger.log(level, message, *args)
