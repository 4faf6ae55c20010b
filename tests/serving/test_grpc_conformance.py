"""gRPC PredictionService/ModelService against TF Serving's documented codes and messages."""
import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_management_pb2, model_service_pb2_grpc,
                                     prediction_service_pb2_grpc, regression_pb2)

from tests.serving.model_fixtures import linear_predict_request, make_server, serve_linear_model

VERSION = 123


@pytest.fixture(scope='module')
def channel(tmp_path_factory):
    store = serve_linear_model(str(tmp_path_factory.mktemp('grpc_models') / 'half_plus_two'), version=VERSION)
    server, port = make_server(store, '127.0.0.1', 0)
    server.start()
    with grpc.insecure_channel(f'127.0.0.1:{port}') as channel:
        yield channel
    server.stop(grace=None)


def test_predict_fills_model_spec(channel):
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(linear_predict_request(), timeout=10)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs['y']), [2.5, 3.0])
    assert response.model_spec.name == 'half_plus_two'
    assert response.model_spec.signature_name == 'serving_default'
    assert response.model_spec.version.value == VERSION


def test_predict_by_label_and_output_filter(channel):
    request = linear_predict_request()
    request.model_spec.version_label = 'stable'
    request.output_filter.append('y')
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
    assert list(response.outputs) == ['y']
    request.output_filter[:] = ['nope']
    with pytest.raises(grpc.RpcError) as error:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def rpc_error(call, request):
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=10)
    return error.value.code(), error.value.details()


def test_predict_errors(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    assert rpc_error(stub.Predict, linear_predict_request(name='')) == (
        grpc.StatusCode.INVALID_ARGUMENT, 'ModelSpec has no name specified.')
    assert rpc_error(stub.Predict, linear_predict_request(name='nope')) == (
        grpc.StatusCode.NOT_FOUND, 'Servable not found for request: Latest(nope)')
    request = linear_predict_request()
    request.model_spec.version.value = 7
    assert rpc_error(stub.Predict, request) == (
        grpc.StatusCode.NOT_FOUND, 'Servable not found for request: Specific(half_plus_two, 7)')
    request = linear_predict_request()
    request.model_spec.version_label = 'canary'
    assert rpc_error(stub.Predict, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert rpc_error(stub.Predict, linear_predict_request(signature='nope'))[0] == grpc.StatusCode.FAILED_PRECONDITION
    request = linear_predict_request()
    request.inputs['extra'].CopyFrom(tf.make_tensor_proto(np.array([1.0], dtype=np.float32)))
    code, details = rpc_error(stub.Predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and 'extra' in details


def test_classify_and_regress(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = 'half_plus_two', 'classify_x_to_y'
    request.input.example_list.examples.add().features.feature['x'].float_list.value.append(2.0)
    response = stub.Classify(request, timeout=10)
    assert response.result.classifications[0].classes[0].score == pytest.approx(3.0)
    regression = regression_pb2.RegressionRequest()
    regression.model_spec.name, regression.model_spec.signature_name = 'half_plus_two', 'regress_x_to_y'
    regression.input.example_list.examples.add().features.feature['x'].float_list.value.append(4.0)
    assert stub.Regress(regression, timeout=10).result.regressions[0].value == pytest.approx(4.0)


def test_metadata(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = 'half_plus_two'
    assert rpc_error(stub.GetModelMetadata, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    request.metadata_field.append('signature_def')
    response = stub.GetModelMetadata(request, timeout=10)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata['signature_def'].Unpack(signatures)
    assert signatures.signature_def['classify_x_to_y'].method_name == 'tensorflow/serving/classify'
    assert response.model_spec.version.value == VERSION


def test_model_status_and_reload(channel, tmp_path):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = 'half_plus_two'
    status = stub.GetModelStatus(request, timeout=10).model_version_status
    assert [(s.version, s.state) for s in status] == [(VERSION, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    bad = model_management_pb2.ReloadConfigRequest()
    bad.config.model_config_list.config.add(name='half_plus_two', base_path='relative')
    assert rpc_error(stub.HandleReloadConfigRequest, bad)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.GetModelStatus(request, timeout=10).model_version_status[0].state == \
        get_model_status_pb2.ModelVersionStatus.AVAILABLE  # the old config still serves


def test_predict_answers_in_the_typed_fields_as_tf_serving_does(channel):
    """TF Serving fills float_val/string_val/int64_val (AsProtoField); many clients read only those."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(linear_predict_request(values=(1.0, 2.0, 4.0)), timeout=10)
    y = response.outputs['y']
    assert list(y.float_val) == [2.5, 3.0, 4.0] and y.tensor_content == b''
    assert [d.size for d in y.tensor_shape.dim] == [3]
    request = linear_predict_request(signature='echo')
    del request.inputs['x']
    request.inputs['text'].CopyFrom(tf.make_tensor_proto([b'cat', 'dög'.encode()]))
    request.inputs['count'].CopyFrom(tf.make_tensor_proto(np.array([2, 5], dtype=np.int64)))
    outputs = stub.Predict(request, timeout=10).outputs
    assert list(outputs['text_bytes'].string_val) == [b'cat', 'dög'.encode()]
    assert list(outputs['count'].int64_val) == [4, 10]
    assert tf.make_ndarray(outputs['count']).tolist() == [4, 10]  # and tf.make_ndarray still reads it


@pytest.mark.parametrize('array', [
    np.array([[1.5, -2.0]], dtype=np.float32), np.array([1.5], dtype=np.float64), np.array([3], dtype=np.int32),
    np.array([[7]], dtype=np.uint8), np.array([True, False]), np.array([1.5, 2.0], dtype=np.float16),
    np.array([1 + 2j], dtype=np.complex64), np.array([[b'a', b'bc']], dtype=object), np.zeros((0, 2), np.float32)])
def test_typed_field_tensors_round_trip(array):
    from petpark.serving.tensor_proto import as_proto_field
    proto = as_proto_field(array)
    assert proto.tensor_content == b'' or array.size == 0
    back = tf.make_ndarray(proto)
    assert back.shape == array.shape and back.tolist() == array.tolist()
