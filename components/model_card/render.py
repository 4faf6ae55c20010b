"""A model card from the facts record: Markdown, the same as HTML, and its metric plots (PNG).

Values that come from data (slice names, paths, reasons) are HTML-escaped before they enter the
Markdown, so the HTML card shows them as text, never as markup. Sections a renderer does not know
(a newer component's contribution) are listed under "Other facts".
"""
import html
import json
import os
from typing import Any, Dict, List

import markdown

from petpark.components.common.facts import FAIRNESS_COLUMNS, SLICE_COLUMNS

SLICES_PLOT, FAIRNESS_PLOT = 'slices.png', 'fairness.png'
CARD_MD, CARD_HTML, FACTS_JSON = 'model_card.md', 'model_card.html', 'facts.json'
_SLICE_HEADERS = ('slice', 'examples', 'accuracy', 'precision', 'recall', 'AUC', 'FPR@0.5', 'FNR@0.5')


def number(value, digits: int = 3) -> str:
    """A metric as the card and `petpark models` print it; '-' when absent."""
    return '-' if value is None else f'{value:.{digits}f}'


def text(value: Any) -> str:
    """A value from data as card text: HTML-escaped, Markdown's table bar and backtick escaped too."""
    return html.escape(str(value)).replace('|', '&#124;').replace('`', '&#96;')


def slice_row(row: Dict[str, Any]) -> List[str]:
    return [text(row['slice']), number(row['example_count'], 0)] + [
        number(row[key]) for key in SLICE_COLUMNS[1:] + FAIRNESS_COLUMNS]


def plot(facts: Dict[str, Any], folder: str) -> None:
    """slices.png: accuracy, precision and recall per slice; fairness.png: FPR and FNR at 0.5."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
    rows = facts['slices']
    names = [f"{r['slice'][:60]} (n={number(r['example_count'], 0)})" for r in rows]
    for file_name, series, title in (
            (SLICES_PLOT, [('binary_accuracy', 'accuracy'), ('precision', 'precision'), ('recall', 'recall')],
             'Metrics per slice'),
            (FAIRNESS_PLOT, [(FAIRNESS_COLUMNS[0], 'false positive rate'), (FAIRNESS_COLUMNS[1], 'false negative rate')],
             'Fairness Indicators per slice (threshold 0.5)')):
        figure, axes = pyplot.subplots(figsize=(8, 0.2 * len(rows) * len(series) + 1.2))
        height = 0.8 / len(series)
        for index, (key, label) in enumerate(series):
            axes.barh([i + index * height for i in range(len(rows))], [r[key] or 0.0 for r in rows],
                      height=height, label=label)
        axes.set_yticks([i + height * (len(series) - 1) / 2 for i in range(len(rows))], names)
        axes.invert_yaxis()
        axes.set_xlim(0, 1)
        axes.set_title(title)
        axes.legend(loc='lower right', fontsize='small')
        figure.tight_layout()
        figure.savefig(os.path.join(folder, file_name), dpi=80)
        pyplot.close(figure)


KNOWN_SECTIONS = {'model_name', 'version', 'destination', 'metrics', 'worst_slice', 'slices', 'blessing',
                  'serving_check', 'hyperparameters', 'data', 'schema', 'code_version', 'edge'}


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
        lines += [f"Worst slice: **{text(worst['slice'])}**, accuracy {number(worst['binary_accuracy'])} "
                  f"on {number(worst['example_count'], 0)} examples.", '']
    lines += ['## Slices and fairness', '', '| ' + ' | '.join(_SLICE_HEADERS) + ' |',
              '|' + ' --- |' * len(_SLICE_HEADERS)]
    lines += ['| ' + ' | '.join(slice_row(row)) + ' |' for row in facts['slices']]
    lines += ['', f'![Metrics per slice]({SLICES_PLOT})', '', f'![Fairness Indicators per slice]({FAIRNESS_PLOT})', '',
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
    others = sorted(key for key in facts if key not in KNOWN_SECTIONS and facts[key] is not None)
    if others:
        lines += ['', '## Other facts', '']
        lines += [f'- {text(key)}: {text(json.dumps(facts[key], sort_keys=True))}' for key in others]
    return '\n'.join(lines) + '\n'


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
                'td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}</style></head>\n'
                f'<body>\n{body}\n</body></html>\n')
    with open(os.path.join(folder, FACTS_JSON), 'w') as f:
        json.dump(facts, f, indent=1, sort_keys=True)
    with open(os.path.join(folder, CARD_MD), 'w') as f:  # last: marks the card complete
        f.write(card)
