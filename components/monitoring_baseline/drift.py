"""How far a window of served frames is from a reference, measured by TFDV, and the thresholds
that keep false alarms at a chosen rate.

A check is a monitored feature and a comparison: `skew` (the window against the training
statistics) or `drift` (against another window), which TFDV measures with the comparator the
schema declares for the feature (Jensen-Shannon divergence for numeric features, L-infinity for
categorical ones; `measure` reads TFDV's own measurement), or `prediction`: the model's scores
against its scores on the evaluated split (Jensen-Shannon divergence over fixed bins of [0, 1],
which suit scores better than TFDV's per-dataset histogram ranges) and the share of uncertain
scores. Thresholds are effect sizes calibrated per window size:
windows drawn from held-out data are measured as served windows would be, a distribution is
fitted to those in-distribution values (a gamma, as for chi-square-like statistics), and the
threshold is its quantile at the false-alarm rate shared by all checks, never below a floor of
practical size.
"""
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

SCORE_FEATURE = 'score'  # P(positive class), for prediction drift
UNCERTAIN_FEATURE = 'uncertain'  # the share of scores within UNCERTAIN_BAND of 0.5
UNCERTAIN_BAND = 0.25
SCORE_BINS = np.linspace(0.0, 1.0, 11)
# Smallest differences worth an alarm, however large the window: a JS divergence, an L-infinity
# distance between category shares, a difference of shares.
FLOORS = {'jensen_shannon_divergence': 0.02, 'infinity_norm': 0.05, 'share': 0.05}
MEASUREMENT_TYPES = {'JENSEN_SHANNON_DIVERGENCE': 'jensen_shannon_divergence', 'L_INFTY': 'infinity_norm',
                     'NORMALIZED_ABSOLUTE_DIFFERENCE': 'normalized_abs_difference'}


def comparators(schema: schema_pb2.Schema, kind: str) -> Dict[str, str]:
    """{feature: comparator name} of the schema's skew or drift comparators."""
    field = f'{kind}_comparator'
    found = {}
    for feature in schema.feature:
        if feature.HasField(field):
            comparator = getattr(feature, field)
            found.update((feature.name, name) for name in MEASUREMENT_TYPES.values() if comparator.HasField(name))
    return found


def with_thresholds(schema: schema_pb2.Schema, kind: str, thresholds: Mapping[str, float]) -> schema_pb2.Schema:
    """A copy of `schema` whose `kind` comparators have `thresholds`."""
    copy = schema_pb2.Schema()
    copy.CopyFrom(schema)
    field = f'{kind}_comparator'
    for feature in copy.feature:
        if feature.HasField(field) and feature.name in thresholds:
            comparator = getattr(feature, field)
            for name in MEASUREMENT_TYPES.values():
                if comparator.HasField(name):
                    getattr(comparator, name).threshold = float(thresholds[feature.name])
    return copy


def validate(window: statistics_pb2.DatasetFeatureStatisticsList, reference: statistics_pb2.DatasetFeatureStatisticsList,
             schema: schema_pb2.Schema, kind: str):
    """TFDV's anomalies of `window` against `reference` for the schema's `kind` comparators."""
    import tensorflow_data_validation as tfdv
    if kind == 'skew':
        return tfdv.validate_statistics(reference, schema, serving_statistics=window)
    return tfdv.validate_statistics(window, schema, previous_statistics=reference)


def measurements(anomalies, kind: str) -> Dict[str, float]:
    """{feature: TFDV's measured distance} from the drift_skew_info of validate()'s anomalies."""
    found = {}
    for info in anomalies.drift_skew_info:
        feature = '.'.join(info.path.step)
        for measurement in (info.skew_measurements if kind == 'skew' else info.drift_measurements):
            found[feature] = float(measurement.value)
    return found


def measure(window, reference, schema: schema_pb2.Schema, kind: str, features: Iterable[str]) -> Dict[str, float]:
    """TFDV's distance for each feature, whatever the schema's thresholds (they are set to 0)."""
    zero = with_thresholds(schema, kind, {name: 0.0 for name in features})
    return measurements(validate(window, reference, zero, kind), kind)


def score_histogram(scores: Sequence[float]) -> np.ndarray:
    return np.histogram(np.clip(np.asarray(scores, dtype=float), 0.0, 1.0), SCORE_BINS)[0]


def jensen_shannon(counts: Sequence[float], reference: Sequence[float]) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two histograms of the same bins."""
    p = np.asarray(counts, dtype=float) / max(float(np.sum(counts)), 1.0)
    q = np.asarray(reference, dtype=float) / max(float(np.sum(reference)), 1.0)
    m = (p + q) / 2

    def kl(a, b):
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))
    return (kl(p, m) + kl(q, m)) / 2


def statistics(frame, schema: Optional[schema_pb2.Schema] = None) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV statistics of a pandas DataFrame (in memory, no Beam); with the schema, its categorical
    integer features (is_grayscale) get category counts, as StatisticsGen gives them."""
    import tensorflow_data_validation as tfdv
    if schema is None:
        return tfdv.generate_statistics_from_dataframe(frame)
    return tfdv.generate_statistics_from_dataframe(frame, stats_options=tfdv.StatsOptions(schema=schema))


