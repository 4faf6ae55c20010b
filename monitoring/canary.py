"""`petpark monitor canary`: the canary version judged against `stable` on mirrored requests.

`petpark serve --canary_mirror_rate` logs each mirrored request as a pair of records, stable's then
the canary's, with the same request (serving/request_logging.mirrored_records). On those pairs:

- decisions: how often the predicted class differs (a one-sided binomial test against the share
  the canary may change, PETPARK_MONITOR_CANARY_MAX_FLIP_RATE);
- scores: the mean and largest difference of P(positive class), and the two score distributions
  (two-sample Kolmogorov-Smirnov; its statistic must stay below PETPARK_MONITOR_CANARY_MAX_SCORE_SHIFT);
- errors: requests stable answered and the canary failed (binomial test against
  PETPARK_MONITOR_CANARY_MAX_ERROR_RATIO);
- latency: the model's time on each request (Mann-Whitney rank test, canary slower, and its median
  more than PETPARK_MONITOR_CANARY_MAX_LATENCY_INCREASE above stable's).

A check fails when its test is significant at SIGNIFICANCE and its size is beyond the tolerance.
FAIL: any check fails (judged from MIN_REQUESTS_TO_FAIL requests on: a canary that is plainly worse
is stopped early). PASS: none fails and there are PETPARK_MONITOR_CANARY_MIN_REQUESTS requests, enough
that a canary changing 2% of decisions would have failed. INCONCLUSIVE: fewer.
"""
import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from petpark.monitoring import logs
from petpark.serving import request_log

PASS, FAIL, INCONCLUSIVE = 'PASS', 'FAIL', 'INCONCLUSIVE'
EXIT_CODES = {PASS: 0, FAIL: 1, INCONCLUSIVE: 3}  # as `petpark monitor`; an Argo Rollouts Job metric reads them
SIGNIFICANCE = 0.01
MIN_REQUESTS_TO_FAIL = 100


@dataclasses.dataclass
class Pair:
    """One mirrored request: both versions' P(positive class) per row; the canary's None when it failed."""
    timestamp: int
    origin: str
    stable_version: int
    canary_version: int
    stable_scores: List[Optional[float]]
    canary_scores: Optional[List[Optional[float]]]
    stable_micros: Optional[int]
    canary_micros: Optional[int]


def _version(spec) -> Optional[int]:
    return spec.version.value if spec.HasField('version') else None


def _micros(log) -> Optional[int]:
    return request_log.varint_field(log.log_metadata.SerializeToString(), request_log.INFERENCE_MICROS_FIELD)


