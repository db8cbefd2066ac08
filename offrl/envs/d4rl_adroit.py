"""D4RL's Adroit rules on Gymnasium-Robotics' `AdroitHand{Pen,Door,Hammer,Relocate}` envs.

Published Adroit scores (and the reference returns of `offrl.dataset_info`) come from D4RL's `door-v0`,
`hammer-v0`, `pen-v0` and `relocate-v0` (d4rl/hand_manipulation_suite/*_v0.py, registered in its `__init__.py`).
Gymnasium-Robotics 1.4.2's dense v1 envs run the same simulation but score it differently:

| task     | term                                   | D4RL                        | AdroitHand*-v1 (1.2.1 to 1.4.2)  |
| -------- | -------------------------------------- | --------------------------- | -------------------------------- |
| door     | palm to handle                         | -0.1 * ||palm - handle||    | +0.1 * ||palm - handle||         |
| hammer   | palm to hammer                         | -0.1 * ||palm - hammer||    | +0.1 * ||palm - hammer||         |
| relocate | palm to ball                           | -0.1 * ||palm - ball||      | +0.1 * ||palm - ball||           |
| pen      | pen dropped (height < 0.075)           | -5 and the episode ends     | -5 on every step to the limit    |
| pen      | episode length                         | 100 steps                   | 200 steps                        |

Every other term (door hinge, hammer head and nail, relocate lift and target, pen position and orientation,
velocity costs, bonuses) is the same; door, hammer and relocate last 200 steps in both.

Gymnasium-Robotics has no option for either difference, so `D4RLAdroit` wraps a dense env: after each step it
computes D4RL's reward from the simulator state (all terms, so it holds whichever sign the installed release
uses) and ends a pen episode when the pen falls. It records its constructor arguments, so the spec of a wrapped
env lists it in `additional_wrappers`, and `gym.make(spec)` applies it again: a dataset whose recorded (eval)
env spec holds it is scored by D4RL's rules wherever that spec is made. `d4rl_adroit_spec` builds such a spec,
with D4RL's episode length, from an env id.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.registration import EnvSpec, WrapperSpec

from offrl.envs.robotics import robotics_envs
from offrl.errors import OffrlError

# D4RL's time limits (its hand_manipulation_suite registers pen with 100 steps, the others with 200).
EPISODE_STEPS = {"pen": 100, "door": 200, "hammer": 200, "relocate": 200}
PEN_DROP_HEIGHT = 0.075  # D4RL's pen episode ends once the pen's centre is below this height

_TASK_OF_CLASS = {
    "AdroitHandPenEnv": "pen",
    "AdroitHandDoorEnv": "door",
    "AdroitHandHammerEnv": "hammer",
    "AdroitHandRelocateEnv": "relocate",
}
_DENSE_ID = re.compile(r"^AdroitHand(Pen|Door|Hammer|Relocate)-v\d+$")


def adroit_task(env_id: str | None) -> str | None:
    """'door' for 'AdroitHandDoor-v1' (any version); None for other ids, the Sparse variants included."""
    match = _DENSE_ID.match(env_id or "")
    return match.group(1).lower() if match else None


# -- D4RL's rewards, from positions in world coordinates -------------------------------------------------


def door_reward(palm: np.ndarray, handle: np.ndarray, hinge: float, qvel: np.ndarray) -> float:
    reward = -0.1 * np.linalg.norm(palm - handle)  # reach the handle
    reward -= 0.1 * (hinge - 1.57) ** 2  # open the door (1.57 rad)
    reward -= 1e-5 * np.sum(qvel**2)
    reward += 2.0 * (hinge > 0.2) + 8.0 * (hinge > 1.0) + 10.0 * (hinge > 1.35)
    return float(reward)


def hammer_reward(
    palm: np.ndarray, hammer: np.ndarray, head: np.ndarray, nail: np.ndarray, nail_goal: np.ndarray, qvel: np.ndarray
) -> float:
    nail_depth = np.linalg.norm(nail - nail_goal)
    reward = -0.1 * np.linalg.norm(palm - hammer)  # grasp the hammer
    reward -= np.linalg.norm(head - nail)  # bring its head to the nail
    reward -= 10.0 * nail_depth  # drive the nail in
    reward -= 1e-2 * np.linalg.norm(qvel)
    reward += 2.0 * (hammer[2] > 0.04 and head[2] > 0.04)  # hammer lifted
    reward += 25.0 * (nail_depth < 0.02) + 75.0 * (nail_depth < 0.01)
    return float(reward)


def relocate_reward(palm: np.ndarray, ball: np.ndarray, target: np.ndarray) -> float:
    to_target = np.linalg.norm(ball - target)
    reward = -0.1 * np.linalg.norm(palm - ball)  # reach the ball
    if ball[2] > 0.04:  # lifted off the table
        reward += 1.0 - 0.5 * np.linalg.norm(palm - target) - 0.5 * to_target
    reward += 10.0 * (to_target < 0.1) + 20.0 * (to_target < 0.05)
    return float(reward)


def pen_reward(pen: np.ndarray, target: np.ndarray, pen_direction: np.ndarray, target_direction: np.ndarray) -> float:
    """`*_direction`: top minus bottom site of the pen and of the target pen, each divided by its length."""
    distance = np.linalg.norm(pen - target)
    alignment = float(np.dot(pen_direction, target_direction))
    reward = alignment - distance
    reward += 10.0 * (distance < 0.075 and alignment > 0.9) + 50.0 * (distance < 0.075 and alignment > 0.95)
    reward -= 5.0 * (pen[2] < PEN_DROP_HEIGHT)
    return float(reward)


class D4RLAdroit(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """A dense AdroitHand{Pen,Door,Hammer,Relocate} env scored by D4RL's rules (see the module docstring).

    Observations, actions and dynamics are the wrapped env's. The reward is D4RL's, computed from the state
    after the step; a pen episode ends (terminated) on the step the pen falls below `PEN_DROP_HEIGHT`.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        base = env.unwrapped
        self.task = _TASK_OF_CLASS.get(type(base).__name__)
        if self.task is None:
            raise OffrlError(
                f"D4RL's Adroit rules apply to AdroitHand{{Pen,Door,Hammer,Relocate}} envs, not {type(base).__name__}; "
                "drop the D4RLAdroit wrapper from this env"
            )
        if getattr(base, "sparse_reward", False):
            raise OffrlError(
                f"D4RL's Adroit reward is the dense one, but this {self.task} env is the sparse variant; make it with "
                "reward_type 'dense', or keep the env's own reward (offrl data import-d4rl --env-reward)"
            )
        model = base.model

        def site(name: str) -> int:
            return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, name)

        def body(name: str) -> int:
            return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)

        # The sites and bodies D4RL's reward reads, by their names in the Adroit models.
        self._palm = site("S_grasp")
        if self.task == "door":
            self._handle = site("S_handle")
            # D4RL indexes qpos with the hinge's dof address (the same number as its qpos address in this model).
            self._hinge = int(model.jnt_dofadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "door_hinge")])
        elif self.task == "hammer":
            self._hammer, self._head = body("Object"), site("tool")
            self._nail, self._nail_goal = site("S_target"), site("nail_goal")
        elif self.task == "relocate":
            self._ball, self._target = body("Object"), site("target")
        else:
            self._pen, self._target = body("Object"), site("eps_ball")
            self._ends = (site("object_top"), site("object_bottom"), site("target_top"), site("target_bottom"))
            self._lengths = (1.0, 1.0)

    def reset(self, **kwargs: Any):
        observation, info = self.env.reset(**kwargs)
        if self.task == "pen":  # the pen and target lengths, for unit directions (D4RL measures them once)
            sites = self.env.unwrapped.data.site_xpos
            top, bottom, target_top, target_bottom = self._ends
            self._lengths = (np.linalg.norm(sites[top] - sites[bottom]), np.linalg.norm(sites[target_top] - sites[target_bottom]))
        return observation, info

    def d4rl_reward(self) -> tuple[float, bool]:
        """(D4RL's reward, whether D4RL's episode ends) for the env's current state."""
        data = self.env.unwrapped.data
        palm = data.site_xpos[self._palm]
        if self.task == "door":
            return door_reward(palm, data.site_xpos[self._handle], float(data.qpos[self._hinge]), data.qvel), False
        if self.task == "hammer":
            sites = data.site_xpos
            return hammer_reward(palm, data.xpos[self._hammer], sites[self._head], sites[self._nail], sites[self._nail_goal], data.qvel), False
        if self.task == "relocate":
            return relocate_reward(palm, data.xpos[self._ball], data.site_xpos[self._target]), False
        sites, (top, bottom, target_top, target_bottom) = data.site_xpos, self._ends
        pen = data.xpos[self._pen]
        reward = pen_reward(
            pen, sites[self._target], (sites[top] - sites[bottom]) / self._lengths[0],
            (sites[target_top] - sites[target_bottom]) / self._lengths[1],
        )
        return reward, bool(pen[2] < PEN_DROP_HEIGHT)

    def step(self, action):
        observation, _, terminated, truncated, info = self.env.step(action)
        reward, ended = self.d4rl_reward()
        return observation, reward, bool(terminated or ended), truncated, info


