"""The ``smvi`` command line. It only parses options and calls library functions.

Every expected failure (bad config, bad data, unusable run directory, damaged checkpoint, diverged training) ends with
one line on stderr, ``error: ...``, and exit status 1; usage errors exit with status 2. Only click and the torch-free
layers are imported at start-up: each command imports the torch-heavy modules it needs when it runs, so
``smvi --help`` starts without torch.

``app.py`` holds the group and what the commands share; ``data_config.py`` (data, config), ``train.py``,
``stages.py`` (evaluate, convergence, ssl, gaps, pictures), ``sweep.py`` (sweep, report) and ``study.py`` (study,
export) add the commands.
"""

from smvi.cli import data_config, stages, study, sweep, train  # noqa: F401  (registering the commands)
from smvi.cli.app import EVAL_PRESET_NAMES, SWEEP_PRESET_NAMES, SWEEP_PRESET_TIMES, expected_errors, main

__all__ = ["main", "expected_errors", "EVAL_PRESET_NAMES", "SWEEP_PRESET_NAMES", "SWEEP_PRESET_TIMES"]
