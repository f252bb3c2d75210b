"""Studies: sweeps over a grid of runs, their executors and status, and the presets."""
