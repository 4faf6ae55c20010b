"""The whole pipeline on a tiny synthetic dataset, through the real front doors.

One module fixture runs, in order: `petpark run` (first run), `petpark run` again
(cache), `tfx pipeline create` + `tfx run create` (the tfx CLI path), two runs the Evaluator must
not bless (a worse model more below the first than the allowed drop; the same model below the
accuracy bound and, for one class, below a recall bound), then a new span with an unknown label and
camera id (must stop at AnomaliesGate, pushing nothing).
"""
import csv
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from petpark.modules import features
from petpark.pipeline import synthetic_data
from petpark.pipeline.inspection import summary

pytestmark = pytest.mark.e2e
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
ALL_NODES = {'ImageExampleGen', 'ImportSchemaGen', 'StatisticsGen', 'ExampleValidator', 'AnomaliesGate',
             'Transform', 'Tuner', 'Trainer', 'latest_blessed_model_resolver', 'Evaluator', 'ServingValidator',
             'Pusher', 'OnnxExporter', 'ModelCardGenerator', 'MonitoringBaselineGen'}


def pushed_versions(home, kind='serving'):
    return sorted(os.listdir(os.path.join(home, kind, 'petpark')))


def run_command(args, env):
    result = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=1200)
    return result.returncode, result.stdout + result.stderr


RELEASED = ('serving', 'edge', 'model_cards')  # where pushed versions, edge exports and cards go


def released(home):
    return {kind: pushed_versions(home, kind) for kind in RELEASED}


def gate_run(env, home):
    """A `petpark run` the Evaluator must not bless: its output, MLMD record, and what was released
    before and after it."""
    before = released(home)
    output = run_command([os.path.join(BIN, 'petpark'), 'run'], env)
    return {'output': output, 'run': summary.latest_run(os.path.join(home, 'metadata.sqlite'), 'petpark'),
            'released_before': before, 'released_after': released(home)}


def per_class_figures(output):
    """{class: {'precision', 'recall'}} from a run summary's per-class lines."""
    return {found.group(1): {'precision': float(found.group(2)), 'recall': float(found.group(3))}
            for found in re.finditer(r'^  (\w+) as the positive class: precision (\S+), recall (\S+)$', output, re.M)}


