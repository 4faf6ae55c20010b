"""Saliency maps are faithful, not decoration; `petpark explain` writes a score and an overlay per image from the
served SavedModel, without a server, and refuses bad input before writing anything. On the session's small
trained model; real photos where ../shared is present, synthetic frames otherwise."""
import glob
import json
import os
import shutil

import numpy as np
import pytest

from petpark.components.model_card import saliency
from petpark.pipeline import cli, synthetic_data

PHOTOS = 100


@pytest.fixture(scope='module')
def explainer(trained_model):
    return saliency.Explainer(os.path.join(trained_model.uri, 'Format-Serving'))


def photos(shared, tmp_path_factory, count=PHOTOS):
    """`count` photos: half cats, half dogs of the real validation set, else synthetic frames."""
    if shared is not None:
        root = os.path.join(shared, 'data', 'cats_and_dogs_filtered', 'validation')
        return (sorted(glob.glob(os.path.join(root, 'cats', '*.jpg')))[:count // 2]
                + sorted(glob.glob(os.path.join(root, 'dogs', '*.jpg')))[:count - count // 2])
    folder = str(tmp_path_factory.mktemp('frames'))
    synthetic_data.generate(folder, count, seed=5)
    return sorted(glob.glob(os.path.join(folder, '*', '*.jpg')))


def test_removing_the_most_salient_tenth_lowers_the_score_more_than_a_random_tenth(
        explainer, shared_dir_or_none, tmp_path_factory):
    files = photos(shared_dir_or_none, tmp_path_factory)
    assert len(files) == PHOTOS
    explained = [explainer.explain(open(path, 'rb').read(), steps=16) for path in files]
    rows = saliency.faithfulness(explainer, explained, fraction=0.1, seed=0)
    wins = sum(r['salient_removed'] < r['random_removed'] for r in rows)
    salient_drop = float(np.mean([r['score'] - r['salient_removed'] for r in rows]))
    random_drop = float(np.mean([r['score'] - r['random_removed'] for r in rows]))
    print(f'faithfulness on {PHOTOS} {"real" if shared_dir_or_none else "synthetic"} photos: salient removal lowers '
          f'the score more than random on {wins}; mean drop {salient_drop:.5f} against {random_drop:.5f}')
    assert wins > PHOTOS // 2, rows
    assert salient_drop > random_drop
    # Integrated Gradients' completeness: the attributions add up to the score's change from the baseline
    assert max(e.completeness_gap for e in explained) < 0.05 * max(1e-3, max(abs(r['score']) for r in rows))


def test_the_explanation_is_of_the_served_score(explainer, shared_dir_or_none, tmp_path_factory):
    files = photos(shared_dir_or_none, tmp_path_factory, count=4)
    encoded = [open(path, 'rb').read() for path in files]
    served = explainer.served_scores(encoded)
    for data, scores in zip(encoded, served):
        found = explainer.explain(data, steps=8)
        np.testing.assert_allclose(found.scores, scores, atol=1e-6)
        assert found.predicted == int(np.argmax(scores)) and found.saliency.shape == (explainer.size, explainer.size)
    # a different map for a different photo: the map depends on the photo
    assert not np.allclose(explainer.explain(encoded[0], 8).saliency, explainer.explain(encoded[-1], 8).saliency)


@pytest.fixture
def served_home(tmp_path, trained_model, monkeypatch):
    for name in list(os.environ):
        if name.startswith('PETPARK_'):
            monkeypatch.delenv(name)
    home = tmp_path / 'home'
    shutil.copytree(os.path.join(trained_model.uri, 'Format-Serving'), home / 'serving' / 'petpark' / '1800000000')
    return home


def test_petpark_explain_writes_a_score_and_an_overlay_per_image(served_home, tmp_path, capsys):
    frames = str(tmp_path / 'frames')
    synthetic_data.generate(frames, 4, seed=9)
    images = sorted(glob.glob(os.path.join(frames, '*', '*.jpg')))[:2]
    out = tmp_path / 'out'
    assert cli.main(['explain', *images, '--home', str(served_home), '--out', str(out), '--steps', '8']) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and 'version 1800000000, Integrated Gradients (8 steps)' in lines[-1]
    summary = json.loads((out / 'explanations.json').read_text())
    assert summary['version'] == '1800000000' and [r['image'] for r in summary['images']] == images
    for line, row in zip(lines, summary['images']):
        path, label, score, overlay = line.split('\t')
        assert label == row['label'] and float(score) == pytest.approx(row['score'], abs=1e-3)
        assert row['scores'][label] == pytest.approx(max(row['scores'].values()))
        assert open(overlay, 'rb').read(4) == b'\x89PNG' and os.path.dirname(overlay) == str(out)


@pytest.mark.parametrize('problem', ['missing', 'not_an_image', 'version'])
def test_bad_input_is_one_line_and_nothing_is_written(served_home, tmp_path, capsys, problem):
    frames = str(tmp_path / 'frames')
    synthetic_data.generate(frames, 2, seed=9)
    good = sorted(glob.glob(os.path.join(frames, '*', '*.jpg')))[0]
    bad = {'missing': str(tmp_path / 'nope.jpg'), 'not_an_image': str(tmp_path / 'notes.jpg'), 'version': good}[problem]
    (tmp_path / 'notes.jpg').write_text('not a photo')
    extra = ['--version', '42'] if problem == 'version' else []
    out = tmp_path / 'out'
    assert cli.main(['explain', good, bad, '--home', str(served_home), '--out', str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith('petpark: error: ') and err.count('\n') == 1
    assert {'missing': 'nope.jpg: cannot be read', 'not_an_image': 'notes.jpg: not an image',
            'version': '--version 42: no such version'}[problem] in err
    assert not out.exists()
