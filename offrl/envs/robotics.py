"""gymnasium-robotics (PointMaze, AntMaze, Adroit), imported in one place.

On import, gymnasium-robotics 1.2.1-1.4.2 print a notice that the *Dense* Adroit v1 rewards changed; offrl evaluates
Adroit through its own D4RL-faithful wrapper (offrl.envs.d4rl_adroit) and no dense variant, so the notice, printed
on every command that made any env, is swallowed here.
"""

from __future__ import annotations

import contextlib
import io
from types import ModuleType

import gymnasium as gym


def robotics_envs() -> ModuleType:
    """gymnasium_robotics, imported (without its notice) and its envs registered with gymnasium."""
    with contextlib.redirect_stderr(io.StringIO()):
        import gymnasium_robotics
    gym.register_envs(gymnasium_robotics)
    return gymnasium_robotics