def read_pairs(log_dir: str, model_name: str, since: Optional[int] = None, until: Optional[int] = None,
               canary_version: Optional[int] = None) -> List[Pair]:
    """The mirrored pairs of `model_name` served in [since, until) (of `canary_version`), oldest first.
    A canary record is one whose request names another version than the one that answered it; its
    pair is the record just before it in the same file, holding the same request."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2
    pairs = []
    for path in logs.log_files(log_dir):
        try:
            records = logs.file_records(path)
        except tf.errors.OpError:
            continue
        previous = None
        for index, data in enumerate(records):
            try:
                log = prediction_log_pb2.PredictionLog.FromString(data)
            except Exception:  # protobuf's DecodeError: not a PredictionLog
                previous = None
                continue
            current, previous = previous, log
            spec = log.log_metadata.model_spec
            if log.WhichOneof('log_type') != 'predict_log' or spec.name != model_name:
                continue
            asked = _version(log.predict_log.request.model_spec)
            if asked is None or asked == _version(spec) or current is None:
                continue
            if (_version(current.log_metadata.model_spec) != asked or current.WhichOneof('log_type') != 'predict_log'
                    or current.predict_log.request != log.predict_log.request):
                continue
            stamp = int(log.log_metadata.timestamp_secs)
            if (since is not None and stamp < since) or (until is not None and stamp >= until):
                continue
            if canary_version is not None and _version(spec) != canary_version:
                continue
            record_id = f'{os.path.basename(path)}#{index}'
            stable_frames = logs.frames_of(current, record_id)
            failed = not log.predict_log.response.outputs
            pairs.append(Pair(stamp, log.log_metadata.request_origin, asked, _version(spec),
                              [f.score for f in stable_frames],
                              None if failed else [f.score for f in logs.frames_of(log, record_id)],
                              _micros(current), _micros(log)))
    return sorted(pairs, key=lambda pair: pair.timestamp)


@dataclasses.dataclass(frozen=True)
class Tolerances:
    min_requests: int
    max_flip_rate: float
    max_score_shift: float
    max_error_ratio: float
    max_latency_increase: float

    @classmethod
    def from_settings(cls, monitoring) -> 'Tolerances':
        return cls(monitoring.canary_min_requests, monitoring.canary_max_flip_rate, monitoring.canary_max_score_shift,
                   monitoring.canary_max_error_ratio, monitoring.canary_max_latency_increase)


def _binomial_p(successes: int, trials: int, rate: float) -> float:
    from scipy import stats
    return float(stats.binomtest(successes, trials, rate, alternative='greater').pvalue) if trials else 1.0


def judge(pairs: Sequence[Pair], tolerances: Tolerances) -> Dict[str, Any]:
    """The verdict on `pairs`, with every number and the reasons: {'verdict', 'reasons', 'numbers'}."""
    from scipy import stats
    requests = len(pairs)
    answered = [p for p in pairs if p.canary_scores is not None]
    rows = [(s, c) for p in answered for s, c in zip(p.stable_scores, p.canary_scores) if s is not None and c is not None]
    stable = np.array([s for s, _ in rows], dtype=float)
    canary = np.array([c for _, c in rows], dtype=float)
    flips = int(np.sum((stable >= 0.5) != (canary >= 0.5)))
    errors = requests - len(answered)
    numbers: Dict[str, Any] = {'requests': requests, 'decisions': len(rows), 'flips': flips,
                               'flip_rate': flips / len(rows) if rows else None,
                               'flip_p_value': _binomial_p(flips, len(rows), tolerances.max_flip_rate),
                               'canary_errors': errors, 'error_ratio': errors / requests if requests else None,
                               'error_p_value': _binomial_p(errors, requests, tolerances.max_error_ratio)}
    if rows:
        difference = np.abs(canary - stable)
        shift = stats.ks_2samp(stable, canary)
        numbers.update(mean_score_difference=float(difference.mean()), max_score_difference=float(difference.max()),
                       stable_mean_score=float(stable.mean()), canary_mean_score=float(canary.mean()),
                       score_ks_statistic=float(shift.statistic), score_ks_p_value=float(shift.pvalue))
    stable_ms = np.array([p.stable_micros for p in answered if p.stable_micros is not None], dtype=float) / 1000
    canary_ms = np.array([p.canary_micros for p in answered if p.canary_micros is not None], dtype=float) / 1000
    if len(stable_ms) and len(canary_ms):
        slower = stats.mannwhitneyu(canary_ms, stable_ms, alternative='greater')
        numbers.update(stable_p50_ms=float(np.median(stable_ms)), canary_p50_ms=float(np.median(canary_ms)),
                       latency_ratio=float(np.median(canary_ms) / max(np.median(stable_ms), 1e-9)),
                       latency_p_value=float(slower.pvalue))
    failed = []
    if numbers['flip_p_value'] < SIGNIFICANCE:
        failed.append(f"{flips} of {len(rows)} decisions differ ({numbers['flip_rate']:.2%}), significantly more than "
                      f'the {tolerances.max_flip_rate:.2%} tolerated (p={numbers["flip_p_value"]:.2g})')
    if rows and numbers['score_ks_p_value'] < SIGNIFICANCE and numbers['score_ks_statistic'] > tolerances.max_score_shift:
        failed.append(f"the score distribution moved (Kolmogorov-Smirnov {numbers['score_ks_statistic']:.3f} > "
                      f"{tolerances.max_score_shift}, p={numbers['score_ks_p_value']:.2g})")
    if numbers['error_p_value'] < SIGNIFICANCE:
        failed.append(f"the canary failed {errors} of {requests} requests stable answered ({numbers['error_ratio']:.2%}, "
                      f'tolerated {tolerances.max_error_ratio:.2%}, p={numbers["error_p_value"]:.2g})')
    if ('latency_p_value' in numbers and numbers['latency_p_value'] < SIGNIFICANCE
            and numbers['latency_ratio'] > 1 + tolerances.max_latency_increase):
        failed.append(f"the canary is slower: p50 {numbers['canary_p50_ms']:.2f} ms against stable's "
                      f"{numbers['stable_p50_ms']:.2f} ms (x{numbers['latency_ratio']:.2f}, tolerated "
                      f"x{1 + tolerances.max_latency_increase:.2f}; rank test p={numbers['latency_p_value']:.2g})")
    if failed and requests >= min(MIN_REQUESTS_TO_FAIL, tolerances.min_requests):
        verdict, reasons = FAIL, failed
    elif requests < tolerances.min_requests:
        verdict, reasons = INCONCLUSIVE, [f'{requests} mirrored requests, fewer than the {tolerances.min_requests} a '
                                          'verdict needs (PETPARK_MONITOR_CANARY_MIN_REQUESTS)']
    else:
        verdict, reasons = PASS, [f'{requests} mirrored requests: no check failed']
    return {'verdict': verdict, 'reasons': reasons, 'numbers': numbers}


def lines(document: Dict[str, Any]) -> List[str]:
    """The verdict as a person reads it."""
    n = document['numbers']
    if document['canary_version'] is None:
        return [f"no canary of {document['model_name']} to judge: no version is labelled canary in models.config "
                f"and no mirrored request was logged: {document['verdict']}"]
    out = [f"canary {document['canary_version']} against stable {document['stable_version']} of "
           f"{document['model_name']}: {document['verdict']}"]
    out += [f'  {reason}' for reason in document['reasons']]
    if n['decisions']:
        out.append(f"  decisions: {n['flips']} of {n['decisions']} differ ({n['flip_rate']:.2%}); scores: mean "
                   f"difference {n['mean_score_difference']:.4f}, largest {n['max_score_difference']:.4f}, "
                   f"KS {n['score_ks_statistic']:.3f}")
    out.append(f"  errors: the canary failed {n['canary_errors']} of {n['requests']} requests")
    if 'latency_ratio' in n:
        out.append(f"  latency p50: stable {n['stable_p50_ms']:.2f} ms, canary {n['canary_p50_ms']:.2f} ms "
                   f"(x{n['latency_ratio']:.2f}, rank test p={n['latency_p_value']:.2g})")
    return out


def versions(settings) -> Dict[str, int]:
    """The labels of the served model in models.config ({} when there is none)."""
    from petpark.serving import promote
    if not os.path.isfile(settings.models_config_path):
        return {}
    return promote.labels_of(promote.read_config(settings.models_config_path), settings.model_name)


def evaluate(settings, since: Optional[int] = None, until: Optional[int] = None, last: Optional[int] = None,
             canary_version: Optional[int] = None) -> Dict[str, Any]:
    """The verdict document of the canary (default: the version labelled `canary`, else the newest
    mirrored one) on its mirrored requests in [since, until), or its last `last`."""
    if not os.path.isdir(settings.request_log_dir):
        raise ValueError(f'No request logs in {settings.request_log_dir}: start `petpark serve` with '
                         '--request_logging_config_file and --canary_mirror_rate (or set PETPARK_MONITOR_LOG_DIR)')
    labels = versions(settings)
    wanted = canary_version if canary_version is not None else labels.get('canary')
    pairs = read_pairs(settings.request_log_dir, settings.model_name, since, until, wanted)
    if wanted is None and pairs:
        wanted = pairs[-1].canary_version
        pairs = [p for p in pairs if p.canary_version == wanted]
    if last is not None:
        pairs = pairs[-last:]
    document = judge(pairs, Tolerances.from_settings(settings.monitoring))
    stable_versions = sorted({p.stable_version for p in pairs})
    document.update(model_name=settings.model_name, canary_version=wanted,
                    stable_version=stable_versions[-1] if stable_versions else labels.get('stable'),
                    since=pairs[0].timestamp if pairs else since, until=pairs[-1].timestamp + 1 if pairs else until,
                    judged_at=int(time.time()))
    return document


def record(settings, document: Dict[str, Any]) -> Optional[int]:
    """Records the verdict in MLMD as the canary version's canary_verdict decision; its id, or None
    when there is no canary version to record it for."""
    from petpark.pipeline.release import rollout
    if document['canary_version'] is None:
        return None
    numbers = {k: v for k, v in document['numbers'].items() if isinstance(v, (int, float)) and v is not None}
    return rollout.record_decision(settings, 'canary_verdict', str(document['canary_version']),
                                   by='petpark monitor canary', reason='; '.join(document['reasons']),
                                   verdict=document['verdict'], numbers=numbers,
                                   details={'stable_version': document['stable_version'],
                                            'since': document['since'], 'until': document['until']}).execution_id


def as_json(document: Dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=True) + '\n').encode()


def run(settings, since=None, until=None, last=None, canary_version=None, keep: bool = True,
        log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Judges, prints and (keep) records the verdict; returns its document."""
    document = evaluate(settings, since, until, last, canary_version)
    for line in lines(document):
        log(line)
    if keep:
        decision = record(settings, document)
        if decision is not None:
            document['decision'] = decision
            log(f'  recorded as decision #{decision} (petpark models history)')
    return document


