"""Encoded image bytes -> bytes the model can read, image-derived features, or a rejection.

Plain functions on bytes (Pillow and NumPy only): no Beam, no TensorFlow.
"""
import io
from typing import Any, Dict, Optional, Tuple

import numpy as np
from PIL import Image

from petpark.components.image_example_gen.rejections import FileRejected
from petpark.modules import features

LFS_POINTER = b'version https://git-lfs'
_GRAYSCALE_MODES = ('L', 'LA', '1', 'I', 'I;16', 'I;16B', 'I;16L', 'I;16N')
_SIXTEEN_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')
_CONVERSIONS = {'L': 'grayscale', 'LA': 'grayscale', '1': 'grayscale', 'CMYK': 'cmyk',
                'P': 'palette', 'PA': 'palette', 'RGBA': 'alpha'}


def to_rgb(image: Image.Image) -> Tuple[Image.Image, Optional[str]]:
    """Returns an RGB image and the conversion reason (None when already RGB)."""
    mode = image.mode
    if mode == 'RGB':
        return image, None
    if mode in _SIXTEEN_BIT_MODES:
        pixels = np.asarray(image, dtype=np.float64)
        scale = 257.0 if pixels.max() > 255 else 1.0
        gray = Image.fromarray(np.clip(pixels / scale, 0, 255).astype(np.uint8))
        return gray.convert('RGB'), 'sixteen_bit'
    reason = _CONVERSIONS.get(mode, f'mode_{mode}')
    if mode in ('P', 'PA') and 'transparency' in image.info:
        image = image.convert('RGBA')
    return image.convert('RGB'), reason


def is_grayscale(original: Image.Image, rgb: np.ndarray) -> bool:
    """Single-channel modes, or RGB whose channels (nearly) agree on 99% of pixels."""
    if original.mode in _GRAYSCALE_MODES:
        return True
    spread = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2).astype(np.int16)
    return float(np.percentile(spread, 99)) <= 8


RGB_IMAGE = '_rgb_image'


def decode_image_file(data: bytes) -> Tuple[bytes, Dict[str, Any], Optional[str]]:
    """Validates encoded image bytes.

    Returns (bytes the model will read, image-derived features, conversion reason); the derived
    features also hold RGB_IMAGE, the decoded picture (for duplicate fingerprints; not a feature).
    Raises FileRejected for files that cannot be used.
    """
    if not data:
        raise FileRejected('empty_file', 'zero bytes')
    if data.startswith(LFS_POINTER):
        raise FileRejected('lfs_pointer', 'Git LFS pointer text, not the image it points to')
    try:
        image = Image.open(io.BytesIO(data))
        image_format = image.format
        image.load()
    except OSError as e:
        reason = 'truncated' if 'truncated' in str(e).lower() else 'undecodable'
        raise FileRejected(reason, str(e)) from None
    except (ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise FileRejected('undecodable', str(e)) from None
    rgb_image, reason = to_rgb(image)
    if reason is None and image_format not in ('JPEG', 'PNG'):
        reason = f'format_{image_format.lower()}'
    pixels = np.asarray(rgb_image)
    if reason is not None:
        buffer = io.BytesIO()
        rgb_image.save(buffer, format='JPEG', quality=95)
        data = buffer.getvalue()
    derived = {
        features.WIDTH_KEY: rgb_image.width,
        features.HEIGHT_KEY: rgb_image.height,
        features.BRIGHTNESS_KEY: float((pixels @ np.array([0.299, 0.587, 0.114])).mean() / 255.0),
        features.GRAYSCALE_KEY: int(is_grayscale(image, pixels)),
        RGB_IMAGE: rgb_image,
    }
    return data, derived, reason
