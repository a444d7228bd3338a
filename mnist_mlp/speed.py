"""Process-wide torch settings from the config, applied before anything is built.

On a small CPU the thread count is the largest speed knob there is: with two OpenMP threads on two
busy cores every small op of this MLP waits at a barrier for a descheduled thread (measured 10-30x
slower epochs under load), while one thread loses little on an idle machine. ``mnist_mlp.bench``
measures both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def apply_torch_settings(cfg: Mapping[str, Any]) -> None:
    """``threads`` (intra-op CPU threads; null keeps torch's default, one per core)."""
    threads = cfg.get("threads")
    if threads is not None:
        torch.set_num_threads(int(threads))
