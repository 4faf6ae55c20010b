"""ModelCardGenerator without a pipeline: no push, no card; the card renders the facts it is given, error rates
per slice with Wilson intervals (small slices marked), saliency overlays of the evaluated split's mistakes and of
photos per slice, and a link to the decisions recorded later. The card of a real push, against the Evaluator's
numbers and the registry: tests/pipeline/test_e2e.py."""
import os

import pytest

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
    assert '| lighting=night | 9 | 0.667 | 0.333 [0.121, 0.646] small | 0.900 | 0.800 | 0.950 | 0.100 | - |' in text
    assert 'Worst slice: **lighting=night**, accuracy 0.667 on 9 examples; error rate 0.333 [0.121, 0.646] small' in text
    assert '[decisions.html](decisions.html)' in text and 'Not computed for this version.' in text
    assert 'Serving check (petpark): passed; 32 gRPC requests, p50 4.2 ms, p99 7.9 ms' in text
    assert 'span 3, examples per split' in text and 'git abc123' in text and 'lower_bound { value: 0.7 }' in text
    html = (tmp_path / 'model_card.html').read_text()
    assert '<td>0.912</td>' in html and '<img alt="Error rate per slice" src="slices.png"' in html
    assert (tmp_path / 'slices.png').read_bytes()[:4] == b'\x89PNG' and os.path.getsize(tmp_path / 'fairness.png') > 1000


def test_wilson_intervals_match_known_values():
    low, high = render.wilson(5, 100)
    assert (round(low, 4), round(high, 4)) == (0.0215, 0.1118)
    low, high = render.wilson(0, 10)
    assert low == 0.0 and round(high, 3) == 0.278
    assert render.wilson(0, 0) == (0.0, 1.0)


def test_the_slice_plot_shows_differences_worst_first_and_marks_small_slices(tmp_path):
    """0.976 and 0.996 accuracy must not look the same: the axis ends just past the largest interval."""
    rows = [('overall', 1200.0, 0.985), ('camera_id=cam-01', 905.0, 0.996), ('camera_id=cam-02', 281.0, 0.976),
            ('camera_id=cam-09', 14.0, 0.9286), ('lighting=night', 1.0, 1.0)]
    facts = dict(FACTS, slices=[dict(FACTS['slices'][0], slice=name, example_count=n, binary_accuracy=a)
                                for name, n, a in rows])
    drawn = render.plot(facts, str(tmp_path))
    assert drawn['order'] == ['overall', 'camera_id=cam-09', 'camera_id=cam-02', 'camera_id=cam-01', 'lighting=night']
    assert drawn['small'] == ['camera_id=cam-09', 'lighting=night']
    low, high = render.wilson(1, 14)  # cam-09: 1 error in 14
    # the axis fits the large slices (cam-02's interval ends near 0.05), not the small ones' wide intervals
    assert drawn['axis_end'] == pytest.approx(1.15 * render.wilson(7, 281)[1]) and drawn['axis_end'] < 0.1
    assert drawn['clipped'] == ['camera_id=cam-09', 'lighting=night']
    assert render.error_text(facts['slices'][2]) == '0.024 [0.012, 0.051]'
    assert render.error_text(facts['slices'][1]) == '0.004 [0.002, 0.011]'
    assert render.error_text(facts['slices'][3]).endswith(' small') and high > 0.3
    assert (tmp_path / 'slices.png').read_bytes()[:4] == b'\x89PNG'


def test_the_card_shows_overlays_of_mistakes_and_of_photos_per_slice(trained_model, transformed, tmp_path):
    from petpark.components.model_card import explanations
    slices = [dict(FACTS['slices'][0], slice='overall'),
              dict(FACTS['slices'][0], slice='lighting=night', example_count=5.0, binary_accuracy=0.4),
              dict(FACTS['slices'][0], slice='lighting=day', example_count=8.0, binary_accuracy=0.9),
              dict(FACTS['slices'][0], slice='camera_id=no-such-camera', example_count=3.0, binary_accuracy=0.0)]
    found = explanations.explain_split(os.path.join(trained_model.uri, 'Format-Serving'), transformed['raw_examples'],
                                       slices, str(tmp_path), steps=4, mistakes=3, per_slice=2)
    assert found['split'] == 'eval' and found['examples'] > 0 and found['method'] == 'integrated_gradients'
    assert len(found['mistakes']) == min(3, found['errors'])
    scores = [m['score'] for m in found['mistakes']]
    assert scores == sorted(scores, reverse=True) and all(m['label'] != m['predicted'] for m in found['mistakes'])
    assert [s['slice'] for s in found['slices']] == ['lighting=night', 'lighting=day']  # worst first; none of no camera
    assert all(len(s['photos']) == 2 for s in found['slices'])
    for photo in found['mistakes'] + [p for s in found['slices'] for p in s['photos']]:
        assert (tmp_path / photo['file']).read_bytes()[:4] == b'\x89PNG'
    render.write(dict(FACTS, slices=slices, explanations=found), str(tmp_path))
    html = (tmp_path / 'model_card.html').read_text()
    assert f"over the <code>eval</code> split ({found['examples']} photos)" in html
    assert html.count('<img src="explanations/') == len(found['mistakes']) + 4


def test_a_card_whose_explanations_fail_says_why_and_is_still_written(transformed, tmp_path):
    from tfx.types import standard_artifacts
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / 'no_model')
    found = executor._explanations({'pushed_model': [pushed], 'examples': [transformed['raw_examples']]},
                                   {'slices': []}, str(tmp_path), {'explain_steps': 2})
    assert found['problem'].startswith('ValueError: ') and 'no saved_model.pb' in found['problem']
    render.write(dict(FACTS, explanations=found), str(tmp_path / 'card'))
    assert 'Not computed: ValueError: ' in (tmp_path / 'card' / 'model_card.md').read_text()
    assert executor._explanations({}, {}, str(tmp_path), {'explain_steps': 0}) == {
        'problem': 'explanations turned off (explain_steps=0)'}
