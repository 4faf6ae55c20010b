"""The monitor's gauges (monitoring/exporter.py) and its schedule: what a window document becomes
in Prometheus' text format, /metrics over HTTP, a loop that outlives failing windows (an injected
run function and clock), stops on SIGTERM, and `petpark monitor --every --metrics-port` for real."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from petpark.monitoring import exporter
from petpark.serving.ports import free_port, port_open

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def document(verdict='BREACH', version='7', model='petpark', end=1_800_000_000, estimate=True):
    """A run_window document, as much of it as the gauges read."""
    numbers = {
        'frames': 120,
        'skew': {'brightness': {'value': 0.31, 'threshold': 0.1, 'breach': True},
                 'width': {'value': None, 'threshold': 0.05, 'breach': False}},
        'drift': {},
        'prediction': {'score': {'value': 0.02, 'threshold': 0.08, 'breach': False}},
    }
    if estimate:
        numbers['estimate'] = {'accuracy': 0.912, 'evaluated_accuracy': 0.95, 'feature': 'lighting', 'value': 'night',
                               'message': 'lighting=night frames 12% -> 40%'}
    return {'model_name': model, 'version': version, 'verdict': verdict, 'frames': 120, 'numbers': numbers,
            'reasons': [], 'end': end, 'window_id': 'w'}


def samples(text):
    """{(name, sorted label items): value} of a Prometheus text exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def window(*extra):
    return tuple(sorted((('model_name', 'petpark'), ('version', '7')) + extra))


def test_a_window_document_becomes_gauges_per_model_and_version():
    gauges = exporter.MonitorExporter(interval_seconds=900)
    gauges.update(document(), at=1_800_000_100)
    found = samples(gauges.exposition().decode())
    assert found[('petpark_monitor_verdict', window())] == 1
    assert found[('petpark_monitor_frames', window())] == 120
    assert found[('petpark_monitor_check_value', window(('check', 'skew:brightness')))] == pytest.approx(0.31)
    assert found[('petpark_monitor_check_threshold', window(('check', 'skew:brightness')))] == pytest.approx(0.1)
    assert found[('petpark_monitor_check_value', window(('check', 'prediction:score')))] == pytest.approx(0.02)
    # a check not measured has its threshold and no value
    assert ('petpark_monitor_check_value', window(('check', 'skew:width'))) not in found
    assert found[('petpark_monitor_check_threshold', window(('check', 'skew:width')))] == pytest.approx(0.05)
    assert found[('petpark_monitor_estimated_accuracy', window())] == pytest.approx(0.912)
    assert found[('petpark_monitor_evaluated_accuracy', window())] == pytest.approx(0.95)
    assert found[('petpark_monitor_window_end_timestamp_seconds', window())] == 1_800_000_000
    loop = (('model_name', 'petpark'),)
    assert found[('petpark_monitor_last_success_timestamp_seconds', loop)] == 1_800_000_100
    assert found[('petpark_monitor_interval_seconds', loop)] == 900
    assert found[('petpark_monitor_consecutive_failures', loop)] == 0
    assert found[('petpark_monitor_runs_total', loop + (('outcome', 'ok'),))] == 1


def test_the_verdicts_are_the_checks_verdicts():
    """monitoring/checks.py's verdict strings (read, not imported: it brings TFDV)."""
    import ast
    tree = ast.parse(open(os.path.join(REPO, 'monitoring', 'checks.py')).read())
    declared = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple):
            names = [target.id for target in node.targets[0].elts]
            declared.update(zip(names, ast.literal_eval(node.value)))
    assert set(exporter.VERDICTS) == {declared['PASS'], declared['BREACH'], declared['INCONCLUSIVE']}


def test_verdicts_and_a_newer_version_replacing_the_older():
    gauges = exporter.MonitorExporter()
    gauges.update(document('BREACH', version='7'), at=1)
    gauges.update(document('INCONCLUSIVE', version='8', estimate=False), at=2)
    gauges.update(document('PASS', model='other'), at=3)
    found = samples(gauges.exposition().decode())
    verdicts = {labels: value for (name, labels), value in found.items() if name == 'petpark_monitor_verdict'}
    # version 7 is gone: a retired version does not keep its BREACH (and an alert) forever
    assert verdicts == {(('model_name', 'petpark'), ('version', '8')): 2,
                        (('model_name', 'other'), ('version', '7')): 0}
    assert not any(name == 'petpark_monitor_estimated_accuracy' and dict(labels)['model_name'] == 'petpark'
                   for name, labels in found)
    assert ('petpark_monitor_interval_seconds', (('model_name', 'petpark'),)) not in found  # no schedule


