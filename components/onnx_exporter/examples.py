"""Examples of a split as the model sees them: raw tf.Examples through the Transform graph."""
import os
from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx.dsl.io import fileio
from tfx.types import artifact, artifact_utils


def transformed(examples: artifact.Artifact, split: str, transform_graph_uri: str, raw_keys: Sequence[str],
                pixels_key: str, label_key: str, limit: int, pixels_scale: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """(pixels times pixels_scale, label indices) of the first `limit` examples of `split`."""
    files = fileio.glob(os.path.join(artifact_utils.get_split_uri([examples], split), '*'))
    transform_output = tft.TFTransformOutput(transform_graph_uri)
    spec = {key: value for key, value in transform_output.raw_feature_spec().items() if key in raw_keys}
    pixels, labels = [], []
    dataset = tf.data.TFRecordDataset(files, compression_type='GZIP').take(limit).batch(64)
    for batch in dataset:
        features = transform_output.transform_raw_features(tf.io.parse_example(batch, spec))
        pixels.append(features[pixels_key].numpy())
        labels.append(np.reshape(features[label_key].numpy(), [-1]))
    if not pixels:
        raise ValueError(f'Split {split!r} of {examples.uri} holds no examples')
    return np.concatenate(pixels).astype(np.float32) * np.float32(pixels_scale), np.concatenate(labels)