def bound_between_the_classes(figures):
    """(metric, bound, the class below it): halfway between the two classes' recalls (else precisions)."""
    for metric in ('recall', 'precision'):
        values = {name: figures[name][metric] for name in figures if figures[name][metric] == figures[name][metric]}
        if len(values) == 2:
            low, high = sorted(values, key=values.get)
            if values[high] - values[low] >= 0.02:  # the summary's figures have 3 decimals
                return metric, round((values[low] + values[high]) / 2, 3), low
    raise AssertionError(f'the worse model treats both classes alike ({figures}): no bound only one class fails')


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    home = str(tmp_path_factory.mktemp('e2e_home'))
    data = os.path.join(home, 'input')
    synthetic_data.generate(os.path.join(data, 'span-1'), 600, seed=11)
    temp = os.path.join(home, 'tmp')
    os.makedirs(temp)
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ['PATH'], LOCAL_HOME=os.path.join(home, 'tfx_local'),
               TMPDIR=temp, PETPARK_HOME=home, PETPARK_DATA_ROOT=data, PETPARK_INPUT_PATTERN='span-{SPAN}/*/*',
               PETPARK_TUNER_TRIALS='1', PETPARK_TUNER_EPOCHS='1', PETPARK_TUNER_STEPS='8',
               PETPARK_MIN_ACCURACY='0.75')
    metadata = os.path.join(home, 'metadata.sqlite')
    record = {'home': home, 'data': data, 'temp': temp}

    record['first'] = run_command([os.path.join(BIN, 'petpark'), 'run'], env)
    record['first_run'] = summary.latest_run(metadata, 'petpark')
    record['first_versions'] = pushed_versions(home)
    record['first_edge_versions'] = pushed_versions(home, 'edge')

    record['second'] = run_command([os.path.join(BIN, 'petpark'), 'run'], env)
    record['second_run'] = summary.latest_run(metadata, 'petpark')
    record['second_versions'] = pushed_versions(home)
    record['second_edge_versions'] = pushed_versions(home, 'edge')

    record['second_cards'] = sorted(os.listdir(os.path.join(home, 'model_cards', 'petpark')))

    pipeline_file = os.path.join(REPO, 'pipeline', 'runners', 'local.py')
    record['tfx_create'] = run_command([os.path.join(BIN, 'tfx'), 'pipeline', 'create', '--engine', 'local',
                                        '--pipeline_path', pipeline_file], env)
    record['tfx_run'] = run_command([os.path.join(BIN, 'tfx'), 'run', 'create', '--engine', 'local',
                                     '--pipeline_name', 'petpark'], env)
    record['tfx_run_record'] = summary.latest_run(metadata, 'petpark')

    # The Evaluator's gates on their failing side. A worse model (2 training steps; no serving check,
    # which is not what these runs test) against the first one with an allowed drop of 0.1; then the
    # same model from the cache (the Evaluator re-runs: its config changed) with the accuracy bound
    # the first model passed and a recall (or precision) bound between its two classes' figures.
    worse = dict(env, PETPARK_TRAIN_EPOCHS='1', PETPARK_TRAIN_STEPS='2', PETPARK_VALIDATE_SERVING='false')
    record['dropped'] = gate_run(dict(worse, PETPARK_MIN_ACCURACY='0', PETPARK_MAX_ACCURACY_DROP='0.1'), home)
    metric, bound, failing = bound_between_the_classes(per_class_figures(record['dropped']['output'][1]))
    record['class_bound'] = (metric, bound, failing)
    record['below_bounds'] = gate_run(dict(worse, PETPARK_MIN_ACCURACY='0.75', PETPARK_MAX_ACCURACY_DROP='1',
                                           **{f'PETPARK_MIN_CLASS_{metric.upper()}': str(bound)}), home)

    span2 = os.path.join(data, 'span-2')
    shutil.copytree(os.path.join(data, 'span-1'), span2)
    os.makedirs(os.path.join(span2, 'rabbit'))
    shutil.copy(glob.glob(os.path.join(span2, 'cat', '*.jpg'))[0], os.path.join(span2, 'rabbit', 'r1.jpg'))
    with open(os.path.join(span2, synthetic_data.METADATA_FILE), newline='') as f:
        rows = list(csv.DictReader(f))
    rows[0][features.CAMERA_KEY] = 'cam-99'
    with open(os.path.join(span2, synthetic_data.METADATA_FILE), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=synthetic_data.METADATA_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    record['anomalous'] = run_command([os.path.join(BIN, 'petpark'), 'run'], env)
    record['anomalous_run'] = summary.latest_run(metadata, 'petpark')
    return record


def test_first_run_completes_blesses_and_pushes(runs):
    code, output = runs['first']
    assert code == 0, output
    assert set(runs['first_run'].states) == ALL_NODES
    assert set(runs['first_run'].states.values()) == {'COMPLETE'}
    assert 'Blessing: BLESSED' in output and 'Serving check (petpark): passed' in output and 'Pushed: ' in output
    assert '+ Trainer' in output and 'overall' in output and 'lighting=night' in output
    for node in ALL_NODES:  # a progress line, from MLMD, for every node that ran
        assert f'  > {node} ...' in output and f'  + {node} ' in output, node
    assert 'Traceback' not in output and 'WARNING' not in output  # quiet by default
    versions = runs['first_versions']
    assert len(versions) == 1 and versions[0].isdigit()
    assert os.path.isfile(os.path.join(runs['home'], 'serving', 'petpark', versions[0], 'saved_model.pb'))
    blessing = runs['first_run'].output('Evaluator', 'blessing')
    assert os.path.isfile(os.path.join(blessing.uri, 'BLESSED'))


def test_no_run_leaves_a_copy_of_tfx_in_the_temporary_folder(runs):
    leftovers = glob.glob(os.path.join(runs['temp'], '**', 'tfx_ephemeral*'), recursive=True)
    assert runs['first'][0] == 0 and not leftovers


def producer_and_inputs(metadata_path, artifact_id):
    """(id of the execution that first output the artifact, ids of that execution's input artifacts);
    later, cached executions record the same artifact as their output too."""
    import ml_metadata as mlmd
    from tfx.orchestration import metadata
    store = mlmd.MetadataStore(metadata.sqlite_metadata_connection_config(metadata_path))
    producer = min(e.execution_id for e in store.get_events_by_artifact_ids([artifact_id]) if e.type == e.OUTPUT)
    return producer, {e.artifact_id for e in store.get_events_by_execution_ids([producer]) if e.type == e.INPUT}


def test_anomalies_gate_is_in_the_lineage_of_the_transform(runs):
    """ExampleValidator's anomalies -> AnomaliesGate -> validated schema -> Transform, in MLMD's events."""
    metadata_path = os.path.join(runs['home'], 'metadata.sqlite')
    run = runs['first_run']
    gate_output = run.output('AnomaliesGate', 'validated_schema')
    _, transform_inputs = producer_and_inputs(metadata_path, run.output('Transform', 'transform_graph').id)
    assert gate_output.id in transform_inputs
    _, gate_inputs = producer_and_inputs(metadata_path, gate_output.id)
    assert run.output('ExampleValidator', 'anomalies').id in gate_inputs


def test_second_run_comes_from_cache_and_pushes_no_duplicate(runs):
    """Everything up to the Trainer is cached. The Evaluator runs again because its baseline
    input changed (the first run's blessed model now exists); the same model is not re-pushed."""
    code, output = runs['second']
    assert code == 0, output
    states = runs['second_run'].states
    for node in ('ImageExampleGen', 'StatisticsGen', 'ExampleValidator', 'Transform', 'Tuner', 'Trainer'):
        assert states[node] == 'CACHED', (node, states)
    assert states['Evaluator'] == 'COMPLETE' and 'Blessing: BLESSED' in output
    assert runs['second_versions'] == runs['first_versions']
    assert 'cached' in output
    assert runs['second_run'].run_id != runs['first_run'].run_id


def test_the_edge_export_has_the_served_version_number_and_is_not_duplicated(runs):
    assert runs['first_edge_versions'] == runs['first_versions'] == runs['second_edge_versions']
    assert 'Edge (ONNX ' in runs['first'][1] and 'Edge (ONNX ' in runs['second'][1]
    assert runs['second_run'].states['OnnxExporter'] == 'COMPLETE'  # its blessing input is new
    assert pushed_versions(runs['home'], 'edge') == runs['first_versions']


def test_tfx_cli_creates_and_runs_the_same_pipeline(runs):
    code, output = runs['tfx_create']
    assert code == 0 and 'Pipeline "petpark" created successfully' in output, output
    code, output = runs['tfx_run']
    assert code == 0, output
    record = runs['tfx_run_record']
    assert record.run_id not in (runs['first_run'].run_id, runs['second_run'].run_id)
    assert set(record.states) == ALL_NODES
    cacheable = ALL_NODES - {'latest_blessed_model_resolver'}  # resolvers always resolve anew
    assert {record.states[node] for node in cacheable} == {'CACHED'}, record.states


def evaluator_failures(runs, name):
    """{(metric, is_diff, class): value} of the thresholds a gate run failed, after checking it ended
    NOT blessed with nothing pushed, exported or carded."""
    import tensorflow_model_analysis as tfma
    from petpark.components.common import facts
    code, output = runs[name]['output']
    assert code == 0, output
    assert 'Blessing: NOT blessed' in output and 'Pushed: nothing (model not blessed)' in output, output
    assert 'Edge (ONNX' not in output and 'Model card:' not in output
    assert runs[name]['released_after'] == runs[name]['released_before']  # no new served, edge or card version
    assert all(runs[name]['released_before'].values())
    run = runs[name]['run']
    assert run.states['Evaluator'] == 'COMPLETE'
    blessing = run.output('Evaluator', 'blessing')
    assert facts.prop(blessing, 'blessed') == 0 and os.path.isfile(os.path.join(blessing.uri, 'NOT_BLESSED'))
    assert facts.prop(run.output('Pusher', 'pushed_model'), 'pushed') == 0
    assert facts.prop(run.output('OnnxExporter', 'onnx_model'), 'exported') == 0
    assert facts.prop(run.output('ModelCardGenerator', 'model_card'), 'written') == 0
    baselines = [artifact for found in run.outputs['MonitoringBaselineGen'].values() for artifact in found]
    assert baselines and all(facts.prop(artifact, 'written') == 0 for artifact in baselines)
    validation = tfma.load_validation_result(run.output('Evaluator', 'evaluation').uri)
    assert not validation.validation_ok
    return {(f.metric_key.name, f.metric_key.is_diff, features.LABELS[f.metric_key.sub_key.class_id.value]):
            f.metric_value.double_value.value
            for per_slice in validation.metric_validations_per_slice for f in per_slice.failures}


def test_a_candidate_worse_than_the_blessed_model_by_more_than_the_allowed_drop_is_not_blessed(runs):
    failures = evaluator_failures(runs, 'dropped')
    assert runs['dropped']['run'].states['Trainer'] == 'COMPLETE'  # a new, worse model
    assert list(failures) == [('binary_accuracy', True, 'dog')], failures  # the change alone, not the value
    change = failures['binary_accuracy', True, 'dog']
    assert change < -0.1  # the candidate really is more than the allowed drop below the baseline
    assert (f'  failed: binary_accuracy of dog = {change:.3f} (change_threshold {{ absolute {{ value: -0.1 }} '
            'direction: HIGHER_IS_BETTER })') in runs['dropped']['output'][1]


def test_a_candidate_below_the_accuracy_bound_is_not_blessed_and_the_summary_shows_its_figures(runs):
    failures = evaluator_failures(runs, 'below_bounds')
    output = runs['below_bounds']['output'][1]
    assert runs['below_bounds']['run'].states['Trainer'] == 'CACHED'
    accuracy = failures['binary_accuracy', False, 'dog']
    assert accuracy < 0.75 and ('binary_accuracy', True, 'dog') not in failures
    assert f'  failed: binary_accuracy of dog = {accuracy:.3f} (value_threshold {{ lower_bound {{ value: 0.75 }} }})' in output
    # the candidate's figures, not the baseline's (the Evaluator stores both under the same names)
    assert float(re.search(r'^  overall +\d+ +(\S+)', output, re.M).group(1)) == round(accuracy, 3)


def test_a_per_class_bound_fails_on_the_one_class_below_it(runs):
    metric, bound, failing = runs['class_bound']
    failures = evaluator_failures(runs, 'below_bounds')
    per_class = {key: value for key, value in failures.items() if key[0] == metric}
    assert list(per_class) == [(metric, False, failing)], (runs['class_bound'], failures)
    value = per_class[metric, False, failing]
    assert value < bound
    assert (f'  failed: {metric} of {failing} = {value:.3f} (value_threshold {{ lower_bound {{ value: {bound:g} }} }})'
            in runs['below_bounds']['output'][1])


def test_anomalous_span_stops_before_training_and_pushes_nothing(runs):
    code, output = runs['anomalous']
    assert code == 1, output
    assert 'AnomaliesGate FAILED' in output
    assert 'rabbit' in output and 'cam-99' in output
    states = runs['anomalous_run'].states
    assert states['ImageExampleGen'] == 'COMPLETE' and states['AnomaliesGate'] == 'FAILED'
    assert not {'Transform', 'Trainer', 'Pusher'} & set(states)
    assert pushed_versions(runs['home']) == runs['first_versions']


def pushed_model(runs):
    return tf.saved_model.load(os.path.join(runs['home'], 'serving', 'petpark', runs['first_versions'][0]))


def read_split(artifact, split):
    files = glob.glob(os.path.join(artifact.uri, f'Split-{split}', '*.gz'))
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type='GZIP')]


