"""ImageExampleGen executor: maps the per-file functions over the listed files with Beam and
writes the ingestion report.

Every matched file ends up either as a tf.Example or as a line in the ingestion report
with the reason it was excluded; none is dropped silently.
"""
import itertools
import json
import os
from typing import Any, Dict, Iterable, List

import apache_beam as beam
from absl import logging
from tfx.components.example_gen import base_example_gen_executor
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from petpark.components.image_example_gen import duplicates, listing, records, report
from petpark.components.image_example_gen.labels import LabelRule
from petpark.components.image_example_gen.rejections import FileRejected

MAX_BAD_FRACTION_KEY = 'max_bad_fraction'
CLASS_NAMES_KEY = 'class_names'
FILE_NAME_PATTERN_KEY = 'file_name_pattern'
NIGHT_HOURS_KEY = 'night_hours'
NIGHT_BRIGHTNESS_KEY = 'night_brightness'
MAX_FILE_BYTES_KEY = 'max_file_bytes'
ALLOW_SYMLINKS_OUTSIDE_ROOT_KEY = 'allow_symlinks_outside_root'
INGESTION_REPORT_KEY = 'ingestion_report'
_REPORT_DIR_KEY = '_ingestion_report_dir'
_PARTS_DIR = 'parts'
_DUPLICATES_PART = 'duplicates'
_ALL_INPUT_SPLITS_KEY = '_all_input_splits'
# The input split whose photos are written as an output split of their own, never hash-split
# into train/eval: a hold-out set that neither the Tuner nor the Trainer reads.
HOLDOUT_SPLIT = 'validation'
EXAMPLES = 'examples'


def _list(value: Any) -> List[Any]:
    """A list-typed execution property: the orchestrator hands it over as JSON text."""
    return json.loads(value) if isinstance(value, str) else list(value)


def label_rule(exec_properties: Dict[str, Any]) -> LabelRule:
    return LabelRule(tuple(_list(exec_properties[CLASS_NAMES_KEY])), exec_properties[FILE_NAME_PATTERN_KEY])


def lighting_rule(exec_properties: Dict[str, Any]) -> records.LightingRule:
    return records.LightingRule(frozenset(_list(exec_properties[NIGHT_HOURS_KEY])),
                                float(exec_properties[NIGHT_BRIGHTNESS_KEY]))


