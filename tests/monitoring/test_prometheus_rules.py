"""The shipped Prometheus and Alertmanager files, checked by the real tools: promtool and amtool
accept them, and `promtool test rules` shows each alert firing on made-up series that breach its
threshold and staying silent on series that do not (with the production durations: promtool
simulates the time)."""
import os
import subprocess

import pytest
import yaml

from tests.monitoring.prometheus_fixtures import (ALERTMANAGER_CONFIG, PROMETHEUS_CONFIG, RULES, alertmanager_config_for_test,
                                                  binary, prometheus_config_for_test, ranges, rules, scaled_rules,
                                                  seconds)

SERVING = 'model_name="petpark",version="1",API="predict",entrypoint="REST"'
MONITOR = 'model_name="petpark",version="7",job="petpark-monitor",instance="monitor:9847"'
LOOP = 'model_name="petpark",job="petpark-monitor",instance="monitor:9847"'


def run(*command, cwd=None):
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=cwd)


def test_promtool_and_amtool_accept_the_shipped_files():
    promtool, amtool = binary('promtool'), binary('amtool')
    checked = run(promtool, 'check', 'rules', RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f'SUCCESS: {len(rules())} rules found' in checked.stdout
    checked = run(promtool, 'check', 'config', PROMETHEUS_CONFIG)  # also loads rules.yml, relative to it
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert 'SUCCESS: 1 rule files found' in checked.stdout
    checked = run(amtool, 'check-config', ALERTMANAGER_CONFIG)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert '1 inhibit rules' in checked.stdout and '1 receivers' in checked.stdout


def test_promtool_rejects_a_broken_rule(tmp_path):
    """The check above can fail: a rule file with a PromQL error does not pass."""
    broken = tmp_path / 'rules.yml'
    broken.write_text(open(RULES).read().replace('sum by (model_name) (rate(', 'sum by (model_name) (rate((', 1))
    checked = run(binary('promtool'), 'check', 'rules', str(broken))
    assert checked.returncode != 0 and 'parse error' in (checked.stdout + checked.stderr)


def test_every_rule_is_explained_and_ranges_span_many_scrapes():
    with open(PROMETHEUS_CONFIG) as f:
        scrape = seconds(yaml.safe_load(f)['global']['scrape_interval'])
    text = open(RULES).read()
    for rule in rules():
        assert {'alert', 'expr', 'labels', 'annotations'} <= set(rule), rule
        assert rule['labels'].get('severity') in ('warning', 'critical'), rule['alert']
        assert rule['annotations'].get('summary') and rule['annotations'].get('description'), rule['alert']
        # the comment block right above the rule says why its thresholds are what they are
        before = text[:text.index(f"- alert: {rule['alert']}\n")].rstrip().splitlines()
        assert before[-1].strip().startswith('#'), f"{rule['alert']} has no comment above it"
        for found in ranges(rule['expr']):
            assert found >= 20 * scrape, f"{rule['alert']}: a range of {found:g} s is under 20 scrapes of {scrape:g} s"


def test_the_copies_a_test_runs_are_valid_too(tmp_path):
    """The chain test's copies (durations scaled down, its ports) pass the same checks."""
    scaled_rules(str(tmp_path / 'rules.yml'), 60)
    prometheus_config_for_test(str(tmp_path / 'prometheus.yml'), str(tmp_path / 'rules.yml'), '127.0.0.1:9093',
                               {'petpark-serving': '127.0.0.1:8501', 'petpark-monitor': '127.0.0.1:9847'})
    alertmanager_config_for_test(str(tmp_path / 'alertmanager.yml'), 'http://127.0.0.1:1/alerts', 60)
    scaled = yaml.safe_load((tmp_path / 'rules.yml').read_text())['groups'][0]['rules'][0]
    assert scaled['for'] == '5000ms' and '[5000ms]' in scaled['expr']
    for command in (('promtool', 'check', 'config', 'prometheus.yml'), ('amtool', 'check-config', 'alertmanager.yml')):
        checked = run(binary(command[0]), *command[1:], cwd=str(tmp_path))
        assert checked.returncode == 0, checked.stdout + checked.stderr


def _series(interval, series, tests, evaluation_interval='1m'):
    return {'rule_files': [RULES], 'evaluation_interval': evaluation_interval,
            'tests': [{'interval': interval, 'input_series': [{'series': s, 'values': v} for s, v in series],
                       'alert_rule_test': [{'eval_time': at, 'alertname': name, 'exp_alerts': expected}
                                           for at, name, expected in tests]}]}


CASES = {
    # 4 requests/s; 0.8% errors, then 20% from minute 31; a quiet model (0.07/s) at 50% errors never alerts
    'error_ratio': _series('1m', [
        (f':tensorflow:serving:request_count{{{SERVING},status="OK"}}', '0+240x60'),
        (f':tensorflow:serving:request_count{{{SERVING},status="INVALID_ARGUMENT"}}', '0+2x30 120+60x29'),
        (':tensorflow:serving:request_count{model_name="quiet",version="1",API="predict",entrypoint="REST",'
         'status="OK"}', '0+2x60'),
        (':tensorflow:serving:request_count{model_name="quiet",version="1",API="predict",entrypoint="REST",'
         'status="INTERNAL"}', '0+2x60'),
    ], [
        ('30m', 'PetparkServingErrorRatioHigh', []),
        ('34m', 'PetparkServingErrorRatioHigh', []),  # pending: not yet 5 minutes
        ('40m', 'PetparkServingErrorRatioHigh', [{
            'exp_labels': {'model_name': 'petpark', 'severity': 'critical'},
            'exp_annotations': {'summary': 'petpark: 20% of requests failed over 5 minutes',
                                'description': 'More than 5% of the requests to petpark have been answered with an '
                                               'error for 5 minutes. Errors per second by status: INVALID_ARGUMENT '
                                               '1.00;'}}]),
    ]),
    # 600 requests/min; 0.2% above 0.5 s, then 5% between 0.5 s and 2 s from minute 31
    'latency': _series('1m', [
        (f':tensorflow:serving:request_latency_bucket{{{SERVING},le="500000"}}', '0+599x30 18540+570x29'),
        (f':tensorflow:serving:request_latency_bucket{{{SERVING},le="2000000"}}', '0+600x60'),
        (f':tensorflow:serving:request_latency_bucket{{{SERVING},le="+Inf"}}', '0+600x60'),
        (f':tensorflow:serving:request_latency_count{{{SERVING}}}', '0+600x60'),
    ], [
        ('30m', 'PetparkServingLatencyP99High', []),
        ('40m', 'PetparkServingLatencyP99High', []),  # pending: not yet 10 minutes
        ('50m', 'PetparkServingLatencyP99High', [{
            'exp_labels': {'model_name': 'petpark', 'severity': 'warning'},
            'exp_annotations': {'summary': 'petpark: p99 latency 1.7s, above 1 s',
                                'description': "The 99th percentile of request latency of petpark has been above 1 s "
                                               "(the push gate's bound) for 10 minutes."}}]),
    ]),
    # 100 records/min, 0.5% dropped (queue_full: no alert); from minute 31 the disk is full
    'dropped_records': _series('1m', [
        (':tensorflow:serving:request_log_count{model_name="petpark",status="OK"}', '0+100x30 3000+0x29'),
        (':tensorflow:serving:request_log_count{model_name="petpark",status="queue_full"}', '0+0.5x60'),
        (':tensorflow:serving:request_log_count{model_name="petpark",status="disk_full"}', '0+0x30 100+100x29'),
    ], [
        ('30m', 'PetparkRequestLogRecordsDropped', []),
        ('38m', 'PetparkRequestLogRecordsDropped', []),
        ('50m', 'PetparkRequestLogRecordsDropped', [{
            'exp_labels': {'model_name': 'petpark', 'status': 'disk_full', 'severity': 'warning'},
            'exp_annotations': {'summary': 'petpark: 99.5% of request-log records dropped (disk_full)',
                                'description': 'petpark serve drops request-log records of petpark because of '
                                               'disk_full; monitoring windows miss those frames. disk_full/read_only: '
                                               'free or fix the log directory; queue_full: lower the sampling rate '
                                               'or raise the queue.'}}]),
    ]),
    # camera gate: 12 frames/min for 10 hours, then nothing; camera pond all along
    'camera_silent': _series('1m', [
        (':petpark:serving:camera_requests{model_name="petpark",camera="gate"}', '0+12x600 7200+0x1500'),
        (':petpark:serving:camera_requests{model_name="petpark",camera="pond"}', '0+6x2100'),
    ], [
        ('300m', 'PetparkCameraSilent', []),
        ('614m', 'PetparkCameraSilent', []),  # 14 minutes of silence
        ('616m', 'PetparkCameraSilent', [{
            'exp_labels': {'model_name': 'petpark', 'camera': 'gate', 'severity': 'warning'},
            'exp_annotations': {'summary': 'camera gate: no frames for petpark for 15 minutes',
                                'description': 'Camera gate sent frames to petpark in the last day and none for at '
                                               'least 15 minutes.'}}]),
        ('2080m', 'PetparkCameraSilent', []),  # silent for more than a day: taken as removed
    ]),
    'monitor': _series('1m', [
        (f'petpark_monitor_verdict{{{MONITOR}}}', '0x10 1x10'),
        (f'petpark_monitor_check_value{{{MONITOR},check="skew:brightness"}}', '0.3x20'),
        (f'petpark_monitor_check_threshold{{{MONITOR},check="skew:brightness"}}', '0.1x20'),
        (f'petpark_monitor_check_value{{{MONITOR},check="drift:width"}}', '0.01x20'),
        (f'petpark_monitor_check_threshold{{{MONITOR},check="drift:width"}}', '0.05x20'),
        (f'petpark_monitor_estimated_accuracy{{{MONITOR}}}', '0.94x10 0.90x10'),
        (f'petpark_monitor_evaluated_accuracy{{{MONITOR}}}', '0.95x20'),
        (f'petpark_monitor_last_success_timestamp_seconds{{{LOOP}}}', '0+60x5 300x30'),
        (f'petpark_monitor_interval_seconds{{{LOOP}}}', '60x35'),
        (f'petpark_monitor_consecutive_failures{{{LOOP}}}', '0 1 2 3 3 0x30'),
        ('up{job="petpark-monitor",instance="monitor:9847"}', '1x5 0x15'),
        ('up{job="petpark-serving",instance="serving:8501"}', '0x20'),
    ], [
        ('5m', 'PetparkMonitorWindowBreached', []),
        ('15m', 'PetparkMonitorWindowBreached', [{
            'exp_labels': {'model_name': 'petpark', 'version': '7', 'model': 'petpark', 'severity': 'warning',
                           'job': 'petpark-monitor', 'instance': 'monitor:9847'},
            'exp_annotations': {
                'summary': 'petpark 7: the last monitoring window breached',
                'description': "Checks above their calibrated thresholds: skew:brightness 0.300; the window's report "
                               'is under <home>/monitoring/petpark/7/.'}}]),
        ('5m', 'PetparkMonitorEstimatedAccuracyLow', []),
        ('15m', 'PetparkMonitorEstimatedAccuracyLow', [{
            'exp_labels': {'model_name': 'petpark', 'version': '7', 'model': 'petpark', 'severity': 'warning',
                           'job': 'petpark-monitor', 'instance': 'monitor:9847'},
            'exp_annotations': {'summary': 'petpark 7: estimated accuracy 0.900',
                                'description': "Estimated from the last window's slice shares without labels, more "
                                               "than 0.02 below the version's evaluated accuracy. Label the window's "
                                               'frames (PETPARK_MONITOR_REVIEW_DIR) to know.'}}]),
        ('12m', 'PetparkMonitorStale', []),  # stale since minute 8, for 5 minutes: not yet
        ('20m', 'PetparkMonitorStale', [{
            'exp_labels': {'model_name': 'petpark', 'model': 'petpark', 'severity': 'warning',
                           'job': 'petpark-monitor', 'instance': 'monitor:9847'},
            'exp_annotations': {'summary': 'petpark: no monitoring window completed for 15m 0s',
                                'description': 'The monitor runs but no window completed for 3 of its intervals; '
                                               'see its log.'}}]),
        ('2m', 'PetparkMonitorFailing', []),
        ('4m', 'PetparkMonitorFailing', [{
            'exp_labels': {'model_name': 'petpark', 'model': 'petpark', 'severity': 'warning',
                           'job': 'petpark-monitor', 'instance': 'monitor:9847'},
            'exp_annotations': {'summary': 'petpark: the last 3 monitoring windows failed',
                                'description': 'The monitor retries with backoff; its log says why the windows fail.'}}]),
        ('8m', 'PetparkMonitorDown', []),
        ('12m', 'PetparkMonitorDown', [{
            'exp_labels': {'job': 'petpark-monitor', 'instance': 'monitor:9847', 'severity': 'warning'},
            'exp_annotations': {'summary': 'petpark monitor at monitor:9847 is down',
                                'description': 'Prometheus cannot scrape `petpark monitor --metrics-port`; nothing '
                                               'checks the served frames.'}}]),
    ]),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_each_alert_fires_on_a_breach_and_not_on_healthy_series(case, tmp_path):
    path = tmp_path / 'test.yml'
    path.write_text(yaml.safe_dump(CASES[case], sort_keys=False))
    tested = run(binary('promtool'), 'test', 'rules', str(path))
    assert tested.returncode == 0 and 'SUCCESS' in tested.stdout, tested.stdout + tested.stderr


def test_the_rule_tests_cover_every_alert_and_can_fail(tmp_path):
    covered = {name for case in CASES.values() for test in case['tests'] for name in
               (t['alertname'] for t in test['alert_rule_test'])}
    assert covered == {rule['alert'] for rule in rules()}
    # with the error-ratio threshold raised above the induced 20%, the same test fails
    strict = tmp_path / 'rules.yml'
    strict.write_text(open(RULES).read().replace(') > 0.05\n', ') > 0.5\n', 1))
    case = dict(CASES['error_ratio'], rule_files=[str(strict)])
    path = tmp_path / 'test.yml'
    path.write_text(yaml.safe_dump(case, sort_keys=False))
    tested = run(binary('promtool'), 'test', 'rules', str(path))
    assert tested.returncode != 0 and 'PetparkServingErrorRatioHigh' in tested.stdout + tested.stderr, tested.stdout


def test_the_files_are_where_the_readme_says():
    readme = open(os.path.join(os.path.dirname(RULES), '..', 'README.md')).read()
    for name in ('prometheus/rules.yml', 'prometheus/prometheus.yml', 'prometheus/alertmanager.yml'):
        assert name in readme, name


def test_prometheus_scrapes_where_the_server_and_the_monitor_expose_metrics():
    from petpark.serving import config_protos
    with open(PROMETHEUS_CONFIG) as f:
        jobs = {job['job_name']: job for job in yaml.safe_load(f)['scrape_configs']}
    monitoring = config_protos.parse_text(os.path.join(os.path.dirname(RULES), '..', 'monitoring.config'),
                                          config_protos.MonitoringConfig)
    assert jobs['petpark-serving']['metrics_path'] == monitoring.prometheus_config.path
    compose = yaml.safe_load(open(os.path.join(os.path.dirname(RULES), '..', 'docker-compose.yml')))['services']
    (target,) = jobs['petpark-serving']['static_configs'][0]['targets']
    host, port = target.split(':')
    assert host in compose and f'{port}:{port}' in compose[host]['ports']
    assert jobs['petpark-monitor'].get('metrics_path', '/metrics') == '/metrics'  # monitoring/exporter.py serves it
    down = next(rule for rule in rules() if rule['alert'] == 'PetparkMonitorDown')
    assert 'job="petpark-monitor"' in down['expr']
