"""What every family's tiny pipeline shares: its family's real scheduler, and seeded construction.

Heavy imports (torch, diffusers) happen inside the functions.
"""

from __future__ import annotations

from dataclasses import asdict

from glance.families import get_family
from glance.tiny.text import seeded

__all__ = ["family_scheduler", "seeded"]


def family_scheduler(family: str):
    """The flow-matching scheduler with `family`'s real settings."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **asdict(get_family(family).scheduler))
