"""A model card from the facts record: Markdown, the same as HTML, and its metric plots (PNG).

Values that come from data (slice names, paths, reasons) are HTML-escaped before they enter the
Markdown, so the HTML card shows them as text, never as markup. Sections a renderer does not know
(a newer component's contribution) are listed under "Other facts".

The slice plot is read at a glance: each slice's error rate (1 - accuracy) with its 95% Wilson
interval from the counts, worst first, on an axis that ends just past the largest interval (so
0.024 and 0.004 look different; a small slice beyond it is cut at the edge with its numbers written
there), the overall error rate as a line with its interval as a band,
and slices under SMALL_SLICE examples drawn hatched and named "small". A certifier sees which
slice is worst and whether its interval leaves the overall band (a real difference) or not (noise).
"""
import html
import json
import math
import os
from typing import Any, Dict, List, Optional, Tuple

import markdown

from petpark.components.common.facts import FAIRNESS_COLUMNS, SLICE_COLUMNS

SLICES_PLOT, FAIRNESS_PLOT = 'slices.png', 'fairness.png'
CARD_MD, CARD_HTML, FACTS_JSON = 'model_card.md', 'model_card.html', 'facts.json'
DECISIONS_HTML = 'decisions.html'  # beside the card, rewritten after every decision (pipeline/release/rollout.py)
EXPLANATIONS_DIR = 'explanations'
SMALL_SLICE = 30  # fewer examples: the slice is marked small (its 95% interval is wider than about +-0.1)
Z95 = 1.959963984540054
_SLICE_HEADERS = ('slice', 'examples', 'accuracy', 'error rate (95% interval)', 'precision', 'recall', 'AUC',
                  'FPR@0.5', 'FNR@0.5')


def number(value, digits: int = 3) -> str:
    """A metric as the card and `petpark models` print it; '-' when absent."""
    return '-' if value is None else f'{value:.{digits}f}'


def text(value: Any) -> str:
    """A value from data as card text: HTML-escaped, Markdown's table bar and backtick escaped too."""
    return html.escape(str(value)).replace('|', '&#124;').replace('`', '&#96;')


def wilson(errors: float, n: float, z: float = Z95) -> Tuple[float, float]:
    """The Wilson score interval of a proportion errors/n (95% by default); (0, 1) when n is 0."""
    if not n:
        return 0.0, 1.0
    p = errors / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def error_rate(row: Dict[str, Any]) -> Optional[Dict[str, float]]:
    """{rate, low, high, n, errors} of a slice from its accuracy and example count; None without them."""
    accuracy, n = row.get('binary_accuracy'), row.get('example_count')
    if accuracy is None or not n:
        return None
    errors = round((1.0 - accuracy) * n)
    low, high = wilson(errors, n)
    return {'rate': 1.0 - accuracy, 'low': low, 'high': high, 'n': n, 'errors': errors}


def error_text(row: Dict[str, Any]) -> str:
    found = error_rate(row)
    if found is None:
        return '-'
    small = ' small' if found['n'] < SMALL_SLICE else ''
    return f"{found['rate']:.3f} [{found['low']:.3f}, {found['high']:.3f}]{small}"


def slice_row(row: Dict[str, Any]) -> List[str]:
    return [text(row['slice']), number(row['example_count'], 0), number(row['binary_accuracy']), error_text(row)] + [
        number(row[key]) for key in SLICE_COLUMNS[2:] + FAIRNESS_COLUMNS]


