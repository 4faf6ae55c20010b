"""petpark serve's request logs: REST and gRPC log the same record for the same input, the camera a
request names travels with it, and a log directory that fails never fails a request."""
import os
import subprocess

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from petpark.serving import errors, request_logging
from petpark.serving.concurrency import InferencePool
from petpark.serving.grpc_service import GrpcServer
from petpark.serving.limits import Limits
from petpark.serving.metrics import ServingMetrics
from petpark.serving.model_store import validate_config
from petpark.serving.server import RestServer
from tests.serving.model_fixtures import serve_linear_model

MODEL = 'half_plus_two'


def logging_config(path, prefix, rate=1.0):
    path.write_text(f'sampling_config {{ sampling_rate: {rate} }}\n'
                    f'log_collector_config {{ type: "file" filename_prefix: "{prefix}" }}\n')
    return str(path)


@pytest.fixture
def servers(tmp_path):
    """A store, its REST and gRPC servers, both logging every request to tmp_path/logs."""
    store = serve_linear_model(str(tmp_path / 'model'))
    logs = request_logging.ServingLog(logging_config(tmp_path / 'logging.config', tmp_path / 'logs' / MODEL))
    metrics = ServingMetrics()
    metrics.request_log_counts = logs.counts
    pool = InferencePool(4, 16)
    grpc_server = GrpcServer(store, '127.0.0.1', 0, metrics, pool, Limits(), logs).start()
    rest = RestServer(store, '127.0.0.1', 0, metrics, '/metrics', pool, Limits(), logs).start()
    channel = grpc.insecure_channel(f'127.0.0.1:{grpc_server.port}')
    yield {'rest': f'http://127.0.0.1:{rest.port}', 'stub': prediction_service_pb2_grpc.PredictionServiceStub(channel),
           'logs': logs, 'folder': tmp_path / 'logs', 'metrics': metrics}
    channel.close()
    rest.stop()
    grpc_server.stop(0)
    pool.shutdown()
    logs.close()
    store.stop()


def records(folder):
    files = sorted(str(folder / name) for name in os.listdir(folder) if name.endswith('.tfrecord')) \
        if folder.exists() else []
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]


def without_time(log):
    copy = prediction_log_pb2.PredictionLog()
    copy.CopyFrom(log)
    copy.log_metadata.timestamp_secs = 0
    return copy


def test_rest_and_grpc_log_the_same_record_for_the_same_input(servers):
    answer = requests.post(f"{servers['rest']}/v1/models/{MODEL}:predict", json={'instances': [1.0, 2.0]},
                           headers={'x-petpark-camera': 'cam-03'})
    assert answer.status_code == 200, answer.text
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs['x'].CopyFrom(tf.make_tensor_proto([1.0, 2.0], dtype=tf.float32))
    servers['stub'].Predict(request, timeout=30, metadata=[('x-petpark-camera', 'cam-03')])
    servers['logs'].close()
    rest_record, grpc_record = records(servers['folder'])
    assert without_time(rest_record) == without_time(grpc_record)
    assert rest_record.log_metadata.request_origin == 'cam-03' and rest_record.log_metadata.model_spec.version.value == 123
    assert rest_record.predict_log.request.model_spec.signature_name == 'serving_default'
    assert tf.make_ndarray(rest_record.predict_log.response.outputs['y']).tolist() == [2.5, 3.0]
    assert rest_record.log_metadata.sampling_config.sampling_rate == 1.0


def test_classify_calls_are_logged_with_their_examples_and_classes(servers):
    body = {'signature_name': 'classify_x_to_y', 'examples': [{'x': 4.0}]}
    assert requests.post(f"{servers['rest']}/v1/models/{MODEL}:classify", json=body).status_code == 200
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL, 'classify_x_to_y'
    request.input.example_list.examples.add().features.feature['x'].float_list.value.append(4.0)
    servers['stub'].Classify(request, timeout=30)
    servers['logs'].close()
    rest_record, grpc_record = records(servers['folder'])
    assert without_time(rest_record) == without_time(grpc_record)
    logged = rest_record.classify_log
    assert logged.request.input.example_list.examples[0].features.feature['x'].float_list.value == [4.0]
    assert logged.response.result.classifications[0].classes[0].score == pytest.approx(4.0)


