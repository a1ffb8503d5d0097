"""The hardware a cell runs on: which devices exist here and how they are named in results."""
from __future__ import annotations

import platform
from pathlib import Path

import torch


def device_available(name: str) -> tuple[bool, str]:
    """Whether ``name`` (cpu, cuda, cuda:N, mps) can run here, and why not."""
    device = torch.device(name)
    if device.type == "cpu":
        return True, ""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA is not available on this machine"
        index = device.index or 0
        if index >= torch.cuda.device_count():
            return False, f"{name}: only {torch.cuda.device_count()} CUDA device(s) present"
        return True, ""
    if device.type == "mps":
        return (True, "") if torch.backends.mps.is_available() else (False, "MPS is not available on this machine")
    return False, f"device type {device.type!r} is not supported"


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model() if device.type == "cpu" else device.type


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