def serve(settings, address: str, canary_version: Optional[int] = None,
          log: Callable[[str], None] = print) -> int:
    """`petpark monitor canary --serve [HOST:]PORT`: GET /verdict judges the mirrored requests so far
    and answers the document as JSON (not recorded: a rollout controller polls it; Argo Rollouts' web
    metric reads `result.verdict`), until SIGTERM/SIGINT. Exit status 0."""
    import http.server
    import threading

    from petpark.monitoring import exporter
    host, port = exporter.parse_address(address)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path.split('?')[0] != '/verdict':
                self.send_error(404, 'only /verdict is served')
                return
            try:
                body, status = as_json(evaluate(settings, canary_version=canary_version)), 200
            except ValueError as e:  # no request logs yet: the controller sees why
                body, status = as_json({'verdict': INCONCLUSIVE, 'reasons': [str(e)]}), 503
            self.send_response(status)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # polls are not news
            pass
    server = exporter.QuietHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, name='canary-verdict', daemon=True)
    thread.start()
    log(f'canary verdicts at http://{host}:{server.server_address[1]}/verdict')
    stop = threading.Event()
    restore = exporter.stop_on_signals(stop, log)
    try:
        stop.wait()
    finally:
        restore()
        server.shutdown()
        server.server_close()
    return 0