def tail_threshold(values: Sequence[float], quantile: float, floor: float) -> float:
    """The `quantile` of a gamma distribution fitted (by moments) to in-distribution `values`, at
    least `floor`: divergences of a sample from its own distribution are chi-square-like, and a
    gamma follows their right tail where a few dozen values cannot show it."""
    from scipy import stats
    values = np.asarray(values, dtype=float)
    mean, variance = float(values.mean()), float(values.var(ddof=1)) if len(values) > 1 else 0.0
    if mean <= 0 or variance <= 0:
        return floor
    return float(max(stats.gamma.ppf(quantile, a=mean * mean / variance, scale=variance / mean), floor))


def threshold_at(table: Mapping[str, float], size: int) -> Optional[float]:
    """A check's threshold for a window of `size` frames, from {window size: threshold}: that of the
    largest calibrated size not above `size` (thresholds fall as windows grow, so this errs toward
    fewer false alarms; interpolating between sizes alarmed on 5% of in-distribution windows of real
    photos halfway between two sizes); None below the smallest size (too few frames to judge)."""
    fitting = [(int(n), float(t)) for n, t in table.items() if int(n) <= size]
    return max(fitting)[1] if fitting else None


def uncertain_share(scores: Sequence[float]) -> float:
    scores = np.asarray(scores, dtype=float)
    return float(np.mean(np.abs(scores - 0.5) < UNCERTAIN_BAND)) if len(scores) else 0.0


def calibrate(held_out, reference_statistics, schema: schema_pb2.Schema, window_sizes: Sequence[int],
              windows_per_size: int, false_alarm_rate: float, seed: int) -> Tuple[Dict[str, Dict[str, float]], Dict]:
    """{check: {window size: threshold}} and the in-distribution values they came from.

    held_out: DataFrame of the monitored features and SCORE_FEATURE for held-out examples; windows
    are drawn from it with replacement. reference_statistics: the training statistics (skew); the
    held-out scores are the reference of prediction drift."""
    rng = np.random.RandomState(seed)
    skew_features, drift_features = comparators(schema, 'skew'), comparators(schema, 'drift')
    checks = ([f'skew:{f}' for f in skew_features] + [f'drift:{f}' for f in drift_features]
              + [f'prediction:{SCORE_FEATURE}', f'prediction:{UNCERTAIN_FEATURE}'])
    quantile = 1.0 - false_alarm_rate / len(checks)  # the rate is for a window, over all its checks
    floors = {**{f'skew:{f}': FLOORS[c] for f, c in skew_features.items()},
              **{f'drift:{f}': FLOORS[c] for f, c in drift_features.items()},
              f'prediction:{SCORE_FEATURE}': FLOORS['jensen_shannon_divergence'],
              f'prediction:{UNCERTAIN_FEATURE}': FLOORS['share']}
    reference_scores = score_histogram(held_out[SCORE_FEATURE])
    reference_uncertain = uncertain_share(held_out[SCORE_FEATURE])
    observed: Dict[str, Dict[int, List[float]]] = {check: {} for check in checks}
    for size in window_sizes:
        windows = [held_out.iloc[rng.randint(0, len(held_out), size)] for _ in range(windows_per_size + 1)]
        stats = [statistics(window.drop(columns=[SCORE_FEATURE]), schema) for window in windows]
        for index in range(windows_per_size):
            values = {f'skew:{f}': v for f, v in measure(stats[index], reference_statistics, schema, 'skew',
                                                         skew_features).items()}
            values.update({f'drift:{f}': v for f, v in measure(stats[index], stats[index + 1], schema, 'drift',
                                                               drift_features).items()})
            values[f'prediction:{SCORE_FEATURE}'] = jensen_shannon(score_histogram(windows[index][SCORE_FEATURE]),
                                                                   reference_scores)
            values[f'prediction:{UNCERTAIN_FEATURE}'] = abs(uncertain_share(windows[index][SCORE_FEATURE])
                                                            - reference_uncertain)
            for check, value in values.items():
                observed.setdefault(check, {}).setdefault(size, []).append(value)
    thresholds = {check: {str(size): tail_threshold(values, quantile, floors.get(check, FLOORS['share']))
                          for size, values in by_size.items()}
                  for check, by_size in observed.items() if by_size}
    summary = {check: {str(size): {'median': float(np.median(v)), 'max': float(np.max(v))} for size, v in by_size.items()}
               for check, by_size in observed.items() if by_size}
    return thresholds, summary
