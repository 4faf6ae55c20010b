"""ModelCardGenerator without a pipeline: no push, no card; the card renders the facts it is given.
The card of a real push, against the Evaluator's numbers and the registry: tests/pipeline/test_e2e.py."""
import os

from tfx.types import standard_artifacts

from petpark.components.model_card import executor, render

FACTS = {
    'model_name': 'petpark', 'version': '1800000000', 'destination': '/srv/petpark/1800000000',
    'metrics': {'example_count': 120.0, 'binary_accuracy': 0.9125, 'precision': 0.875, 'recall': 0.95, 'auc': 0.97},
    'worst_slice': {'slice': 'lighting=night', 'example_count': 9.0, 'binary_accuracy': 0.6667},
    'slices': [dict(slice=name, example_count=n, binary_accuracy=a, precision=0.9, recall=0.8, auc=0.95,
                    **{'fairness_indicators_metrics/false_positive_rate@0.50': 0.1,
                       'fairness_indicators_metrics/false_negative_rate@0.50': None})
               for name, n, a in (('overall', 120.0, 0.9125), ('lighting=night', 9.0, 0.6667))],
    'blessing': {'blessed': True, 'thresholds': ['BinaryAccuracy on overall: value_threshold { lower_bound { value: 0.7 } }'],
                 'baseline_model_id': None},
    'serving_check': {'blessed': True, 'server': 'petpark', 'latency_p50_ms': 4.2, 'latency_p99_ms': 7.9,
                      'requests': 32.0, 'reason': None},
    'hyperparameters': {'filters': 16}, 'code_version': 'git abc123',
    'data': {'examples_uri': '/x', 'span': 3, 'data_version': None, 'splits': {'train': 480, 'eval': 120},
             'statistics_uri': '/s'},
    'schema': {'uri': '/schema', 'features': ['image_raw', 'label']}, 'edge': None,
}


def test_nothing_pushed_writes_no_card(tmp_path):
    pushed = standard_artifacts.PushedModel()
    pushed.set_int_custom_property('pushed', 0)
    card = standard_artifacts.Model()  # any artifact: only its properties are set
    card.uri = str(tmp_path / 'card')
    executor.Executor().Do({'pushed_model': [pushed]}, {'model_card': [card]},
                           {'card_base_directory': str(tmp_path / 'cards'), 'model_name': 'petpark',
                            'code_version': 'git x', 'positive_class_id': 1})
    assert card.get_int_custom_property('written') == 0 and not (tmp_path / 'cards').exists()


def test_the_card_shows_the_facts_it_was_given(tmp_path):
    render.write(FACTS, str(tmp_path))
    text = (tmp_path / 'model_card.md').read_text()
    assert '| 120 | 0.912 | 0.875 | 0.950 | 0.970 |' in text  # overall
    assert '| lighting=night | 9 | 0.667 | 0.900 | 0.800 | 0.950 | 0.100 | - |' in text
    assert 'Worst slice: **lighting=night**, accuracy 0.667 on 9 examples' in text
    assert 'Serving check (petpark): passed; 32 gRPC requests, p50 4.2 ms, p99 7.9 ms' in text
    assert 'span 3, examples per split' in text and 'git abc123' in text and 'lower_bound { value: 0.7 }' in text
    html = (tmp_path / 'model_card.html').read_text()
    assert '<td>0.912</td>' in html and '<img alt="Metrics per slice" src="slices.png"' in html
    assert (tmp_path / 'slices.png').read_bytes()[:4] == b'\x89PNG' and os.path.getsize(tmp_path / 'fairness.png') > 1000