def test_served_prediction_equals_prediction_on_transform_output(runs):
    """No training/serving skew: raw example through serving_default == Transform's pixels through the model."""
    run = runs['first_run']
    raw = {e.features.feature[features.IMAGE_ID_KEY].bytes_list.value[0]: e
           for e in read_split(run.output('ImageExampleGen', 'examples'), 'eval')}
    transformed = read_split(run.output('Transform', 'transformed_examples'), 'eval')[:16]
    size = int(round((len(transformed[0].features.feature[features.IMAGE_XF].int64_list.value) / 3) ** 0.5))
    pixels = np.stack([np.array(e.features.feature[features.IMAGE_XF].int64_list.value, dtype=np.float32)
                       .reshape(size, size, 3) * features.PIXEL_SCALE for e in transformed])
    ids = [e.features.feature[features.IMAGE_ID_XF].bytes_list.value[0] for e in transformed]
    model = pushed_model(runs)
    from_transform = model.signatures[features.PIXELS_SIGNATURE](pixels=tf.constant(pixels))['scores'].numpy()
    served = model.signatures[features.EXAMPLES_SIGNATURE](
        inputs=tf.constant([raw[i].SerializeToString() for i in ids]))['scores'].numpy()
    np.testing.assert_allclose(served, from_transform, atol=1e-5)


