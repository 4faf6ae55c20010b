"""create_pipeline: the one place the petpark TFX pipeline is wired."""
import os
from typing import List, Optional

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

import modules
import schemas
from components.anomalies_gate.component import AnomaliesGate
from components.image_example_gen.component import ImageExampleGen
from components.serving_pusher.component import ServingPusher
from modules import features, model
from pipeline.config import Settings

FAIRNESS_MODULE = 'fairness_indicators.fairness_indicators_metrics'
THRESHOLDS = [0.25, 0.5, 0.75]
SLICES = [[], [features.CAMERA_KEY], [features.LIGHTING_KEY], [features.CAMERA_KEY, features.LIGHTING_KEY]]


def module_file(name: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(modules.__file__)), name)


def beam_pipeline_args(settings: Settings) -> List[str]:
    """FnApiRunner directly: Beam 2.74's DirectRunner first tries Prism, which downloads a binary."""
    mode = 'in_memory' if settings.beam_workers == 1 else 'multi_processing'
    return ['--runner=FnApiRunner', f'--direct_running_mode={mode}',
            f'--direct_num_workers={settings.beam_workers}']


def eval_config(settings: Settings) -> tfma.EvalConfig:
    """Metrics for P(dog) overall, per camera, per lighting and per camera x lighting.

    Blessing looks at the overall slice only, so a small slice cannot veto a model by noise.
    """
    overall = [tfma.SlicingSpec()]
    gate = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={'value': settings.min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={'value': -settings.max_accuracy_drop}))
    thresholds = '{"thresholds": %s}' % THRESHOLDS
    metrics = [
        tfma.MetricConfig(class_name='ExampleCount'),
        tfma.MetricConfig(class_name='BinaryAccuracy', per_slice_thresholds=[
            tfma.PerSliceMetricThreshold(slicing_specs=overall, threshold=gate)]),
        tfma.MetricConfig(class_name='Precision'),
        tfma.MetricConfig(class_name='Recall'),
        tfma.MetricConfig(class_name='AUC'),
        tfma.MetricConfig(class_name='ConfusionMatrixAtThresholds', config=thresholds),
        tfma.MetricConfig(class_name='FairnessIndicators', module=FAIRNESS_MODULE, config=thresholds),
    ]
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=features.EXAMPLES_SIGNATURE, label_key=features.LABEL_KEY)],
        slicing_specs=[tfma.SlicingSpec(feature_keys=keys) for keys in SLICES],
        metrics_specs=[tfma.MetricsSpec(
            metrics=metrics,
            binarize=tfma.BinarizationOptions(class_ids={'values': [features.POSITIVE_CLASS_ID]}))])


def create_pipeline(settings: Settings, stop_after: Optional[str] = None) -> tfx.dsl.Pipeline:
    """ImageExampleGen -> StatisticsGen -> ImportSchemaGen -> ExampleValidator -> AnomaliesGate
    -> Transform -> Tuner (optional) -> Trainer -> Evaluator (vs latest blessed) -> Pusher.

    stop_after: a component id; the pipeline then ends with it (e.g. 'Transform' for data only).
    """
    model_config = settings.model_config()
    search_space = dict(model.DEFAULT_SEARCH_SPACE, **settings.search_space_values())
    example_gen = ImageExampleGen(
        input_base=settings.input_base, input_pattern=settings.input_pattern,
        train_fraction=settings.train_fraction, max_bad_fraction=settings.max_bad_fraction)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs['examples'])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schemas.SCHEMA_FILE)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs['statistics'], schema=schema_gen.outputs['schema'])
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs['anomalies'])
    transform = tfx.components.Transform(
        examples=example_gen.outputs['examples'], schema=schema_gen.outputs['schema'],
        module_file=module_file('preprocessing.py'), custom_config=model_config,
        disable_statistics=True)
    transform.add_upstream_node(anomalies_gate)
    nodes = [example_gen, statistics_gen, schema_gen, example_validator, anomalies_gate, transform]

    hyperparameters = None
    if settings.tune:
        tuner = tfx.components.Tuner(
            module_file=module_file('tuner.py'),
            examples=transform.outputs['transformed_examples'],
            transform_graph=transform.outputs['transform_graph'],
            train_args=tfx.proto.TrainArgs(num_steps=settings.tuner_steps),
            eval_args=tfx.proto.EvalArgs(num_steps=settings.eval_steps),
            custom_config=dict(model_config, algorithm=settings.tuner_algorithm,
                               max_trials=settings.tuner_trials, epochs=settings.tuner_epochs,
                               search_space=search_space))
        hyperparameters = tuner.outputs['best_hyperparameters']
        nodes.append(tuner)
    trainer = tfx.components.Trainer(
        module_file=module_file('trainer.py'),
        examples=transform.outputs['transformed_examples'],
        transform_graph=transform.outputs['transform_graph'],
        hyperparameters=hyperparameters,
        train_args=tfx.proto.TrainArgs(num_steps=settings.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=settings.eval_steps),
        custom_config=dict(model_config, epochs=settings.train_epochs,
                           hyperparameters={name: values[0] for name, values in search_space.items()}))
    latest_blessed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id('latest_blessed_model_resolver')
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs['examples'], model=trainer.outputs['model'],
        baseline_model=latest_blessed.outputs['model'], eval_config=eval_config(settings))
    pusher = ServingPusher(
        model=trainer.outputs['model'], model_blessing=evaluator.outputs['blessing'],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=settings.serving_model_dir))).with_id('Pusher')
    nodes += [trainer, latest_blessed, evaluator, pusher]
    if stop_after is not None:
        ids = [node.id for node in nodes]
        if stop_after not in ids:
            raise ValueError(f'stop_after must be one of {ids}, got {stop_after!r}')
        nodes = nodes[:ids.index(stop_after) + 1]
    return tfx.dsl.Pipeline(
        pipeline_name=settings.pipeline_name,
        pipeline_root=settings.pipeline_root,
        components=nodes,
        enable_cache=settings.enable_cache,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            settings.metadata_path),
        beam_pipeline_args=beam_pipeline_args(settings))
