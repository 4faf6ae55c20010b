"""The REST API's HTTP server: aiohttp's low-level server on a background event loop, with
bounded connections and TF Serving-style JSON errors even for what aiohttp rejects itself."""
import json
import logging
import socket
from typing import Optional

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from petpark.serving.concurrency import BackgroundLoop, InferencePool
from petpark.serving.limits import Limits
from petpark.serving.log_limits import RateLimitedLog
from petpark.serving.metrics import ServingMetrics
from petpark.serving.model_store import ModelStore
from petpark.serving.request_logging import ServingLog
from petpark.serving.rest_api import RestApi

_log = RateLimitedLog(logging.getLogger('petpark.serving.rest'))
# After answering a request whose body did not all arrive, aiohttp reads and drops the rest for
# this long before closing (its default, 10 s, would let a slow client hold the connection).
_LINGERING_SECONDS = 1.0
# asyncio accepts as many connections at once as the backlog it is given, before the first of them is
# counted (and, over max_rest_connections, closed): with 128, a flood held hundreds of descriptors beyond
# the bound for a moment. It gets 32 (limits.RESERVED_DESCRIPTORS keeps room for a few such rounds); the
# kernel's queue of connections waiting to be accepted stays long, so that bursts are not refused.
_ACCEPTS_AT_ONCE = 32
_LISTEN_QUEUE = 1024


class _BoundedHandler(RequestHandler):
    """aiohttp's per-connection protocol. Beyond the server's bound, a new connection closes the
    oldest one with no request in progress (an idle keep-alive, or one still sending its headers),
    or itself when every connection is busy: idle connections cannot keep a fresh client out.
    HTTP-level errors (bad request line, oversized headers) are answered as TF Serving JSON."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        manager = self._manager
        connections = [c for c in manager.connections if c.transport is not None]
        if len(connections) <= manager.max_connections:
            return
        idle = next((c for c in connections if c is not self and c.idle()), None)
        if idle is not None:
            _log.warning('REST: %d connections open, the limit max_rest_connections=%d: closing the oldest idle one',
                         len(connections), manager.max_connections)
            idle.force_close()
        else:
            _log.warning('REST: %d connections open and busy, the limit max_rest_connections=%d: closing a new one',
                         len(connections), manager.max_connections)
            self.force_close()

    def idle(self) -> bool:
        """No request being answered or waiting to be."""
        return not self._request_in_progress and not self._messages

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
                 pool: Optional[InferencePool] = None, limits: Optional[Limits] = None,
                 request_logs: Optional[ServingLog] = None):
        self.limits = limits or Limits()
        pool = pool or InferencePool(workers=64, max_inflight=self.limits.max_inflight_requests)
        self.api = RestApi(store, metrics or ServingMetrics(), pool, self.limits, metrics_path, request_logs)
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
        family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.create_server((self.host, self.port), family=family)
        await web.SockSite(self._runner, listener, backlog=_ACCEPTS_AT_ONCE).start()
        listener.listen(_LISTEN_QUEUE)  # asyncio set the kernel's queue to _ACCEPTS_AT_ONCE as well
        self.port = listener.getsockname()[1]  # the real port when 0 was asked for

    def stop(self) -> None:
        self._background.run(self._runner.cleanup())
        self._background.close()
