"""Where and with what a result was computed (torch-free): the machine a record's :class:`~smvi.store.records.Header`
stamps (:func:`host_info`), and the report's provenance table (:func:`provenance_rows`, :func:`provenance_summary`).

Wall time per stage comes from what each stage already writes: training from ``metrics.jsonl`` (the sum of the
per-epoch ``seconds``, device and threads from its last line), the others from their record's ``seconds`` (the stage's
work after loading the model and the data). Records written before the header carried versions and machine (and the
legacy files upgraded by :func:`smvi.store.records.parse_record`) read as "unknown", never as an error.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = [
    "host_info",
    "package_version",
    "cpu_model",
    "train_seconds",
    "provenance_rows",
    "provenance_summary",
    "STAGES",
    "fmt_seconds",
]

STAGES = ("eval", "ssl", "convergence", "gaps")  # the record kinds, in the order of the table's columns


def package_version(name: str) -> str | None:
    """The installed version of ``name`` (read from its metadata: nothing is imported), None if not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's model name (Linux ``/proc/cpuinfo``; elsewhere :func:`platform.processor`), None if unknown."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _accelerator(device: str) -> str | None:
    """The GPU's name for a ``cuda`` device, asked of torch only if the caller has already imported it."""
    torch = sys.modules.get("torch")
    if torch is None or not device.startswith("cuda"):
        return None
    try:
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return torch.cuda.get_device_name(index)
    except Exception:  # noqa: BLE001 -- a name is a courtesy; never fail a stage for it
        return None


def host_info(device: str | None = None) -> dict[str, Any]:
    """The machine a stage runs on: OS, architecture, CPU model and usable cores, and the torch device (with the
    GPU's name for CUDA) -- the ``host`` of a record's header."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count()
    out = {
        "os": f"{platform.system()} {platform.release()}".strip(),
        "machine": platform.machine() or None,
        "cpu": cpu_model(),
        "cpus": cpus,
        "device": device,
    }
    if device and (name := _accelerator(device)):
        out["device"] = f"{device} ({name})"
    return out


# ---- the report's table ---------------------------------------------------------------------------------------------
def fmt_seconds(s: float | None) -> str:
    """``s`` seconds as ``42 s``, ``12.5 min`` or ``3.4 h``; "unknown" for None."""
    if s is None:
        return "unknown"
    if round(s) < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def train_seconds(metrics: list[dict] | tuple[dict, ...]) -> float | None:
    """Training wall time: the sum of the per-epoch ``seconds`` of ``metrics.jsonl`` (None when an epoch has none)."""
    secs = [s for m in metrics if isinstance(s := m.get("seconds"), (int, float)) and s >= 0]
    if not secs or len(secs) < len(metrics):
        return None
    return float(sum(secs))


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and x == x else None


def _header(tree: dict | None) -> dict:
    h = tree.get("header") if isinstance(tree, dict) else None
    return h if isinstance(h, dict) else {}


def _machine(host: Any) -> str:
    """One line for a header's ``host``: ``CPU model × cores, device``; "unknown" without one."""
    if not isinstance(host, dict):
        return "unknown"
    cpu = host.get("cpu") or host.get("machine") or "CPU"
    cores = f" × {host['cpus']}" if isinstance(host.get("cpus"), int) else ""
    device = f", {host['device']}" if host.get("device") else ""
    return f"{cpu}{cores}{device}"


def _records(run) -> dict[str, dict | None]:
    """The run's current record trees (header included) by stage."""
    return {k: getattr(run, k, None) for k in STAGES}


def provenance_rows(runs: list) -> tuple[list[str], list[list[str]]]:
    """The provenance table: per run (:class:`smvi.report.aggregate.Run`), wall time of training and of each stage with
    a current record, the smvi and torch versions and machine its records name, and when the newest was written."""
    head = [
        "run",
        "train",
        "device, threads (train)",
        "evaluate",
        "ssl",
        "convergence",
        "gaps",
        "smvi",
        "torch",
        "machine (records)",
        "written (UTC)",
    ]
    body = []
    for r in runs:
        last = r.metrics[-1] if r.metrics else {}
        dev = f"{last['device']}, {last.get('threads', '?')}" if isinstance(last.get("device"), str) else "unknown"
        recs = _records(r)
        cells = [fmt_seconds(_num(v.get("seconds"))) if v else "—" for v in recs.values()]
        heads = [_header(v) for v in recs.values() if v]
        pick = lambda key, heads=heads: ", ".join(sorted({str(h.get(key) or "unknown") for h in heads})) or "—"  # noqa: E731
        machines = ", ".join(sorted({_machine(h.get("host")) for h in heads})) or "—"
        created = max((str(h["created"]) for h in heads if h.get("created")), default="unknown" if heads else "—")
        body.append(
            [
                r.name,
                fmt_seconds(train_seconds(r.metrics)) if r.metrics else "—",
                dev,
                *cells,
                pick("smvi_version"),
                pick("torch_version"),
                machines,
                created.replace("+00:00", ""),
            ]
        )
    return head, body


def _total(v: list[float | None]) -> str:
    """A stage's summed wall time over runs, saying how many runs recorded it."""
    known = [x for x in v if x is not None]
    if not known:
        return f"unknown ({len(v)} runs)"
    return fmt_seconds(sum(known)) + (
        f" ({len(v)} runs)" if len(known) == len(v) else f" (the {len(known)} of {len(v)} runs that recorded it)"
    )


def provenance_summary(runs: list) -> list[str]:
    """Lines for the top of the report: the versions, Python and machines the records name, the dates they were
    written, and the total wall time per stage."""
    heads = [_header(v) for r in runs for v in _records(r).values() if v]
    values = lambda key: sorted({str(h.get(key) or "unknown") for h in heads}) or ["unknown"]  # noqa: E731
    created = sorted(str(h["created"]).replace("+00:00", "") for h in heads if h.get("created"))
    totals = {"train": [train_seconds(r.metrics) for r in runs if r.metrics]}
    totals |= {k: [_num(rec.get("seconds")) for r in runs if (rec := _records(r)[k])] for k in STAGES}
    time = ", ".join(f"{k} {_total(v)}" for k, v in totals.items() if v)
    machines = "; ".join(sorted({_machine(h.get("host")) for h in heads})) or "unknown"
    systems = ", ".join(sorted({str((h.get("host") or {}).get("os") or "unknown") for h in heads})) or "unknown"
    return [
        f"smvi {', '.join(values('smvi_version'))}; torch {', '.join(values('torch_version'))}; "
        f"Python {', '.join(values('python_version'))} (as the records name them; 'legacy' and 'unknown': "
        "written before records carried them)",
        f"machines: {machines}; OS {systems}",
        "records written: " + (f"{created[0]} to {created[-1]} (UTC)" if created else "unknown"),
        f"wall time summed over runs: {time}" if time else "wall time: unknown",
    ]
