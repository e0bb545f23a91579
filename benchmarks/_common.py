"""Helpers the benchmark scripts share (imported by them; not a script)."""

from __future__ import annotations

import os
import platform

import torch


def device_name(device: torch.device) -> str:
    """The card or processor a result was measured on, for the results' header."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
