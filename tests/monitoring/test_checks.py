"""A window's verdict against a baseline calibrated on in-distribution data: in-distribution windows
pass, shifted ones breach on the right check, small ones are INCONCLUSIVE, and the label-free
estimate follows the slice that moved."""
import numpy as np
import pandas as pd
import pytest
import tensorflow_data_validation as tfdv

from petpark import schemas
from petpark.components.monitoring_baseline import drift
from petpark.modules import features
from petpark.monitoring import checks
from petpark.monitoring.baseline import Baseline

SIZES = [20, 80]


def frames(n, rng, darken=1.0, grayscale=0.1, width=96, camera='cam-01'):
    """Frame features as monitoring computes them, with the score a model would give."""
    gray = rng.rand(n) < grayscale
    brightness = np.clip(rng.beta(5, 5, n) * darken, 0, 1).astype(np.float32)
    buckets = [features.image_buckets(width, 96, b) for b in brightness]
    table = pd.DataFrame({
        features.IMAGE_KEY: [b'\xff\xd8jpeg'] * n, features.IMAGE_ID_KEY: [f'f{i}' for i in range(n)],
        features.WIDTH_KEY: np.full(n, width), features.HEIGHT_KEY: np.full(n, 96),
        features.BRIGHTNESS_KEY: brightness, features.GRAYSCALE_KEY: gray.astype(int),
        features.LIGHTING_KEY: np.where(gray, 'night', 'day'), features.CAMERA_KEY: [camera] * n,
        **{key: [b[key] for b in buckets] for key in (features.BRIGHTNESS_BUCKET_KEY, features.RESOLUTION_BUCKET_KEY,
                                                      features.ASPECT_BUCKET_KEY)}})
    scores = np.where(rng.rand(n) < 0.5, rng.beta(8, 2, n), rng.beta(2, 8, n)).astype(np.float32)
    return table, scores


@pytest.fixture(scope='module')
def baseline():
    """A baseline as MonitoringBaselineGen records it, from 2,000 training and 300 held-out frames."""
    rng = np.random.RandomState(0)
    schema = tfdv.load_schema_text(schemas.SCHEMA_FILE)
    training, _ = frames(2000, rng)
    held_out, held_scores = frames(300, rng)
    training_statistics = drift.statistics(training[[c for c in checks.SERVED[2:] if c in training]], schema)
    monitored = held_out[[c for c in sorted(set(drift.comparators(schema, 'skew'))) if c in held_out]].copy()
    monitored[drift.SCORE_FEATURE] = held_scores
    thresholds, _ = drift.calibrate(monitored, training_statistics, schema, SIZES, 20, 0.01, seed=1)
    shares = held_out[features.LIGHTING_KEY].value_counts(normalize=True).to_dict()
    record = {'thresholds': thresholds, 'min_window': SIZES[0], 'overall_accuracy': 0.9,
              'scores': {'histogram': drift.score_histogram(held_scores).tolist(), 'bins': drift.SCORE_BINS.tolist(),
                         'uncertain_share': drift.uncertain_share(held_scores)},
              'checks': {'skew': drift.comparators(schema, 'skew')},
              'slices': {features.LIGHTING_KEY: {'day': {'accuracy': 0.95, 'share': shares['day'], 'example_count': 270},
                                                 'night': {'accuracy': 0.6, 'share': shares['night'],
                                                           'example_count': 30}}}}
    return Baseline('memory://baseline', record, training_statistics, schema)


def test_an_in_distribution_window_passes(baseline):
    table, scores = frames(80, np.random.RandomState(7))
    checked = checks.check_window(table, scores, baseline)
    assert checked.verdict == checks.PASS, checked.reasons
    assert set(checked.numbers['skew']) == {'brightness', 'is_grayscale', 'lighting', 'camera_id', 'resolution_bucket',
                                            'aspect_bucket'}
    assert all(entry['threshold'] > 0 for entry in checked.numbers['skew'].values())
    assert checked.anomalies['schema'].anomaly_info == {}