def test_metrics_are_served_over_http_and_the_server_stops():
    gauges = exporter.MonitorExporter(60)
    gauges.update(document(), at=5)
    server = exporter.serve(free_port(), gauges)
    try:
        with urllib.request.urlopen(f'http://127.0.0.1:{server.port}/metrics', timeout=10) as answer:
            assert answer.headers['Content-Type'].startswith('text/plain; version=0.0.4')
            body = answer.read().decode()
        assert '# TYPE petpark_monitor_verdict gauge' in body
        assert 'petpark_monitor_verdict{model_name="petpark",version="7"} 1.0' in body
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f'http://127.0.0.1:{server.port}/other', timeout=10)
        assert refused.value.code == 404
    finally:
        server.stop()
    assert not port_open(server.port)


@pytest.mark.parametrize('text, expected', [('9847', ('127.0.0.1', 9847)), ('0.0.0.0:9847', ('0.0.0.0', 9847)),
                                            ('[::1]:80', ('::1', 80))])
def test_metrics_addresses(text, expected):
    assert exporter.parse_address(text) == expected


@pytest.mark.parametrize('text', ['nine', '70000', 'host:'])
def test_bad_metrics_addresses(text):
    with pytest.raises(ValueError):
        exporter.parse_address(text)


class FakeClock:
    """Epoch seconds that move only when the loop waits or a window runs."""

    def __init__(self, now=1000.0):
        self.now, self.waits = now, []

    def __call__(self):
        return self.now

    def wait(self, seconds):
        self.waits.append(seconds)
        self.now += seconds


def test_a_failing_window_does_not_stop_the_loop():
    clock, windows, lines = FakeClock(), [], []
    gauges = exporter.MonitorExporter(60)
    stop = threading.Event()

    def run(since, until):
        windows.append((since, until))
        clock.now += 2  # a window takes 2 s
        if len(windows) == 2:
            raise RuntimeError('MLMD is locked')
        if len(windows) == 5:
            stop.set()
        return document('PASS', end=until)
    attempts = exporter.Schedule(60, run, 'petpark', gauges, lines.append, clock=clock, stop=stop, wait=clock.wait).run()
    assert attempts == 5
    # contiguous windows: the one after the failure starts where the last checked one ended
    assert windows == [(940, 1000), (1000, 1060), (1000, 1067), (1067, 1127), (1127, 1187)]
    assert clock.waits == [58, 5, 58, 58]  # on schedule; the retry 5 s after the failure
    assert any('window 1000..1060 failed (1 in a row): RuntimeError: MLMD is locked; retrying in 5 s' in line
               for line in lines)
    assert sum('Traceback' in line and 'MLMD is locked' in line for line in lines) == 1
    found = samples(gauges.exposition().decode())
    loop = (('model_name', 'petpark'),)
    assert found[('petpark_monitor_runs_total', loop + (('outcome', 'ok'),))] == 4
    assert found[('petpark_monitor_runs_total', loop + (('outcome', 'error'),))] == 1
    assert found[('petpark_monitor_consecutive_failures', loop)] == 0
    assert found[('petpark_monitor_window_end_timestamp_seconds', window())] == 1187


def test_a_document_the_gauges_cannot_read_and_a_broken_log_do_not_stop_the_loop():
    clock, calls = FakeClock(), []
    gauges = exporter.MonitorExporter(60)
    stop = threading.Event()

    def run(since, until):
        calls.append(until)
        if len(calls) == 2:
            raise RuntimeError('boom')
        if len(calls) == 3:
            stop.set()
            return document('PASS')
        return {'model_name': 'petpark', 'version': '7', 'verdict': 'SOMETHING ELSE'}

    def log(line):
        raise BrokenPipeError('the terminal went away')
    attempts = exporter.Schedule(60, run, 'petpark', gauges, log, clock=clock, stop=stop, wait=clock.wait).run()
    assert attempts == 3
    found = samples(gauges.exposition().decode())
    assert found[('petpark_monitor_verdict', window())] == 0
    assert found[('petpark_monitor_runs_total', (('model_name', 'petpark'), ('outcome', 'error')))] == 1


