"""`petpark monitor canary`: the verdict's rules on pairs made here, and the command's front doors
(exit status, JSON, the /verdict endpoint a rollout controller polls) on a request log written by the
serving log's own code. The real server's mirroring: tests/serving/test_mirror.py."""
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from petpark.monitoring import canary
from petpark.pipeline import cli
from petpark.serving import request_logging

TOLERANCES = canary.Tolerances(min_requests=1000, max_flip_rate=0.005, max_score_shift=0.1, max_error_ratio=0.001,
                               max_latency_increase=0.25)


def pairs(count, flip_every=0, canary_micros=2000, fail_every=0):
    made = []
    for index in range(count):
        score = 0.05 + 0.9 * (index * 37 % 100 + 0.5) / 100  # never 0.5: 1 - score is the other class
        flipped = flip_every and index % flip_every == 0
        failed = fail_every and index % fail_every == 0
        made.append(canary.Pair(index, '', 1, 2, [score], None if failed else [1 - score if flipped else score],
                                2000 + index % 11, canary_micros + index % 13))
    return made


def test_an_identical_canary_passes_from_the_minimum_and_is_inconclusive_before():
    assert canary.judge(pairs(999), TOLERANCES)['verdict'] == canary.INCONCLUSIVE
    passed = canary.judge(pairs(1000), TOLERANCES)
    assert passed['verdict'] == canary.PASS and passed['numbers']['flips'] == 0, passed


def test_a_plainly_worse_canary_fails_early_but_not_on_a_handful_of_requests():
    assert canary.judge(pairs(50, flip_every=2), TOLERANCES)['verdict'] == canary.INCONCLUSIVE
    failed = canary.judge(pairs(100, flip_every=2), TOLERANCES)
    assert failed['verdict'] == canary.FAIL and failed['numbers']['flip_rate'] == 0.5, failed


@pytest.mark.parametrize('flip_every, verdict', [(50, canary.FAIL), (400, canary.PASS)])
def test_flips_are_judged_against_the_tolerated_share(flip_every, verdict):
    """2% of decisions flipped fails on 1,000 requests; 0.25% (within the 0.5% tolerated) passes."""
    assert canary.judge(pairs(1000, flip_every=flip_every), TOLERANCES)['verdict'] == verdict


def test_a_slower_canary_fails_on_the_rank_test_and_one_within_the_tolerance_passes():
    slower = canary.judge(pairs(1000, canary_micros=3000), TOLERANCES)
    assert slower['verdict'] == canary.FAIL and 'slower' in slower['reasons'][0], slower
    assert slower['numbers']['latency_ratio'] == pytest.approx(1.5, abs=0.01)
    assert canary.judge(pairs(1000, canary_micros=2200), TOLERANCES)['verdict'] == canary.PASS


def test_a_canary_failing_requests_fails_on_the_error_ratio():
    failed = canary.judge(pairs(1000, fail_every=100), TOLERANCES)
    assert failed['verdict'] == canary.FAIL and failed['numbers']['canary_errors'] == 10
    assert any('failed 10 of 1000' in reason for reason in failed['reasons'])


def write_mirrored(home, count, flip_every=0):
    """`count` mirrored requests of version 2 against 1 in <home>/request_logs, as petpark serve logs them."""
    config = os.path.join(home, 'logging.config')
    with open(config, 'w') as f:
        f.write('sampling_config { sampling_rate: 0.0 } '
                f'log_collector_config {{ filename_prefix: "{os.path.join(home, "request_logs", "petpark")}" }}')
    logs = request_logging.ServingLog(config)
    for index, pair in enumerate(pairs(count, flip_every)):
        inputs = {'image_bytes': np.array([b'frame %d' % index], dtype=object)}
        answers = [{'scores': np.array([[1 - s, s]], np.float32)} for s in (pair.stable_scores[0],
                                                                              pair.canary_scores[0])]
        assert logs.mirrored(request_logging.Mirrored('petpark', 1, 2, 'serving_default', inputs, *answers,
                                                      pair.stable_micros, pair.canary_micros), 1.0)
    logs.close()


def test_the_command_exits_with_the_verdict_and_prints_its_document(tmp_path, capfd, monkeypatch):
    for name in [n for n in os.environ if n.startswith('PETPARK_')]:
        monkeypatch.delenv(name)
    home = str(tmp_path)
    write_mirrored(home, 200, flip_every=4)
    assert cli.main(['monitor', 'canary', '--home', home, '--no-record', '--last', '99']) == 3
    assert '99 mirrored requests, fewer than the 1000' in capfd.readouterr().out
    assert cli.main(['monitor', 'canary', '--home', home, '--no-record', '--json']) == 1
    document = json.loads(capfd.readouterr().out)
    assert document['verdict'] == 'FAIL' and document['numbers']['flips'] == 50 and document['canary_version'] == 2
    assert 'decision' not in document
    assert cli.main(['monitor', 'canary', '--home', home, '--version', '7', '--no-record']) == 3  # none mirrored to 7
    assert cli.main(['monitor', 'canary', '--home', home, '--every', '60']) == 2
    assert '--serve' in capfd.readouterr().err


def test_a_rollout_controller_reads_the_verdict_so_far_as_json(tmp_path):
    home = str(tmp_path)
    write_mirrored(home, 120)
    env = {k: v for k, v in os.environ.items() if not k.startswith('PETPARK_')}
    env.update(PYTHONUNBUFFERED='1', PETPARK_MONITOR_CANARY_MIN_REQUESTS='100')
    judge = subprocess.Popen([sys.executable, '-m', 'petpark.pipeline.cli', 'monitor', 'canary', '--home', home,
                              '--serve', '127.0.0.1:0'], env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = judge.stdout.readline()
        assert 'canary verdicts at http://127.0.0.1:' in line, line
        url = line.split(' at ')[1].strip()
        with urllib.request.urlopen(url, timeout=60) as answer:
            document = json.loads(answer.read())
        assert document['verdict'] == 'PASS' and document['numbers']['requests'] == 120, document
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(url.replace('/verdict', '/other'), timeout=60)
        assert missing.value.code == 404
    finally:
        judge.terminate()
        assert judge.wait(30) == 0
