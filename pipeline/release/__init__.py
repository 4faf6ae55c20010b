"""Release governance: decisions about pushed versions recorded in MLMD, and the rules of moving labels."""