WRAPPER_SPEC = WrapperSpec(name=D4RLAdroit.__name__, entry_point=f"{__name__}:{D4RLAdroit.__name__}", kwargs={})


def has_d4rl_rules(spec: EnvSpec | None) -> bool:
    """Whether `spec` applies `D4RLAdroit`."""
    return spec is not None and any(w.entry_point == WRAPPER_SPEC.entry_point for w in spec.additional_wrappers)


def d4rl_adroit_spec(env_id: str, max_episode_steps: int | None = None, env_kwargs: dict[str, Any] | None = None) -> EnvSpec:
    """The spec of the dense Adroit env `env_id` under D4RL's rules: its registered kwargs updated by `env_kwargs`,
    D4RL's episode length unless `max_episode_steps` is given, and the `D4RLAdroit` wrapper."""
    task = adroit_task(env_id)
    if task is None:
        raise OffrlError(f"{env_id!r} is not a dense AdroitHand{{Pen,Door,Hammer,Relocate}} env id, so D4RL's Adroit rules do not apply")
    robotics_envs()
    spec = gym.spec(env_id)
    return dataclasses.replace(
        spec,
        kwargs={**spec.kwargs, **(env_kwargs or {})},
        max_episode_steps=EPISODE_STEPS[task] if max_episode_steps is None else max_episode_steps,
        additional_wrappers=(*spec.additional_wrappers, WRAPPER_SPEC),
    )


def make_d4rl_adroit(env_id: str, max_episode_steps: int | None = None, **env_kwargs: Any) -> gym.Env:
    """`gym.make` of `d4rl_adroit_spec(env_id, ...)`: the env as D4RL scored it."""
    return gym.make(d4rl_adroit_spec(env_id, max_episode_steps, env_kwargs))
