"""Training: the loop (Algorithm 1), EMA, the one run driver with its log and stopping rules, DDP,
timestep sampling."""
