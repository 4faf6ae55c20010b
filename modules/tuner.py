"""tuner_fn: KerasTuner search over modules.model's space (Keras 3 models, as KerasTuner requires)."""
import keras
import keras_tuner
import tensorflow_transform as tft
from tfx.components.tuner.component import TunerFnResult
from tfx.components.trainer.fn_args_utils import FnArgs

if __package__:
    from . import dataset, model, training_config
else:  # a top-level module in the user-module wheel TFX builds from this folder
    import dataset
    import model
    import training_config


def tuner_fn(fn_args: FnArgs) -> TunerFnResult:
    """Builds the tuner the config's tuning section names and the data to fit it on.

    custom_config: TrainingConfig.custom_config('Tuner') (preprocessing, model, tuning).
    """
    config = training_config.TrainingConfig.from_custom_config(fn_args.custom_config, 'Tuner')
    tuning, network = config.tuning, config.model
    steps_per_epoch = max(1, fn_args.train_steps // tuning.epochs)

    def build(hp: keras_tuner.HyperParameters) -> keras.Model:
        model.declare_search_space(hp, network.search_space)
        return model.build_model(keras, hp, config.preprocessing.image_size, network.backbone,
                                 network.backbone_weights, decay_steps=steps_per_epoch * tuning.epochs)

    # KerasTuner reads seed=0 as "no seed" and draws a random one: offset so every seed is honoured.
    common = dict(objective=keras_tuner.Objective('val_binary_accuracy', 'max'),
                  directory=fn_args.working_dir, project_name='petpark', overwrite=True, seed=tuning.seed + 1)
    if tuning.algorithm == 'random':
        tuner = keras_tuner.RandomSearch(build, max_trials=tuning.max_trials, **common)
    elif tuning.algorithm == 'bayesian':
        tuner = keras_tuner.BayesianOptimization(build, max_trials=tuning.max_trials, **common)
    else:
        tuner = keras_tuner.Hyperband(build, max_epochs=tuning.epochs, **common)

    transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    train = dataset.make_dataset(fn_args.train_files, fn_args.data_accessor, transform_output, tuning.batch_size,
                                 shuffle=True, seed=tuning.seed)
    evaluation = dataset.make_dataset(fn_args.eval_files, fn_args.data_accessor, transform_output,
                                      tuning.batch_size, shuffle=False, seed=tuning.seed)
    return TunerFnResult(tuner=tuner, fit_kwargs={
        'x': train, 'validation_data': evaluation, 'epochs': tuning.epochs, 'verbose': 0,
        'steps_per_epoch': steps_per_epoch,
        'validation_steps': fn_args.eval_steps})
