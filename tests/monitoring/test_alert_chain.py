"""The whole alert chain with real processes: `petpark serve` (Prometheus metrics on, with the
shipped monitoring.config) -> a real Prometheus scraping it every second and evaluating the shipped
rules.yml -> a real Alertmanager with the shipped alertmanager.yml -> a webhook receiver here.
Beside the server, the monitor's exporter (monitoring/exporter.py) is scraped too, and the
monitor's own Alerter posts to the same Alertmanager.

Durations: the test runs copies of the shipped files in which every duration is divided by
FACTOR (rule ranges, offsets and `for`, and the route's group_wait, group_interval and
repeat_interval: 5m -> 5 s, 30s -> 0.5 s, 4h -> 4 min); expressions, thresholds, grouping,
send_resolved and inhibitions are the shipped ones, and so are the metrics paths."""
import json
import os
import sys
import threading
import time
import urllib.parse

import pytest
import requests
import yaml

from petpark.monitoring import alerts, exporter
from petpark.serving.ports import free_port
from tests.monitoring.prometheus_fixtures import (ALERTMANAGER_CONFIG, DEPLOY, Processes, WebhookReceiver,
                                                  alertmanager_config_for_test, binary, get_json, poll,
                                                  prometheus_config_for_test, scaled_rules, seconds)

FACTOR = 60
with open(ALERTMANAGER_CONFIG) as _f:
    GROUP_INTERVAL = seconds(yaml.safe_load(_f)['route']['group_interval']) / FACTOR  # 5m shipped: 5 s
MODEL, VERSION = 'half_plus_two', 123
ERROR_ALERT, WINDOW_ALERT = 'PetparkServingErrorRatioHigh', 'PetparkMonitorWindowBreached'


class Traffic:
    """Predict requests to the server in a thread, ~20 a second, bounded in time; while `failing`
    is set, as many malformed ones (INVALID_ARGUMENT) beside them."""

    def __init__(self, url: str, seconds: float = 150):
        self.url, self.failing, self._stop = url, threading.Event(), threading.Event()
        self.sent = {'ok': 0, 'failed': 0, 'unexpected': []}
        self._deadline = time.monotonic() + seconds
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        with requests.Session() as session:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                answer = session.post(self.url, data=json.dumps({'instances': [1.0, 2.0]}), timeout=10)
                self._count('ok', answer, 200)
                if self.failing.is_set():
                    self._count('failed', session.post(self.url, data='{"instances": ["a"]}', timeout=10), 400)
                self._stop.wait(0.05)  # pacing

    def _count(self, kind, answer, expected):
        if answer.status_code == expected:
            self.sent[kind] += 1
        else:
            self.sent['unexpected'].append((answer.status_code, answer.text[:200]))

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=20)


def window_document(verdict: str, window_id: str):
    return {'model_name': MODEL, 'version': str(VERSION), 'verdict': verdict, 'frames': 200, 'window_id': window_id,
            'end': int(time.time()), 'actions': [],
            'reasons': [{'check': 'skew:brightness', 'message': 'skew: brightness 0.310 above 0.100'}]
            if verdict == 'BREACH' else [],
            'numbers': {'skew': {'brightness': {'value': 0.31 if verdict == 'BREACH' else 0.01, 'threshold': 0.1,
                                                'breach': verdict == 'BREACH'}}}}


