"""Serving the pushed SavedModels (TF Serving layout under <home>/serving/<model_name>/)."""
