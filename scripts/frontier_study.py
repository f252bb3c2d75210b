"""Deprecated: the frontier study is `smvi study DIR --config frontier` (smvi/studies/frontier.toml, `make frontier`).

    python scripts/frontier_study.py DIR [OPTIONS]   ==   smvi study DIR --config frontier [OPTIONS]

The options are smvi study's (--only, --set, --gaps-set, --lanes, --executor, --workers, --smvi-sweep, --no-gaps); the
lanes, executor and workers default to the study file's (2 lanes, process executor, 1 worker per lane).
"""

import sys

from smvi.cli import main

if __name__ == "__main__":
    main(["study", *sys.argv[1:2], "--config", "frontier", *sys.argv[2:]], prog_name="smvi")
