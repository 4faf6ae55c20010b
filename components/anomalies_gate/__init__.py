"""Stops a pipeline run when ExampleValidator found data anomalies."""
