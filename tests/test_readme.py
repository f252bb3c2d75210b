"""The README's Python code blocks run as written (in order, in one fresh interpreter, in an empty directory)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_python_blocks_run_as_written(tmp_path):
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 2 and any("train_run" in b for b in blocks)
    script = tmp_path / "readme_blocks.py"
    script.write_text("\n\n".join(blocks))
    # No MNIST (the examples must not need it); one thread, like the rest of the suite, so that a loaded CI machine
    # does not stall torch's thread barriers.
    env = {**os.environ, "SMVI_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "log p(x) ≈" in r.stdout and "BDMC:" in r.stdout
    assert (tmp_path / "runs" / "example" / "eval.json").is_file()
    assert (tmp_path / "runs" / "example" / "latents.png").is_file()
    print(f"README Python blocks: {time.perf_counter() - t0:.1f} s")
