"""What every custom component may import without importing another component: artifact types,
storage helpers that work on any filesystem TFX's fileio reads, and the per-version facts record."""
