"""TFX module code (Transform, Tuner, Trainer). TFX packages this folder into a wheel."""
