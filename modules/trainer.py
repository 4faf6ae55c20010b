"""run_fn: trains the tf_keras classifier and exports it with its serving signatures.

Signatures (each runs the Transform graph, so serving matches training):
  serving_default      serialized tf.Example `inputs` -> `classes`, `scores` (a TF Serving
                       classification signature; also what the Evaluator calls)
  serving_image_bytes  encoded image `image_bytes` -> `classes`, `scores` (REST {"b64": ...})
  serving_pixels       float `pixels` [N, H, W, 3] in [0, 1] (Transform's pixels times
                       features.PIXEL_SCALE) -> `scores` (for ONNX export)
`scores` are [P(cat), P(dog)]; `classes` the matching names.
"""
import os
from typing import Dict

import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tensorflow.core.protobuf import saved_model_pb2
from tfx.components.trainer.fn_args_utils import FnArgs

if __package__:
    from . import dataset, features, model, preprocessing, training_config
else:  # a top-level module in the user-module wheel TFX builds from this folder
    import dataset
    import features
    import model
    import preprocessing
    import training_config


def _classify(net: tf_keras.Model, pixels: tf.Tensor) -> Dict[str, tf.Tensor]:
    dog = tf.reshape(net({features.IMAGE_XF: pixels}, training=False), [-1])
    scores = tf.stack([1.0 - dog, dog], axis=1)
    classes = tf.tile(tf.constant([features.LABELS]), [tf.shape(dog)[0], 1])
    return {'classes': classes, 'scores': scores}


def export_serving_model(net: tf_keras.Model, transform_output: tft.TFTransformOutput,
                         export_dir: str) -> None:
    """Saves `net` with the three serving signatures."""
    net.tft_layer = transform_output.transform_features_layer()
    image_spec = {features.IMAGE_KEY: transform_output.raw_feature_spec()[features.IMAGE_KEY]}
    image_shape = transform_output.transformed_feature_spec()[features.IMAGE_XF].shape

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='inputs')])
    def serve_examples(inputs):
        parsed = tf.io.parse_example(inputs, image_spec)
        return _classify(net, preprocessing.unit_pixels(net.tft_layer(parsed)[features.IMAGE_XF]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
    def serve_image_bytes(image_bytes):
        raw = {features.IMAGE_KEY: tf.reshape(image_bytes, [-1, 1])}
        return _classify(net, preprocessing.unit_pixels(net.tft_layer(raw)[features.IMAGE_XF]))

    @tf.function(input_signature=[tf.TensorSpec([None, *image_shape], tf.float32, name='pixels')])
    def serve_pixels(pixels):
        return {'scores': _classify(net, pixels)['scores']}

    net.save(export_dir, save_format='tf', signatures={
        features.EXAMPLES_SIGNATURE: serve_examples,
        features.IMAGE_BYTES_SIGNATURE: serve_image_bytes,
        features.PIXELS_SIGNATURE: serve_pixels,
    })
    set_method_names(export_dir, {features.EXAMPLES_SIGNATURE: tf.saved_model.CLASSIFY_METHOD_NAME})


def set_method_names(export_dir: str, methods: Dict[str, str]) -> None:
    """TF2 saves every signature as 'predict'; TF Serving's Classify/Regress APIs need
    'tensorflow/serving/classify' or '.../regress'. `methods`: {signature name: method}."""
    path = os.path.join(export_dir, 'saved_model.pb')
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, 'rb') as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        for signature_name, method in methods.items():
            meta_graph.signature_def[signature_name].method_name = method
    with tf.io.gfile.GFile(path, 'wb') as f:
        f.write(saved_model.SerializeToString())


def run_fn(fn_args: FnArgs) -> None:
    """Trains on Transform's output and exports to fn_args.serving_model_dir.

    custom_config: TrainingConfig.custom_config('Trainer') (preprocessing, model, training,
    fine_tuning). With fine_tuning.epochs, a second phase trains the backbone's top layers too.
    Hyperparameters come from the Tuner when it ran, else they are the first value of each
    entry of the model's search space.
    """
    config = training_config.TrainingConfig.from_custom_config(fn_args.custom_config, 'Trainer')
    training, network = config.training, config.model
    tf_keras.utils.set_random_seed(training.seed)
    if fn_args.hyperparameters:
        hp = keras_tuner.HyperParameters.from_config(fn_args.hyperparameters)
    else:
        hp = model.hyperparameters(network.fixed_hyperparameters())
    transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    train = dataset.make_dataset(fn_args.train_files, fn_args.data_accessor, transform_output, training.batch_size,
                                 shuffle=True, seed=training.seed)
    evaluation = dataset.make_dataset(fn_args.eval_files, fn_args.data_accessor, transform_output,
                                      training.batch_size, shuffle=False, seed=training.seed)
    steps_per_epoch = max(1, fn_args.train_steps // training.epochs)
    net = model.build_model(tf_keras, hp, config.preprocessing.image_size, network.backbone,
                            network.backbone_weights, decay_steps=steps_per_epoch * training.epochs)
    logs = tf_keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)
    net.fit(train, epochs=training.epochs, steps_per_epoch=steps_per_epoch,
            validation_data=evaluation, validation_steps=fn_args.eval_steps, verbose=2, callbacks=[logs])
    fine = config.fine_tuning
    if fine.epochs:
        trainable = model.unfreeze_top(tf_keras, net, fine.layers)
        model.compile_classifier(tf_keras, net, fine.learning_rate, fine.steps)
        print(f'Fine-tuning the top {fine.layers} backbone layers ({trainable} trainable weight tensors) '
              f'for {fine.steps} steps from learning rate {fine.learning_rate}', flush=True)
        net.fit(train, initial_epoch=training.epochs, epochs=training.epochs + fine.epochs,
                steps_per_epoch=max(1, fine.steps // fine.epochs), validation_data=evaluation,
                validation_steps=fn_args.eval_steps, verbose=2, callbacks=[logs])
    export_serving_model(net, transform_output, fn_args.serving_model_dir)
