"""Why the served model called a photo a dog: Integrated Gradients on the served SavedModel.

The score is the served one: the encoded image through the version's `serving_image_bytes`
signature, as a client gets it. The attribution is computed on the same version's
`serving_pixels` signature, from the pixels the serving graph makes of those bytes (decoded and
resized as modules/preprocessing.py declares; `Explainer.explain` checks that both signatures
give the same score), so no model server and no Keras model are needed.

Why Integrated Gradients and not Grad-CAM: a loaded SavedModel exposes its signatures, not its
layers, so Grad-CAM's last-convolution activations are not reachable without the training
code, and they would differ per backbone (our CNN, MobileNet v1/v2). Integrated Gradients needs only
the gradient of the score with respect to the input pixels, works on any signature that is
differentiable in its pixels, and its attributions add up to the score's difference from the
baseline (completeness), which makes them checkable: tests/components/test_explain.py shows that
removing the most salient tenth of the pixels lowers the predicted class's score more than removing
a random tenth. The baseline is a heavily blurred copy of the photo (colour and layout without
detail, less out of distribution than black), and "removing" a pixel means setting it to that
baseline. The cost is `steps` forward and backward passes per photo, batched.

Imports TensorFlow when called; nothing here is loaded by `petpark --help` or `petpark models`.
"""
import dataclasses
import io
import os
from typing import List, Optional, Sequence

import numpy as np

DEFAULT_STEPS = 32
BLUR_DIVISOR = 4  # the baseline's blur: a box blur over 1/BLUR_DIVISOR of the image side


@dataclasses.dataclass
class Explanation:
    """One photo: the served scores, the predicted class, and the attribution per input pixel."""
    scores: np.ndarray  # [classes], the serving_image_bytes signature's
    predicted: int
    pixels: np.ndarray  # [size, size, 3] in [0, 1]: what the model saw
    baseline: np.ndarray  # [size, size, 3]: Integrated Gradients' starting point, and "removed"
    attributions: np.ndarray  # [size, size, 3]: toward the predicted class's score
    completeness_gap: float  # |sum(attributions) - (score(pixels) - score(baseline))|

    @property
    def saliency(self) -> np.ndarray:
        """[size, size]: each pixel's attribution toward the predicted class (its channels summed)."""
        return self.attributions.sum(axis=-1)

    @property
    def score(self) -> float:
        return float(self.scores[self.predicted])


