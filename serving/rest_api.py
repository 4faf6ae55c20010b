"""TF Serving's REST API (model_servers/http_rest_api_handler.cc) on aiohttp."""
import asyncio
import json
import re
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Optional

import numpy as np
from aiohttp import web
from google.protobuf import json_format

from petpark.serving import errors, json_tensor
from petpark.serving.metrics import CONTENT_TYPE, ServingMetrics
from petpark.serving.model_store import ModelStore, State
from petpark.serving.tf_servable import CLASSIFY_METHOD, REGRESS_METHOD, classification_results

MAX_BODY_BYTES = 256 * 1024 * 1024
_PREDICTION = re.compile(r'^/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)$')
_MODEL = re.compile(r'^/v1/models(?:/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?)?(/metadata)?$')


def _json(payload: Dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload), content_type='application/json')


def _error(error: errors.ServingError) -> web.Response:
    return _json({'error': error.message}, error.http_status)


class RestApi:
    """Routes every /v1/ request the way TF Serving does; `app` is the aiohttp application."""

    def __init__(self, store: ModelStore, metrics: ServingMetrics, metrics_path: Optional[str] = None,
                 workers: int = 64):
        self.store = store
        self.metrics, self.metrics_path = metrics, metrics_path
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix='rest-inference')
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app.router.add_route('*', '/{tail:.*}', self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        path = request.raw_path.split('?', 1)[0]
        malformed = errors.invalid_argument(f'Malformed request: {request.method} {path}')
        try:
            if request.method == 'POST':
                match = _PREDICTION.match(path)
                if not match:
                    raise malformed
                body = await request.read()
                return _json(await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._inference, match, body))
            if request.method == 'GET' and self.metrics_path and path == self.metrics_path:
                return web.Response(body=self.metrics.exposition(), headers={'Content-Type': CONTENT_TYPE})
            if request.method == 'GET':
                match = _MODEL.match(path)
                if not match:
                    raise malformed
                if match.group(1) is None:
                    raise errors.invalid_argument('Missing model name in request.')
                return _json(await asyncio.get_running_loop().run_in_executor(self._pool, self._model_info, match))
            raise malformed
        except errors.ServingError as e:
            return _error(e)

    # -- GET -------------------------------------------------------------------------------
    def _model_info(self, match: re.Match) -> Dict[str, Any]:
        name, version, label, metadata = (urllib.parse.unquote(match.group(1)), match.group(2),
                                          _unquote(match.group(3)), match.group(4))
        if metadata:
            return self._metadata(name, version, label)
        if label is not None:
            version = str(self.store.resolve_label(name, label))
        records = self.store.status(name, int(version) if version is not None else None)
        return {'model_version_status': [{
            'version': str(r.version), 'state': State.Name(r.state),
            'status': {'error_code': 'UNKNOWN' if r.error else 'OK', 'error_message': r.error}} for r in records]}

    def _metadata(self, name: str, version: Optional[str], label: Optional[str]) -> Dict[str, Any]:
        with self.store.acquire(name, int(version) if version else None, label) as servable:
            return {
                'model_spec': {'name': name, 'signature_name': '', 'version': str(servable.version)},
                'metadata': {'signature_def': json_format.MessageToDict(
                    servable.signature_def_map(), preserving_proto_field_name=True,
                    including_default_value_fields=True)}}

    # -- POST ------------------------------------------------------------------------------
    def _inference(self, match: re.Match, body: bytes) -> Dict[str, Any]:
        name, version, label, method = (urllib.parse.unquote(match.group(1)), match.group(2),
                                        _unquote(match.group(3)), match.group(4))
        with self.metrics.request(name, method, 'REST') as labels:
            return self._infer(name, version, label, method, body, labels)

    def _infer(self, name: str, version: Optional[str], label: Optional[str], method: str, body: bytes,
               labels: dict) -> Dict[str, Any]:
        document = json_tensor.parse_body(body)
        signature_name = document.get('signature_name')
        if signature_name is not None and not isinstance(signature_name, str):
            raise errors.invalid_argument("'signature_name' must be a string")
        with self.store.acquire(name, int(version) if version else None, label) as servable:
            labels['version'] = str(servable.version)
            if method == 'predict':
                inputs, row_format = json_tensor.request_to_inputs(document, servable.signature(signature_name))
                return json_tensor.outputs_to_response(servable.run(signature_name, inputs), row_format)
            alias = servable.examples_signature(signature_name, CLASSIFY_METHOD if method == 'classify' else REGRESS_METHOD)
            examples = np.array(json_tensor.examples_from_json(document), dtype=object)
            outputs = servable.run(signature_name, {alias: examples})
            if method == 'regress':
                return {'results': np.reshape(outputs['outputs'], [-1]).tolist()}
            return {'results': classification_results(outputs)}


def _unquote(value: Optional[str]) -> Optional[str]:
    return urllib.parse.unquote(value) if value is not None else None
