"""The deployment configuration parses, and its parts agree with each other."""
import os

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

DEPLOY = os.path.join(os.path.dirname(__file__), '..', '..', 'serving', 'deploy')
FLAGS = {'models.config': 'model_config_file', 'batching.config': 'batching_parameters_file',
         'monitoring.config': 'monitoring_config_file'}


def content(text):
    """Lines that matter: no blanks, no comments."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith('#')]


def read(*parts):
    with open(os.path.join(DEPLOY, *parts)) as f:
        return f.read()


def test_models_config_is_a_valid_model_server_config():
    config = text_format.Parse(read('models.config'), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == 'petpark' and model.base_path == '/models/petpark'
    assert model.model_version_policy.latest.num_versions == 2


def test_compose_and_kubernetes_run_the_same_server_flags_and_files():
    compose = yaml.safe_load(read('docker-compose.yml'))['services']['tf-serving']
    deployment = yaml.safe_load(read('kubernetes', 'deployment.yaml'))
    container = deployment['spec']['template']['spec']['containers'][0]
    assert compose['image'] == container['image']
    assert compose['command'] == container['args']
    assert {'8500:8500', '8501:8501'} == set(compose['ports'])
    assert {p['containerPort'] for p in container['ports']} == {8500, 8501}
    configmap = yaml.safe_load(read('kubernetes', 'configmap.yaml'))['data']
    for name, flag in FLAGS.items():
        assert f'--{flag}=/config/{name}' in compose['command']
        assert content(configmap[name]) == content(read(name)), name


def test_monitoring_path_matches_the_scrape_annotation():
    deployment = yaml.safe_load(read('kubernetes', 'deployment.yaml'))
    annotations = deployment['spec']['template']['metadata']['annotations']
    assert f'path: "{annotations["prometheus.io/path"]}"' in read('monitoring.config')


def test_batching_and_monitoring_files_parse_as_tf_serving_protos(tmp_path):
    from petpark.serving import config_protos
    monitoring = config_protos.parse_text(os.path.join(DEPLOY, 'monitoring.config'),
                                          config_protos.MonitoringConfig)
    assert monitoring.prometheus_config.enable and monitoring.prometheus_config.path == '/monitoring/prometheus/metrics'
    batching = config_protos.parse_text(os.path.join(DEPLOY, 'batching.config'),
                                        config_protos.BatchingParameters)
    assert batching.max_batch_size.value == 32 and list(batching.allowed_batch_sizes) == [1, 8, 32]
    bad = tmp_path / 'batching.config'
    bad.write_text('max_batch_size { value: "many" }')
    with pytest.raises(ValueError, match='Error parsing text-format tensorflow.serving.BatchingParameters'):
        config_protos.parse_text(str(bad), config_protos.BatchingParameters)


def test_the_canary_analysis_asks_petpark_monitor_canary_for_its_verdicts():
    from petpark.monitoring import canary
    from petpark.pipeline import cli
    template = yaml.safe_load(read('kubernetes', 'canary-analysis.yaml'))
    assert template['kind'] == 'AnalysisTemplate' and template['apiVersion'] == 'argoproj.io/v1alpha1'
    metrics = {metric['name']: metric for metric in template['spec']['metrics']}
    web = metrics['verdict']
    assert web['successCondition'] == f'result.verdict == "{canary.PASS}"'
    assert web['failureCondition'] == f'result.verdict == "{canary.FAIL}"'
    assert web['provider']['web']['url'] == '{{args.judge-url}}'
    assert [a.get('value') for a in template['spec']['args'] if a['name'] == 'judge-url'][0].endswith(':8502/verdict')
    (judge,) = metrics['recorded-verdict']['provider']['job']['spec']['template']['spec']['containers']
    program, *arguments = judge['command']
    assert program == 'petpark'
    parsed = cli.build_parser().parse_args(arguments)  # the Job's command is one the CLI accepts
    assert parsed.check == 'canary' and parsed.json and not parsed.no_record
    assert canary.EXIT_CODES == {canary.PASS: 0, canary.FAIL: 1, canary.INCONCLUSIVE: 3}  # what the Job's status means