def blurred(pixels: np.ndarray) -> np.ndarray:
    """A box-blurred copy of [size, size, 3] pixels (edges repeated)."""
    size = pixels.shape[0]
    radius = max(1, size // (2 * BLUR_DIVISOR))
    padded = np.pad(pixels, ((radius, radius), (radius, radius), (0, 0)), mode='edge')
    window = 2 * radius + 1
    cumulative = np.cumsum(np.cumsum(padded, axis=0), axis=1)
    cumulative = np.pad(cumulative, ((1, 0), (1, 0), (0, 0)))
    total = (cumulative[window:, window:] - cumulative[:-window, window:] - cumulative[window:, :-window]
             + cumulative[:-window, :-window])
    return (total / (window * window)).astype(np.float32)


class Explainer:
    """A served SavedModel (a version folder of the push, or a Model artifact's Format-Serving)."""

    def __init__(self, saved_model_dir: str):
        import tensorflow as tf
        from petpark.modules import features
        self._tf = tf
        self.path = saved_model_dir
        if not tf.io.gfile.exists(os.path.join(saved_model_dir, 'saved_model.pb')):
            raise ValueError(f'{saved_model_dir}: no saved_model.pb (not a served model version)')
        self.model = tf.saved_model.load(saved_model_dir)
        missing = [name for name in (features.IMAGE_BYTES_SIGNATURE, features.PIXELS_SIGNATURE)
                   if name not in self.model.signatures]
        if missing:
            raise ValueError(f'{saved_model_dir}: the model has no {missing[0]!r} signature to explain')
        self._bytes = self.model.signatures[features.IMAGE_BYTES_SIGNATURE]
        self._pixels = self.model.signatures[features.PIXELS_SIGNATURE]
        self.size = int(self._pixels.structured_input_signature[1]['pixels'].shape[1])
        self.class_names = tuple(features.LABELS)

    def pixels(self, encoded: Sequence[bytes]) -> np.ndarray:
        """Encoded images -> [n, size, size, 3] in [0, 1], as the serving graph makes them."""
        from petpark.modules import preprocessing
        tf = self._tf
        levels = preprocessing.decode_and_resize(tf.constant(list(encoded)), self.size)
        return preprocessing.unit_pixels(levels).numpy()

    def served_scores(self, encoded: Sequence[bytes]) -> np.ndarray:
        """[n, classes]: what the served model answers for the encoded images."""
        return self._bytes(image_bytes=self._tf.constant(list(encoded)))['scores'].numpy()

    def scores(self, pixels: np.ndarray, batch: int = 64) -> np.ndarray:
        """[n, classes] of pixel arrays [n, size, size, 3]."""
        found = [self._pixels(pixels=self._tf.constant(pixels[i:i + batch], self._tf.float32))['scores'].numpy()
                 for i in range(0, len(pixels), batch)]
        return np.concatenate(found) if found else np.zeros((0, len(self.class_names)), np.float32)

    def integrated_gradients(self, pixels: np.ndarray, baseline: np.ndarray, class_index: int,
                             steps: int = DEFAULT_STEPS) -> np.ndarray:
        """[size, size, 3]: (pixels - baseline) times the gradient of the class's score averaged along the
        straight path from the baseline (trapezoid rule over `steps` intervals)."""
        tf = self._tf
        alphas = tf.reshape(tf.linspace(0.0, 1.0, steps + 1), [-1, 1, 1, 1])
        start, end = tf.constant(baseline[None], tf.float32), tf.constant(pixels[None], tf.float32)
        path = start + alphas * (end - start)
        with tf.GradientTape() as tape:
            tape.watch(path)
            chosen = self._pixels(pixels=path)['scores'][:, class_index]
        gradients = tape.gradient(chosen, path).numpy()
        average = (gradients[:-1] + gradients[1:]).mean(axis=0) / 2.0
        return (pixels - baseline) * average

    def explain(self, encoded: bytes, steps: int = DEFAULT_STEPS, served: Optional[np.ndarray] = None) -> Explanation:
        """The served scores of one encoded image and the attribution toward its predicted class."""
        pixels = self.pixels([encoded])[0]
        served = self.served_scores([encoded])[0] if served is None else served
        from_pixels = self.scores(pixels[None])[0]
        if not np.allclose(served, from_pixels, atol=1e-3):
            raise ValueError(f'{self.path}: the pixel signature scores {from_pixels} where the served one scores '
                             f'{served}: the explanation would not be of the served model')
        predicted = int(np.argmax(served))
        baseline = blurred(pixels)
        attributions = self.integrated_gradients(pixels, baseline, predicted, steps)
        change = float(from_pixels[predicted] - self.scores(baseline[None])[0][predicted])
        return Explanation(served, predicted, pixels, baseline, attributions, abs(float(attributions.sum()) - change))


def removed(explanation: Explanation, mask: np.ndarray) -> np.ndarray:
    """The photo's pixels with those of `mask` ([size, size] bool) set to the baseline."""
    return np.where(mask[..., None], explanation.baseline, explanation.pixels)


def top_mask(saliency: np.ndarray, fraction: float) -> np.ndarray:
    """[size, size] bool: the `fraction` of pixels with the highest saliency."""
    count = max(1, int(round(fraction * saliency.size)))
    order = np.argsort(saliency, axis=None)[::-1][:count]
    mask = np.zeros(saliency.size, bool)
    mask[order] = True
    return mask.reshape(saliency.shape)


def heat(saliency: np.ndarray) -> np.ndarray:
    """[size, size] in [0, 1]: positive attribution (evidence for the predicted class), lightly smoothed,
    scaled by its 99th percentile."""
    positive = np.clip(saliency, 0.0, None)
    padded = np.pad(positive, 1, mode='edge')
    smooth = sum(padded[i:i + positive.shape[0], j:j + positive.shape[1]] for i in range(3) for j in range(3)) / 9.0
    top = float(np.percentile(smooth, 99)) or float(smooth.max()) or 1.0
    return np.clip(smooth / top, 0.0, 1.0)


def overlay_png(encoded: bytes, saliency: np.ndarray, path: Optional[str] = None, width: int = 256,
                caption: str = '') -> bytes:
    """The photo (at most `width` pixels wide) with the saliency as a red-yellow heat layer, PNG bytes
    (also written to `path` when given, whole, then renamed)."""
    from PIL import Image, ImageDraw
    photo = Image.open(io.BytesIO(encoded)).convert('RGB')
    scale = min(1.0, width / max(photo.size))
    photo = photo.resize((max(1, int(photo.width * scale)), max(1, int(photo.height * scale))))
    level = Image.fromarray((heat(saliency) * 255).astype(np.uint8)).resize(photo.size, Image.BILINEAR)
    amount = np.asarray(level, np.float32)[..., None] / 255.0
    colour = np.stack([np.full(amount.shape[:2], 255.0), np.asarray(level, np.float32), np.zeros(amount.shape[:2])], -1)
    mixed = np.asarray(photo, np.float32) * (1 - 0.6 * amount) + colour * 0.6 * amount
    image = Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8))
    if caption:
        strip = Image.new('RGB', (image.width, 16), (255, 255, 255))
        ImageDraw.Draw(strip).text((3, 2), caption[:60], fill=(0, 0, 0))
        framed = Image.new('RGB', (image.width, image.height + 16), (255, 255, 255))
        framed.paste(image, (0, 0))
        framed.paste(strip, (0, image.height))
        image = framed
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    data = buffer.getvalue()
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        temporary = os.path.join(os.path.dirname(os.path.abspath(path)), f'.{os.path.basename(path)}.tmp')
        with open(temporary, 'wb') as f:
            f.write(data)
        os.replace(temporary, path)
    return data


def faithfulness(explainer: Explainer, explanations: List[Explanation], fraction: float = 0.1,
                 seed: int = 0) -> List[dict]:
    """Per photo: the predicted class's score with its most salient `fraction` of pixels removed, and with
    a random `fraction` removed (set to the baseline)."""
    rng = np.random.default_rng(seed)
    rows = []
    for explanation in explanations:
        salient = top_mask(explanation.saliency, fraction)
        random = top_mask(rng.random(explanation.saliency.shape), fraction)
        scores = explainer.scores(np.stack([explanation.pixels, removed(explanation, salient),
                                            removed(explanation, random)]))[:, explanation.predicted]
        rows.append({'score': float(scores[0]), 'salient_removed': float(scores[1]), 'random_removed': float(scores[2])})
    return rows
