"""The math: models, posterior families, objectives, the constraint and the estimators.

Torch, no file I/O; imports only :mod:`smvi.settings` and :mod:`smvi.progress`."""