def check_probabilities(model, image_files):
    images = [open(path, 'rb').read() for path in image_files]
    examples = [tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[d]))})).SerializeToString()
        for d in images]
    outputs = [model.signatures[features.EXAMPLES_SIGNATURE](inputs=tf.constant(examples))['scores'],
               model.signatures[features.IMAGE_BYTES_SIGNATURE](image_bytes=tf.constant(images))['scores']]
    size = model.signatures[features.PIXELS_SIGNATURE].structured_input_signature[1]['pixels'].shape[1]
    pixels = tf.stack([tf.image.resize(tf.io.decode_image(d, channels=3, expand_animations=False), [size, size],
                                       antialias=True) / 255.0 for d in images])
    outputs.append(model.signatures[features.PIXELS_SIGNATURE](pixels=pixels)['scores'])
    for scores in outputs:
        scores = scores.numpy()
        assert scores.shape == (len(images), 2)
        assert ((scores >= 0) & (scores <= 1)).all()
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)


def test_every_signature_returns_probabilities_for_image_files(runs):
    check_probabilities(pushed_model(runs), sorted(glob.glob(os.path.join(runs['data'], 'span-1', '*', '*.jpg')))[:6])


def test_every_signature_returns_probabilities_for_real_photos(runs, shared_dir):
    photos = sorted(glob.glob(os.path.join(shared_dir, 'data', 'cats_and_dogs_filtered', 'validation', '*', '*.jpg')))
    check_probabilities(pushed_model(runs), photos[:3] + photos[-3:])


