"""ModelCardGenerator: a model card (Markdown, HTML, plots) for every pushed version."""
from typing import Optional

from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from petpark.components.common.artifacts import ModelCard, OnnxModel
from petpark.components.model_card import executor


class ModelCardGeneratorSpec(ComponentSpec):
    PARAMETERS = {
        'model_name': ExecutionParameter(type=str),
        'card_base_directory': ExecutionParameter(type=str),
        'code_version': ExecutionParameter(type=str),
        'positive_class_id': ExecutionParameter(type=int),
        # the card's saliency overlays (Integrated Gradients steps; 0: none), mistakes shown, photos per slice
        'explain_steps': ExecutionParameter(type=int, optional=True),
        'explained_mistakes': ExecutionParameter(type=int, optional=True),
        'photos_per_slice': ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {
        executor.PUSHED_MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel),
        executor.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
        executor.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.STATISTICS_KEY: ChannelParameter(type=standard_artifacts.ExampleStatistics, optional=True),
        executor.SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema, optional=True),
        executor.HYPERPARAMETERS_KEY: ChannelParameter(type=standard_artifacts.HyperParameters, optional=True),
        executor.INFRA_BLESSING_KEY: ChannelParameter(type=standard_artifacts.InfraBlessing, optional=True),
        executor.ONNX_MODEL_KEY: ChannelParameter(type=OnnxModel, optional=True),
    }
    OUTPUTS = {executor.MODEL_CARD_KEY: ChannelParameter(type=ModelCard)}


class ModelCardGenerator(base_component.BaseComponent):
    """Gathers the pushed version's facts record (components/common/facts.py: metrics overall and
    per slice with Fairness Indicators, the worst slice, blessing and thresholds, hyperparameters,
    data span and split sizes, schema, code version, and what the other inputs contribute: serving
    check, edge export), stores it on its ModelCard artifact, renders it as Markdown and HTML with
    plots, and publishes them atomically to `<card_base_directory>/<version>/`, outside the folder
    TF Serving loads. The card also shows saliency overlays (Integrated Gradients on the pushed
    SavedModel) of the evaluated split's most confident mistakes and of a few photos per slice
    (explain_steps, explained_mistakes, photos_per_slice; defaults 32, 6, 2; explain_steps=0: none).
    A version keeps its first card; nothing pushed, no card."""
    SPEC_CLASS = ModelCardGeneratorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, pushed_model: channel.BaseChannel, evaluation: channel.BaseChannel,
                 model_blessing: channel.BaseChannel, examples: channel.BaseChannel, *, model_name: str,
                 card_base_directory: str, code_version: str, positive_class_id: int = 1,
                 statistics: Optional[channel.BaseChannel] = None, schema: Optional[channel.BaseChannel] = None,
                 hyperparameters: Optional[channel.BaseChannel] = None,
                 infra_blessing: Optional[channel.BaseChannel] = None, onnx_model: Optional[channel.BaseChannel] = None,
                 explain_steps: Optional[int] = None, explained_mistakes: Optional[int] = None,
                 photos_per_slice: Optional[int] = None):
        super().__init__(spec=ModelCardGeneratorSpec(
            pushed_model=pushed_model, evaluation=evaluation, model_blessing=model_blessing, examples=examples,
            statistics=statistics, schema=schema, hyperparameters=hyperparameters, infra_blessing=infra_blessing,
            onnx_model=onnx_model, model_name=model_name, card_base_directory=card_base_directory,
            code_version=code_version, positive_class_id=positive_class_id, explain_steps=explain_steps,
            explained_mistakes=explained_mistakes, photos_per_slice=photos_per_slice,
            model_card=channel.Channel(type=ModelCard)))
