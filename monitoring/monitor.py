"""`petpark monitor`: one window of a served version's frames, checked, reported, recorded, alerted.

The window's frames come from finished request logs; their features from the ingestion
component's functions; the checks from TFDV against the version's MonitoringBaseline; health from
Prometheus when configured. The report (HTML and JSON) and TFDV's artifacts go to
`<home>/monitoring/<model>/<version>/<window>/` and are recorded in MLMD with lineage to the
version's push. A breach is alerted (Alertmanager or webhook), and can export the frames for
review and start a training run.
"""
import base64
import dataclasses
import datetime
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from petpark.modules import features
from petpark.monitoring import actions, alerts, baseline as baselines, checks, frames as frame_features, health, logs
from petpark.monitoring import record, report
from petpark.pipeline.inspection.store import Lineage

EXIT_CODES = {checks.PASS: 0, checks.BREACH: 1, checks.INCONCLUSIVE: 3}
STATISTICS_SPLIT = 'window'
_SAMPLES = 8


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """Which frames: served in [since, until) (epoch seconds), or the last `last`; of `version`
    (default: the newest pushed version)."""
    since: Optional[int] = None
    until: Optional[int] = None
    last: Optional[int] = None
    version: Optional[str] = None


def _utc(seconds: Optional[float]) -> str:
    if seconds is None:
        return '-'
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')


def _write_tfdv(folder: str, checked: checks.Checked) -> Dict[str, Optional[str]]:
    """The window's statistics and each check's anomalies in TFX's artifact layout."""
    from tfx.components.example_validator import executor as example_validator
    from tfx.components.statistics_gen import stats_artifact_utils
    written = {'statistics': None, 'anomalies': None, 'anomaly_splits': []}
    if checked.statistics is not None:
        uri = os.path.join(folder, 'statistics')
        os.makedirs(os.path.join(uri, f'Split-{STATISTICS_SPLIT}'), exist_ok=True)
        with open(os.path.join(uri, f'Split-{STATISTICS_SPLIT}', stats_artifact_utils.BINARY_PB_BASENAME), 'wb') as f:
            f.write(checked.statistics.SerializeToString())
        written['statistics'] = uri
    if checked.anomalies:
        uri = os.path.join(folder, 'anomalies')
        for split, anomalies in checked.anomalies.items():
            os.makedirs(os.path.join(uri, f'Split-{split}'), exist_ok=True)
            with open(os.path.join(uri, f'Split-{split}', example_validator.DEFAULT_FILE_NAME), 'wb') as f:
                f.write(anomalies.SerializeToString())
        written['anomalies'], written['anomaly_splits'] = uri, sorted(checked.anomalies)
    return written


def _previous_statistics(settings, version: str):
    """The statistics of this version's newest accepted (PASS) window, for the drift check."""
    from tensorflow_metadata.proto.v0 import statistics_pb2
    from tfx.components.statistics_gen import stats_artifact_utils
    accepted = [w for w in record.windows(settings.metadata_connection(), settings.pipeline_name, settings.model_name, version)
                if w.get('verdict') == checks.PASS and w.get('statistics_uri')]
    if not accepted:
        return None
    path = os.path.join(accepted[-1]['statistics_uri'], f'Split-{STATISTICS_SPLIT}',
                        stats_artifact_utils.BINARY_PB_BASENAME)
    with open(path, 'rb') as f:
        return statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())


