"""petpark: cat/dog classification for pet-park CCTV, as a TFX pipeline.

The repository keeps the design's top-level folders (pipeline/, components/, modules/,
schemas/, serving/, monitoring/); they install as subpackages of one `petpark` namespace package
(`petpark.pipeline`, ...), so installing petpark claims no generic top-level import names.

install_requires names every distribution the code imports directly; the extras add what
an optional part needs. requirements/lock.txt is the exact set that was tested.
"""
from setuptools import find_packages, setup

FOLDERS = ('pipeline', 'components', 'modules', 'schemas', 'serving', 'monitoring')

setup(
    name='petpark',
    version='0.1.0',
    description='TFX pipeline that trains, evaluates and pushes a cat/dog classifier for TF Serving.',
    python_requires='>=3.10,<3.11',
    packages=[f'petpark.{package}' for folder in FOLDERS
              for package in [folder] + [f'{folder}.{sub}' for sub in find_packages(folder)]],
    package_dir={f'petpark.{folder}': folder for folder in FOLDERS},
    package_data={'petpark.schemas': ['*.pbtxt'], 'petpark.pipeline.runners': ['beam_requirements.txt']},
    install_requires=[
        'tfx==1.16.0',
        'ml-pipelines-sdk==1.16.0',  # tfx.dsl, tfx.orchestration, tfx.types and tfx.utils live in it
        'tensorflow>=2.16,<2.17',
        'tensorflow-transform>=1.16,<1.17',
        'tensorflow-model-analysis>=0.47,<0.48',
        'tensorflow-metadata>=1.16,<1.17',
        'tfx-bsl>=1.16,<1.17',
        'ml-metadata>=1.16,<1.17',
        'apache-beam>=2.60',
        'keras>=3',
        'tf-keras>=2.16,<2.17',
        'keras-tuner>=1.4',
        'fairness-indicators==0.47.0',  # installed with --no-deps: see requirements/lock.txt
        'dill',  # tfx-bsl imports it; Beam 2.74 no longer installs it
        'numpy',
        'pillow',
        'absl-py',
        'protobuf',
        'tf2onnx>=1.17',  # the ONNX export component
        'onnx>=1.17',
        'onnxruntime>=1.20',
        'matplotlib',  # model card plots
        'markdown',  # model card HTML from its Markdown
        'tensorflow-data-validation>=1.16,<1.17',  # model card: split sizes from the statistics
        'grpcio',  # ServingValidator's client; petpark serve
        'tensorflow-serving-api>=2.16,<2.17',  # TF Serving's protos: ServingValidator, petpark serve
        # petpark serve, which the default pipeline's ServingValidator starts
        'aiohttp',
        'prometheus_client',
        'google-crc32c',  # request logs' TFRecord checksums (serving/request_log.py has a slow fallback)
        'pandas',  # monitoring windows' statistics (TFDV's in-memory path)
        'scipy',  # monitoring thresholds (a fitted gamma's quantile)
    ],
    extras_require={
        'serving': ['requests'],
        # what an edge box needs for serving/edge_runtime.py, and nothing else of petpark
        'edge': ['onnxruntime>=1.20', 'numpy', 'pillow', 'av', 'google-crc32c'],
        # compiling for Kubeflow Pipelines v2 / Vertex AI (pipeline/kubeflow_v2_runner.py); 0.2.x keeps protobuf 3
        'kubeflow': ['kfp-pipeline-spec>=0.2.2,<0.3'],
        # the Airflow environment (.venv-airflow, requirements/airflow-lock.txt): `petpark airflow up|down|status`
        'airflow': ['apache-airflow==2.10.5', 'psycopg2-binary', 'pgserver', 'psutil'],
        # notebooks/ and `petpark report` (all in the lock already: TFX's own dependencies bring them)
        'notebooks': ['nbclient', 'nbconvert', 'nbformat', 'ipykernel', 'pandas'],
        'test': ['pytest', 'PyYAML', 'psutil', 'h2'],
    },
    entry_points={'console_scripts': ['petpark=petpark.pipeline.cli:main']},
)
