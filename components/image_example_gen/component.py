"""ImageExampleGen: a FileBasedExampleGen for folders of labelled images."""
from typing import Iterable, List, Optional, Sequence, Union

from tfx.components.example_gen import utils
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import channel, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from petpark.components.common.artifacts import IngestionReport
from petpark.components.image_example_gen import driver, executor, labels, listing, records
from petpark.modules import features


class ImageExampleGenSpec(ComponentSpec):
    """FileBasedExampleGen's parameters, the label and lighting rules and a bad-file budget;
    an extra report output."""
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        executor.MAX_BAD_FRACTION_KEY: ExecutionParameter(type=float),
        executor.CLASS_NAMES_KEY: ExecutionParameter(type=List[str]),
        executor.FILE_NAME_PATTERN_KEY: ExecutionParameter(type=str),
        executor.NIGHT_HOURS_KEY: ExecutionParameter(type=List[int]),
        executor.NIGHT_BRIGHTNESS_KEY: ExecutionParameter(type=float),
        executor.MAX_FILE_BYTES_KEY: ExecutionParameter(type=int),
        executor.ALLOW_SYMLINKS_OUTSIDE_ROOT_KEY: ExecutionParameter(type=int),
    }
    INPUTS = {}
    OUTPUTS = {
        standard_component_specs.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.INGESTION_REPORT_KEY: ChannelParameter(type=IngestionReport),
    }


def _input_config(input_pattern: Union[str, Sequence[str]], holdout_pattern: str) -> example_gen_pb2.Input:
    """One input split per pooled pattern, plus HOLDOUT_SPLIT; a single pattern is TFX's default config."""
    patterns = [input_pattern] if isinstance(input_pattern, str) else list(input_pattern)
    if not patterns or not all(patterns):
        raise ValueError(f'input_pattern needs at least one non-empty glob, got {input_pattern!r}')
    if len(patterns) == 1 and not holdout_pattern:
        return utils.make_default_input_config(patterns[0])
    everything = patterns + ([holdout_pattern] if holdout_pattern else [])
    if any('{' in pattern for pattern in everything):
        raise ValueError(f'{{SPAN}}/{{VERSION}} need a single input pattern without a hold-out; got {everything}')
    roots = [listing.image_root('', pattern) for pattern in everything]
    if '' in roots or len(set(roots)) < len(roots):
        raise ValueError(f'Pooled and hold-out patterns must each start with a folder of their own (it prefixes '
                         f'their image ids), got {everything}')
    splits = [example_gen_pb2.Input.Split(name=f'pool-{i}', pattern=p) for i, p in enumerate(patterns, 1)]
    if holdout_pattern:
        splits.append(example_gen_pb2.Input.Split(name=executor.HOLDOUT_SPLIT, pattern=holdout_pattern))
    return example_gen_pb2.Input(splits=splits)


class ImageExampleGen(FileBasedExampleGen):
    """Reads `<input_base>/<pattern>` image files (class folders or class file names) and an
    optional `metadata.csv` beside them into tf.Examples, split by a hash of the image id.
    `{SPAN}` in the pattern selects the latest span, as in TFX's ExampleGens.

    A FileBasedExampleGen with its own spec, executor and driver, so that orchestrators that
    treat FileBasedExampleGens specially (Kubeflow V2 runs TFX's span-resolving driver before
    the executor) treat it so too; locally, ImageFolderDriver resolves spans.

    Outputs: `examples` (train/eval splits, and `validation` with a hold-out) and `ingestion_report`.
    """
    SPEC_CLASS = ImageExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = driver.ImageFolderDriver

    def __init__(self, input_base: str, class_names: Sequence[str], input_pattern: Union[str, Sequence[str]] = '*/*',
                 holdout_pattern: str = '',
                 file_name_pattern: str = labels.KAGGLE_FILE_NAME_PATTERN, train_fraction: float = 0.8,
                 max_bad_fraction: float = 0.1, night_hours: Iterable[int] = features.NIGHT_HOURS,
                 night_brightness: float = features.NIGHT_BRIGHTNESS, max_file_bytes: int = 64 * 1024 * 1024,
                 allow_symlinks_outside_root: bool = False,
                 range_config: Optional[range_config_pb2.RangeConfig] = None):
        """input_pattern: a glob under input_base, or several whose images are pooled (each below
        its own folder, which prefixes its image ids); holdout_pattern: a glob whose images become
        the `validation` output split, never hash-split into train/eval (see executor.Executor);
        class_names and file_name_pattern: how labels are read (see labels.LabelRule);
        night_hours and night_brightness: how `lighting` is derived (see records.LightingRule);
        max_file_bytes: larger files are rejected unread; allow_symlinks_outside_root: follow
        symbolic links that lead out of input_base (refused by default)."""
        if not 0.01 <= train_fraction <= 0.99:
            raise ValueError(f'train_fraction must be between 0.01 and 0.99 (both splits need '
                             f'examples), got {train_fraction}')
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f'max_bad_fraction must be between 0 and 1, got {max_bad_fraction}')
        if max_file_bytes < 1:
            raise ValueError(f'max_file_bytes must be at least 1, got {max_file_bytes}')
        input_config = _input_config(input_pattern, holdout_pattern)
        label_rule = labels.LabelRule(tuple(class_names), file_name_pattern)
        lighting_rule = records.LightingRule(frozenset(night_hours), night_brightness)
        train_buckets = round(train_fraction * 100)
        output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
            splits=[example_gen_pb2.SplitConfig.Split(name='train', hash_buckets=train_buckets),
                    example_gen_pb2.SplitConfig.Split(name='eval', hash_buckets=100 - train_buckets)],
            partition_feature_name=features.DUPLICATE_GROUP_KEY))
        spec = ImageExampleGenSpec(
            input_base=input_base,
            input_config=input_config,
            output_config=output_config,
            range_config=range_config,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            max_bad_fraction=max_bad_fraction,
            class_names=list(label_rule.class_names),
            file_name_pattern=label_rule.file_name_pattern,
            night_hours=sorted(lighting_rule.night_hours),
            night_brightness=lighting_rule.night_brightness,
            max_file_bytes=max_file_bytes,
            allow_symlinks_outside_root=int(allow_symlinks_outside_root),
            examples=channel.Channel(type=standard_artifacts.Examples),
            ingestion_report=channel.Channel(type=IngestionReport))
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)  # not FileBasedExampleGen's arguments
