"""The curated schema, shipped as package data."""
import os

SCHEMA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'schema.pbtxt')
