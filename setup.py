"""petpark: cat/dog classification for pet-park CCTV, as a TFX pipeline."""
from setuptools import find_packages, setup

setup(
    name='petpark',
    version='0.1.0',
    description='TFX pipeline that trains, evaluates and pushes a cat/dog classifier for TF Serving.',
    python_requires='>=3.10,<3.11',
    packages=find_packages(include=['pipeline', 'components', 'components.*', 'modules',
                                    'serving', 'serving.*', 'schemas']),
    package_data={'schemas': ['*.pbtxt']},
    install_requires=[
        'tfx==1.16.0',
        'dill',
        'fairness-indicators==0.47.0',  # installed with --no-deps: see requirements/README.md
        'pillow',
    ],
    entry_points={'console_scripts': ['petpark=pipeline.cli:main']},
)
