# The pipeline image for Kubeflow Pipelines v2 / Vertex AI (pipeline/runners/kubeflow_v2.py):
# the locked stack, then petpark itself, so every component's executor and the module code
# (petpark.modules.*, referenced by dotted path in the compiled spec) are importable.
#   docker build -t REGISTRY/petpark:TAG . && docker push REGISTRY/petpark:TAG
#   python -m petpark.pipeline.runners.kubeflow_v2 --image REGISTRY/petpark:TAG
FROM python:3.10-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /petpark
COPY requirements/lock.txt requirements/lock.txt
RUN pip install --no-cache-dir pip==26.3 \
 && pip install --no-cache-dir --no-deps -r requirements/lock.txt
COPY setup.py README.md ./
COPY pipeline pipeline
COPY components components
COPY modules modules
COPY schemas schemas
COPY serving serving
COPY monitoring monitoring
RUN pip install --no-cache-dir --no-deps . \
 && python -c "import petpark.modules.trainer, petpark.components.image_example_gen.executor"
# The executor entry point TFX's Kubeflow V2 spec runs in every step.
ENTRYPOINT ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
