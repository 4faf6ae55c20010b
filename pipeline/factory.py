"""create_pipeline: the one place the petpark TFX pipeline is wired.

What differs between runners (metadata store, Beam args, pipeline root) is a parameter, as in
TFX's templates; each runner builds its own choices and passes them in. Components are
imported from their own modules rather than `tfx.v1`, which would also import every TFX
extension and the Google Cloud SDKs.
"""
import os
from typing import Optional, Sequence

import tensorflow_model_analysis as tfma
from ml_metadata.proto import metadata_store_pb2
from tfx.components.evaluator.component import Evaluator
from tfx.components.example_validator.component import ExampleValidator
from tfx.components.statistics_gen.component import StatisticsGen
from tfx.components.trainer.component import Trainer
from tfx.components.transform.component import Transform
from tfx.components.tuner.component import Tuner
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.proto import pusher_pb2, trainer_pb2, transform_pb2
from tfx.types import channel, standard_artifacts

from petpark import modules, schemas
from petpark.components.anomalies_gate.component import AnomaliesGate
from petpark.components.curated_schema.component import CuratedSchemaGen
from petpark.components.image_example_gen.component import ImageExampleGen
from petpark.components.image_example_gen.executor import HOLDOUT_SPLIT
from petpark.components.model_card.component import ModelCardGenerator
from petpark.components.monitoring_baseline.component import MonitoringBaselineGen
from petpark.components.onnx_exporter.component import OnnxExporter
from petpark.components.serving_pusher.component import ServingPusher
from petpark.components.serving_validator.component import ServingValidator
from petpark.modules import features, training_config
from petpark.pipeline.settings import (DataSettings, EvaluationSettings, ExportSettings, MonitoringSettings,
                                       PushDestinations, ServingCheckSettings, Settings, TrainingSettings,
                                       code_version as git_version)

FAIRNESS_MODULE = 'fairness_indicators.fairness_indicators_metrics'
THRESHOLDS = [0.25, 0.5, 0.75]
SLICE_FEATURES = [features.CAMERA_KEY, features.LIGHTING_KEY, features.BRIGHTNESS_BUCKET_KEY, features.GRAYSCALE_KEY,
                  features.RESOLUTION_BUCKET_KEY, features.ASPECT_BUCKET_KEY]
SLICES = [[], [features.CAMERA_KEY], [features.LIGHTING_KEY], [features.CAMERA_KEY, features.LIGHTING_KEY],
          [features.BRIGHTNESS_BUCKET_KEY], [features.GRAYSCALE_KEY], [features.RESOLUTION_BUCKET_KEY],
          [features.ASPECT_BUCKET_KEY]]


USER_CODE = ('wheel', 'installed')


def user_code(module: str, function: str, how: str) -> dict:
    """How a component finds `modules/<module>.py`'s `function`. 'wheel': TFX packages modules/
    as a wheel staged under the pipeline root (local runs, Airflow); 'installed': the dotted path
    in the installed petpark package, as in a pipeline image (Kubeflow, Vertex), which needs no
    upload when the pipeline is compiled."""
    if how == 'installed':
        return {function: f'{modules.__name__}.{module}.{function}'}
    return {'module_file': os.path.join(os.path.dirname(os.path.abspath(modules.__file__)), f'{module}.py')}


def eval_config(evaluation: EvaluationSettings) -> tfma.EvalConfig:
    """Metrics for P(dog) overall, per camera, lighting, camera x lighting and image-derived bucket.

    Blessing looks at the overall slice only, so a small slice cannot veto a model by noise: its
    accuracy, and with PETPARK_MIN_CLASS_PRECISION/RECALL each class's precision and recall (cat
    and dog each as the positive class; the cat figures come from a second, class-0 metrics spec).
    """
    overall = [tfma.SlicingSpec()]
    gate = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={'value': evaluation.min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={'value': -evaluation.max_accuracy_drop}))

    def at_least(bound: float) -> list:
        return [tfma.PerSliceMetricThreshold(slicing_specs=overall, threshold=tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={'value': bound})))] if bound > 0 else []

    per_class = [tfma.MetricConfig(class_name='Precision', per_slice_thresholds=at_least(evaluation.min_class_precision)),
                 tfma.MetricConfig(class_name='Recall', per_slice_thresholds=at_least(evaluation.min_class_recall))]
    thresholds = '{"thresholds": %s}' % THRESHOLDS
    metrics = [
        tfma.MetricConfig(class_name='ExampleCount'),
        tfma.MetricConfig(class_name='BinaryAccuracy', per_slice_thresholds=[
            tfma.PerSliceMetricThreshold(slicing_specs=overall, threshold=gate)]),
        *per_class,
        tfma.MetricConfig(class_name='AUC'),
        tfma.MetricConfig(class_name='ConfusionMatrixAtThresholds', config=thresholds),
        tfma.MetricConfig(class_name='FairnessIndicators', module=FAIRNESS_MODULE, config=thresholds),
    ]
    specs = [tfma.MetricsSpec(metrics=metrics, binarize=tfma.BinarizationOptions(
        class_ids={'values': [features.POSITIVE_CLASS_ID]}))]
    if evaluation.min_class_precision > 0 or evaluation.min_class_recall > 0:
        specs.append(tfma.MetricsSpec(metrics=per_class, binarize=tfma.BinarizationOptions(
            class_ids={'values': [1 - features.POSITIVE_CLASS_ID]})))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=features.EXAMPLES_SIGNATURE, label_key=features.LABEL_KEY)],
        slicing_specs=[tfma.SlicingSpec(feature_keys=keys) for keys in SLICES],
        metrics_specs=specs)


