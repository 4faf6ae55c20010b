"""One builder, two Kerases: Keras 3 for KerasTuner, tf_keras for the Trainer/TFMA."""
import os
import re

import keras
import keras_tuner
import numpy as np
import pytest
import tf_keras

from petpark.modules import features, model, training_config

MODULES_DIR = os.path.join(os.path.dirname(__file__), '..', '..', 'modules')
CNN = {'backbone': 'cnn', 'backbone_weights': None, 'decay_steps': 100}


@pytest.mark.parametrize('keras_module', [keras, tf_keras], ids=['keras3', 'tf_keras'])
def test_builds_a_compiled_probability_model_for_either_keras(keras_module):
    net = model.build_model(keras_module, model.hyperparameters({'conv_blocks': 2, 'filters': 8}), 32, **CNN)
    assert isinstance(net, keras_module.Model)
    other = tf_keras if keras_module is keras else keras
    assert not isinstance(net, other.Model)
    out = np.asarray(net.predict({features.IMAGE_XF: np.random.rand(3, 32, 32, 3).astype('float32')}, verbose=0))
    assert out.shape == (3, 1) and ((out >= 0) & (out <= 1)).all()
    assert net.optimizer is not None


def test_both_kerases_build_the_same_architecture():
    hp = model.hyperparameters({'conv_blocks': 2, 'filters': 8, 'dense_units': 16})
    assert (model.build_model(keras, hp, 32, **CNN).count_params()
            == model.build_model(tf_keras, hp, 32, **CNN).count_params())


def test_module_code_never_uses_ambiguous_tf_keras():
    """`tf.keras` means Keras 3 or tf_keras depending on import order; modules name one explicitly."""
    for name in os.listdir(MODULES_DIR):
        if name.endswith('.py'):
            source = open(os.path.join(MODULES_DIR, name)).read()
            assert not re.search(r'\btf\.keras\b', source), name


def test_search_space_declares_choices_and_rejects_unknown_names():
    hp = keras_tuner.HyperParameters()
    model.declare_search_space(hp, {'filters': [8, 16]})
    assert hp.get('filters') == 8
    assert set(hp.values) == set(training_config.HYPERPARAMETERS)
    with pytest.raises(ValueError, match='Unknown hyperparameters.*depth'):
        model.declare_search_space(keras_tuner.HyperParameters(), {'depth': [1]})


def test_unknown_backbone_is_rejected():
    with pytest.raises(ValueError, match='backbone must be one of'):
        model.build_model(tf_keras, model.hyperparameters(), 32, backbone='resnet', backbone_weights=None,
                          decay_steps=10)


def test_a_pretrained_backbone_without_weights_is_an_error_not_a_random_init():
    with pytest.raises(ValueError, match='needs its weights file'):
        model.build_model(tf_keras, model.hyperparameters(), 32, backbone='mobilenet_v2_0.5', backbone_weights=None,
                          decay_steps=10)


@pytest.mark.parametrize('name,params', [('mobilenet_v1_0.25', 218544), ('mobilenet_v2_0.5', 706224),
                                         ('mobilenet_v1_1.0', 3228864)])
def test_each_pretrained_backbone_loads_its_checked_file_frozen(shared_dir, name, params):
    backbone = training_config.PRETRAINED[name]
    weights = os.path.join(shared_dir, 'models', backbone.file_name)
    config = training_config.ModelConfig(name, weights, training_config.search_space_with(None))
    config.validate('model')  # the sha256 check
    net = model.build_model(tf_keras, model.hyperparameters(), 96, name, weights, decay_steps=10)
    base = next(layer for layer in net.layers if layer.name.startswith('mobilenet'))
    assert not base.trainable and base.count_params() == params


def test_mobilenet_loads_local_imagenet_weights_frozen(shared_dir):
    weights = os.path.join(shared_dir, 'models', 'mobilenet_2_5_224_tf_no_top.h5')
    net = model.build_model(tf_keras, model.hyperparameters(), 128, 'mobilenet', weights, decay_steps=10)
    backbone = next(layer for layer in net.layers if layer.name.startswith('mobilenet'))
    assert not backbone.trainable
    assert backbone.count_params() == 218544
    first_kernel = backbone.get_layer('conv1').get_weights()[0]
    reference = tf_keras.applications.MobileNet(input_shape=(128, 128, 3), alpha=0.25, include_top=False,
                                               weights=weights)
    np.testing.assert_array_equal(first_kernel, reference.get_layer('conv1').get_weights()[0])


def test_fine_tuning_trains_only_the_top_backbone_layers_and_keeps_batchnorm_frozen(shared_dir):
    weights = os.path.join(shared_dir, 'models', training_config.PRETRAINED['mobilenet_v1_0.25'].file_name)
    net = model.build_model(tf_keras, model.hyperparameters(), 64, 'mobilenet_v1_0.25', weights, decay_steps=10)
    backbone = next(layer for layer in net.layers if isinstance(layer, tf_keras.Model))
    before = {w.name: w.numpy().copy() for w in backbone.weights}
    frozen_count = len(net.trainable_weights)  # the head only
    assert model.unfreeze_top(tf_keras, net, 7) > frozen_count  # the last block and the pooling
    assert [layer.name for layer in backbone.layers if layer.trainable and layer.weights] == ['conv_dw_13', 'conv_pw_13']
    model.compile_classifier(tf_keras, net, 1e-2, decay_steps=5)
    rng = np.random.default_rng(0)
    net.fit({features.IMAGE_XF: rng.random((16, 64, 64, 3), dtype=np.float32)},
            rng.integers(0, 2, (16, 1)).astype(np.float32), epochs=1, batch_size=8, verbose=0)
    changed = {w.name for w in backbone.weights if not np.array_equal(w.numpy(), before[w.name])}
    assert changed and all(name.split('/')[0] in ('conv_dw_13', 'conv_pw_13') for name in changed), changed
    assert not any('bn' in name for name in changed)  # BatchNorm statistics and scales stay ImageNet's