def test_a_darkened_window_breaches_on_brightness_skew(baseline):
    table, scores = frames(80, np.random.RandomState(8), darken=0.6)
    checked = checks.check_window(table, scores, baseline)
    assert checked.verdict == checks.BREACH
    assert {'check': 'skew:brightness', 'message': checked.reasons[0]['message']} in checked.reasons
    entry = checked.numbers['skew']['brightness']
    assert entry['breach'] and entry['value'] > entry['threshold']
    assert 'brightness' in checked.anomalies['skew'].anomaly_info  # TFDV's own anomaly, at our threshold


def test_an_unknown_camera_is_a_schema_anomaly_in_the_serving_environment(baseline):
    table, scores = frames(40, np.random.RandomState(9), camera='cam-99')
    checked = checks.check_window(table, scores, baseline)
    assert checked.verdict == checks.BREACH
    assert 'camera_id' in checked.numbers['schema'] and 'cam-99' in checked.numbers['schema']['camera_id']


def test_more_night_frames_lower_the_label_free_estimate_and_say_why(baseline):
    table, scores = frames(80, np.random.RandomState(10), grayscale=0.5)
    estimate = checks.check_window(table, scores, baseline).numbers['estimate']
    assert estimate['feature'] == features.LIGHTING_KEY and estimate['value'] == 'night'
    live_night = (table[features.LIGHTING_KEY] == 'night').mean()
    day, night = (0.95 * 270 + 0.9 * 20) / 290, (0.6 * 30 + 0.9 * 20) / 50  # drawn toward the overall 0.9
    assert estimate['accuracy'] == pytest.approx(day * (1 - live_night) + night * live_night)
    assert estimate['message'].startswith('lighting=night frames 10% -> ')
    assert 'accuracy on night 0.60 (n=30)' in estimate['message']


def test_drifting_scores_breach_prediction_drift(baseline):
    table, scores = frames(80, np.random.RandomState(11))
    checked = checks.check_window(table, np.full(80, 0.5, dtype=np.float32), baseline)
    assert checked.numbers['prediction']['score']['breach'] and checked.numbers['prediction']['uncertain']['breach']
    assert checked.numbers['prediction']['uncertain']['live'] == 1.0


def test_a_window_too_small_or_without_baseline_is_inconclusive_never_pass(baseline):
    table, scores = frames(SIZES[0] - 1, np.random.RandomState(12))
    small = checks.check_window(table, scores, baseline)
    assert small.verdict == checks.INCONCLUSIVE and 'fewer than the 20' in small.reasons[0]['message']
    table, scores = frames(80, np.random.RandomState(13))
    assert checks.check_window(table, scores, None).verdict == checks.INCONCLUSIVE


def test_drift_is_measured_against_the_previous_accepted_window(baseline):
    rng = np.random.RandomState(14)
    previous, _ = frames(80, rng)
    table, scores = frames(80, rng, width=160)  # 96x96 frames become 160x96: landscape
    served = previous[[c for c in checks.SERVED if c in previous]]
    checked = checks.check_window(table, scores, baseline, drift.statistics(served, baseline.schema))
    assert checked.numbers['drift']['aspect_bucket']['breach'] and 'aspect_bucket' in checked.anomalies['drift'].anomaly_info


def test_a_window_takes_the_threshold_of_the_largest_calibrated_size_not_above_it_and_none_below():
    table = {'50': 0.2, '200': 0.05}
    assert drift.threshold_at(table, 49) is None
    assert drift.threshold_at(table, 50) == 0.2 and drift.threshold_at(table, 199) == 0.2
    assert drift.threshold_at(table, 200) == 0.05 and drift.threshold_at(table, 5000) == 0.05


def test_a_threshold_is_the_fitted_tail_quantile_and_never_below_its_floor():
    rng = np.random.RandomState(0)
    values = rng.gamma(2.0, 0.01, 200)
    threshold = drift.tail_threshold(values, 0.999, 0.001)
    assert np.quantile(values, 0.99) < threshold < 0.2
    assert drift.tail_threshold([0.0, 0.0, 0.0], 0.999, 0.05) == 0.05
    assert drift.tail_threshold(values, 0.999, 1.0) == 1.0
