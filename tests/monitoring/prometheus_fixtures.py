"""Real Prometheus, Alertmanager and promtool for tests: the binaries (Debian's packages), the
shipped configs rewritten for a test (its ports, durations scaled down), processes that are always
stopped, and a webhook receiver that records what Alertmanager sends."""
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from typing import Any, Callable, Dict, List, Optional

import pytest
import yaml

from petpark.monitoring import exporter

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(REPO, 'serving', 'deploy')
PROMETHEUS_DIR = os.path.join(DEPLOY, 'prometheus')
RULES = os.path.join(PROMETHEUS_DIR, 'rules.yml')
PROMETHEUS_CONFIG = os.path.join(PROMETHEUS_DIR, 'prometheus.yml')
ALERTMANAGER_CONFIG = os.path.join(PROMETHEUS_DIR, 'alertmanager.yml')
PACKAGES = {'prometheus': 'prometheus', 'promtool': 'prometheus', 'prometheus-alertmanager': 'prometheus-alertmanager',
            'amtool': 'prometheus-alertmanager', 'chromium': 'chromium'}
_UNITS = {'ms': 0.001, 's': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800, 'y': 31536000}
_DURATION = re.compile(r'(\d+)(ms|s|m|h|d|w|y)')


def binary(name: str) -> str:
    """The path of a system binary; skips without it, fails under PETPARK_REQUIRE_SYSTEM_PACKAGES=1
    (`make test`, CI), where scripts/system_packages.sh should have installed it."""
    found = shutil.which(name)
    if found:
        return found
    message = (f'{name} is missing: Debian package {PACKAGES.get(name, name)} '
               '(scripts/system_packages.sh installs it as root; `make test` runs it)')
    if os.environ.get('PETPARK_REQUIRE_SYSTEM_PACKAGES') == '1':
        pytest.fail(message)
    pytest.skip(message)


def seconds(duration: str) -> float:
    """A Prometheus duration (5m, 1h30m, 500ms) in seconds."""
    parts = _DURATION.findall(duration)
    if not parts or ''.join(n + u for n, u in parts) != duration:
        raise ValueError(f'not a Prometheus duration: {duration!r}')
    return sum(int(n) * _UNITS[u] for n, u in parts)


def duration(value: float) -> str:
    """Seconds as a Prometheus duration, whole milliseconds."""
    return f'{max(1, round(value * 1000))}ms'


def scale_expression(expression: str, factor: float) -> str:
    """Every range ([5m]) and offset (offset 15m) of a PromQL expression divided by `factor`."""
    expression = re.sub(r'\[(\w+)\]', lambda m: f'[{duration(seconds(m.group(1)) / factor)}]', expression)
    return re.sub(r'offset (\w+)', lambda m: f'offset {duration(seconds(m.group(1)) / factor)}', expression)


def ranges(expression: str) -> List[float]:
    return [seconds(found) for found in re.findall(r'\[(\w+)\]', expression)]


def rules() -> List[Dict[str, Any]]:
    """Every rule of the shipped rules.yml."""
    with open(RULES) as f:
        return [rule for group in yaml.safe_load(f)['groups'] for rule in group['rules']]


def scaled_rules(path: str, factor: float) -> None:
    """rules.yml with its durations (ranges, offsets, `for`) divided by `factor`, written to `path`;
    expressions and thresholds unchanged."""
    with open(RULES) as f:
        document = yaml.safe_load(f)
    for group in document['groups']:
        for rule in group['rules']:
            rule['expr'] = scale_expression(rule['expr'], factor)
            if 'for' in rule:
                rule['for'] = duration(seconds(rule['for']) / factor)
    with open(path, 'w') as f:
        yaml.safe_dump(document, f, sort_keys=False)


