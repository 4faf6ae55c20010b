"""ImageExampleGen executor: maps the per-file functions over the listed files with Beam and
writes the ingestion report.

Every matched file ends up either as a tf.Example or as a line in the ingestion report
with the reason it was excluded; none is dropped silently.
"""
import json
import os
from typing import Any, Dict, Iterable, List

import apache_beam as beam
import tensorflow as tf
from absl import logging
from tfx.components.example_gen import base_example_gen_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

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
                 lighting: records.LightingRule, max_file_bytes: int):
        self._metadata, self._labels, self._lighting = metadata, labels, lighting
        self._max_file_bytes = max_file_bytes

    def process(self, entry: listing.Entry) -> Iterable[Any]:
        image_id = entry.image_id.replace(os.sep, '/')
        try:
            if entry.reason:
                raise FileRejected(entry.reason, entry.detail)
            example, conversion, fingerprint = records.file_to_example(
                entry.path, image_id, self._metadata.get(image_id, {}), self._labels, self._lighting,
                self._max_file_bytes)
        except FileRejected as e:
            yield beam.pvalue.TaggedOutput(self.STATUS, (report.REJECTED, e.reason, image_id, e.detail))
            return
        status = (report.CONVERTED, conversion) if conversion else (report.ACCEPTED, '')
        yield beam.pvalue.TaggedOutput(self.STATUS, status + (image_id, ''))
        yield beam.pvalue.TaggedOutput(self.FINGERPRINT, fingerprint)
        yield example


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _ImagesToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
                     split_pattern: str) -> beam.pvalue.PCollection:
    """Reads the images of one input split, groups exact and near duplicates (each example carries
    its group, by which the output splits are made); writes per-file status lines and the
    duplicates found beside the report."""
    root, entries = listing.list_entries(exec_properties['input_base'], split_pattern,
                                         bool(exec_properties[ALLOW_SYMLINKS_OUTSIDE_ROOT_KEY]))
    logging.info('ImageExampleGen: %d files under %s', len(entries), root)
    convert = _FileToExample(records.read_metadata(root), label_rule(exec_properties),
                             lighting_rule(exec_properties), int(exec_properties[MAX_FILE_BYTES_KEY]))
    results = (pipeline
               | 'ListFiles' >> beam.Create(entries)
               | 'Spread' >> beam.Reshuffle()
               | 'ReadImages' >> beam.ParDo(convert).with_outputs(_FileToExample.STATUS, _FileToExample.FINGERPRINT,
                                                                  main='examples'))
    parts = os.path.join(exec_properties[_REPORT_DIR_KEY], _PARTS_DIR)
    _ = (results[_FileToExample.STATUS]
         | 'StatusToJson' >> beam.Map(lambda s: json.dumps(dict(zip(report.STATUS_FIELDS, s))))
         | 'WriteStatus' >> beam.io.WriteToText(os.path.join(parts, 'status'), file_name_suffix='.jsonl'))
    found = (results[_FileToExample.FINGERPRINT]
             | 'AllFingerprints' >> beam.combiners.ToList()
             | 'FindDuplicates' >> beam.Map(duplicates.find))
    _ = (found
         | 'DuplicatesToJson' >> beam.Map(lambda f: json.dumps(f['report']))
         | 'WriteDuplicates' >> beam.io.WriteToText(os.path.join(parts, _DUPLICATES_PART), file_name_suffix='.json'))
    return (results.examples
            | 'GroupDuplicates' >> beam.Map(lambda example, f: records.with_duplicate_group(example, f['group_of']),
                                            beam.pvalue.AsSingleton(found)))


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Turns image folders into tf.Examples and writes an ingestion report."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _ImagesToExample

    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        report_dir = artifact_utils.get_single_uri(output_dict[INGESTION_REPORT_KEY])
        exec_properties = dict(exec_properties, **{_REPORT_DIR_KEY: report_dir})
        super().Do(input_dict, output_dict, exec_properties)
        parts_dir = os.path.join(report_dir, _PARTS_DIR)
        statuses, found = [], []
        for part in sorted(fileio.glob(os.path.join(parts_dir, '*.json*'))):
            with fileio.open(part, 'r') as f:
                lines = [json.loads(line) for line in f.read().splitlines() if line]
            (found if os.path.basename(part).startswith(_DUPLICATES_PART) else statuses).extend(lines)
        summary = dict(report.summarize(statuses), duplicates=report.merge_duplicates(found))
        with fileio.open(os.path.join(report_dir, report.REPORT_FILE), 'w') as f:
            f.write(json.dumps(summary, indent=1))
        fileio.rmtree(parts_dir)
        logging.info('ImageExampleGen: %d examples from %d files; converted %s; rejected %s; %d duplicate groups',
                     summary['examples'], summary['total_files'], summary['converted'], summary['rejected'],
                     summary['duplicates']['groups'])
        report.check_report(summary, float(exec_properties[MAX_BAD_FRACTION_KEY]))
