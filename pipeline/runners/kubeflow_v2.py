"""Kubeflow Pipelines v2 / Vertex AI: the same pipeline compiled by TFX's KubeflowV2DagRunner.

    python -m petpark.pipeline.runners.kubeflow_v2 --image REGISTRY/petpark:TAG [--output petpark_pipeline.json]

Settings as everywhere (PETPARK_HOME a gs:// root, PETPARK_DATA_ROOT the photos' bucket,
PETPARK_BEAM_ARGS e.g. Dataflow args). The orchestrator brings its own MLMD, so none is passed;
module code comes from the petpark package installed in the image (the repository's
Dockerfile builds it), so compiling uploads nothing. Submit the JSON with the KFP client or
Vertex AI's `aiplatform.PipelineJob(template_path=...)`.
"""
import argparse
import json
import os
import sys
from typing import Optional

from petpark.pipeline import factory
from petpark.pipeline.settings import Settings

DEFAULT_OUTPUT = 'petpark_pipeline.json'


def compile_pipeline(settings: Settings, image: str, output_path: str) -> dict:
    """Writes the pipeline spec JSON for `image`; returns it."""
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner
    if not image:
        raise ValueError('an image is needed: the one built from the Dockerfile, pushed to a registry')
    pipeline = factory.pipeline_from_settings(
        settings, pipeline_root=settings.pipeline_root, metadata_connection_config=None,
        beam_pipeline_args=settings.beam.arg_list(), user_code_from='installed')
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(output_path)), output_filename=os.path.basename(output_path))
    runner.run(pipeline, write_out=True)
    with open(output_path) as f:
        return json.load(f)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--image', required=True, help='the pipeline image (built from the Dockerfile)')
    parser.add_argument('--output', default=DEFAULT_OUTPUT, help='pipeline spec JSON to write')
    args = parser.parse_args(argv)
    spec = compile_pipeline(Settings.from_env(), args.image, args.output)
    tasks = spec['pipelineSpec']['root']['dag']['tasks']
    print(f'Wrote {args.output}: {len(tasks)} components, image {args.image}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
