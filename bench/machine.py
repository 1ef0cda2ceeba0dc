"""What machine a bench ran on: printed by every bench so its figures can be compared."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe() -> str:
    return f"CPU: {cpu_model()} ({os.cpu_count()} cores visible)"
