"""preprocessing_fn: decode, resize, scale; label lookup; the label is optional."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from petpark.modules import features, preprocessing


def transform_config(size):
    """Transform's custom_config, as the pipeline passes it."""
    return {'preprocessing': {'image_size': size}}


def encoded(color, size=(40, 30), fmt='JPEG'):
    buffer = io.BytesIO()
    Image.new('RGB', size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def test_decodes_resizes_and_scales_a_batch():
    images = tf.constant([[encoded((255, 0, 0))], [encoded((0, 0, 255), (10, 90), 'PNG')]])
    out = preprocessing.preprocessing_fn(
        {features.IMAGE_KEY: images, features.LABEL_KEY: tf.constant([[b'dog'], [b'cat']]),
         features.IMAGE_ID_KEY: tf.constant([[b'a'], [b'b']])}, transform_config(24))
    stored = out[features.IMAGE_XF].numpy()
    assert stored.shape == (2, 24, 24, 3) and stored.dtype == np.int64  # compact in the tf.Examples
    assert 0 <= stored.min() and stored.max() <= 255
    pixels = preprocessing.unit_pixels(out[features.IMAGE_XF]).numpy()
    assert pixels.dtype == np.float32 and 0.0 <= pixels.min() and pixels.max() <= 1.0
    assert pixels[0, ..., 0].mean() > 0.95 and pixels[0, ..., 2].mean() < 0.05  # red stays red
    assert pixels[1, ..., 2].mean() > 0.95  # PNG decodes too
    assert out[features.LABEL_XF].numpy().tolist() == [1, 0]
    assert out[features.IMAGE_ID_XF].numpy().tolist() == [b'a', b'b']


def test_label_is_optional_and_unknown_labels_map_to_minus_one():
    out = preprocessing.preprocessing_fn({features.IMAGE_KEY: tf.constant([[encoded((1, 2, 3))]])}, transform_config(64))
    assert set(out) == {features.IMAGE_XF}
    assert out[features.IMAGE_XF].shape[1] == 64
    assert preprocessing.label_index(tf.constant([b'rabbit', b'cat'])).numpy().tolist() == [-1, 0]


def test_image_size_must_be_sensible():
    with pytest.raises(ValueError, match='image_size must be at least 16'):
        preprocessing.preprocessing_fn({features.IMAGE_KEY: tf.constant([[encoded((1, 2, 3))]])}, transform_config(4))


def test_transform_needs_its_config_section():
    with pytest.raises(ValueError, match=r"custom_config of Transform lacks the section\(s\) \['preprocessing'\]"):
        preprocessing.preprocessing_fn({features.IMAGE_KEY: tf.constant([[encoded((1, 2, 3))]])}, {})
    with pytest.raises(ValueError, match=r"preprocessing must have exactly the keys \['image_size'\]"):
        preprocessing.preprocessing_fn({features.IMAGE_KEY: tf.constant([[encoded((1, 2, 3))]])},
                                       {'preprocessing': {'image_size': 32, 'colour': 'red'}})