class _FileToExample(beam.DoFn):
    """Converts one listed entry; emits its tf.Example, on the `status` output what happened, and
    on the `fingerprint` output its duplicate fingerprint."""

    STATUS = 'status'
    FINGERPRINT = 'fingerprint'

    def __init__(self, metadata: Dict[str, Dict[str, str]], labels: LabelRule,
                 lighting: records.LightingRule, max_file_bytes: int, id_prefix: str = ''):
        self._metadata, self._labels, self._lighting = metadata, labels, lighting
        self._max_file_bytes, self._id_prefix = max_file_bytes, id_prefix

    def process(self, entry: listing.Entry) -> Iterable[Any]:
        relative_id = entry.image_id.replace(os.sep, '/')
        image_id = self._id_prefix + relative_id
        if entry.reason == listing.DIRECTORY:
            yield beam.pvalue.TaggedOutput(self.STATUS, (report.SKIPPED, entry.reason, image_id, entry.detail))
            return
        try:
            if entry.reason:
                raise FileRejected(entry.reason, entry.detail)
            example, conversion, fingerprint = records.file_to_example(
                entry.path, relative_id, self._metadata.get(relative_id, {}), self._labels, self._lighting,
                self._max_file_bytes, self._id_prefix)
        except FileRejected as e:
            yield beam.pvalue.TaggedOutput(self.STATUS, (report.REJECTED, e.reason, image_id, e.detail))
            return
        status = (report.CONVERTED, conversion) if conversion else (report.ACCEPTED, '')
        yield beam.pvalue.TaggedOutput(self.STATUS, status + (image_id, ''))
        yield beam.pvalue.TaggedOutput(self.FINGERPRINT, fingerprint)
        yield example


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
def _ReadImages(pipeline: beam.Pipeline, exec_properties: Dict[str, Any], split_pattern: str,
                id_prefix: str = '') -> Dict[str, beam.pvalue.PCollection]:
    """Reads the images of one input split: {EXAMPLES: tf.Examples, STATUS: per-entry statuses and
    metadata.csv rows naming no listed file, FINGERPRINT: duplicate fingerprints}. Image ids are
    relative to the split's image root, after `id_prefix`."""
    root, entries = listing.list_entries(exec_properties['input_base'], split_pattern,
                                         bool(exec_properties[ALLOW_SYMLINKS_OUTSIDE_ROOT_KEY]))
    logging.info('ImageExampleGen: %d entries under %s', len(entries), root)
    metadata = records.read_metadata(root)
    unmatched = records.rows_without_file(metadata, {entry.image_id.replace(os.sep, '/') for entry in entries})
    if unmatched:
        logging.warning('ImageExampleGen: %d rows of %s name no file the pattern matches (see the report)',
                        len(unmatched), os.path.join(root, records.METADATA_FILE))
    convert = _FileToExample(metadata, label_rule(exec_properties), lighting_rule(exec_properties),
                             int(exec_properties[MAX_FILE_BYTES_KEY]), id_prefix)
    read = (pipeline
            | 'ListFiles' >> beam.Create(entries)
            | 'Spread' >> beam.Reshuffle()
            | 'ReadImages' >> beam.ParDo(convert).with_outputs(_FileToExample.STATUS, _FileToExample.FINGERPRINT,
                                                               main=EXAMPLES))
    rows = pipeline | 'MetadataRowsWithoutFile' >> beam.Create(
        [(report.METADATA_ROW, reason, id_prefix + image, detail) for image, reason, detail in unmatched])
    statuses = (read[_FileToExample.STATUS], rows) | 'Statuses' >> beam.Flatten()
    return {EXAMPLES: read[EXAMPLES], _FileToExample.STATUS: statuses,
            _FileToExample.FINGERPRINT: read[_FileToExample.FINGERPRINT]}


def _id_prefix(input_base: str, split_pattern: str, several: bool) -> str:
    """'' for a single input split; else the split's image root relative to input_base, so that
    ids stay unique across the folders pooled (`train/cats/1.jpg` vs `more/cats/1.jpg`)."""
    if not several:
        return ''
    relative = os.path.relpath(listing.image_root(input_base, split_pattern), input_base)
    return '' if relative == '.' else relative.replace(os.sep, '/') + '/'