def test_the_camera_of_each_request_is_counted_and_logs_are_counted_in_the_metrics(servers):
    for camera in ('cam-01', 'cam-01', 'cam-02', ''):
        headers = {'x-petpark-camera': camera} if camera else {}
        assert requests.post(f"{servers['rest']}/v1/models/{MODEL}:predict", json={'instances': [1.0]},
                             headers=headers).status_code == 200
    servers['logs'].close()
    scrape = requests.get(f"{servers['rest']}/metrics").text
    assert f':petpark:serving:camera_requests{{model_name="{MODEL}",camera="cam-01"}} 2' in scrape
    assert f':petpark:serving:camera_requests{{model_name="{MODEL}",camera="cam-02"}} 1' in scrape
    assert f':tensorflow:serving:request_log_count{{model_name="{MODEL}",status="OK"}} 4' in scrape
    assert ':tensorflow:serving:request_example_counts_count{model_name="half_plus_two"} 4.0' in scrape


def test_a_read_only_log_folder_fails_no_request_and_every_drop_is_counted(servers, tmp_path):
    if os.geteuid() != 0:
        pytest.skip('a read-only mount needs root')
    folder = tmp_path / 'readonly'
    folder.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64k,ro', 'tmpfs', str(folder)]).returncode:
        pytest.skip('cannot mount a tmpfs here')
    try:
        config = logging_config(tmp_path / 'logging.config', folder / MODEL)
        os.utime(config, (1, 1))  # a new modification time: the change is seen
        assert servers['logs'].reload() == 'reloaded'
        for value in range(20):
            answer = requests.post(f"{servers['rest']}/v1/models/{MODEL}:predict", json={'instances': [float(value)]})
            assert answer.status_code == 200
        servers['logs'].close()
        _, dropped = servers['logs'].counts()
        assert dropped == {(MODEL, 'read_only'): 20}
        assert 'status="read_only"} 20' in requests.get(f"{servers['rest']}/metrics").text
    finally:
        subprocess.run(['umount', str(folder)])


def test_a_changed_configuration_is_taken_and_a_bad_one_keeps_the_one_in_force(servers, tmp_path):
    logs = servers['logs']
    config = logging_config(tmp_path / 'logging.config', servers['folder'] / MODEL, rate=0.0)
    os.utime(config, (2, 2))
    assert logs.reload() == 'reloaded' and logs.sampling_rate == 0.0
    (tmp_path / 'logging.config').write_text('sampling_config { sampling_rate: 7 }')
    os.utime(config, (3, 3))
    result = logs.reload()
    assert result.startswith('kept the configuration in force') and 'between 0 and 1' in result
    assert logs.sampling_rate == 0.0 and logs.reload() == 'unchanged'
    requests.post(f"{servers['rest']}/v1/models/{MODEL}:predict", json={'instances': [1.0]})
    logs.close()
    assert records(servers['folder']) == []  # rate 0: nothing sampled


@pytest.mark.parametrize('text,message', [
    ('sampling_config { sampling_rate: 1.5 }', 'sampling_rate must be between 0 and 1'),
    ('log_collector_config { type: "kafka" filename_prefix: "/x" }', 'type .kafka. is not supported'),
    ('sampling_config { sampling_rate: 0.5 }', 'filename_prefix is empty'),
    ('sampling_confg { }', 'Error parsing text-format tensorflow.serving.LoggingConfig'),
])
def test_a_bad_logging_config_is_refused_naming_the_problem(tmp_path, text, message):
    path = tmp_path / 'logging.config'
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        request_logging.read_logging_config(str(path))


def test_a_logging_config_inside_models_config_is_refused_as_tf_serving_does():
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name='petpark', base_path='/models/petpark')
    model.logging_config.sampling_config.sampling_rate = 0.1
    with pytest.raises(errors.ServingError, match='No request-logger-creator provided'):
        validate_config(config)
