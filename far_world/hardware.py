"""What machine a benchmark ran on, and its measured fp32 matmul peak.

Every benchmark reports its throughput next to the peak measured in the same run on the same
device: a ratio achieved/peak means something across machines, a bare tokens/s does not.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import torch


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_hardware(device: str | torch.device = "cpu") -> dict[str, Any]:
    """A JSON-friendly description of the CPU, the threads torch uses and, for CUDA, the GPU."""
    info: dict[str, Any] = {
        "cpu": _cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(
    device: str | torch.device = "cpu", size: int | None = None, min_seconds: float = 1.0
) -> float:
    """Measured fp32 matmul throughput (GFLOP/s) of a large square matmul on all threads.

    Takes the best of several timed batches: the peak is what the hardware can do, so a batch
    slowed by a neighbour's process should not lower it. TF32 is disabled on CUDA, so the
    number is true fp32 whatever global setting a caller left on.
    """
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    flops = 2 * size**3
    tf32 = torch.backends.cuda.matmul.allow_tf32 if device.type == "cuda" else False
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        a @ b  # warm-up: thread pools, allocator, kernel selection
        _sync(device)
        best = 0.0
        start = time.perf_counter()
        while time.perf_counter() - start < min_seconds or best == 0.0:
            reps = 1 if device.type == "cpu" else 10
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            _sync(device)
            best = max(best, reps * flops / (time.perf_counter() - t0))
    finally:
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
    return best / 1e9