def _pattern(input_config: example_gen_pb2.Input, split_name: str) -> str:
    return next(split.pattern for split in input_config.splits if split.name == split_name)


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Turns image folders into tf.Examples and writes an ingestion report.

    Input splits: one or more pooled folders, hash-split into the output splits (train/eval) by
    duplicate group, and optionally HOLDOUT_SPLIT, written as its own output split. Duplicates are
    found across all of them; a pooled photo that duplicates a held-out one is withheld from
    train/eval (and listed in the report), so the held-out figures are of photos never trained on.
    """

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _ReadImages

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline,
                               exec_properties: Dict[str, Any]) -> Dict[str, beam.pvalue.PCollection]:
        input_config, output_config = example_gen_pb2.Input(), example_gen_pb2.Output()
        proto_utils.json_to_proto(exec_properties[_ALL_INPUT_SPLITS_KEY], input_config)
        proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config)
        read_images = self.GetInputSourceToExamplePTransform()
        several = len(input_config.splits) > 1
        read = {split.name: pipeline | f'Read[{split.name}]' >> read_images(
                    exec_properties, split.pattern, _id_prefix(exec_properties['input_base'], split.pattern, several))
                for split in input_config.splits}
        parts = os.path.join(exec_properties[_REPORT_DIR_KEY], _PARTS_DIR)
        _ = ([r[_FileToExample.STATUS] for r in read.values()]
             | 'AllStatuses' >> beam.Flatten()
             | 'StatusToJson' >> beam.Map(lambda s: json.dumps(dict(zip(report.STATUS_FIELDS, s))))
             | 'WriteStatus' >> beam.io.WriteToText(os.path.join(parts, 'status'), file_name_suffix='.jsonl'))
        held_out_prefix = _id_prefix(exec_properties['input_base'], _pattern(input_config, HOLDOUT_SPLIT), several) \
            if HOLDOUT_SPLIT in read else None
        found = ([r[_FileToExample.FINGERPRINT] for r in read.values()]
                 | 'AllFingerprints' >> beam.Flatten()
                 | 'CollectFingerprints' >> beam.combiners.ToList()
                 | 'FindDuplicates' >> beam.Map(duplicates.find, held_out_prefix))
        _ = (found
             | 'DuplicatesToJson' >> beam.Map(lambda f: json.dumps(f['report']))
             | 'WriteDuplicates' >> beam.io.WriteToText(os.path.join(parts, _DUPLICATES_PART), file_name_suffix='.json'))
        found = beam.pvalue.AsSingleton(found)
        pooled = ([r[EXAMPLES] for name, r in read.items() if name != HOLDOUT_SPLIT]
                  | 'Pool' >> beam.Flatten()
                  | 'WithholdHeldOutDuplicates' >> beam.Filter(
                      lambda example, f: records.image_id_of(example) not in f['withheld'], found)
                  | 'GroupDuplicates' >> beam.Map(
                      lambda example, f: records.with_duplicate_group(example, f['group_of']), found))
        buckets = list(itertools.accumulate(split.hash_buckets for split in output_config.split_config.splits))
        splits = pooled | 'SplitData' >> beam.Partition(
            base_example_gen_executor._PartitionFn, len(buckets), buckets, output_config.split_config)  # pylint: disable=protected-access
        result = {split.name: part for split, part in zip(output_config.split_config.splits, splits)}
        if HOLDOUT_SPLIT in read:
            result[HOLDOUT_SPLIT] = read[HOLDOUT_SPLIT][EXAMPLES]
            # TFX's Do named the splits from the output config alone; the writers look the names up.
            self._examples.split_names = artifact_utils.encode_split_names(list(result))
        return result

    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        report_dir = artifact_utils.get_single_uri(output_dict[INGESTION_REPORT_KEY])
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        # TFX's Do names the output splits from one input split and the output config; the
        # input splits all go to GenerateExamplesByBeam, which adds the held-out split's name.
        first_only = example_gen_pb2.Input(splits=input_config.splits[:1])
        exec_properties = dict(exec_properties, **{
            _REPORT_DIR_KEY: report_dir, _ALL_INPUT_SPLITS_KEY: exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
            standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(first_only)})
        self._examples = artifact_utils.get_single_instance(output_dict[standard_component_specs.EXAMPLES_KEY])
        super().Do(input_dict, output_dict, exec_properties)
        parts_dir = os.path.join(report_dir, _PARTS_DIR)
        statuses, found = [], []
        for part in sorted(fileio.glob(os.path.join(parts_dir, '*.json*'))):
            with fileio.open(part, 'r') as f:
                lines = [json.loads(line) for line in f.read().splitlines() if line]
            (found if os.path.basename(part).startswith(_DUPLICATES_PART) else statuses).extend(lines)
        summary = dict(report.summarize(statuses), duplicates=found[0])
        with fileio.open(os.path.join(report_dir, report.REPORT_FILE), 'w') as f:
            f.write(json.dumps(summary, indent=1))
        fileio.rmtree(parts_dir)
        logging.info('ImageExampleGen: %d examples from %d files; converted %s; rejected %s; skipped %s; %d '
                     'metadata rows without a file; %d duplicate groups', summary['examples'], summary['total_files'],
                     summary['converted'], summary['rejected'], summary['skipped'],
                     len(summary['metadata_rows_without_file']), summary['duplicates']['groups'])
        report.check_report(summary, float(exec_properties[MAX_BAD_FRACTION_KEY]))
