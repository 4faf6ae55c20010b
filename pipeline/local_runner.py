"""Runs the pipeline with TFX's LocalDagRunner (Beam DirectRunner), configured from PETPARK_*.

Used by `tfx pipeline create --engine local --pipeline_path pipeline/local_runner.py`
and `tfx run create --engine local --pipeline_name petpark`; `petpark run` adds
synthetic data generation, progress lines and the summary around the same call.
"""
import os
import sys

# `tfx run create` runs this file as a script: its folder becomes sys.path[0], where
# this package's modules would shadow top-level packages. Import from the repo root.
_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0]) == _HERE:
    sys.path[0] = os.path.dirname(_HERE)

from tfx import v1 as tfx  # noqa: E402

from pipeline import config, factory, synthetic_data  # noqa: E402


def run(settings: config.Settings) -> None:
    """Runs the pipeline once, first generating the default dataset if it is the input and missing."""
    if not settings.data_root and not synthetic_data.exists(settings.synthetic_data_root):
        synthetic_data.generate(settings.synthetic_data_root, settings.synthetic_count, settings.seed)
    tfx.orchestration.LocalDagRunner().run(factory.create_pipeline(settings))


if __name__ == '__main__':
    run(config.Settings.from_env())