def create_pipeline(*, pipeline_name: str, pipeline_root: str, input_base: str, data: DataSettings,
                    training: TrainingSettings, config: training_config.TrainingConfig,
                    evaluation: EvaluationSettings, serving_check: ServingCheckSettings,
                    export: ExportSettings, monitoring: MonitoringSettings, destinations: PushDestinations,
                    enable_cache: bool, seed: int,
                    code_version: str, metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig],
                    beam_pipeline_args: Sequence[str], stop_after: Optional[str] = None,
                    user_code_from: str = 'wheel') -> tfx_pipeline.Pipeline:
    """ImageExampleGen -> ImportSchemaGen (CuratedSchemaGen) -> StatisticsGen -> ExampleValidator -> AnomaliesGate
    -> Transform -> Tuner (optional) -> Trainer -> Evaluator (vs latest blessed)
    -> ServingValidator (optional) -> Pusher -> OnnxExporter (optional) -> ModelCardGenerator
    -> MonitoringBaselineGen (optional).

    Tuner and Trainer read the train and eval splits; with a hold-out pattern the Evaluator
    reports and blesses on the `validation` split, which nothing before it trains on.

    Every value is typed: the settings groups it reads (pipeline/settings.py), the validated
    TrainingConfig, where pushed versions go, and the runner's choices:
    pipeline_root: local path or URI (gs://, s3://), used as given.
    metadata_connection_config: the runner's MLMD store (None where the orchestrator brings
    its own, as Kubeflow and Vertex do). beam_pipeline_args: for every Beam-powered component.
    stop_after: a component id; the pipeline then ends with it (e.g. 'Transform' for data only).
    user_code_from: 'wheel' or 'installed' (see user_code).
    """
    if user_code_from not in USER_CODE:
        raise ValueError(f'user_code_from must be one of {USER_CODE}, got {user_code_from!r}')
    example_gen = ImageExampleGen(
        input_base=input_base, class_names=features.LABELS, input_pattern=data.input_patterns,
        holdout_pattern=data.holdout_pattern, train_fraction=data.train_fraction,
        max_bad_fraction=data.max_bad_fraction, max_file_bytes=data.max_file_bytes,
        allow_symlinks_outside_root=data.allow_symlinks_outside_root)
    schema_gen = CuratedSchemaGen(schema_file=schemas.SCHEMA_FILE).with_id('ImportSchemaGen')
    # with the schema, categorical integer features (is_grayscale) get category counts, as in monitoring
    statistics_gen = StatisticsGen(examples=example_gen.outputs['examples'], schema=schema_gen.outputs['schema'])
    example_validator = ExampleValidator(statistics=statistics_gen.outputs['statistics'],
                                         schema=schema_gen.outputs['schema'])
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs['anomalies'],
                                   schema=schema_gen.outputs['schema'])
    transform = Transform(
        examples=example_gen.outputs['examples'], schema=anomalies_gate.outputs['validated_schema'],
        **user_code('preprocessing', 'preprocessing_fn', user_code_from), custom_config=config.custom_config('Transform'),
        splits_config=transform_pb2.SplitsConfig(analyze=['train'], transform=['train', 'eval']),
        disable_statistics=True)
    nodes = [example_gen, schema_gen, statistics_gen, example_validator, anomalies_gate, transform]

    hyperparameters = None
    if training.tune:
        tuner = Tuner(
            **user_code('tuner', 'tuner_fn', user_code_from),
            examples=transform.outputs['transformed_examples'],
            transform_graph=transform.outputs['transform_graph'],
            train_args=trainer_pb2.TrainArgs(num_steps=training.tuner_steps),
            eval_args=trainer_pb2.EvalArgs(num_steps=training.eval_steps),
            custom_config=config.custom_config('Tuner'))
        hyperparameters = tuner.outputs['best_hyperparameters']
        nodes.append(tuner)
    trainer = Trainer(
        **user_code('trainer', 'run_fn', user_code_from),
        examples=transform.outputs['transformed_examples'],
        transform_graph=transform.outputs['transform_graph'],
        hyperparameters=hyperparameters,
        train_args=trainer_pb2.TrainArgs(num_steps=training.train_steps),
        eval_args=trainer_pb2.EvalArgs(num_steps=training.eval_steps),
        custom_config=config.custom_config('Trainer'))
    latest_blessed = Resolver(
        strategy_class=LatestBlessedModelStrategy,
        model=channel.Channel(type=standard_artifacts.Model),
        model_blessing=channel.Channel(type=standard_artifacts.ModelBlessing),
    ).with_id('latest_blessed_model_resolver')
    evaluator = Evaluator(
        examples=example_gen.outputs['examples'], model=trainer.outputs['model'],
        baseline_model=latest_blessed.outputs['model'], eval_config=eval_config(evaluation),
        example_splits=[HOLDOUT_SPLIT] if data.holdout_pattern else None)
    nodes += [trainer, latest_blessed, evaluator]
    infra_blessing = None
    if serving_check.validate_serving:
        serving_validator = ServingValidator(
            model=trainer.outputs['model'], examples=example_gen.outputs['examples'],
            model_name=destinations.model_name, server=serving_check.validation_server,
            server_binary=serving_check.validation_server_binary, signature_name=features.EXAMPLES_SIGNATURE,
            max_latency_ms=serving_check.validation_max_latency_ms)
        infra_blessing = serving_validator.outputs['blessing']
        nodes.append(serving_validator)
    pusher = ServingPusher(
        model=trainer.outputs['model'], model_blessing=evaluator.outputs['blessing'], infra_blessing=infra_blessing,
        push_destination=pusher_pb2.PushDestination(filesystem=pusher_pb2.PushDestination.Filesystem(
            base_directory=destinations.serving_model_dir))).with_id('Pusher')
    nodes.append(pusher)
    onnx_model = None
    if export.export_onnx:
        nodes.append(OnnxExporter(
            model=trainer.outputs['model'], model_blessing=evaluator.outputs['blessing'],
            examples=example_gen.outputs['examples'], transform_graph=transform.outputs['transform_graph'],
            pushed_model=pusher.outputs['pushed_model'], evaluation=evaluator.outputs['evaluation'],
            model_name=destinations.model_name, edge_base_directory=destinations.edge_model_dir,
            class_names=features.LABELS, raw_feature_keys=[features.IMAGE_KEY, features.LABEL_KEY],
            pixels_key=features.IMAGE_XF, label_key=features.LABEL_XF, pixel_contract=features.PIXEL_CONTRACT,
            signature_name=features.PIXELS_SIGNATURE, opset=export.onnx_opset, quantize_int8=export.onnx_int8))
        onnx_model = nodes[-1].outputs['onnx_model']
    nodes.append(ModelCardGenerator(
        pushed_model=pusher.outputs['pushed_model'], evaluation=evaluator.outputs['evaluation'],
        model_blessing=evaluator.outputs['blessing'], examples=example_gen.outputs['examples'],
        statistics=statistics_gen.outputs['statistics'], schema=anomalies_gate.outputs['validated_schema'],
        hyperparameters=hyperparameters, infra_blessing=infra_blessing, onnx_model=onnx_model,
        model_name=destinations.model_name, card_base_directory=destinations.model_card_dir,
        code_version=code_version, positive_class_id=features.POSITIVE_CLASS_ID))
    if monitoring.baseline:
        nodes.append(MonitoringBaselineGen(
            pushed_model=pusher.outputs['pushed_model'], model=trainer.outputs['model'],
            examples=example_gen.outputs['examples'], statistics=statistics_gen.outputs['statistics'],
            evaluation=evaluator.outputs['evaluation'], schema=anomalies_gate.outputs['validated_schema'],
            split=HOLDOUT_SPLIT if data.holdout_pattern else 'eval', positive_class_id=features.POSITIVE_CLASS_ID,
            slice_features=SLICE_FEATURES, window_sizes=monitoring.window_sizes,
            windows_per_size=monitoring.windows_per_size, false_alarm_rate=monitoring.false_alarm_rate, seed=seed))
    if stop_after is not None:
        ids = [node.id for node in nodes]
        if stop_after not in ids:
            raise ValueError(f'stop_after must be one of {ids}, got {stop_after!r}')
        nodes = nodes[:ids.index(stop_after) + 1]
    return tfx_pipeline.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=nodes,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args))


def pipeline_from_settings(settings: Settings, **runner_choices) -> tfx_pipeline.Pipeline:
    """create_pipeline with the groups of `settings` it reads; `runner_choices`: pipeline_root,
    metadata_connection_config, beam_pipeline_args and optionally stop_after, user_code_from."""
    return create_pipeline(
        pipeline_name=settings.pipeline_name, input_base=settings.input_base, data=settings.data,
        training=settings.training, config=settings.training_config(), evaluation=settings.evaluation,
        serving_check=settings.serving_check, export=settings.export, monitoring=settings.monitoring,
        destinations=settings.destinations, enable_cache=settings.enable_cache, seed=settings.seed,
        code_version=git_version(), **runner_choices)
