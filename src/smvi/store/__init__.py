"""The run layer: the run directory, its records, atomic writes, checkpoints, provenance and statistics.

Torch-free except :mod:`smvi.store.checkpoint`; imports only :mod:`smvi.settings`."""
