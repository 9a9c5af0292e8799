"""The environment fingerprint stored with every results file."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata

import torch

from celora_bench import malloc


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> str:
    cfg = torch.__config__.show()
    for name in ("MKL", "OpenBLAS", "BLIS", "Accelerate", "ArmPL"):
        if f"BLAS_INFO={name.lower()}" in cfg.replace(" ", "").lower() or f"USE_{name.upper()}=ON" in cfg:
            return name
    for line in cfg.splitlines():
        if "BLAS_INFO" in line:
            return line.strip()
    return "unknown"


def machine_info() -> dict:
    info = {
        "node": platform.node(),
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "blas": _blas(),
        "malloc": malloc.describe(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "celora_bench": _version("celora-bench"),
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "memory_bytes": props.total_memory,
                       "cuda": torch.version.cuda, "driver": _nvidia_driver(),
                       "count": torch.cuda.device_count()}
    return info


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def commit_info() -> dict:
    def git(*args):
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                 cwd=os.path.dirname(os.path.abspath(__file__)))
            return out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"id": commit, "dirty": bool(status) if status is not None else None,
            "branch": git("rev-parse", "--abbrev-ref", "HEAD")}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
