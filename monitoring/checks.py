"""One window's checks against its version's baseline, each as TFDV computes and reports it.

- schema: the window's statistics validated against the curated schema in its SERVING environment;
- skew: against the training statistics, with the schema's skew comparators;
- drift: against the previous accepted window, with its drift comparators;
- prediction: the score distribution against the scores on the evaluated split (Jensen-Shannon),
  and the share of uncertain scores against that split's share;
- a label-free accuracy estimate: the live share of each slice times that slice's evaluated accuracy.
Thresholds are the baseline's, calibrated for windows of this size. A window below the baseline's
smallest calibrated size (or without a baseline) is INCONCLUSIVE, never PASS.
"""
import dataclasses
from typing import Any, Dict, List, Optional

import numpy as np

from petpark.components.monitoring_baseline import drift
from petpark.modules import features
from petpark.monitoring.baseline import Baseline

PASS, BREACH, INCONCLUSIVE = 'PASS', 'BREACH', 'INCONCLUSIVE'
SERVING_ENVIRONMENT = 'SERVING'
# what a window's statistics hold: what a client sends and what ingestion derives from it
SERVED = (features.IMAGE_KEY, features.IMAGE_ID_KEY, features.WIDTH_KEY, features.HEIGHT_KEY, features.BRIGHTNESS_KEY,
          features.GRAYSCALE_KEY, features.LIGHTING_KEY, features.CAMERA_KEY, features.CAPTURED_AT_KEY,
          features.BRIGHTNESS_BUCKET_KEY, features.RESOLUTION_BUCKET_KEY, features.ASPECT_BUCKET_KEY)
# a slice's evaluated accuracy counts as this many examples more at the overall accuracy, so that a
# slice of 10 photos that were all right does not promise 100%
PRIOR_EXAMPLES = 20
ESTIMATE_FEATURES = (features.LIGHTING_KEY, features.BRIGHTNESS_BUCKET_KEY, features.GRAYSCALE_KEY,
                     features.RESOLUTION_BUCKET_KEY, features.ASPECT_BUCKET_KEY, features.CAMERA_KEY)


@dataclasses.dataclass
class Checked:
    """A window's verdict, its numbers, and TFDV's statistics and anomalies."""
    verdict: str
    reasons: List[Dict[str, str]]  # {'check': 'skew:brightness', 'message': ...}
    numbers: Dict[str, Any]
    statistics: Any = None  # DatasetFeatureStatisticsList of the window
    anomalies: Dict[str, Any] = dataclasses.field(default_factory=dict)  # check -> TFDV Anomalies


def _anomaly_lines(anomalies) -> Dict[str, str]:
    return {name: f'{info.short_description}: {info.description[:300]}' for name, info in anomalies.anomaly_info.items()}


def comparison(window_statistics, reference, baseline: Baseline, kind: str, size: int):
    """(TFDV anomalies at the calibrated thresholds, {feature: {value, threshold, breach}})."""
    comparators = drift.comparators(baseline.schema, kind)
    thresholds = {name: baseline.threshold(f'{kind}:{name}', size) for name in comparators}
    thresholds = {name: value for name, value in thresholds.items() if value is not None}
    schema = drift.with_thresholds(baseline.schema, kind, thresholds)
    anomalies = drift.validate(window_statistics, reference, schema, kind)
    values = drift.measurements(anomalies, kind)
    table = {name: {'value': values.get(name), 'threshold': thresholds.get(name),
                    'breach': name in anomalies.anomaly_info and values.get(name) is not None}
             for name in comparators}
    return anomalies, table


def slice_accuracy(entry: Dict[str, Any], overall: float) -> float:
    """A slice's evaluated accuracy, drawn toward the overall one by PRIOR_EXAMPLES (unseen: overall)."""
    accuracy, count = entry.get('accuracy'), entry.get('example_count') or 0
    if accuracy is None:
        return overall
    return (accuracy * count + overall * PRIOR_EXAMPLES) / (count + PRIOR_EXAMPLES)