def test_failures_back_off_up_to_the_schedule_and_catch_up_is_bounded():
    clock, windows = FakeClock(), []
    gauges = exporter.MonitorExporter(60)
    stop = threading.Event()

    def run(since, until):
        windows.append((since, until))
        if len(windows) == 20:
            stop.set()
        raise OSError('disk gone')
    lines = []
    exporter.Schedule(60, run, 'petpark', gauges, lines.append, clock=clock, stop=stop, wait=clock.wait).run()
    assert sum('failed' in line for line in lines) == 20 and sum('Traceback' in line for line in lines) == 1
    assert clock.waits[:6] == [5, 10, 20, 40, 60, 60] and set(clock.waits[4:]) == {60}
    assert windows[0] == (940, 1000) and windows[5] == (940, 1135)
    since, until = windows[-1]
    assert until - since == 600  # at most MAX_CATCH_UP windows back
    found = samples(gauges.exposition().decode())
    assert found[('petpark_monitor_consecutive_failures', (('model_name', 'petpark'),))] == 20
    assert ('petpark_monitor_last_success_timestamp_seconds', (('model_name', 'petpark'),)) not in found


def test_sigterm_stops_the_loop_after_the_current_window():
    previous = signal.getsignal(signal.SIGTERM)
    stop, lines, finished = threading.Event(), [], []
    restore = exporter.stop_on_signals(stop, lines.append)

    def run(since, until):
        os.kill(os.getpid(), signal.SIGTERM)
        finished.append(until)  # the window goes on after the signal
        return document('PASS')
    try:
        attempts = exporter.Schedule(3600, run, 'petpark', stop=stop, log=lines.append).run()
    finally:
        restore()
    assert attempts == 1 and len(finished) == 1 and stop.is_set()
    assert 'SIGTERM: stopping after the current window' in lines
    assert signal.getsignal(signal.SIGTERM) is previous


def test_petpark_monitor_every_runs_until_sigterm_and_survives_failing_windows(tmp_path):
    """The real command: nothing is pushed in this home, so every window fails; the loop goes on,
    its gauges count the failures, and SIGTERM ends it with exit status 0."""
    port = free_port()
    command = [sys.executable, '-c', 'import sys; from petpark.pipeline.cli import main; sys.exit(main())', 'monitor',
               '--every', '1', '--metrics-port', str(port), '--home', str(tmp_path / 'home')]
    with open(tmp_path / 'out.log', 'wb') as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    try:
        deadline, errors = time.monotonic() + 120, 0
        while errors < 2:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / 'out.log').read_text()[-3000:]
            try:
                with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5) as answer:
                    found = samples(answer.read().decode())
                errors = found.get(('petpark_monitor_runs_total', (('model_name', 'petpark'), ('outcome', 'error'))), 0)
            except OSError:
                pass
            time.sleep(0.3)
        assert found[('petpark_monitor_interval_seconds', (('model_name', 'petpark'),))] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = (tmp_path / 'out.log').read_text()
    assert f'monitor gauges at http://127.0.0.1:{port}/metrics' in output
    assert re.search(r'window \d+\.\.\d+ failed \(2 in a row\): \w+Error: ', output), output
    assert output.count('Traceback') == 1  # the same error again is one line
    assert 'SIGTERM: stopping after the current window' in output and 'stopped after' in output


@pytest.mark.parametrize('flags, message', [
    (['--every', '60', '--last', '5'], '--every checks the last SECONDS each time'),
    (['--metrics-port', '9847'], '--metrics-port exposes the gauges of a running schedule'),
    (['--every', '0'], '--every must be more than 0 seconds, got 0'),
    (['--every', '60', '--metrics-port', 'nine'], "expected PORT or HOST:PORT, got 'nine'"),
])
def test_schedule_flags_that_do_not_go_together(flags, message, tmp_path, capsys):
    from petpark.pipeline.cli import main
    assert main(['monitor', '--home', str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err
