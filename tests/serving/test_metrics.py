"""Prometheus metrics: TF Serving's names, counted per model, version, API and outcome."""
import grpc
import requests
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import prediction_service_pb2_grpc

from petpark.serving.metrics import ServingMetrics
from petpark.serving.server import RestServer
from tests.serving.model_fixtures import linear_predict_request, make_server, serve_linear_model

PATH = '/monitoring/prometheus/metrics'


def test_requests_errors_and_latency_are_exported(tmp_path):
    store = serve_linear_model(str(tmp_path / 'half_plus_two'), version=7)
    metrics = ServingMetrics()
    rest = RestServer(store, port=0, metrics=metrics, metrics_path=PATH).start()
    grpc_server, grpc_port = make_server(store, '127.0.0.1', 0, metrics)
    grpc_server.start()
    base = f'http://127.0.0.1:{rest.port}'
    try:
        for _ in range(3):
            assert requests.post(f'{base}/v1/models/half_plus_two:predict', json={'instances': [1.0]}).ok
        assert requests.post(f'{base}/v1/models/half_plus_two:predict', json={'instances': ['x']}).status_code == 400
        request = linear_predict_request(values=[1.0])
        with grpc.insecure_channel(f'127.0.0.1:{grpc_port}') as channel:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
        reply = requests.get(base + PATH)
    finally:
        rest.stop()
        grpc_server.stop(grace=None)
    assert reply.status_code == 200 and reply.headers['Content-Type'].startswith('text/plain')
    assert '# TYPE :tensorflow:serving:request_count counter' in reply.text
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}
    counts = {(s.labels['entrypoint'], s.labels['status'], s.labels['version']): s.value
              for s in families[':tensorflow:serving:request_count'].samples}
    assert counts == {('REST', 'OK', '7'): 3, ('REST', 'INVALID_ARGUMENT', '7'): 1, ('GRPC', 'OK', '7'): 1}
    latency = [s for s in families[':tensorflow:serving:request_latency'].samples
               if s.name.endswith('_count') and s.labels['entrypoint'] == 'REST']
    assert latency[0].value == 4 and latency[0].labels['API'] == 'predict'


def test_metrics_path_is_absent_without_monitoring_config(tmp_path):
    store = serve_linear_model(str(tmp_path / 'half_plus_two'))
    rest = RestServer(store, port=0).start()
    try:
        reply = requests.get(f'http://127.0.0.1:{rest.port}{PATH}')
    finally:
        rest.stop()
    assert reply.status_code == 400 and reply.json()['error'].startswith('Malformed request: GET')
