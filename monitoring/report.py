"""A window's report: report.json (every number) and report.html for a person (the verdict and why,
each check against its threshold, the drifting features plotted against training, the score
distribution against the evaluated split's, and sample frames of what changed). The HTML is one
self-contained file (plots and frames embedded), written whole and renamed into place."""
import base64
import html
import io
import json
import os
from typing import Any, Dict, List, Sequence

import numpy as np

from petpark.serving import files

REPORT_JSON, REPORT_HTML = 'report.json', 'report.html'
_STYLE = ('body{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222}'
          'table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}'
          'td:first-child,th:first-child{text-align:left}.BREACH{color:#b00020}.PASS{color:#1b5e20}'
          '.INCONCLUSIVE{color:#8a6d00}.frames img{width:128px;height:128px;object-fit:cover;margin:2px}'
          'figure{display:inline-block;margin:.5em}')


def _figure_png(draw) -> str:
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
    figure, axes = pyplot.subplots(figsize=(4.2, 2.6))
    draw(axes)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=80)
    pyplot.close(figure)
    return base64.b64encode(buffer.getvalue()).decode('ascii')


def _training_histogram(statistics, feature: str):
    """(bucket edges, shares) of a numeric feature, or ([names], shares) of a categorical one, from
    TFDV statistics."""
    for dataset in statistics.datasets[:1]:
        for stats in dataset.features:
            if stats.path.step and stats.path.step[-1] == feature or stats.name == feature:
                if stats.HasField('num_stats') and stats.num_stats.histograms:
                    buckets = stats.num_stats.histograms[0].buckets
                    total = sum(b.sample_count for b in buckets) or 1.0
                    return [b.low_value for b in buckets] + [buckets[-1].high_value], \
                        [b.sample_count / total for b in buckets]
                if stats.HasField('string_stats') and stats.string_stats.top_values:
                    values = stats.string_stats.top_values
                    total = sum(v.frequency for v in values) or 1.0
                    return [v.value for v in values], [v.frequency / total for v in values]
    return None, None


def feature_plot(feature: str, live: Sequence, training_statistics) -> str:
    """The window's values of `feature` against the training distribution."""
    edges, shares = _training_histogram(training_statistics, feature)

    def draw(axes):
        values = [v for v in live if v is not None]
        if edges is not None and isinstance(edges[0], float):
            window, _ = np.histogram(np.asarray(values, dtype=float), bins=edges)
            centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
            axes.bar(centres, shares, width=np.diff(edges), alpha=0.5, label='training')
            axes.step(centres, window / max(window.sum(), 1), where='mid', color='#b00020', label='window')
        else:
            names = sorted(set(map(str, values)) | set(map(str, edges or [])))
            reference = dict(zip(map(str, edges or []), shares or []))
            counts = {name: sum(1 for v in values if str(v) == name) / max(len(values), 1) for name in names}
            positions = np.arange(len(names))
            axes.bar(positions - 0.2, [reference.get(n, 0.0) for n in names], width=0.4, label='training')
            axes.bar(positions + 0.2, [counts[n] for n in names], width=0.4, color='#b00020', label='window')
            axes.set_xticks(positions, [n[:12] for n in names], rotation=30, fontsize='small')
        axes.set_title(feature)
        axes.set_ylabel('share')
        axes.legend(fontsize='small')
    return _figure_png(draw)


def score_plot(reference: Dict[str, Any], window: Dict[str, Any]) -> str:
    bins = reference['bins']

    def draw(axes):
        centres = [(a + b) / 2 for a, b in zip(bins, bins[1:])]
        ref = np.asarray(reference['histogram'], dtype=float)
        live = np.asarray(window['histogram'], dtype=float)
        axes.bar(centres, ref / max(ref.sum(), 1), width=0.1, alpha=0.5, label='evaluated split')
        axes.step(centres, live / max(live.sum(), 1), where='mid', color='#b00020', label='window')
        axes.set_title('score: P(dog)')
        axes.legend(fontsize='small')
    return _figure_png(draw)


