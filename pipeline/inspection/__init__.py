"""Reading what happened, from MLMD: store.py (the one reader), progress lines, run summaries, the
registry (`petpark models`), the analysts' notebooks' helpers and `petpark report`."""
