"""`petpark explain IMAGE... [--version V] [--out DIR]`: per image, the served version's score and a
saliency overlay (PNG), without a model server.

The version is the one models.config labels `stable` (else the newest pushed); its folder in the
push directory is the SavedModel TF Serving loads, and components/model_card/saliency.py computes
the score through its `serving_image_bytes` signature and Integrated Gradients through its
`serving_pixels` signature (why that method: see there). Every image is checked (exists, decodes,
at most MAX_PIXELS) before anything is written; each PNG is written whole, then renamed, and
`explanations.json` lists them last.
"""
import io
import json
import os
import re
from typing import Any, Dict, List, Optional

from petpark.serving import files, promote
from petpark.serving.layout import versions_on_disk

MAX_PIXELS = 40_000_000  # as the model server's bound on one image
SUMMARY_FILE = 'explanations.json'
_SAFE = re.compile(r'[^A-Za-z0-9_.-]+')


def chosen_version(settings, version: Optional[str]) -> str:
    """`version` when given (checked), else models.config's `stable`, else the newest pushed version."""
    available = sorted(versions_on_disk(settings.serving_model_dir))
    if version is not None:
        if not version.isdigit() or int(version) not in available:
            raise ValueError(f'--version {version}: no such version in {settings.serving_model_dir} '
                             f'(versions: {", ".join(map(str, available)) or "none"})')
        return str(int(version))
    stable = promote.labels_of(promote.read_config(settings.models_config_path), settings.model_name).get('stable')
    if stable is not None and stable in available:
        return str(stable)
    if not available:
        raise ValueError(f'No pushed version in {settings.serving_model_dir}: run the pipeline first')
    return str(available[-1])


def check_images(paths: List[str]) -> List[bytes]:
    """The images' bytes; a ValueError naming the first that is missing, unreadable or not an image."""
    from PIL import Image, UnidentifiedImageError
    found = []
    for path in paths:
        try:
            with open(path, 'rb') as f:
                data = f.read()
        except OSError as e:
            raise ValueError(f'{path}: cannot be read ({e.strerror or e})') from None
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ValueError(f'{path}: {width}x{height} is over {MAX_PIXELS} pixels')
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f'{path}: not an image the model can read ({e})') from None
        found.append(data)
    return found


def explain(settings, images: List[str], version: Optional[str] = None, out: Optional[str] = None,
            steps: int = 32) -> Dict[str, Any]:
    """Scores and overlays for `images` on the served version; returns the summary it wrote."""
    if steps < 1 or steps > 512:
        raise ValueError(f'--steps must be between 1 and 512, got {steps}')
    encoded = check_images(images)
    version = chosen_version(settings, version)
    out = os.path.abspath(out or os.path.join(settings.home, 'explanations', settings.model_name, version))
    from petpark.components.model_card import saliency  # TensorFlow: after every argument is checked
    explainer = saliency.Explainer(os.path.join(settings.serving_model_dir, version))
    os.makedirs(out, exist_ok=True)
    rows, used = [], set()
    for index, (path, data) in enumerate(zip(images, encoded)):
        found = explainer.explain(data, steps)
        stem = _SAFE.sub('_', os.path.splitext(os.path.basename(path))[0])[:80] or 'image'
        if stem in used:
            stem = f'{stem}-{index + 1}'
        used.add(stem)
        overlay = os.path.join(out, f'{stem}.saliency.png')
        label = explainer.class_names[found.predicted]
        saliency.overlay_png(data, found.saliency, overlay, caption=f'{label} {found.score:.3f}')
        rows.append({'image': os.path.abspath(path), 'label': label, 'score': found.score,
                     'scores': {name: float(s) for name, s in zip(explainer.class_names, found.scores)},
                     'overlay': overlay, 'completeness_gap': found.completeness_gap})
    summary = {'model_name': settings.model_name, 'version': version, 'method': 'integrated_gradients',
               'steps': steps, 'baseline': 'blurred photo', 'images': rows}
    files.write_text_atomically(os.path.join(out, SUMMARY_FILE), json.dumps(summary, indent=1) + '\n')
    summary['summary_file'] = os.path.join(out, SUMMARY_FILE)
    return summary
