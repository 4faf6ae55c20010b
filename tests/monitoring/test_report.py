"""A window's HTML report in a real browser: headless Chromium renders its plots and sample frames,
and leaves a screenshot a person can look at beside the report."""
import io
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from petpark.monitoring import checks, report
from tests.monitoring.prometheus_fixtures import binary
from tests.monitoring.test_checks import baseline, frames  # noqa: F401  (the module fixture)


def chromium(*arguments, timeout=120):
    user_data = arguments[0]
    command = [binary('chromium'), '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
               '--disable-background-networking', '--disable-component-update', '--disable-sync',
               f'--user-data-dir={user_data}', *arguments[1:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def sample_frame(seed):
    buffer = io.BytesIO()
    Image.fromarray(np.random.RandomState(seed).randint(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, 'JPEG')
    return buffer.getvalue()


@pytest.fixture
def written(baseline, tmp_path):  # noqa: F811  (the fixture above)
    rows, scores = frames(80, np.random.RandomState(3), darken=0.6)
    checked = checks.check_window(rows, scores, baseline)
    plots = {name: report.feature_plot(name, list(rows[name]), baseline.training_statistics)
             for name in ('brightness', 'lighting')}
    plots['score'] = report.score_plot(baseline.record['scores'], checked.numbers['scores'])
    samples = [{'record_id': f'r{i}', 'caption': f'frame {i}', 'thumbnail': report.thumbnail(sample_frame(i))}
               for i in range(4)]
    document = {'model_name': 'petpark', 'version': '7', 'window_id': 'w1', 'verdict': checked.verdict,
                'reasons': checked.reasons, 'numbers': checked.numbers, 'frames': len(rows), 'skipped': {},
                'start_text': 'then', 'end_text': 'now', 'health': {'error_ratio': 0.0}}
    paths = report.write(str(tmp_path / 'window'), document, plots, samples)
    return paths, checked


def test_the_report_renders_its_plots_and_frames_in_headless_chromium(written, tmp_path):
    paths, checked = written
    assert checked.verdict == checks.BREACH
    dom = chromium(str(tmp_path / 'profile'), '--dump-dom', f"file://{paths['html']}")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert '<h2 class="BREACH">BREACH</h2>' in html and 'skew: brightness' in html
    assert html.count('src="data:image/png;base64,') == 3 and html.count('src="data:image/jpeg;base64,') == 4
    screenshot = os.path.join(os.path.dirname(paths['html']), 'report.png')
    shot = chromium(str(tmp_path / 'profile'), f'--screenshot={screenshot}', '--window-size=1200,1800',
                    f"file://{paths['html']}")
    assert shot.returncode == 0 and os.path.getsize(screenshot) > 20_000, shot.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert('RGB'))
    assert pixels.std() > 20  # drawn plots and frames, not a blank page


def test_values_from_data_are_escaped_in_the_report(written):
    paths, _ = written
    document = {'model_name': '<script>alert(1)</script>', 'version': '7', 'window_id': 'w2', 'verdict': 'PASS',
                'reasons': [{'check': 'schema:camera_id', 'message': '<img src=x onerror=alert(1)>'}], 'numbers': {},
                'frames': 0, 'skipped': {'<b>': 1}, 'start_text': '', 'end_text': '', 'health': {}}
    html = open(report.write(os.path.dirname(paths['html']) + '2', document, {}, [])['html']).read()
    assert '<script>alert' not in html and '<img src=x' not in html and '&lt;script&gt;' in html
