"""Watching served frames: windows of request logs -> the ingestion component's own features ->
TFDV schema, skew and drift checks, prediction drift, a label-free accuracy estimate, health ->
reports recorded in MLMD -> alerts -> actions (frames for review, retraining)."""