@pytest.fixture(scope='module')
def served(runs):
    """The pushed model behind our REST and gRPC servers, as `petpark serve` would run them."""
    from tensorflow_serving.config import model_server_config_pb2
    from petpark.serving import tf_servable
    from petpark.serving.model_store import ModelStore
    from petpark.serving.server import RestServer
    from tests.serving.model_fixtures import make_server
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name='petpark', base_path=os.path.join(runs['home'], 'serving', 'petpark'))
    store = ModelStore(config, tf_servable.load)
    store.start(poll_seconds=0)
    grpc_server, grpc_port = make_server(store, '127.0.0.1', 0)
    grpc_server.start()
    rest = RestServer(store, port=0).start()
    yield {'rest': f'127.0.0.1:{rest.port}', 'grpc': f'127.0.0.1:{grpc_port}'}
    rest.stop()
    grpc_server.stop(grace=None)


def test_petpark_predict_over_rest_and_grpc_matches_the_model(runs, served, capsys):
    from petpark.pipeline import cli
    images = sorted(glob.glob(os.path.join(runs['data'], 'span-1', '*', '*.jpg')))[:4]
    expected = pushed_model(runs).signatures[features.IMAGE_BYTES_SIGNATURE](
        image_bytes=tf.constant([open(p, 'rb').read() for p in images]))['scores'].numpy()
    for flags in ([], ['--grpc']):
        server = served['grpc' if flags else 'rest']
        assert cli.main(['predict', '--server', server, *flags, *images]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 4
        for line, scores in zip(lines, expected):
            path, label, probability = line.split('\t')
            assert label == features.LABELS[int(np.argmax(scores))]
            assert float(probability) == pytest.approx(float(np.max(scores)), abs=1e-3)


def test_classify_api_on_serving_default_and_bad_image_bytes(runs, served):
    import base64
    import requests
    image = sorted(glob.glob(os.path.join(runs['data'], 'span-1', 'dog', '*.jpg')))[0]
    b64 = base64.b64encode(open(image, 'rb').read()).decode()
    url = f"http://{served['rest']}/v1/models/petpark"
    reply = requests.post(url + ':classify', json={'examples': [{features.IMAGE_KEY: {'b64': b64}}]}, timeout=30)
    assert reply.status_code == 200, reply.text
    (result,) = reply.json()['results']
    assert [label for label, _ in result] == list(features.LABELS)
    assert sum(score for _, score in result) == pytest.approx(1.0, abs=1e-5)
    reply = requests.post(url + ':predict', timeout=30, json={
        'signature_name': features.IMAGE_BYTES_SIGNATURE, 'instances': [{'b64': base64.b64encode(b'not an image').decode()}]})
    assert reply.status_code == 400 and reply.json()['error']
    assert requests.get(url, timeout=10).json()['model_version_status'][0]['state'] == 'AVAILABLE'


def petpark_json(runs, *args):
    code, output = run_command([os.path.join(BIN, 'petpark'), *args, '--json', '--home', runs['home']], os.environ)
    assert code == 0, output
    return json.loads(output)


def walk(node):
    yield node
    if isinstance(node['inputs'], dict):
        for found in node['inputs'].values():
            for child in found:
                yield from walk(child)


def test_the_registry_traces_a_pushed_version_to_its_span_and_transform_graph(runs):
    version = runs['first_versions'][0]
    listed = petpark_json(runs, 'models', 'list')
    assert [r['version'] for r in listed] == runs['first_versions']
    record = listed[0]
    assert record['blessing']['blessed'] and record['blessing']['thresholds']
    assert record['serving_check']['blessed'] and record['serving_check']['server'] == 'petpark'
    assert record['serving_check']['latency_p99_ms'] > 0
    assert record['worst_slice']['example_count'] > 0 and record['hyperparameters']
    assert record['data']['span'] == 1 and set(record['data']['splits']) == {'train', 'eval'}
    assert record['code_version'].startswith('git ') and record['edge']['destination'].endswith(version)
    assert 'tfx_user_code_Trainer' in record['trainer_module']
    tree = petpark_json(runs, 'models', 'lineage', version)
    nodes = list(walk(tree))
    assert tree['type'] == 'PushedModel' and tree['properties']['pushed_version'] == version
    assert any(n['type'] == 'Examples' and n['producer'] == 'ImageExampleGen' and n['properties'].get('span') == 1
               for n in nodes)
    assert any(n['type'] == 'TransformGraph' and n['producer'] == 'Transform' for n in nodes)
    assert any(n['type'] == 'Model' and n['producer'] == 'Trainer' for n in nodes)


def test_a_version_promoted_to_canary_then_stable_shows_its_labels(runs):
    version = runs['first_versions'][0]
    promote = [os.path.join(BIN, 'petpark'), 'promote', '--home', runs['home'], '--version', version]
    for label in ('canary', 'canary'):  # the first adds the version to those served
        code, output = run_command(promote + ['--label', label], os.environ)
        assert code == 0, output
    code, output = run_command([os.path.join(BIN, 'petpark'), 'models', 'approve', version, '--home', runs['home'],
                                '--by', 'e2e', '--note', 'the end-to-end test'], os.environ)  # stable needs it
    assert code == 0, output
    code, output = run_command(promote + ['--label', 'stable'], os.environ)
    assert code == 0, output
    assert petpark_json(runs, 'models', 'show', version)['labels'] == ['canary', 'stable']
    code, output = run_command([os.path.join(BIN, 'petpark'), 'models', 'list', '--home', runs['home']], os.environ)
    assert code == 0 and 'canary,stable' in output and version in output, output
    assert 'WARNING' not in output and 'tensorflow' not in output  # quiet


def test_each_pushed_version_has_one_model_card_with_the_evaluators_numbers(runs):
    version = runs['first_versions'][0]
    assert runs['second_cards'] == [version]  # the second run pushed nothing new and wrote no second card
    folder = os.path.join(runs['home'], 'model_cards', 'petpark', version)
    assert {'model_card.md', 'model_card.html', 'facts.json', 'slices.png', 'fairness.png'} <= set(os.listdir(folder))
    evaluation = runs['first_run'].output('Evaluator', 'evaluation')
    overall = dict(summary.slice_metrics(evaluation.uri))['overall']
    with open(os.path.join(folder, 'facts.json')) as f:
        card_facts = json.load(f)
    assert card_facts['metrics']['binary_accuracy'] == overall['binary_accuracy']
    assert len(card_facts['slices']) == len(summary.slice_metrics(evaluation.uri))
    text = open(os.path.join(folder, 'model_card.md')).read()
    for key in ('binary_accuracy', 'precision', 'recall', 'auc'):
        assert f'{overall[key]:.3f}' in text, key
    assert '<table>' in open(os.path.join(folder, 'model_card.html')).read()
    shown = petpark_json(runs, 'models', 'show', version)
    assert shown['model_card']['model_card.md'] == os.path.join(folder, 'model_card.md')
    assert shown['metrics'] == card_facts['metrics'] and shown['slices'] == card_facts['slices']
    assert 'Model card: ' in runs['first'][1]


# The ModelCardGenerator's inputs as the factory wires them: (producer, output key, artifact type name).
CARD_INPUTS = {'pushed_model': ('Pusher', 'pushed_model', 'PushedModel'),
               'evaluation': ('Evaluator', 'evaluation', 'ModelEvaluation'),
               'model_blessing': ('Evaluator', 'blessing', 'ModelBlessing'),
               'examples': ('ImageExampleGen', 'examples', 'Examples'),
               'statistics': ('StatisticsGen', 'statistics', 'ExampleStatistics'),
               'schema': ('AnomaliesGate', 'validated_schema', 'Schema'),
               'hyperparameters': ('Tuner', 'best_hyperparameters', 'HyperParameters'),
               'infra_blessing': ('ServingValidator', 'blessing', 'InfraBlessing'),
               'onnx_model': ('OnnxExporter', 'onnx_model', 'OnnxModel')}


def test_the_model_card_generator_works_on_a_non_local_filesystem(runs, tmp_path, monkeypatch):
    """The first run's card inputs copied to TF's ram:// (as on gs://), the card written there and
    published under a ram:// card destination; read back through fileio. Its facts are those of
    the first run's card. (The other executors: tests/components/test_any_filesystem.py.)"""
    from tfx.dsl.io import fileio
    from tfx.types import standard_artifacts
    from tfx.utils import io_utils
    from petpark.components.common import artifacts
    from petpark.components.model_card import executor
    monkeypatch.chdir(tmp_path)  # a URI written as a local path would land here
    root = f'ram://e2e-{os.getpid()}'
    inputs = {}
    for key, (node, output_key, type_name) in CARD_INPUTS.items():
        recorded = runs['first_run'].output(node, output_key)
        artifact = (getattr(standard_artifacts, type_name, None) or getattr(artifacts, type_name))()
        artifact.set_mlmd_artifact(type(recorded).FromString(recorded.SerializeToString()))
        artifact.uri = f'{root}/inputs/{key}'
        io_utils.copy_dir(recorded.uri, artifact.uri)
        inputs[key] = [artifact]
    recorded = runs['first_run'].parameters['ModelCardGenerator']
    properties = {name: getattr(recorded[name], recorded[name].WhichOneof('value'))
                  for name in ('model_name', 'code_version', 'positive_class_id')}
    properties['card_base_directory'] = f'{root}/published/petpark'
    card = artifacts.ModelCard()
    card.uri = f'{root}/card'
    executor.Executor().Do(inputs, {'model_card': [card]}, properties)

    version = runs['first_versions'][0]
    destination = f'{root}/published/petpark/{version}'
    assert card.get_int_custom_property('written') == 1 and card.get_string_custom_property('card_destination') == destination
    assert fileio.listdir(f'{root}/published/petpark') == [version]  # no staging folder left beside it
    names = ['explanations', 'facts.json', 'fairness.png', 'model_card.html', 'model_card.md', 'slices.png']
    assert sorted(fileio.listdir(destination)) == names == sorted(fileio.listdir(card.uri))
    overlays = fileio.listdir(f'{destination}/explanations')  # the saliency overlays, written through fileio too
    assert overlays and all(name.endswith('.png') for name in overlays)
    card_facts = json.loads(io_utils.read_string_file(f'{destination}/facts.json'))
    with open(os.path.join(runs['home'], 'model_cards', 'petpark', version, 'facts.json')) as f:
        local_facts = json.load(f)
    for section in ('version', 'metrics', 'slices', 'worst_slice', 'blessing', 'serving_check', 'edge', 'hyperparameters'):
        assert card_facts[section] == local_facts[section], section
    assert card_facts['data']['splits'] == local_facts['data']['splits']  # statistics read from ram://
    assert card_facts['schema'] == {'uri': f'{root}/inputs/schema', 'features': local_facts['schema']['features']}
    text = io_utils.read_string_file(f'{destination}/model_card.md')
    assert f"version {version}" in text and f"{local_facts['metrics']['binary_accuracy']:.3f}" in text
    assert '<table>' in io_utils.read_string_file(f'{destination}/model_card.html')
    for plot in ('slices.png', 'fairness.png'):
        with fileio.open(f'{destination}/{plot}', 'rb') as f:
            assert f.read(4) == b'\x89PNG'
    assert not os.path.exists(tmp_path / 'ram:')


def test_the_notebooks_run_headlessly_and_petpark_report_renders_them(runs):
    """Both notebooks execute in a fresh kernel against this home's MLMD (any cell error fails
    the command) and are written as HTML under <home>/reports/."""
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ['PATH'])
    code, output = run_command([os.path.join(BIN, 'petpark'), 'report', '--home', runs['home']], env)
    assert code == 0, output[-3000:]
    reports = os.path.join(runs['home'], 'reports')
    data = open(os.path.join(reports, 'data_validation.html')).read()
    model = open(os.path.join(reports, 'model_analysis.html')).read()
    assert 'spans with statistics: [1, 2]' in data and 'features drifted' in data
    assert 'rabbit' in data and 'features skewed between train and eval' in data
    assert 'BLESSED' in model and 'worst slice:' in model and 'eval photos misclassified' in model
    assert 'brightness_bucket' in model and 'false_positive_rate@0.50' in model