def estimate(rows, baseline: Baseline) -> Dict[str, Any]:
    """Accuracy without labels: for each slice feature, the live share of each value times its
    evaluated accuracy (small slices drawn toward the overall accuracy); the estimate of the feature
    whose shares moved most is the window's."""
    slices, overall = baseline.record.get('slices', {}), baseline.record.get('overall_accuracy')
    best = None
    for feature in ESTIMATE_FEATURES:
        known = slices.get(feature)
        if not known or feature not in rows or overall is None:
            continue
        live = rows[feature].dropna().astype(str).value_counts(normalize=True).to_dict()
        if not live:
            continue
        reference = {value: entry.get('share') or 0.0 for value, entry in known.items()}
        accuracy = sum(share * slice_accuracy(known.get(value, {}), overall) for value, share in live.items())
        moved = 0.5 * sum(abs(live.get(v, 0.0) - reference.get(v, 0.0)) for v in set(live) | set(reference))
        grown = max(live, key=lambda v: live[v] - reference.get(v, 0.0))
        found = {'accuracy': float(accuracy), 'feature': feature, 'moved': float(moved), 'value': grown,
                 'share_before': reference.get(grown, 0.0), 'share_now': live[grown],
                 'accuracy_of_value': known.get(grown, {}).get('accuracy'),
                 'examples_of_value': known.get(grown, {}).get('example_count'), 'evaluated_accuracy': overall}
        if best is None or moved > best['moved']:
            best = found
    if best is not None:
        of_value, count = best['accuracy_of_value'], best['examples_of_value']
        evaluated = 'not evaluated' if of_value is None else f'{of_value:.2f} (n={count:.0f})'
        best['message'] = (f"{best['feature']}={best['value']} frames {best['share_before']:.0%} -> "
                           f"{best['share_now']:.0%}; accuracy on {best['value']} {evaluated}; estimated accuracy "
                           f"{best['accuracy']:.3f} (evaluated {overall:.3f})")
    return best or {}


def check_window(rows, scores: np.ndarray, baseline: Optional[Baseline], previous_statistics=None) -> Checked:
    """The window's verdict. rows: DataFrame of frame features (frames.COLUMNS, image_raw, image_id);
    scores: P(positive) of the frames the model scored."""
    import tensorflow_data_validation as tfdv
    size = len(rows)
    numbers: Dict[str, Any] = {'frames': size}
    served = rows[[column for column in SERVED if column in rows]].copy()
    statistics = drift.statistics(served, baseline.schema if baseline else None) if size else None
    if baseline is None:
        return Checked(INCONCLUSIVE, [{'check': 'baseline', 'message': 'no monitoring baseline for this version'}],
                       numbers, statistics)
    minimum = int(baseline.record['min_window'])
    numbers['min_window'] = minimum
    if size < minimum:
        return Checked(INCONCLUSIVE, [{'check': 'window', 'message': f'{size} frames, fewer than the {minimum} a '
                                                                     'verdict needs'}], numbers, statistics)
    anomalies = {'schema': tfdv.validate_statistics(statistics, baseline.schema, environment=SERVING_ENVIRONMENT)}
    numbers['schema'] = _anomaly_lines(anomalies['schema'])
    anomalies['skew'], numbers['skew'] = comparison(statistics, baseline.training_statistics, baseline, 'skew', size)
    if previous_statistics is not None:
        anomalies['drift'], numbers['drift'] = comparison(statistics, previous_statistics, baseline, 'drift', size)
    else:
        numbers['drift'] = {}
    scored = np.asarray([s for s in scores if s is not None and np.isfinite(s)], dtype=np.float32)
    prediction = {}
    if len(scored) >= minimum:
        value = drift.jensen_shannon(drift.score_histogram(scored), baseline.record['scores']['histogram'])
        threshold = baseline.threshold(f'prediction:{drift.SCORE_FEATURE}', len(scored))
        prediction[drift.SCORE_FEATURE] = {'value': value, 'threshold': threshold,
                                           'breach': threshold is not None and value > threshold}
        reference = baseline.record['scores']['uncertain_share']
        live = drift.uncertain_share(scored)
        threshold = baseline.threshold(f'prediction:{drift.UNCERTAIN_FEATURE}', len(scored))
        prediction[drift.UNCERTAIN_FEATURE] = {'value': abs(live - reference), 'threshold': threshold,
                                               'live': live, 'reference': reference,
                                               'breach': threshold is not None and abs(live - reference) > threshold}
        numbers['scores'] = {'histogram': drift.score_histogram(scored).tolist(), 'mean': float(scored.mean())}
    numbers['prediction'] = prediction
    numbers['estimate'] = estimate(rows, baseline)
    reasons = [{'check': f'schema:{name}', 'message': f'schema: {name}: {line}'}
               for name, line in sorted(numbers['schema'].items())]
    for kind in ('skew', 'drift', 'prediction'):
        reasons += [{'check': f'{kind}:{name}',
                     'message': f"{kind}: {name} {entry['value']:.3f} above {entry['threshold']:.3f}"}
                    for name, entry in sorted(numbers[kind].items()) if entry['breach']]
    return Checked(BREACH if reasons else PASS, reasons, numbers, statistics, anomalies)
