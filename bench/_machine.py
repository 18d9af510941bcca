"""What every benchmark records beside its figures: machine, date and library versions."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import pyarrow
import torch


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, core count, memory, GPU (if any), UTC date and library versions."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyarrow": pyarrow.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
    }


def describe(info: dict[str, Any]) -> str:
    """One line of ``machine_info()`` for the top of a printed report."""
    gpu = f", GPU {info['gpu']}" if info["gpu"] else ", no GPU"
    return (
        f"{info['date_utc']} | {info['cpu']} x{info['cpus']} CPUs, {info['memory_gib']} GiB{gpu} | "
        f"torch {info['torch']}, pyarrow {info['pyarrow']}, pillow {info['pillow']}, "
        f"numpy {info['numpy']}"
    )


def write_outputs(
    json_path: Path | None, md_path: Path | None, result: dict[str, Any], md_text: str
) -> None:
    """Print ``md_text``; write ``result`` as JSON and ``md_text`` as Markdown where asked."""
    print(md_text)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=1) + "\n")
    if md_path:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(md_text)


def write_seed_bench(
    script: str,
    argv: list[str] | None,
    commit: str,
    fields: dict[str, Any],
    table: str,
    json_path: Path | None,
    md_path: Path | None,
) -> None:
    """The outputs of a per-seed bench script: the machine, the commit the runs used, the command
    line that made them and ``fields`` as JSON; the machine line, the command and ``table`` as
    Markdown."""
    import sys

    info = machine_info()
    command = f"python {script} " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"machine": info, "commit": commit, "command": command, **fields}
    write_outputs(
        json_path, md_path, result, f"{describe(info)}\n\ncommit {commit}: `{command}`\n\n{table}"
    )
