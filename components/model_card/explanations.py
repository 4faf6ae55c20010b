"""The card's explanations: the evaluated split scored by the pushed SavedModel, saliency overlays of the
most confident mistakes and of a few photos per slice (saliency.py), written into the card's folder.

The evaluated split is the Evaluator's: `validation` when the examples have that hold-out split
(the factory evaluates on it then), else `eval`. Photos are read from the raw examples
(`image_raw`, `label`, `image_id` and the slice features), as the Evaluator read them.
"""
import os
import re
from typing import Any, Dict, List, Tuple

import numpy as np

from petpark.components.model_card import render, saliency
from petpark.modules import features

HOLDOUT_SPLIT = 'validation'
MAX_EXAMPLES = 2000  # photos scored at most (the first of the split's files)
_SAFE = re.compile(r'[^A-Za-z0-9_.-]+')


def evaluated_split(examples) -> str:
    from tfx.types import artifact_utils
    names = artifact_utils.decode_split_names(examples.split_names)
    return HOLDOUT_SPLIT if HOLDOUT_SPLIT in names else 'eval'


def read_photos(examples, split: str, limit: int = MAX_EXAMPLES) -> List[Dict[str, Any]]:
    """[{image_id, label, image, <slice feature>: value}] of the split's raw examples, at most `limit`."""
    import tensorflow as tf
    from tfx.dsl.io import fileio
    files = sorted(fileio.glob(os.path.join(examples.uri, f'Split-{split}', '*')))
    if not files:
        raise ValueError(f'{examples.uri}: no Split-{split} files')
    photos = []
    for record in tf.data.TFRecordDataset(files, compression_type='GZIP').take(limit):
        example = tf.train.Example.FromString(record.numpy())
        row = {}
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof('kind')
            values = list(getattr(feature, kind).value) if kind else []
            if values:
                row[name] = values[0].decode('utf-8', 'replace') if isinstance(values[0], bytes) and \
                    name != features.IMAGE_KEY else values[0]
        if features.IMAGE_KEY in row:
            photos.append(row)
    return photos


def slice_filter(name: str) -> List[Tuple[str, str]]:
    """'camera_id=cam-1, lighting=night' -> [('camera_id', 'cam-1'), ('lighting', 'night')]."""
    pairs = []
    for part in name.split(', '):
        key, sep, value = part.partition('=')
        if not sep:
            return []
        pairs.append((key, value))
    return pairs


def _in_slice(photo: Dict[str, Any], pairs: List[Tuple[str, str]]) -> bool:
    return all(str(photo.get(key)) == value for key, value in pairs)


def explain_split(model_dir: str, examples, slices: List[Dict[str, Any]], folder: str, *, steps: int,
                  mistakes: int, per_slice: int, max_slices: int = 12) -> Dict[str, Any]:
    """Scores the evaluated split, explains the most confident mistakes and `per_slice` photos of each
    of the `max_slices` slices with the highest error rate; PNGs into `<folder>/explanations/`.
    Returns the facts section `explanations`."""
    split = evaluated_split(examples)
    photos = read_photos(examples, split)
    explainer = saliency.Explainer(model_dir)
    scores = np.concatenate([explainer.served_scores([p[features.IMAGE_KEY] for p in photos[i:i + 64]])
                             for i in range(0, len(photos), 64)]) if photos else np.zeros((0, 2))
    names = explainer.class_names
    wrong = [i for i, p in enumerate(photos) if p.get(features.LABEL_KEY) in names
             and names.index(p[features.LABEL_KEY]) != int(np.argmax(scores[i]))]
    wrong.sort(key=lambda i: -float(np.max(scores[i])))
    out = os.path.join(folder, render.EXPLANATIONS_DIR)
    os.makedirs(out, exist_ok=True)

    def explained(index: int, stem: str) -> Dict[str, Any]:
        photo = photos[index]
        found = explainer.explain(photo[features.IMAGE_KEY], steps, served=scores[index])
        file_name = f'{stem}.png'
        saliency.overlay_png(photo[features.IMAGE_KEY], found.saliency, os.path.join(out, file_name))
        return {'image_id': str(photo.get(features.IMAGE_ID_KEY, index)), 'label': photo.get(features.LABEL_KEY),
                'predicted': names[found.predicted], 'score': found.score,
                'file': f'{render.EXPLANATIONS_DIR}/{file_name}'}

    shown_mistakes = [explained(i, f'mistake-{n + 1}') for n, i in enumerate(wrong[:mistakes])]
    ranked = sorted((s for s in slices if s['slice'] != 'overall' and render.error_rate(s) is not None),
                    key=lambda s: -render.error_rate(s)['rate'])
    shown_slices = []
    for s in ranked:
        if len(shown_slices) >= max_slices:
            break
        pairs = slice_filter(s['slice'])
        members = [i for i, p in enumerate(photos) if pairs and _in_slice(p, pairs)][:per_slice]
        if not members:
            continue
        stem = _SAFE.sub('_', s['slice'])[:60]
        shown_slices.append({'slice': s['slice'],
                             'photos': [explained(i, f'slice-{len(shown_slices) + 1}-{stem}-{n + 1}')
                                        for n, i in enumerate(members)]})
    return {'method': 'integrated_gradients', 'steps': steps, 'split': split, 'examples': len(photos),
            'errors': len(wrong), 'mistakes': shown_mistakes, 'slices': shown_slices}


def model_dir_of(pushed) -> str:
    """The SavedModel the Pusher copied into its PushedModel artifact (the served version's files)."""
    return pushed.uri