def plot(facts: Dict[str, Any], folder: str) -> Dict[str, Any]:
    """slices.png: error rate per slice with 95% intervals, worst first; fairness.png: FPR and FNR at 0.5
    per slice, on an axis fitted to them. Returns what slices.png shows (order, axis end, small slices, slices
    cut at the axis end)."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
    rows = [dict(r, error=error_rate(r)) for r in facts['slices']]
    overall = next((r for r in rows if r['slice'] == 'overall'), None)
    sliced = sorted((r for r in rows if r['slice'] != 'overall' and r['error'] is not None),
                    key=lambda r: (-r['error']['rate'], -r['example_count']))
    shown = ([overall] if overall is not None and overall['error'] is not None else []) + sliced
    # the axis fits the slices that are not small (their intervals are informative); a small slice's bar or
    # interval beyond it is cut at the edge and its numbers written there
    core = [r for r in shown if r['example_count'] >= SMALL_SLICE] or shown
    axis_end = min(1.0, max([r['error']['high'] for r in core] + [0.01]) * 1.15)
    clipped = []
    figure, axes = pyplot.subplots(figsize=(9, 0.3 * len(shown) + 1.8))
    small = []
    for index, r in enumerate(shown):
        e = r['error']
        is_small = r['example_count'] < SMALL_SLICE
        if is_small:
            small.append(r['slice'])
        colour = '#555555' if r['slice'] == 'overall' else '#c44e52' if is_small else '#4c72b0'
        axes.barh(index, min(e['rate'], axis_end), color=colour, alpha=0.35 if is_small else 0.8,
                  hatch='//' if is_small else None, edgecolor=colour)
        if e['low'] < axis_end:
            rate = min(e['rate'], axis_end)
            below, above = max(rate - e['low'], 0.0), max(min(e['high'], axis_end) - rate, 0.0)  # >= 0 when rounded
            axes.errorbar(rate, index, xerr=[[below], [above]], fmt='none',
                          ecolor='black', capsize=3 if e['high'] <= axis_end else 0, linewidth=1)
        if e['high'] > axis_end:
            clipped.append(r['slice'])
            axes.text(axis_end, index, f" {e['rate']:.3f} [{e['low']:.3f}, {e['high']:.3f}] >", va='center',
                      ha='right', fontsize='x-small', color='#333333')
    if overall is not None and overall['error'] is not None:
        axes.axvspan(overall['error']['low'], overall['error']['high'], color='#999999', alpha=0.15, linewidth=0)
        axes.axvline(overall['error']['rate'], color='#555555', linestyle='--', linewidth=1)
    names = [f"{r['slice'][:50]} (n={number(r['example_count'], 0)}{', small' if r['slice'] in small else ''})"
             for r in shown]
    axes.set_yticks(range(len(shown)), names, fontsize='small')
    axes.invert_yaxis()
    axes.set_xlim(0, axis_end)
    axes.set_xlabel(f'error rate (1 - accuracy) with its 95% Wilson interval\n'
                    f'dashed: overall, grey band: its interval; hatched: small slice (n < {SMALL_SLICE})',
                    fontsize='small')
    axes.set_title('Error rate per slice, worst first')
    figure.tight_layout()
    figure.savefig(os.path.join(folder, SLICES_PLOT), dpi=80)
    pyplot.close(figure)

    series = [(FAIRNESS_COLUMNS[0], 'false positive rate'), (FAIRNESS_COLUMNS[1], 'false negative rate')]
    fair_rows = facts['slices']
    figure, axes = pyplot.subplots(figsize=(8, 0.2 * len(fair_rows) * len(series) + 1.2))
    height = 0.8 / len(series)
    for index, (key, label) in enumerate(series):
        axes.barh([i + index * height for i in range(len(fair_rows))], [r[key] or 0.0 for r in fair_rows],
                  height=height, label=label)
    axes.set_yticks([i + height * (len(series) - 1) / 2 for i in range(len(fair_rows))],
                    [f"{r['slice'][:60]} (n={number(r['example_count'], 0)})" for r in fair_rows])
    axes.invert_yaxis()
    largest = max([r[key] or 0.0 for r in fair_rows for key, _ in series] + [0.01])
    axes.set_xlim(0, min(1.0, largest * 1.15))
    axes.set_title('Fairness Indicators per slice (threshold 0.5)')
    axes.legend(loc='lower right', fontsize='small')
    figure.tight_layout()
    figure.savefig(os.path.join(folder, FAIRNESS_PLOT), dpi=80)
    pyplot.close(figure)
    return {'order': [r['slice'] for r in shown], 'axis_end': axis_end, 'small': small, 'clipped': clipped}


KNOWN_SECTIONS = {'model_name', 'version', 'destination', 'metrics', 'worst_slice', 'slices', 'blessing',
                  'serving_check', 'hyperparameters', 'data', 'schema', 'code_version', 'edge', 'explanations'}


def markdown_card(facts: Dict[str, Any]) -> str:
    metrics, worst, infra, edge = facts['metrics'], facts['worst_slice'], facts['serving_check'], facts['edge']
    data = facts['data']
    hyperparameters = text(json.dumps(facts['hyperparameters'])) if facts['hyperparameters'] else 'fixed (no Tuner)'
    version = f", version {text(data['data_version'])}" if data['data_version'] is not None else ''
    lines = [f"# Model card: {text(facts['model_name'])} version {text(facts['version'])}", '',
             f"Cat/dog classifier; the score is P(dog). Served from `{text(facts['destination'])}`.", '',
             '## Performance on the eval split', '',
             '| examples | accuracy | precision | recall | AUC |', '| --- | --- | --- | --- | --- |',
             '| ' + ' | '.join([number(metrics.get('example_count'), 0)] + [
                 number(metrics.get(k)) for k in ('binary_accuracy', 'precision', 'recall', 'auc')]) + ' |', '']
    if worst:
        small = f' (a small slice: fewer than {SMALL_SLICE} examples)' if (worst['example_count'] or 0) < SMALL_SLICE else ''
        lines += [f"Worst slice: **{text(worst['slice'])}**, accuracy {number(worst['binary_accuracy'])} "
                  f"on {number(worst['example_count'], 0)} examples; error rate {error_text(worst)}{small}.", '']
    lines += ['## Slices and fairness', '', '| ' + ' | '.join(_SLICE_HEADERS) + ' |',
              '|' + ' --- |' * len(_SLICE_HEADERS)]
    lines += ['| ' + ' | '.join(slice_row(row)) + ' |' for row in facts['slices']]
    lines += ['', f'Error rates with 95% Wilson intervals from the counts; "small": fewer than {SMALL_SLICE} examples. '
              'A slice whose interval stays inside the overall band differs from the whole by no more than noise.',
              '', f'![Error rate per slice]({SLICES_PLOT})', '', f'![Fairness Indicators per slice]({FAIRNESS_PLOT})', '',
              '## Release checks', '',
              f"- Evaluator blessing: {'BLESSED' if facts['blessing']['blessed'] else 'NOT blessed'}"]
    lines += [f'  - {text(threshold)}' for threshold in facts['blessing']['thresholds']]
    if infra:
        verdict = 'passed' if infra['blessed'] else f"FAILED ({text(infra['reason'])})"
        lines.append(f"- Serving check ({text(infra['server'])}): {verdict}; {number(infra['requests'], 0)} gRPC "
                     f"requests, p50 {number(infra['latency_p50_ms'], 1)} ms, p99 {number(infra['latency_p99_ms'], 1)} ms")
    else:
        lines.append('- Serving check: skipped (PETPARK_VALIDATE_SERVING=false)')
    lines += ['', '## Training', '',
              f"- Data: span {text(data['span'])}{version}, examples per split "
              f"{text(json.dumps(data['splits']))} (`{text(data['examples_uri'])}`)",
              f"- Schema: {len(facts['schema']['features'])} features (`{text(facts['schema']['uri'])}`)",
              f"- Hyperparameters: {hyperparameters}",
              f"- Code version: {text(facts['code_version'])}", '', '## Edge export', '']
    lines.append(f"ONNX opset {edge['opset']}{' with INT8' if edge['int8'] else ''}, largest difference from the "
                 f"SavedModel {text(edge['parity_max_abs_difference'])}: `{text(edge['destination'])}`"
                 if edge else 'None.')
    lines += explanation_lines(facts.get('explanations'))
    lines += ['', '## Decisions', '',
              'Certification (approval or rejection), canary verdicts, promotions and rollbacks are recorded in MLMD '
              f'after this card was written, which does not change: see [{DECISIONS_HTML}]({DECISIONS_HTML}) beside it '
              '(rewritten after every decision) and `petpark models show VERSION`.']
    others = sorted(key for key in facts if key not in KNOWN_SECTIONS and facts[key] is not None)
    if others:
        lines += ['', '## Other facts', '']
        lines += [f'- {text(key)}: {text(json.dumps(facts[key], sort_keys=True))}' for key in others]
    return '\n'.join(lines) + '\n'


def _photo_cell(photo: Dict[str, Any]) -> str:
    caption = (f"{text(photo['image_id'])}<br>label {text(photo['label'])}, called {text(photo['predicted'])} "
               f"{number(photo['score'], 2)}")
    return f'<figure><img src="{text(photo["file"])}" width="200"><figcaption>{caption}</figcaption></figure>'


def explanation_lines(found: Optional[Dict[str, Any]]) -> List[str]:
    """The card's "Why the model decided" section: saliency overlays of mistakes and of photos per slice."""
    lines = ['', '## Why the model decided', '']
    if not found:
        return lines + ['Not computed for this version.']
    if found.get('problem'):
        return lines + [f"Not computed: {text(found['problem'])}"]
    lines += [f"Integrated Gradients ({text(found['steps'])} steps, from a blurred copy of the photo) on the served "
              f"SavedModel, over the `{text(found['split'])}` split ({number(found['examples'], 0)} photos): red to "
              'yellow marks the pixels that pushed the score toward the class the model chose.', '',
              f"### The {len(found['mistakes'])} most confident mistakes", '']
    if found['mistakes']:
        lines.append('<div>' + ''.join(_photo_cell(photo) for photo in found['mistakes']) + '</div>')
    else:
        lines.append('No mistakes on this split.')
    lines += ['', '### Photos per slice', '']
    for entry in found['slices']:
        lines += [f"**{text(entry['slice'])}**", '', '<div>' + ''.join(_photo_cell(p) for p in entry['photos']) + '</div>',
                  '']
    return lines


def write(facts: Dict[str, Any], folder: str) -> None:
    """facts.json, model_card.md, model_card.html and the plots into `folder`."""
    os.makedirs(folder, exist_ok=True)
    plot(facts, folder)
    card = markdown_card(facts)
    body = markdown.markdown(card, extensions=['tables'])
    title = text(f"{facts['model_name']} {facts['version']}")
    with open(os.path.join(folder, CARD_HTML), 'w') as f:
        f.write(f'<!doctype html>\n<html><head><meta charset="utf-8"><title>Model card: {title}</title>\n'
                '<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}'
                'td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}'
                'figure{display:inline-block;margin:.3em;font-size:small;vertical-align:top}</style></head>\n'
                f'<body>\n{body}\n</body></html>\n')
    with open(os.path.join(folder, FACTS_JSON), 'w') as f:
        json.dump(facts, f, indent=1, sort_keys=True)
    with open(os.path.join(folder, CARD_MD), 'w') as f:  # last: marks the card complete
        f.write(card)
