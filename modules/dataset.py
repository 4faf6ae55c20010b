"""Batched (features, label) datasets over Transform's output, for the Tuner and Trainer."""
from typing import List

import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

# Records held for shuffling (each a serialized transformed example, ~150 KB at 160 px): tfxio's
# default 10,000 would hold 1.5 GB. ImageExampleGen writes its splits in random order already.
SHUFFLE_BUFFER_RECORDS = 2048

if __package__:
    from . import features, preprocessing
else:  # a top-level module in the user-module wheel TFX builds from this folder
    import features
    import preprocessing


def make_dataset(file_pattern: List[str], data_accessor, tf_transform_output: tft.TFTransformOutput,
                 batch_size: int, shuffle: bool, seed: int) -> tf.data.Dataset:
    """Endless dataset of ({image_xf: [B, H, W, 3] in [0, 1]}, label [B, 1] float32).

    Shuffling holds serialized records (a few tens of KB each), not decoded pixels."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=features.LABEL_XF, shuffle=shuffle,
                                       shuffle_buffer_size=SHUFFLE_BUFFER_RECORDS, shuffle_seed=seed),
        tf_transform_output.transformed_metadata.schema)
    return dataset.map(lambda x, y: ({features.IMAGE_XF: preprocessing.unit_pixels(x[features.IMAGE_XF])},
                                     tf.cast(tf.reshape(y, [-1, 1]), tf.float32)))