def test_served_frames_darkened_at_night_breach_and_the_report_shows_why(runs, tmp_path):
    """Frames served with request logging (REST, every request logged), half of them darkened as an
    infrared-less night camera would: `petpark monitor` breaches on brightness, its report shows the
    frames that changed most beside what the model looked at, and the window is in the version's lineage."""
    import base64
    import io

    import requests
    from PIL import Image, ImageEnhance
    from tensorflow_serving.config import model_server_config_pb2

    from petpark.pipeline import cli
    from petpark.serving import request_logging, tf_servable
    from petpark.serving.concurrency import InferencePool
    from petpark.serving.limits import Limits
    from petpark.serving.metrics import ServingMetrics
    from petpark.serving.model_store import ModelStore
    from petpark.serving.server import RestServer
    home, version = runs['home'], runs['first_versions'][0]
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name='petpark', base_path=os.path.join(home, 'serving', 'petpark'))
    model.model_version_policy.specific.versions.append(int(version))
    logging_file = tmp_path / 'logging.config'
    logging_file.write_text('sampling_config { sampling_rate: 1.0 } log_collector_config { filename_prefix: "'
                            + os.path.join(home, 'request_logs', 'petpark') + '" }')
    store = ModelStore(config, tf_servable.load)
    store.start(poll_seconds=0)
    logs = request_logging.ServingLog(str(logging_file))
    rest = RestServer(store, '127.0.0.1', 0, ServingMetrics(), '/metrics', InferencePool(2, 8), Limits(), logs).start()
    try:
        url = f'http://127.0.0.1:{rest.port}/v1/models/petpark:predict'
        for index, path in enumerate(sorted(glob.glob(os.path.join(runs['data'], 'span-1', '*', '*.jpg')))[:160]):
            with Image.open(path) as photo:
                frame = ImageEnhance.Brightness(photo.convert('RGB')).enhance(0.3 if index % 2 else 1.0)
                buffer = io.BytesIO()
                frame.save(buffer, 'JPEG')
            body = {'signature_name': features.IMAGE_BYTES_SIGNATURE,
                    'instances': [{'b64': base64.b64encode(buffer.getvalue()).decode()}]}
            requests.post(url, json=body, timeout=30).raise_for_status()
    finally:
        rest.stop()
        logs.close()
        store.stop()
    code = cli.main(['monitor', '--last', '160', '--version', version, '--home', home, '--json'])
    assert code == 1  # BREACH
    (window,) = glob.glob(os.path.join(home, 'monitoring', 'petpark', version, '*-160'))
    document = json.load(open(os.path.join(window, 'report.json')))
    assert document['verdict'] == 'BREACH' and 'explanations' not in document, document.get('explanations')
    assert any('brightness' in reason['message'] for reason in document['reasons']), document['reasons']
    page = open(os.path.join(window, 'report.html')).read()
    assert page.count('alt="why: ') == page.count('src="data:image/jpeg;base64,') >= 1
    assert 'Integrated Gradients' in page
    windows = petpark_json(runs, 'models', 'lineage', version)['monitoring_windows']
    assert [w['verdict'] for w in windows] == ['BREACH']
    code, output = run_command([os.path.join(BIN, 'petpark'), 'models', 'show', version, '--home', home], os.environ)
    assert code == 0 and f"monitoring baseline: {document['baseline']} (" in output, output
