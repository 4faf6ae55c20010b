"""tuner_fn: KerasTuner search over modules.model's space (Keras 3 models, as KerasTuner requires)."""
import keras
import keras_tuner
import tensorflow_transform as tft
from tfx.components.tuner.component import TunerFnResult
from tfx.components.trainer.fn_args_utils import FnArgs

from modules import dataset, model, preprocessing

ALGORITHMS = ('random', 'bayesian', 'hyperband')


def tuner_fn(fn_args: FnArgs) -> TunerFnResult:
    """Builds the tuner named by custom_config['algorithm'] and the data to fit it on.

    custom_config: algorithm, max_trials, epochs, batch_size, search_space
    ({name: [values]}), image_size, backbone, backbone_weights.
    """
    config = fn_args.custom_config or {}
    algorithm = config.get('algorithm', 'random')
    if algorithm not in ALGORITHMS:
        raise ValueError(f'Tuner algorithm must be one of {ALGORITHMS}, got {algorithm!r}')
    epochs = int(config.get('epochs', 2))
    steps_per_epoch = max(1, fn_args.train_steps // epochs)
    image_size = preprocessing.image_size(config)

    def build(hp: keras_tuner.HyperParameters) -> keras.Model:
        model.declare_search_space(hp, config.get('search_space'))
        return model.build_model(keras, hp, image_size, config.get('backbone', 'cnn'),
                                 config.get('backbone_weights'), decay_steps=steps_per_epoch * epochs)

    # KerasTuner reads seed=0 as "no seed" and draws a random one: offset so every seed is honoured.
    common = dict(objective=keras_tuner.Objective('val_binary_accuracy', 'max'),
                  directory=fn_args.working_dir, project_name='petpark', overwrite=True,
                  seed=int(config.get('seed', 0)) + 1)
    max_trials = int(config.get('max_trials', 3))
    if algorithm == 'random':
        tuner = keras_tuner.RandomSearch(build, max_trials=max_trials, **common)
    elif algorithm == 'bayesian':
        tuner = keras_tuner.BayesianOptimization(build, max_trials=max_trials, **common)
    else:
        tuner = keras_tuner.Hyperband(build, max_epochs=epochs, **common)

    transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    batch_size = int(config.get('batch_size', 32))
    train = dataset.make_dataset(fn_args.train_files, fn_args.data_accessor, transform_output, batch_size)
    evaluation = dataset.make_dataset(fn_args.eval_files, fn_args.data_accessor, transform_output,
                                      batch_size, shuffle=False)
    return TunerFnResult(tuner=tuner, fit_kwargs={
        'x': train, 'validation_data': evaluation, 'epochs': epochs, 'verbose': 0,
        'steps_per_epoch': steps_per_epoch,
        'validation_steps': fn_args.eval_steps})