def prometheus_config_for_test(path: str, rules_path: str, alertmanager: str, targets: Dict[str, str],
                           interval: str = '1s') -> Dict[str, Any]:
    """The shipped prometheus.yml with the test's interval, rule file, Alertmanager and a target per
    job (job name -> host:port); everything else (metrics paths) as shipped."""
    with open(PROMETHEUS_CONFIG) as f:
        config = yaml.safe_load(f)
    config['global'].update(scrape_interval=interval, evaluation_interval=interval, scrape_timeout=interval)
    config['rule_files'] = [rules_path]
    config['alerting']['alertmanagers'] = [{'static_configs': [{'targets': [alertmanager]}]}]
    jobs = {job['job_name']: job for job in config['scrape_configs']}
    assert set(targets) <= set(jobs), f'prometheus.yml has no job {set(targets) - set(jobs)}'
    for name, target in targets.items():
        jobs[name]['static_configs'] = [{'targets': [target]}]
    config['scrape_configs'] = [jobs[name] for name in targets]
    with open(path, 'w') as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return config


def alertmanager_config_for_test(path: str, webhook_url: str, factor: float) -> Dict[str, Any]:
    """The shipped alertmanager.yml with the route's waits divided by `factor` and its webhook
    pointed at `webhook_url`; grouping, send_resolved and inhibitions as shipped."""
    with open(ALERTMANAGER_CONFIG) as f:
        config = yaml.safe_load(f)
    for key in ('group_wait', 'group_interval', 'repeat_interval'):
        config['route'][key] = duration(seconds(config['route'][key]) / factor)
    for receiver in config['receivers']:
        for webhook in receiver.get('webhook_configs', []):
            webhook['url'] = webhook_url
    with open(path, 'w') as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return config


class Processes:
    """Processes started for a test, each with its output in a log file; `stop_all` ends them."""

    def __init__(self, folder: str):
        self.folder, self.started = folder, []

    def start(self, name: str, command: List[str], **kwargs) -> subprocess.Popen:
        log_path = os.path.join(self.folder, f'{name}.log')
        with open(log_path, 'wb') as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       **kwargs)
        process.name, process.log_path = name, log_path
        self.started.append(process)
        return process

    def logs(self, lines: int = 30) -> str:
        found = []
        for process in self.started:
            with open(process.log_path, errors='replace') as f:
                tail = f.read().splitlines()[-lines:]
            found.append(f'--- {process.name} (exit {process.poll()}) ---\n' + '\n'.join(tail))
        return '\n'.join(found)

    def check_alive(self) -> None:
        for process in self.started:
            assert process.poll() is None, f'{process.name} exited with {process.returncode}:\n{self.logs()}'

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


class WebhookReceiver:
    """An HTTP server recording each Alertmanager webhook notification: (monotonic time, JSON)."""

    def __init__(self):
        received = self.received = []
        arrived = self.arrived = threading.Condition()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get('Content-Length', 0))) or b'{}')
                with arrived:
                    received.append((time.monotonic(), body))
                    arrived.notify_all()
                self.send_response(200)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, *args):
                pass
        self._server = exporter.QuietHTTPServer(('127.0.0.1', 0), Handler)  # a sender that gave up is no error
        self.url = f'http://127.0.0.1:{self._server.server_address[1]}/alerts'
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def alerts(self, alertname: str, status: Optional[str] = None) -> List[tuple]:
        """(arrival, notification, alert) for each alert of that name in the notifications so far."""
        with self.arrived:
            notifications = list(self.received)
        return [(at, body, alert) for at, body in notifications for alert in body.get('alerts', [])
                if alert['labels'].get('alertname') == alertname and (status is None or alert['status'] == status)]

    def wait_for(self, condition: Callable[[], Any], within: float, what: str, diagnose: Callable[[], str] = str):
        """Waits until `condition()` is truthy (re-checked on each arrival and every 0.2 s)."""
        deadline = time.monotonic() + within
        with self.arrived:
            while True:
                found = condition()
                if found:
                    return found
                left = deadline - time.monotonic()
                assert left > 0, f'{what}: not within {within:g} s; received {self.received}\n{diagnose()}'
                self.arrived.wait(min(left, 0.2))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.load(answer)


def poll(condition: Callable[[], Any], within: float, what: str, diagnose: Callable[[], str] = str, every: float = 0.2):
    """condition() until truthy (errors count as not yet), within `within` seconds."""
    deadline, last = time.monotonic() + within, None
    while time.monotonic() < deadline:
        try:
            found = condition()
            if found:
                return found
        except OSError as e:
            last = e
        time.sleep(every)
    raise AssertionError(f'{what}: not within {within:g} s (last error: {last})\n{diagnose()}')
