"""The servers' event loops and the one bounded pool where model calls run.

REST (aiohttp) and gRPC (grpc.aio) each read requests on an event loop, so a client that
sends half a request holds no thread. Only complete requests reach the model, through
InferencePool: a thread pool with a bound on the requests waiting or running in it, shared by
both APIs, so status and metadata calls (answered on the loops) stay quick while the model is busy.
"""
import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Coroutine, Optional

import grpc

from petpark.serving import errors
from petpark.serving.log_limits import RateLimitedLog


class BackgroundLoop:
    """An asyncio event loop running in a daemon thread. Its errors are logged at most once per
    kind every 10 s: out of descriptors, asyncio reports each failed accept (up to 128 a tick).
    An exception that escapes the loop itself is logged and the loop runs on."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self._log = RateLimitedLog(logging.getLogger(f'petpark.serving.{name}'))
        self.loop.set_exception_handler(lambda loop, context: self._log.error(
            '%s: %s', context.get('message', 'error'), context.get('exception', '')))
        self._closing = False
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def _run(self) -> None:
        while not self._closing:
            try:
                self.loop.run_forever()
            except Exception as e:
                self._log.error('the event loop raised %s: %s; it runs on', type(e).__name__, e)

    def run(self, coroutine: Coroutine) -> Any:
        """Runs `coroutine` on the loop; blocks until it returns (or raises)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        self._closing = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def repeat_until_stopped(step: Callable[[], Any], interval: float, stopped: threading.Event, what: str,
                         log: RateLimitedLog, wait: Optional[Callable[[float], bool]] = None) -> None:
    """Calls `step` every `interval` seconds until `stopped` is set (`wait(seconds)` says so; default
    `stopped.wait`). A step that raises is logged and retried after a pause that doubles, up to ten
    intervals, and returns to `interval` after a success: the thread running this never dies of it."""
    wait = wait or stopped.wait
    pause = interval
    while not wait(pause):
        try:
            step()
        except Exception as e:
            pause = min(pause * 2, interval * 10)
            log.error('%s failed (%s: %s); retrying in %.1f s', what, type(e).__name__, e, pause)
        else:
            pause = interval


class InferencePool:
    """Runs model calls in threads; refuses a call beyond `max_inflight` waiting or running."""

    def __init__(self, workers: int, max_inflight: int):
        self.max_inflight = max_inflight
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix='inference')
        self._lock = threading.Lock()
        self._inflight = 0

    async def run(self, function: Callable, *args) -> Any:
        with self._lock:
            if self._inflight >= self.max_inflight:
                raise errors.ServingError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f'The server has {self._inflight} requests in progress, its limit max_inflight_requests='
                    f'{self.max_inflight} (petpark serve --max_inflight_requests); retry later')
            self._inflight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        finally:
            with self._lock:
                self._inflight -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)