def _samples(usable: List, rows, numbers: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Up to _SAMPLES frames of what changed most: the slice value that grew, else the darkest or
    brightest frames, whichever lie further from the middle."""
    grown = numbers.get('estimate') or {}
    chosen = []
    if grown.get('feature') in rows and len(rows):
        chosen = [i for i, v in enumerate(rows[grown['feature']].astype(str)) if v == str(grown['value'])]
    if not chosen and len(rows):
        order = np.argsort(-np.abs(rows[features.BRIGHTNESS_KEY].to_numpy(dtype=float) - 0.5))
        chosen = list(order)
    found = []
    for index in chosen[:_SAMPLES]:
        frame = usable[index]
        caption = (f"{frame.camera or '?'} brightness {rows[features.BRIGHTNESS_KEY].iloc[index]:.2f} "
                   f"{rows[features.WIDTH_KEY].iloc[index]}x{rows[features.HEIGHT_KEY].iloc[index]} "
                   f"P(dog) {'-' if frame.score is None else f'{frame.score:.2f}'}")
        found.append({'record_id': frame.record_id, 'caption': caption, 'thumbnail': report.thumbnail(frame.image)})
    return found


def _explain(samples: List[Dict[str, Any]], usable: List, model_dir: str) -> Optional[str]:
    """Adds each sample frame's saliency overlay (Integrated Gradients on the served SavedModel, as
    `petpark explain`) as `overlay` (base64 PNG); None, or why there are none (the window's report
    is written either way)."""
    if not samples:
        return None
    try:
        from petpark.components.model_card import saliency
        explainer = saliency.Explainer(model_dir)
        images = {frame.record_id: frame.image for frame in usable}
        for sample in samples:
            explained = explainer.explain(images[sample['record_id']])
            png = saliency.overlay_png(images[sample['record_id']], explained.saliency, width=160,
                                       caption=f'{explainer.class_names[explained.predicted]} {explained.score:.2f}')
            sample['overlay'] = base64.b64encode(png).decode('ascii')
    except Exception as e:  # a model that cannot be explained still gets its window checked
        return f'no saliency overlays: {type(e).__name__}: {e}'
    return None


def run_window(settings, spec: WindowSpec, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Checks, reports, records and alerts one window; returns the report's document."""
    import pandas as pd
    lineage = Lineage(settings.metadata_connection(), settings.pipeline_name)
    version = spec.version or baselines.newest_version(lineage)
    if version is None:
        raise ValueError(f'Nothing of {settings.pipeline_name} has been pushed in {settings.home}: no version to monitor')
    pushed, baseline_artifact = baselines.pushed_and_baseline(lineage, version)
    baseline = baselines.load(baseline_artifact.uri) if baseline_artifact is not None else None
    if not os.path.isdir(settings.request_log_dir):
        raise ValueError(f'No request logs in {settings.request_log_dir}: start `petpark serve` with '
                         '--request_logging_config_file (or set PETPARK_MONITOR_LOG_DIR)')
    window = logs.read_window(settings.request_log_dir, settings.model_name, int(version), spec.since, spec.until,
                              spec.last)
    rows, usable = [], []
    for frame in window.frames:
        found, problem = frame_features.frame_features(frame)
        if problem:
            window.skip(problem)
            continue
        rows.append(dict(found, **{features.IMAGE_KEY: frame.image, features.IMAGE_ID_KEY: frame.record_id}))
        usable.append(frame)
    table = pd.DataFrame(rows, columns=list(frame_features.COLUMNS) + [features.IMAGE_KEY, features.IMAGE_ID_KEY])
    table[features.CAMERA_KEY] = table[features.CAMERA_KEY].where(table[features.CAMERA_KEY].notna(), None)
    scores = np.asarray([f.score if f.score is not None else np.nan for f in usable], dtype=float)
    checked = checks.check_window(table, scores, baseline, _previous_statistics(settings, version) if baseline else None)
    start = window.start if window.start is not None else spec.since
    end = window.end if window.end is not None else (spec.until or int(time.time()))
    window_id = (f"{datetime.datetime.fromtimestamp(start or 0, datetime.timezone.utc):%Y%m%dT%H%M%S}-"
                 f"{datetime.datetime.fromtimestamp(end or 0, datetime.timezone.utc):%Y%m%dT%H%M%S}-{len(usable)}")
    folder = os.path.join(settings.monitoring_dir, version, window_id)
    os.makedirs(folder, exist_ok=True)
    tfdv_uris = _write_tfdv(folder, checked)
    measured = health.window_health(settings.monitoring.prometheus_url, settings.model_name, start, end) \
        if settings.monitoring.prometheus_url and start is not None else {}
    plots = {}
    if baseline is not None and usable:
        monitored = sorted(set(baseline.record['checks']['skew']) & set(table.columns))
        plots = {name: report.feature_plot(name, list(table[name]), baseline.training_statistics) for name in monitored}
        if 'scores' in checked.numbers:
            plots['score'] = report.score_plot(baseline.record['scores'], checked.numbers['scores'])
    done: List[str] = []
    if checked.verdict == checks.BREACH:
        if settings.monitoring.review_dir:
            exported = actions.export_frames(settings.monitoring.review_dir, window_id, usable,
                                             actions.suggested_labels([f.score for f in usable]))
            done.append(f'frames exported for review to {exported}')
        if settings.monitoring.retrain != 'none':
            done.append(actions.retrain(settings, lineage, f'monitoring breach, window {window_id}'))
    document = {
        'model_name': settings.model_name, 'version': version, 'window_id': window_id, 'verdict': checked.verdict,
        'reasons': checked.reasons, 'numbers': checked.numbers, 'frames': len(usable), 'skipped': window.skipped,
        'start': start, 'end': end, 'start_text': _utc(start), 'end_text': _utc(end), 'log_files': window.files,
        'health': measured, 'actions': done, 'baseline': baseline.uri if baseline else None,
        'artifacts': {k: v for k, v in tfdv_uris.items() if k != 'anomaly_splits'},
    }
    html_path = os.path.join(folder, report.REPORT_HTML)
    if checked.verdict == checks.BREACH:
        document['alerts'] = alerts.Alerter(
            os.path.join(os.path.dirname(settings.monitoring_dir), 'alerts.json'), settings.monitoring.alert_cooldown_s,
            settings.monitoring.alertmanager_url, settings.monitoring.webhook_url,
        ).send(alerts.breach_alerts(document, f'file://{html_path}'))
    samples = _samples(usable, table, checked.numbers)
    unexplained = _explain(samples, usable, pushed.uri)
    if unexplained:
        document['explanations'] = unexplained
    paths = report.write(folder, document, plots, samples)
    contribution = {'monitoring': {'window': window_id, 'verdict': checked.verdict, 'frames': len(usable),
                                   'report': paths['html']}}
    record.record_window(settings.metadata_connection(), settings.pipeline_name, settings.model_name, version, window_id,
                         {'pushed_model': pushed, **({'baseline': baseline_artifact} if baseline_artifact else {})},
                         tfdv_uris['statistics'], tfdv_uris['anomalies'], tfdv_uris['anomaly_splits'], folder,
                         checked.verdict, json.dumps(contribution, sort_keys=True))
    document['report'] = paths
    log(f'{settings.model_name} version {version}, window {window_id}: {checked.verdict}')
    for reason in checked.reasons:
        log(f"  {reason['message']}")
    if checked.numbers.get('estimate'):
        log(f"  {checked.numbers['estimate']['message']}")
    for line in done + ([document['alerts']] if document.get('alerts') else []):
        log(f'  {line}')
    log(f"  report: {paths['html']}")
    return document
