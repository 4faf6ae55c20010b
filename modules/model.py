"""One model builder for both Kerases: the Tuner passes `keras` (Keras 3, which KerasTuner
requires) and the Trainer passes `tf_keras` (what TFMA and the TFT layer use).
"""
from types import ModuleType
from typing import Any, Dict, Optional, Sequence

import keras_tuner

from modules import features

# Search space: every tunable and the values it may take; the first value is the default.
DEFAULT_SEARCH_SPACE: Dict[str, Sequence[Any]] = {
    'conv_blocks': [4, 3],
    'filters': [32, 24],
    'dense_units': [64, 128],
    'dropout': [0.3, 0.2],
    'learning_rate': [2e-3, 1e-3, 3e-3],
    # Rotation/zoom/translation/contrast strength on top of horizontal flips. The synthetic
    # frames already vary pose and scale (0 learns fastest there); real photos gain from ~0.1.
    'augmentation': [0.0, 0.1],
}
MOBILENET_ALPHA = 0.25


def hyperparameters(values: Optional[Dict[str, Any]] = None) -> keras_tuner.HyperParameters:
    """HyperParameters fixed to `values` (defaults for any not given)."""
    hp = keras_tuner.HyperParameters()
    for name, choices in DEFAULT_SEARCH_SPACE.items():
        hp.Fixed(name, (values or {}).get(name, choices[0]))
    return hp


def declare_search_space(hp: keras_tuner.HyperParameters,
                         search_space: Optional[Dict[str, Sequence[Any]]] = None) -> None:
    """Registers each tunable as a Choice over its allowed values."""
    space = dict(DEFAULT_SEARCH_SPACE, **(search_space or {}))
    unknown = set(space) - set(DEFAULT_SEARCH_SPACE)
    if unknown:
        raise ValueError(f'Unknown hyperparameters in search space: {sorted(unknown)}; '
                         f'known: {sorted(DEFAULT_SEARCH_SPACE)}')
    for name, choices in space.items():
        if not choices:
            raise ValueError(f'Search space for {name!r} is empty')
        hp.Choice(name, list(choices))


def build_model(keras: ModuleType, hp: keras_tuner.HyperParameters, image_size: int,
                backbone: str = 'cnn', backbone_weights: Optional[str] = None, decay_steps: int = 1000):
    """A compiled binary classifier: {image_xf: pixels [size, size, 3] in [0, 1]} -> P(dog).

    backbone: 'cnn' (small conv net trained from scratch) or 'mobilenet' (MobileNet v1
    alpha 0.25; backbone_weights is a local .h5 path, 'imagenet' to download, or None).
    The learning rate follows a cosine decay to zero over `decay_steps` (the run's length),
    so the weights, and BatchNorm's moving statistics with them, settle by the end.
    """
    layers = keras.layers
    inputs = keras.Input(shape=(image_size, image_size, 3), name=features.IMAGE_XF)
    x = layers.RandomFlip('horizontal')(inputs)
    strength = hp.get('augmentation')
    if strength:
        x = layers.RandomRotation(strength / 2)(x)
        x = layers.RandomZoom(strength)(x)
        x = layers.RandomTranslation(strength, strength)(x)
        x = layers.RandomContrast(strength)(x)
    if backbone == 'mobilenet':
        base = keras.applications.MobileNet(
            input_shape=(image_size, image_size, 3), alpha=MOBILENET_ALPHA, include_top=False,
            weights=backbone_weights, pooling='avg')
        base.trainable = False
        x = base(layers.Rescaling(2.0, offset=-1.0)(x), training=False)
    elif backbone == 'cnn':
        for block in range(hp.get('conv_blocks')):
            filters = hp.get('filters') * 2 ** block
            x = layers.Conv2D(filters, 3, padding='same', use_bias=False)(x)
            x = layers.BatchNormalization(momentum=0.9)(x)  # few steps: 0.99 never settles
            x = layers.Activation('relu')(x)
            x = layers.MaxPooling2D()(x)
        x = layers.GlobalAveragePooling2D()(x)
    else:
        raise ValueError(f"backbone must be 'cnn' or 'mobilenet', got {backbone!r}")
    x = layers.Dense(hp.get('dense_units'), activation='relu')(x)
    x = layers.Dropout(hp.get('dropout'))(x)
    outputs = layers.Dense(1, activation='sigmoid', name='probability')(x)
    model = keras.Model({features.IMAGE_XF: inputs}, outputs)
    learning_rate = keras.optimizers.schedules.CosineDecay(hp.get('learning_rate'), decay_steps)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss='binary_crossentropy',
                  metrics=[keras.metrics.BinaryAccuracy(name='binary_accuracy')])
    return model
