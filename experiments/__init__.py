"""The experiments bundled with kexp (the top-level `experiments/` folder)."""
