"""CuratedSchemaGen: TFX's ImportSchemaGen, re-run whenever the schema file's content changes."""
