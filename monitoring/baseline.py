"""A pushed version's monitoring baseline, found through MLMD (the MonitoringBaselineGen's artifact
made from the version's push) and read through fileio."""
import dataclasses
import json
import os
from typing import Any, Dict, Optional, Tuple

from petpark.components.common import facts
from petpark.components.monitoring_baseline import executor as baseline_files
from petpark.pipeline.inspection import registry
from petpark.pipeline.inspection.store import Artifact, Lineage

BASELINE_TYPE = 'petpark.MonitoringBaseline'


@dataclasses.dataclass
class Baseline:
    uri: str
    record: Dict[str, Any]
    training_statistics: Any  # DatasetFeatureStatisticsList
    schema: Any  # tensorflow_metadata Schema, with the comparators it was calibrated for

    def threshold(self, check: str, size: int) -> Optional[float]:
        from petpark.components.monitoring_baseline import drift
        table = self.record['thresholds'].get(check)
        return drift.threshold_at(table, size) if table else None


def load(uri: str) -> Baseline:
    from tensorflow_metadata.proto.v0 import statistics_pb2
    from tfx.dsl.io import fileio
    from tfx.utils import io_utils
    path = os.path.join(uri, baseline_files.BASELINE_FILE)
    if not fileio.exists(path):
        raise ValueError(f'{uri}: no {baseline_files.BASELINE_FILE}; not a complete monitoring baseline')
    record = json.loads(io_utils.read_string_file(path))
    if record.get('format') != baseline_files.FORMAT:
        raise ValueError(f'{path}: format {record.get("format")!r}, this monitor reads {baseline_files.FORMAT!r}')

    def statistics(name):
        return statistics_pb2.DatasetFeatureStatisticsList.FromString(io_utils.read_bytes_file(os.path.join(uri, name)))
    return Baseline(uri, record, statistics(baseline_files.TRAINING_STATISTICS_FILE),
                    io_utils.SchemaReader().read(os.path.join(uri, baseline_files.SCHEMA_FILE)))


def pushed_and_baseline(lineage: Lineage, version: str) -> Tuple[Artifact, Optional[Artifact]]:
    """The version's push and its baseline artifact (None when none was written)."""
    pushes = {facts.prop(a, 'pushed_version'): a for a in registry.pushes(lineage)}
    if version not in pushes:
        raise ValueError(f'No pushed version {version!r} in {lineage.pipeline_name} (pushed: '
                         f'{", ".join(sorted(pushes)) or "none"}; see `petpark models list`)')
    for artifact in lineage.downstream(pushes[version].id):
        if lineage.type_name(artifact) == BASELINE_TYPE and facts.prop(artifact, 'written', 0) == 1:
            return pushes[version], artifact
    return pushes[version], None


def newest_version(lineage: Lineage) -> Optional[str]:
    pushes = registry.pushes(lineage)
    return facts.prop(pushes[-1], 'pushed_version') if pushes else None
