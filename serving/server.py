"""The REST API's HTTP server: aiohttp's low-level server on a background event loop, with
bounded connections and TF Serving-style JSON errors even for what aiohttp rejects itself."""
import json
import logging
from typing import Optional

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from petpark.serving.concurrency import BackgroundLoop, InferencePool
from petpark.serving.limits import Limits
from petpark.serving.log_limits import RateLimitedLog
from petpark.serving.metrics import ServingMetrics
from petpark.serving.model_store import ModelStore
from petpark.serving.rest_api import RestApi

_log = RateLimitedLog(logging.getLogger('petpark.serving.rest'))
# After answering a request whose body did not all arrive, aiohttp reads and drops the rest for
# this long before closing (its default, 10 s, would let a slow client hold the connection).
_LINGERING_SECONDS = 1.0


class _BoundedHandler(RequestHandler):
    """aiohttp's per-connection protocol, which closes connections beyond the server's bound
    and answers HTTP-level errors (bad request line, oversized headers) as TF Serving JSON."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self._manager.connections) > self._manager.max_connections:
            _log.warning('REST: %d connections open, the limit max_rest_connections=%d: closing a new one',
                         len(self._manager.connections), self._manager.max_connections)
            self.force_close()
            transport.close()

    def handle_error(self, request, status: int = 500, exc: Optional[BaseException] = None,
                     message: Optional[str] = None) -> web.StreamResponse:
        _log.warning('REST: HTTP %d for a request from %s: %s', status, request.remote, message or exc)
        response = web.Response(status=status, content_type='application/json',
                                text=json.dumps({'error': message or str(exc) or 'Bad request'}))
        response.force_close()
        return response


class _BoundedServer(web.Server):
    def __init__(self, handler, max_connections: int, **kwargs):
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections

    def __call__(self) -> RequestHandler:
        return _BoundedHandler(self, loop=self._loop, **self._kwargs)


class RestServer:
    """The REST API on host:port, served from a background thread's event loop."""

    def __init__(self, store: ModelStore, host: str = '127.0.0.1', port: int = 8501,
                 metrics: Optional[ServingMetrics] = None, metrics_path: Optional[str] = None,
                 pool: Optional[InferencePool] = None, limits: Optional[Limits] = None):
        self.limits = limits or Limits()
        pool = pool or InferencePool(workers=64, max_inflight=self.limits.max_inflight_requests)
        self.api = RestApi(store, metrics or ServingMetrics(), pool, self.limits, metrics_path)
        self.host, self.port = host, port
        self._background: Optional[BackgroundLoop] = None
        self._runner: Optional[web.ServerRunner] = None

    def start(self) -> 'RestServer':
        self._background = BackgroundLoop('rest-loop')
        self._background.run(self._start())
        return self

    async def _start(self) -> None:
        server = _BoundedServer(self.api.handle, self.limits.max_rest_connections, access_log=None,
                                keepalive_timeout=self.limits.rest_idle_timeout_seconds,
                                lingering_time=_LINGERING_SECONDS)
        self._runner = web.ServerRunner(server)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked for

    def stop(self) -> None:
        self._background.run(self._runner.cleanup())
        self._background.close()