def thumbnail(image: bytes) -> str:
    from PIL import Image
    with Image.open(io.BytesIO(image)) as picture:
        picture = picture.convert('RGB')
        picture.thumbnail((160, 160))
        buffer = io.BytesIO()
        picture.save(buffer, format='JPEG', quality=80)
    return base64.b64encode(buffer.getvalue()).decode('ascii')


def _check_rows(numbers: Dict[str, Any]) -> List[str]:
    rows = []
    for kind in ('skew', 'drift', 'prediction'):
        for name, entry in sorted(numbers.get(kind, {}).items()):
            value, threshold = entry.get('value'), entry.get('threshold')
            state = 'BREACH' if entry.get('breach') else 'ok'
            rows.append(f'<tr><td>{kind}: {html.escape(name)}</td><td>{"-" if value is None else f"{value:.4f}"}</td>'
                        f'<td>{"-" if threshold is None else f"{threshold:.4f}"}</td>'
                        f'<td class="{"BREACH" if state == "BREACH" else "PASS"}">{state}</td></tr>')
    return rows


def write(folder: str, document: Dict[str, Any], plots: Dict[str, str], samples: List[Dict[str, Any]]) -> Dict[str, str]:
    """report.json and report.html in `folder`; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    verdict = document['verdict']
    numbers = document['numbers']
    reasons = ''.join(f'<li>{html.escape(r["message"])}</li>' for r in document['reasons']) or '<li>none</li>'
    estimate = numbers.get('estimate', {}).get('message', '')
    health = document.get('health') or {}
    health_rows = ''.join(f'<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>' for k, v in health.items())
    frames = ''.join(f'<figure><img alt="{html.escape(s["record_id"])}" src="data:image/jpeg;base64,{s["thumbnail"]}">'
                     + (f'<img alt="why: {html.escape(s["record_id"])}" src="data:image/png;base64,{s["overlay"]}">'
                        if s.get('overlay') else '')
                     + f'<figcaption>{html.escape(s["caption"])}</figcaption></figure>' for s in samples)
    why = ('<p>Beside each frame: what the model looked at (Integrated Gradients toward the predicted class on '
           'the served SavedModel, as <code>petpark explain</code>; red-yellow: most salient).</p>'
           if any(s.get('overlay') for s in samples) else
           f'<p>{html.escape(document.get("explanations", ""))}</p>')
    figures = ''.join(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{png}"></figure>'
                      for name, png in plots.items())
    skipped = ', '.join(f'{k} {v}' for k, v in document['skipped'].items()) or 'none'
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Monitoring: {html.escape(document['model_name'])} {html.escape(document['version'])}
{html.escape(document['window_id'])}</title><style>{_STYLE}</style></head><body>
<h1>Monitoring window {html.escape(document['window_id'])}</h1>
<p>Model <b>{html.escape(document['model_name'])}</b> version <b>{html.escape(document['version'])}</b>;
{document['frames']} frames served {html.escape(document['start_text'])} to {html.escape(document['end_text'])};
skipped: {html.escape(skipped)}.</p>
<h2 class="{verdict}">{verdict}</h2>
<ul>{reasons}</ul>
<p>{html.escape(estimate)}</p>
<h2>Checks (thresholds calibrated for {document['frames']} frames)</h2>
<table><tr><th>check</th><th>value</th><th>threshold</th><th></th></tr>{''.join(_check_rows(numbers))}</table>
<h2>Against training</h2><div class="plots">{figures}</div>
<h2>Sample frames of what changed</h2>{why}<div class="frames">{frames or '<p>none</p>'}</div>
<h2>Application health</h2><table>{health_rows or '<tr><td>not measured (no Prometheus configured)</td></tr>'}</table>
</body></html>
"""
    paths = {'json': os.path.join(folder, REPORT_JSON), 'html': os.path.join(folder, REPORT_HTML)}
    files.write_text_atomically(paths['json'], json.dumps(document, indent=1, sort_keys=True, default=str) + '\n')
    files.write_text_atomically(paths['html'], page)
    return paths
