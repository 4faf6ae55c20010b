"""MonitoringBaseline: per pushed version, the reference that `petpark monitor` compares served frames with."""
import json
from typing import Optional, Sequence

from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from petpark.components.common.artifacts import MonitoringBaseline
from petpark.components.monitoring_baseline import executor


class MonitoringBaselineSpec(ComponentSpec):
    PARAMETERS = {
        'split': ExecutionParameter(type=str),
        'positive_class_id': ExecutionParameter(type=int),
        'slice_features': ExecutionParameter(type=str),
        'window_sizes': ExecutionParameter(type=str),
        'windows_per_size': ExecutionParameter(type=int),
        'false_alarm_rate': ExecutionParameter(type=float),
        'max_examples': ExecutionParameter(type=int),
        'seed': ExecutionParameter(type=int),
    }
    INPUTS = {
        executor.PUSHED_MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel),
        executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.STATISTICS_KEY: ChannelParameter(type=standard_artifacts.ExampleStatistics),
        executor.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True),
        executor.SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema),
    }
    OUTPUTS = {executor.BASELINE_KEY: ChannelParameter(type=MonitoringBaseline)}


class MonitoringBaselineGen(base_component.BaseComponent):
    """For a pushed version: the training statistics to compare served frames with (StatisticsGen's
    train split), the model's scores on the evaluated split (`split`), the held-out share of each
    value of `slice_features` and, given the Evaluator's `evaluation`, its accuracy, and thresholds for every check of the
    schema's skew and drift comparators and for prediction drift, calibrated on windows of each of
    `window_sizes` drawn from the held-out split so that a window of in-distribution frames alarms
    at most at `false_alarm_rate`. Nothing pushed, no baseline."""
    SPEC_CLASS = MonitoringBaselineSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, pushed_model: channel.BaseChannel, model: channel.BaseChannel, examples: channel.BaseChannel,
                 statistics: channel.BaseChannel, schema: channel.BaseChannel, *,
                 evaluation: Optional[channel.BaseChannel] = None,
                 split: str = 'eval', positive_class_id: int = 1, slice_features: Sequence[str] = (),
                 window_sizes: Sequence[int] = (50, 200, 1000, 5000), windows_per_size: int = 40,
                 false_alarm_rate: float = 0.01, max_examples: int = 5000, seed: int = 0):
        if not window_sizes or min(window_sizes) < 2:
            raise ValueError(f'window_sizes needs sizes of at least 2 frames, got {list(window_sizes)}')
        if windows_per_size < 5 or not 0 < false_alarm_rate < 1 or max_examples < 10:
            raise ValueError('windows_per_size must be at least 5, false_alarm_rate in (0, 1), max_examples >= 10')
        super().__init__(spec=MonitoringBaselineSpec(
            pushed_model=pushed_model, model=model, examples=examples, statistics=statistics, evaluation=evaluation,
            schema=schema, split=split, positive_class_id=positive_class_id,
            slice_features=json.dumps(list(slice_features)), window_sizes=json.dumps(sorted(set(window_sizes))),
            windows_per_size=windows_per_size, false_alarm_rate=false_alarm_rate, max_examples=max_examples,
            seed=seed, baseline=channel.Channel(type=MonitoringBaseline)))