def test_a_breach_reaches_the_webhook_once_and_its_resolution_too(tmp_path):
    prometheus_binary, alertmanager_binary = binary('prometheus'), binary('prometheus-alertmanager')
    began = time.monotonic()
    timings = {}
    processes = Processes(str(tmp_path))
    receiver = WebhookReceiver()
    gauges = exporter.MonitorExporter(interval_seconds=60)
    gauges.update(window_document('PASS', 'w0'), time.time())
    monitor_metrics = exporter.serve(free_port(), gauges)
    traffic = None
    try:
        # petpark serve first (TensorFlow takes longest to start), on a base path the model arrives in
        base = tmp_path / 'models' / MODEL
        base.mkdir(parents=True)
        grpc_port, rest_port, prometheus_port, alertmanager_port = (free_port() for _ in range(4))
        processes.start('serve', [
            sys.executable, '-c', 'import sys; from petpark.pipeline.cli import main; sys.exit(main())', 'serve',
            f'--model_name={MODEL}', f'--model_base_path={base}', f'--port={grpc_port}', f'--rest_api_port={rest_port}',
            f"--monitoring_config_file={os.path.join(DEPLOY, 'monitoring.config')}"],
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
        scaled_rules(str(tmp_path / 'rules.yml'), FACTOR)
        prometheus_config_for_test(str(tmp_path / 'prometheus.yml'), str(tmp_path / 'rules.yml'),
                                   f'127.0.0.1:{alertmanager_port}',
                                   {'petpark-serving': f'127.0.0.1:{rest_port}',
                                    'petpark-monitor': f'127.0.0.1:{monitor_metrics.port}'})
        alertmanager_config_for_test(str(tmp_path / 'alertmanager.yml'), receiver.url, FACTOR)
        processes.start('alertmanager', [
            alertmanager_binary, f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'alertmanager-data'}", f'--web.listen-address=127.0.0.1:{alertmanager_port}',
            '--cluster.listen-address='])  # no gossip port
        processes.start('prometheus', [
            prometheus_binary, f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prometheus-data'}", f'--web.listen-address=127.0.0.1:{prometheus_port}'])
        prometheus = f'http://127.0.0.1:{prometheus_port}'
        alertmanager = f'http://127.0.0.1:{alertmanager_port}'

        from tests.serving.model_fixtures import build_linear_model, push_like_tfx  # TensorFlow: meanwhile
        build_linear_model(str(tmp_path / 'build'))
        push_like_tfx(str(tmp_path / 'build'), str(base / str(VERSION)))

        status_url = f'http://127.0.0.1:{rest_port}/v1/models/{MODEL}'

        def available():
            processes.check_alive()
            answer = requests.get(status_url, timeout=2)
            return answer.ok and answer.json()['model_version_status'][0]['state'] == 'AVAILABLE'
        poll(available, 120, 'petpark serve serving the model', processes.logs, every=0.3)
        timings['serve_ready_s'] = time.monotonic() - began

        def query(expression):
            body = get_json(f'{prometheus}/api/v1/query?' + urllib.parse.urlencode({'query': expression}))
            return {tuple(sorted(r['metric'].items())): float(r['value'][1]) for r in body['data']['result']}

        def targets_up():
            processes.check_alive()
            return {dict(labels)['job'] for labels, value in query('up').items() if value == 1} == \
                {'petpark-serving', 'petpark-monitor'}
        poll(targets_up, 30, 'Prometheus scraping petpark serve and the monitor', processes.logs)
        poll(lambda: get_json(f'{alertmanager}/api/v2/status')['cluster']['status'] in ('ready', 'disabled'), 30,
             'Alertmanager ready', processes.logs)

        # healthy traffic first: Prometheus sees it, nothing fires
        traffic = Traffic(f'http://127.0.0.1:{rest_port}/v1/models/{MODEL}:predict')
        poll(lambda: query(f'sum(:tensorflow:serving:request_count{{model_name="{MODEL}",status="OK"}}) > 0'), 30,
             'OK requests scraped', processes.logs)

        # the breach: half of the requests fail
        traffic.failing.set()
        breached = time.monotonic()
        firing = receiver.wait_for(lambda: receiver.alerts(ERROR_ALERT, 'firing'), 30,
                                   f'{ERROR_ALERT} at the webhook', processes.logs)
        timings['breach_to_webhook_s'] = firing[0][0] - breached
        notification, alert = firing[0][1], firing[0][2]
        assert alert['labels']['model_name'] == MODEL and alert['labels']['severity'] == 'critical'
        assert notification['status'] == 'firing' and notification['groupLabels']['alertname'] == ERROR_ALERT
        assert 'INVALID_ARGUMENT' in alert['annotations']['description']

        # the breach goes on past a group_interval (5 s scaled), so Alertmanager flushes the group
        # while it fires: a repeat would show there; then it clears
        poll(lambda: time.monotonic() - firing[0][0] > GROUP_INTERVAL + 1, GROUP_INTERVAL + 5, 'the breach held')
        traffic.failing.clear()
        cleared = time.monotonic()

        # meanwhile (Prometheus needs a rate window to see it clear), the monitor's own alert: the
        # Alerter posts a breached window to Alertmanager
        alerter = alerts.Alerter(str(tmp_path / 'alerts.json'), cooldown_seconds=3600,
                                 alertmanager_url=alertmanager)
        posted = time.monotonic()
        sent = alerter.send(alerts.breach_alerts(window_document('BREACH', 'w1'), 'file:///report.html'))
        assert sent == f'1 alert(s) posted to {alertmanager}/api/v2/alerts'
        breach = receiver.wait_for(lambda: receiver.alerts(alerts.ALERT_NAME, 'firing'), 15,
                                   f'{alerts.ALERT_NAME} at the webhook', processes.logs)
        timings['alerter_to_webhook_s'] = breach[0][0] - posted
        assert breach[0][2]['labels']['window'] == 'w1' and breach[0][2]['labels']['check'] == 'skew:brightness'
        # a second breach of the same check within the cooldown (another window) is not posted at all
        again = alerter.send(alerts.breach_alerts(window_document('BREACH', 'w2'), 'file:///report2.html'))
        assert 'within the cooldown' in again
        held = get_json(f'{alertmanager}/api/v2/alerts?' + urllib.parse.urlencode(
            {'filter': f'alertname="{alerts.ALERT_NAME}"'}))
        assert [a['labels']['window'] for a in held] == ['w1']

        # the monitor's gauges say BREACH too: Prometheus fires PetparkMonitorWindowBreached, and
        # Alertmanager inhibits it, since the monitor's own alert for that model and version is active
        gauges.update(window_document('BREACH', 'w1'), time.time())

        def inhibited():
            found = get_json(f'{alertmanager}/api/v2/alerts?' + urllib.parse.urlencode(
                {'filter': f'alertname="{WINDOW_ALERT}"'}))
            return found and found[0]['status']['state'] == 'suppressed' and found[0]['status']['inhibitedBy']
        poll(inhibited, 20, f'{WINDOW_ALERT} at Alertmanager, inhibited', processes.logs)

        # the serving alert's resolution
        resolved = receiver.wait_for(lambda: receiver.alerts(ERROR_ALERT, 'resolved'), 40,
                                     f'{ERROR_ALERT} resolved at the webhook', processes.logs)
        timings['clear_to_resolved_s'] = resolved[0][0] - cleared
        # the resolved notification (send_resolved), and exactly one firing one before it: Alertmanager
        # flushed the group at least twice while it fired (notifications go out on its ticks) and
        # did not say it again
        assert resolved[0][0] - firing[0][0] > 2 * GROUP_INTERVAL - 0.5
        assert len(receiver.alerts(ERROR_ALERT, 'firing')) == 1, receiver.received
        assert len(receiver.alerts(ERROR_ALERT, 'resolved')) == 1, receiver.received
        # the monitor's alert once; the inhibited one never (it would have gone out group_wait after it fired)
        assert len(receiver.alerts(alerts.ALERT_NAME)) == 1, receiver.received
        assert receiver.alerts(WINDOW_ALERT) == []
        names = {alert['labels']['alertname'] for _, body in receiver.received for alert in body['alerts']}
        assert names == {ERROR_ALERT, alerts.ALERT_NAME}, receiver.received  # nothing else fired on this healthy system
        assert traffic.sent['unexpected'] == [] and traffic.sent['failed'] > 0
    except BaseException:
        print(processes.logs(60))
        raise
    finally:
        timings['wall_s'] = time.monotonic() - began
        print('alert chain timings:', json.dumps({k: round(v, 1) for k, v in timings.items()}))
        if traffic is not None:
            traffic.stop()
        processes.stop_all()
        monitor_metrics.stop()
        receiver.stop()
    assert all(process.poll() is not None for process in processes.started)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Loopback requests never go through a proxy from the environment."""
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
