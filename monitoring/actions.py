"""What a breach can start, when configured: the window's frames exported for a person to label
(into a folder laid out as a span: `<label>/<frame>.jpg` and metadata.csv, with the model's labels
as suggestions), and a training run when a new labelled span exists: through Airflow's REST API
where Airflow is deployed, else the local runner. Never two training runs at once."""
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Sequence

from petpark.modules import features

SUGGESTION_NOTE = ('Labels here are the model\'s suggestions for frames of a monitoring breach: check each frame, '
                   'move it to the right class folder (or delete it), then move this folder into the data root as '
                   'the next span (span-N) for the next training run.\n')
_SPAN = re.compile(r'^span-(\d+)$')


def export_frames(review_dir: str, window_id: str, frames: Sequence, suggestions: Sequence[Optional[str]]) -> str:
    """Writes `<review_dir>/<window_id>/` (staged, then renamed: never half there); returns it."""
    final = os.path.join(review_dir, window_id)
    if os.path.isdir(final):
        return final
    stage = os.path.join(review_dir, f'.{window_id}.staging')
    shutil.rmtree(stage, ignore_errors=True)
    rows = []
    for frame, label in zip(frames, suggestions):
        if not frame.image:
            continue
        folder = label or 'unsure'
        os.makedirs(os.path.join(stage, folder), exist_ok=True)
        name = re.sub(r'[^A-Za-z0-9_.-]', '_', frame.record_id)[:120] + '.jpg'
        with open(os.path.join(stage, folder, name), 'wb') as f:
            f.write(frame.image)
        rows.append({'image': f'{folder}/{name}', features.LABEL_KEY: folder, features.CAMERA_KEY: frame.camera,
                     features.CAPTURED_AT_KEY: frame.captured_at})
    os.makedirs(stage, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=['image', features.LABEL_KEY, features.CAMERA_KEY,
                                                features.CAPTURED_AT_KEY])
    writer.writeheader()
    writer.writerows(rows)
    with open(os.path.join(stage, 'metadata.csv'), 'w') as f:
        f.write(buffer.getvalue())
    with open(os.path.join(stage, 'README.txt'), 'w') as f:
        f.write(SUGGESTION_NOTE)
    os.rename(stage, final)
    return final


def newest_span(data_root: str) -> Optional[int]:
    """The highest N of the data root's `span-N` folders (None when it has none)."""
    if not data_root or not os.path.isdir(data_root):
        return None
    spans = [int(m.group(1)) for m in (_SPAN.match(n) for n in os.listdir(data_root)) if m]
    return max(spans) if spans else None


def trained_span(lineage) -> Optional[int]:
    """The newest span any run of the pipeline ingested (ImageExampleGen's examples' span)."""
    from petpark.components.common import facts
    spans = [facts.prop(a, 'span') for a in lineage.pipeline_artifacts('Examples') if facts.prop(a, 'span') is not None]
    return max(spans) if spans else None


def trigger_airflow(web_url: str, dag_id: str, user: str, password: str, note: str) -> str:
    """A DAG run through Airflow's stable REST API, unless one is queued or running."""
    import base64
    auth = 'Basic ' + base64.b64encode(f'{user}:{password}'.encode()).decode()

    def call(path: str, body: Optional[Dict] = None) -> Dict:
        request = urllib.request.Request(f"{web_url.rstrip('/')}/api/v1{path}", method='POST' if body else 'GET',
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={'Authorization': auth, 'Content-Type': 'application/json'})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)
    active = call(f'/dags/{dag_id}/dagRuns?state=running&state=queued')
    if active.get('total_entries'):
        return f'retraining not started: DAG {dag_id} has a run queued or running'
    run = call(f'/dags/{dag_id}/dagRuns', {'note': note[:1000]})
    return f"retraining started: Airflow DAG run {run.get('dag_run_id')}"


def trigger_local(metadata_path: str, env: Dict[str, str], log_path: str) -> str:
    """`petpark run` in the background, unless a run holds the store's run lock."""
    from petpark.pipeline.ops import run_lock
    if run_lock.run_in_progress(metadata_path):
        return 'retraining not started: a pipeline run is in progress on this home'
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, 'ab') as log:
        process = subprocess.Popen([sys.executable, '-m', 'petpark.pipeline.cli', 'run'], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return f'retraining started: local run (pid {process.pid}, log {log_path})'


def retrain(settings, lineage, note: str) -> str:
    """A training run when the data root has a span newer than any trained; says what it did."""
    newest, trained = newest_span(settings.data.data_root), trained_span(lineage)
    if newest is None or (trained is not None and newest <= trained):
        return (f'retraining not started: no labelled span newer than span {trained} in '
                f'{settings.data.data_root or "the default data"}')
    if settings.monitoring.retrain == 'airflow':
        from petpark.pipeline.ops import airflow as airflow_ops
        deployment = airflow_ops.Deployment(settings)
        state = deployment.read_state()
        if not state:
            return f'retraining not started: no Airflow deployment in {deployment.home}'
        try:
            return trigger_airflow(f"http://127.0.0.1:{state['web_port']}", settings.pipeline_name, 'admin',
                                   state.get('admin_password', ''), note)
        except (urllib.error.URLError, OSError, ValueError) as e:
            return f'retraining not started: Airflow REST API: {e}'
    env = dict(os.environ, PETPARK_HOME=settings.home)
    return trigger_local(settings.metadata_path, env, os.path.join(settings.home, 'logs', 'retraining.log'))


def suggested_labels(scores: List[Optional[float]], threshold: float = 0.5) -> List[Optional[str]]:
    return [None if s is None else features.LABELS[features.POSITIVE_CLASS_ID] if s >= threshold
            else features.LABELS[1 - features.POSITIVE_CLASS_ID] for s in scores]
