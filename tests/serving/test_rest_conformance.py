"""REST API against TF Serving's documented behaviour (../shared/TF_SERVING_API.md),
on a half_plus_two SavedModel built here (y = 0.5 x + 2, with classify/regress signatures)."""
import base64
import json
import os
import shutil
import subprocess
import time

import pytest
import requests

from petpark.serving.ports import free_port
from petpark.serving.server import RestServer
from tests.serving.model_fixtures import build_linear_model, serve_linear_model

VERSION = 123
TF_SERVING = shutil.which('tensorflow_model_server')



def start_tensorflow_model_server(base: str) -> tuple:
    """The real TF Serving on the same fixture; (process, url)."""
    config = os.path.join(os.path.dirname(base), 'models.config')
    with open(config, 'w') as f:
        f.write('model_config_list { config { name: "half_plus_two" base_path: "%s" model_platform: "tensorflow" '
                'version_labels { key: "stable" value: %d } } }' % (base, VERSION))
    grpc_port, port = free_port(), free_port()
    process = subprocess.Popen([TF_SERVING, f'--port={grpc_port}', f'--rest_api_port={port}', f'--model_config_file={config}',
                                '--allow_version_labels_for_unavailable_models'],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f'http://127.0.0.1:{port}'
    for _ in range(120):
        try:
            if requests.get(f'{url}/v1/models/half_plus_two', timeout=1).ok:
                return process, url
        except requests.ConnectionError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError('tensorflow_model_server did not start')


@pytest.fixture(scope='module', params=['petpark serve', 'tensorflow_model_server'])
def server(request, tmp_path_factory):
    """Each test runs against our server and, where it is installed, TF Serving itself."""
    base = str(tmp_path_factory.mktemp('models') / 'half_plus_two')
    if request.param == 'tensorflow_model_server':
        if TF_SERVING is None:
            pytest.skip('tensorflow_model_server is not on PATH')
        build_linear_model(os.path.join(base, str(VERSION)))
        process, url = start_tensorflow_model_server(base)
        yield url
        process.kill()
        return
    store = serve_linear_model(base, version=VERSION)
    rest = RestServer(store, port=0).start()
    yield f'http://127.0.0.1:{rest.port}'
    rest.stop()


def post(server, path, body):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(server + path, data=data, timeout=30)


def test_status(server):
    reply = requests.get(f'{server}/v1/models/half_plus_two', timeout=10)
    assert reply.status_code == 200 and reply.headers['Content-Type'].startswith('application/json')
    assert reply.json() == {'model_version_status': [
        {'version': '123', 'state': 'AVAILABLE', 'status': {'error_code': 'OK', 'error_message': ''}}]}
    assert requests.get(f'{server}/v1/models/half_plus_two/versions/123', timeout=10).status_code == 200
    assert requests.get(f'{server}/v1/models/half_plus_two/labels/stable', timeout=10).status_code == 200


@pytest.mark.parametrize('path,status,message', [
    ('/v1/models/nope', 404, 'Could not find any versions of model nope'),
    ('/v1/models/half_plus_two/versions/7', 404, 'Could not find version 7 of model half_plus_two'),
    ('/v1/models/half_plus_two/labels/canary', 400, 'Unrecognized servable version label: canary'),
    ('/v1/models', 400, 'Missing model name in request.'),
    ('/v1/models/half_plus_two/versions/abc', 400, 'Malformed request: GET /v1/models/half_plus_two/versions/abc'),
    ('/v1/models/half_plus_two/version/1', 400, 'Malformed request'),
    ('/v1/models/half_plus_two:predict', 400, 'Malformed request: GET /v1/models/half_plus_two:predict'),
    ('/v2/models/half_plus_two', 400, 'Malformed request'),
])
def test_get_errors(server, path, status, message):
    reply = requests.get(server + path, timeout=10)
    assert reply.status_code == status
    assert message in reply.json()['error']


def test_put_delete_and_post_to_metadata_are_malformed(server):
    for method in ('PUT', 'DELETE'):
        reply = requests.request(method, f'{server}/v1/models/half_plus_two', timeout=10)
        assert reply.status_code == 400 and reply.json()['error'].startswith(f'Malformed request: {method}')
    reply = post(server, '/v1/models/half_plus_two/metadata', {})
    assert reply.status_code == 400 and 'Malformed request: POST' in reply.json()['error']


def test_metadata(server):
    reply = requests.get(f'{server}/v1/models/half_plus_two/metadata', timeout=10).json()
    assert reply['model_spec'] == {'name': 'half_plus_two', 'signature_name': '', 'version': '123'}
    signatures = reply['metadata']['signature_def']['signature_def']
    default = signatures['serving_default']
    assert default['method_name'] == 'tensorflow/serving/predict'
    assert default['inputs']['x']['dtype'] == 'DT_FLOAT'
    assert default['inputs']['x']['tensor_shape'] == {'dim': [{'size': '-1', 'name': ''}], 'unknown_rank': False}
    assert signatures['classify_x_to_y']['method_name'] == 'tensorflow/serving/classify'


def test_predict_row_and_columnar(server):
    reply = post(server, '/v1/models/half_plus_two:predict', {'instances': [1.0, 2.0, 5.0]})
    assert reply.status_code == 200 and reply.json() == {'predictions': [2.5, 3.0, 4.5]}
    reply = post(server, '/v1/models/half_plus_two/versions/123:predict', {'inputs': [1.0, 2.0]})
    assert reply.json() == {'outputs': [2.5, 3.0]}
    reply = post(server, '/v1/models/half_plus_two/labels/stable:predict', {'instances': [{'x': 4.0}]})
    assert reply.json() == {'predictions': [4.0]}


def test_predict_multiple_outputs_b64_and_bytes_outputs(server):
    text = base64.b64encode(b'\x00\xffcat').decode()
    reply = post(server, '/v1/models/half_plus_two:predict', {
        'signature_name': 'echo', 'instances': [{'text': {'b64': text}, 'count': 3}]})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {'predictions': [{'text_bytes': {'b64': text}, 'count': 6}]}


@pytest.mark.parametrize('body,message', [
    (b'', 'JSON Parse error: The document is empty'),
    (b'{not json', 'JSON Parse error: Invalid value'),
    ({'instances': [1.0], 'inputs': [1.0]}, "only one of 'inputs' or 'instances'"),
    ({'signature_name': 'serving_default'}, "Missing 'inputs' or 'instances' key"),
    ({'instances': []}, "No values in 'instances' array"),
    ({'instances': ['abc']}, 'is not of expected type: float'),
    ({'instances': [[1.0], [1.0, 2.0]]}, 'Expecting tensor size'),
    ({'instances': [{'y': 1.0}]}, "Missing named input 'x'"),
    ({'instances': [{'b64': 'AAAA'}]}, 'is not of expected type: float'),
    ({'signature_name': 'nope', 'instances': [1.0]}, 'Serving signature name: "nope" not found in signature def'),
])
def test_predict_errors(server, body, message):
    reply = post(server, '/v1/models/half_plus_two:predict', body)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()['error']


def test_predict_unknown_model_version_and_label(server):
    reply = post(server, '/v1/models/nope:predict', {'instances': [1.0]})
    assert reply.status_code == 404 and reply.json()['error'] == 'Servable not found for request: Latest(nope)'
    reply = post(server, '/v1/models/half_plus_two/versions/7:predict', {'instances': [1.0]})
    assert reply.status_code == 404 and 'Specific(half_plus_two, 7)' in reply.json()['error']
    reply = post(server, '/v1/models/half_plus_two/labels/canary:predict', {'instances': [1.0]})
    assert reply.status_code == 400 and reply.json()['error'] == 'Unrecognized servable version label: canary'


def test_nan_and_infinity_are_accepted(server):
    reply = post(server, '/v1/models/half_plus_two:predict', b'{"instances": [NaN, Infinity]}')
    assert reply.status_code == 200
    assert reply.text.replace(' ', '') == '{"predictions":[NaN,Infinity]}'


def test_classify_and_regress(server):
    body = {'signature_name': 'classify_x_to_y', 'examples': [{'x': 1.0}, {'x': 3.0}]}
    reply = post(server, '/v1/models/half_plus_two:classify', body)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {'results': [[['', 2.5]], [['', 3.5]]]}
    reply = post(server, '/v1/models/half_plus_two:regress',
                 {'signature_name': 'regress_x_to_y', 'context': {'x': 4.0}, 'examples': [{}]})
    assert reply.json() == {'results': [4.0]}
    reply = post(server, '/v1/models/half_plus_two:classify', {'examples': [{'x': 1.0}]})
    assert reply.status_code == 400 and 'Expected classify signature method_name' in reply.json()['error']


def test_large_body_is_answered_and_server_stays_up(server):
    body = b'{"instances": [' + b'1.0,' * (12 * 1024 * 1024) + b'1.0'  # ~50 MB, unterminated
    reply = post(server, '/v1/models/half_plus_two:predict', body)
    assert reply.status_code == 400 and reply.json()['error'].startswith('JSON Parse error')
    assert requests.get(f'{server}/v1/models/half_plus_two', timeout=10).status_code == 200
