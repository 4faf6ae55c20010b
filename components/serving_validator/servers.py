"""The model servers the ServingValidator can start (runners.make_runner builds each)."""

SERVERS = ('petpark', 'tensorflow_model_server', 'docker')
