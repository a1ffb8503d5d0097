"""The hardware a cell runs on: which devices exist here and how they are named in results."""
from __future__ import annotations

import os
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


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" microseconds, or "max <period>"


def machine_facts(device: torch.device) -> dict[str, object]:
    """What of this machine can change which execution of a cell is fastest, or fits: the device's name, the CPUs
    this process may use (cores, its affinity, its cgroup's CPU quota) and on CUDA the device's memory,
    multiprocessors and UUID (a MIG slice reports its own memory, multiprocessors and UUID)."""
    facts: dict[str, object] = {"device": f"{device.type}:{device_description(device)}", "cpus": os.cpu_count(),
                                "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                                "cpu_quota": _read_text(CGROUP_CPU_MAX)}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        facts.update(memory=properties.total_memory, multiprocessors=properties.multi_processor_count,
                     uuid=str(getattr(properties, "uuid", "")))
    return facts


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:  # absent (no cgroup v2, another OS): no quota known
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
