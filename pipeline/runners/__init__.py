"""The runners: each only chooses (metadata store, Beam args, pipeline root, where module code
comes from) and calls factory.create_pipeline. local.py (TFX's LocalDagRunner), airflow_dag.py
(a scheduled DAG) with airflow_launcher.py, kubeflow_v2.py (Kubeflow Pipelines v2 / Vertex AI)."""
