"""The artifact types petpark's components add to TFX's standard ones."""
from tfx.types import artifact


class IngestionReport(artifact.Artifact):
    """What ingestion accepted, converted and rejected (report.json), per reason and file."""
    TYPE_NAME = 'petpark.IngestionReport'


class OnnxModel(artifact.Artifact):
    """model.onnx (and model.int8.onnx) with metadata.json; properties record whether it was
    exported, opset, parity figures, quantization and the SavedModel version it matches."""
    TYPE_NAME = 'petpark.OnnxModel'


class ModelCard(artifact.Artifact):
    """model_card.md, model_card.html, facts.json and plots; properties: written, model_version,
    card_destination, code_version and the version's facts record (facts.FACTS_PROPERTY)."""
    TYPE_NAME = 'petpark.ModelCard'


class MonitoringBaseline(artifact.Artifact):
    """baseline.json: what served frames of a pushed version are compared with (training statistics,
    reference scores, per-slice accuracy and shares) and the calibrated thresholds of each check."""
    TYPE_NAME = 'petpark.MonitoringBaseline'
