"""Transform's preprocessing_fn: decode, resize to the model's input size, round to integer pixels.

The same graph runs inside every serving signature, so training and serving see
identical pixels.
"""
from typing import Any, Dict

import tensorflow as tf

if __package__:
    from . import features, training_config
else:  # a top-level module in the user-module wheel TFX builds from this folder
    import features
    import training_config


def decode_and_resize(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP strings [batch] -> int64 [batch, size, size, 3] in 0-255, as
    features.PIXEL_CONTRACT declares.

    Integers, not floats: Transform's output of 24,000 photos stays a few GB instead of 4x that."""
    contract = features.PIXEL_CONTRACT
    top = float(contract['max_level'])

    def decode_one(data: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), [size, size], method=contract['resize_method'],
                                antialias=contract['antialias'])
        return tf.cast(tf.round(tf.clip_by_value(image, 0.0, top)), tf.int64)

    return tf.map_fn(decode_one, tf.reshape(encoded, [-1]),
                     fn_output_signature=tf.TensorSpec([size, size, 3], tf.int64))


def unit_pixels(stored: tf.Tensor) -> tf.Tensor:
    """Transform's integer pixels -> float32 in [0, 1], the model's input."""
    return tf.cast(stored, tf.float32) * features.PIXEL_SCALE


def label_index(labels: tf.Tensor) -> tf.Tensor:
    """Class name strings -> int64 index into features.LABELS (-1 for unknown names)."""
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(features.LABELS), tf.range(len(features.LABELS), dtype=tf.int64)),
        default_value=-1)
    return table.lookup(tf.reshape(labels, [-1]))


def preprocessing_fn(inputs: Dict[str, tf.Tensor], custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    """Raw features -> {image_xf, label_xf, image_id_xf}; label and id are absent at serving.

    custom_config: TrainingConfig.custom_config('Transform').
    """
    size = training_config.TrainingConfig.from_custom_config(custom_config, 'Transform').preprocessing.image_size
    outputs = {features.IMAGE_XF: decode_and_resize(inputs[features.IMAGE_KEY], size)}
    if features.IMAGE_ID_KEY in inputs:
        outputs[features.IMAGE_ID_XF] = tf.reshape(inputs[features.IMAGE_ID_KEY], [-1])
    if features.LABEL_KEY in inputs:
        outputs[features.LABEL_XF] = label_index(inputs[features.LABEL_KEY])
    return outputs
