"""Training loop, EMA, checkpoints and timestep sampling."""
