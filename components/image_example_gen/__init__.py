"""Custom ExampleGen for folders of labelled images."""
