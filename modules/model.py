"""One model builder for both Kerases: the Tuner passes `keras` (Keras 3, which KerasTuner
requires) and the Trainer passes `tf_keras` (what TFMA and the TFT layer use).
"""
from types import ModuleType
from typing import Any, Dict, Optional, Sequence

import keras_tuner

if __package__:
    from . import features, training_config
else:  # a top-level module in the user-module wheel TFX builds from this folder
    import features
    import training_config


def hyperparameters(values: Optional[Dict[str, Any]] = None) -> keras_tuner.HyperParameters:
    """HyperParameters fixed to `values` (the declared first value for any not given)."""
    hp = keras_tuner.HyperParameters()
    for name, choices in training_config.default_search_space().items():
        hp.Fixed(name, (values or {}).get(name, choices[0]))
    return hp


def declare_search_space(hp: keras_tuner.HyperParameters,
                         search_space: Optional[Dict[str, Sequence[Any]]] = None) -> None:
    """Registers each tunable as a Choice over its allowed values (declared values where not given)."""
    unknown = set(search_space or {}) - set(training_config.HYPERPARAMETERS)
    if unknown:
        raise ValueError(f'Unknown hyperparameters in search space: {sorted(unknown)}; '
                         f'known: {sorted(training_config.HYPERPARAMETERS)}')
    for name, choices in training_config.search_space_with(search_space).items():
        if not choices:
            raise ValueError(f'Search space for {name!r} is empty')
        hp.Choice(name, list(choices))


def build_model(keras: ModuleType, hp: keras_tuner.HyperParameters, image_size: int,
                backbone: str, backbone_weights: Optional[str], decay_steps: int):
    """A compiled binary classifier: {image_xf: pixels [size, size, 3] in [0, 1]} -> P(dog).

    backbone: 'cnn' (small conv net trained from scratch) or a pretrained backbone of
    training_config.PRETRAINED (frozen), whose backbone_weights file the TrainingConfig has
    checked by sha256 ('imagenet' downloads).
    KerasTuner and the Trainer pass every argument from the one TrainingConfig.
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
    pretrained = training_config.pretrained(backbone)
    if pretrained is not None:
        if not backbone_weights:
            raise ValueError(f'backbone {backbone!r} needs its weights file ({pretrained.file_name})')
        base = getattr(keras.applications, pretrained.architecture)(
            input_shape=(image_size, image_size, 3), alpha=pretrained.alpha, include_top=False,
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
        raise ValueError(f'backbone must be one of {training_config.BACKBONES}, got {backbone!r}')
    x = layers.Dense(hp.get('dense_units'), activation='relu')(x)
    x = layers.Dropout(hp.get('dropout'))(x)
    outputs = layers.Dense(1, activation='sigmoid', name='probability')(x)
    model = keras.Model({features.IMAGE_XF: inputs}, outputs)
    compile_classifier(keras, model, hp.get('learning_rate'), decay_steps)
    return model


def compile_classifier(keras: ModuleType, model, learning_rate: float, decay_steps: int) -> None:
    """Adam with a cosine decay from `learning_rate` to zero over `decay_steps`; binary cross-entropy."""
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss='binary_crossentropy',
                  metrics=[keras.metrics.BinaryAccuracy(name='binary_accuracy')])


def unfreeze_top(keras: ModuleType, model, layers: int) -> int:
    """Makes the pretrained backbone's top `layers` layers trainable, except BatchNormalization
    (the backbone runs in inference mode, so its statistics stay ImageNet's); returns the number
    of trainable weights tensors. The caller compiles again."""
    backbones = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(backbones) != 1:
        raise ValueError(f'fine-tuning needs one pretrained backbone in the model, found {len(backbones)}')
    backbone = backbones[0]
    backbone.trainable = True
    for index, layer in enumerate(backbone.layers):
        top = index >= len(backbone.layers) - layers
        layer.trainable = top and not isinstance(layer, keras.layers.BatchNormalization)
    return len(model.trainable_weights)
