"""Runs the model store and the REST API in one process."""
import asyncio
import threading
from typing import Optional

from aiohttp import web

from petpark.serving.metrics import ServingMetrics
from petpark.serving.model_store import ModelStore
from petpark.serving.rest_api import RestApi


class RestServer:
    """The REST API on host:port, served from a background thread's event loop."""

    def __init__(self, store: ModelStore, host: str = '127.0.0.1', port: int = 8501,
                 metrics: Optional[ServingMetrics] = None, metrics_path: Optional[str] = None):
        self.api = RestApi(store, metrics or ServingMetrics(), metrics_path)
        self.host, self.port = host, port
        self._loop = asyncio.new_event_loop()
        self._runner: Optional[web.AppRunner] = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name='rest-loop')

    def start(self) -> 'RestServer':
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.api.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked for

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
