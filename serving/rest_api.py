"""TF Serving's REST API (model_servers/http_rest_api_handler.cc) on aiohttp."""
import asyncio
import json
import re
import time
import urllib.parse
from typing import Any, Dict, Optional

import grpc
import numpy as np
from aiohttp import web
from google.protobuf import json_format

from petpark.serving import errors, json_tensor
from petpark.serving.concurrency import InferencePool
from petpark.serving.limits import Limits
from petpark.serving.metrics import CONTENT_TYPE, ServingMetrics, rows_of
from petpark.serving.model_store import ModelStore, State
from petpark.serving.request_logging import ServingLog, as_signature_types, origin_of
from petpark.serving.tf_servable import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD, classification_results

INT64_MAX = 2 ** 63 - 1
_PREDICTION = re.compile(r'^/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)$')
_MODEL = re.compile(r'^/v1/models(?:/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?)?(/metadata)?$')


def _json(payload: Dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload), content_type='application/json')


def _error(error: errors.ServingError) -> web.Response:
    response = _json({'error': error.message}, error.http_status)
    if error.http_status in (408, 413):  # the body was not read to its end: the connection is unusable
        response.force_close()
    return response


class RestApi:
    """Routes every /v1/ request the way TF Serving does; `handle` is the one request handler."""

    def __init__(self, store: ModelStore, metrics: ServingMetrics, pool: InferencePool, limits: Limits,
                 metrics_path: Optional[str] = None, request_logs: Optional[ServingLog] = None):
        self.store, self.pool, self.limits = store, pool, limits
        self.metrics, self.metrics_path = metrics, metrics_path
        self.request_logs = request_logs or ServingLog(None)

    async def handle(self, request: web.BaseRequest) -> web.Response:
        path = request.raw_path.split('?', 1)[0]
        malformed = errors.invalid_argument(f'Malformed request: {request.method} {path[:200]}')
        try:
            if request.method == 'POST':
                match = _PREDICTION.match(path)
                if not match:
                    raise malformed
                body = await self._read_body(request)
                return _json(await self.pool.run(self._inference, match, body, origin_of(request.headers.items())))
            if request.method == 'GET' and self.metrics_path and path == self.metrics_path:
                return web.Response(body=self.metrics.exposition(), headers={'Content-Type': CONTENT_TYPE})
            if request.method == 'GET':
                match = _MODEL.match(path)
                if not match:
                    raise malformed
                if match.group(1) is None:
                    raise errors.invalid_argument('Missing model name in request.')
                return _json(self._model_info(match))
            raise malformed
        except errors.ServingError as e:
            return _error(e)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        """The body, refused once it exceeds max_request_bytes or takes longer than
        request_timeout_seconds to arrive."""
        limit = self.limits.max_request_bytes
        if (request.content_length or 0) > limit:
            raise _too_large(request.content_length, limit)
        try:
            return await asyncio.wait_for(_read_at_most(request.content, limit),
                                          self.limits.request_timeout_seconds)
        except asyncio.TimeoutError:
            raise errors.ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                      f'The request body did not arrive within request_timeout_seconds='
                                      f'{self.limits.request_timeout_seconds} '
                                      '(petpark serve --request_timeout_seconds)', http_status=408) from None

    # -- GET -------------------------------------------------------------------------------
    def _model_info(self, match: re.Match) -> Dict[str, Any]:
        name, version, label, metadata = (urllib.parse.unquote(match.group(1)), _version(match.group(2)),
                                          _unquote(match.group(3)), match.group(4))
        if metadata:
            return self._metadata(name, version, label)
        if label is not None:
            version = self.store.resolve_label(name, label)
        records = self.store.status(name, version)
        return {'model_version_status': [{
            'version': str(r.version), 'state': State.Name(r.state),
            'status': {'error_code': 'UNKNOWN' if r.error else 'OK', 'error_message': r.error}} for r in records]}

    def _metadata(self, name: str, version: Optional[int], label: Optional[str]) -> Dict[str, Any]:
        with self.store.acquire(name, version, label) as servable:
            return {
                'model_spec': {'name': name, 'signature_name': '', 'version': str(servable.version)},
                'metadata': {'signature_def': json_format.MessageToDict(
                    servable.signature_def_map(), preserving_proto_field_name=True,
                    including_default_value_fields=True)}}

    # -- POST ------------------------------------------------------------------------------
    def _inference(self, match: re.Match, body: bytes, origin: str) -> Dict[str, Any]:
        name, version, label, method = (urllib.parse.unquote(match.group(1)), _version(match.group(2)),
                                        _unquote(match.group(3)), match.group(4))
        with self.metrics.request(name, method, 'REST') as labels:
            return self._infer(name, version, label, method, body, labels, origin)

    def _infer(self, name: str, version: Optional[int], label: Optional[str], method: str, body: bytes,
               labels: dict, origin: str) -> Dict[str, Any]:
        document = json_tensor.parse_body(body, self.limits)
        signature_name = document.get('signature_name')
        if signature_name is not None and not isinstance(signature_name, str):
            raise errors.invalid_argument("'signature_name' must be a string")
        with self.store.acquire(name, version, label) as servable:
            labels['version'] = str(servable.version)
            signature = signature_name or DEFAULT_SIGNATURE
            if method == 'predict':
                inputs, row_format = json_tensor.request_to_inputs(
                    document, servable.signature(signature_name), self.limits)
                self.limits.check_inputs(inputs)
                start = time.perf_counter()
                outputs = servable.run(signature_name, inputs)
                micros = int((time.perf_counter() - start) * 1e6)
                self.metrics.served(name, rows_of(inputs), origin)
                self.request_logs.predict(name, servable.version, signature,
                                          as_signature_types(inputs, servable.signature(signature_name)), outputs, origin,
                                          micros=micros)
                return json_tensor.outputs_to_response(outputs, row_format)
            alias = servable.examples_signature(signature_name, CLASSIFY_METHOD if method == 'classify' else REGRESS_METHOD)
            examples = np.array(json_tensor.examples_from_json(document, self.limits), dtype=object)
            self.limits.check_inputs({alias: examples})
            outputs = servable.run(signature_name, {alias: examples})
            self.metrics.served(name, len(examples), origin)
            if method == 'regress':
                return {'results': np.reshape(outputs['outputs'], [-1]).tolist()}
            results = classification_results(outputs)
            self.request_logs.classify(name, servable.version, signature, list(examples), results, origin)
            return {'results': results}


def _unquote(value: Optional[str]) -> Optional[str]:
    return urllib.parse.unquote(value) if value is not None else None


def _version(digits: Optional[str]) -> Optional[int]:
    """A version from the URL: TF Serving's versions are int64."""
    if digits is None:
        return None
    if len(digits) > 19 or int(digits) > INT64_MAX:
        raise errors.invalid_argument(f'Failed to convert version: {digits[:30]}{"..." if len(digits) > 30 else ""} '
                                      'to numeric.')
    return int(digits)


async def _read_at_most(stream, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in stream.iter_any():
        size += len(chunk)
        if size > limit:
            raise _too_large(f'over {limit}', limit)
        chunks.append(chunk)
    return b''.join(chunks)


def _too_large(size, limit: int) -> errors.ServingError:
    return errors.ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f'The request body is {size} bytes, above the server limit max_request_bytes={limit} '
                               '(petpark serve --max_request_bytes)', http_status=413)
