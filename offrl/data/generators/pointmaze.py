"""PointMaze datasets made the way Minari made `D4RL/pointmaze/*-v2` (itself a port of D4RL's maze2d recipe).

Minari's script (Farama-Foundation/minari-dataset-generation-scripts, scripts/pointmaze/
create_pointmaze_dataset.py with controller.py and maze_solver.py) runs one long continuing task:

- `PointMaze_*-v3` with `continuing_task=True, reset_target=True, max_episode_steps=1e6`: when the ball comes
  within 0.45 of the goal the env draws a new goal and the ball carries on from where it is;
- a planner runs Q-iteration over the maze grid (50 iterations, gamma 0.99) to get the path of cells to the goal;
- a PD controller, action = 10 (waypoint - position) - 1 velocity, follows that path: cell centres (jittered by
  up to 0.2) and finally the goal itself;
- Gaussian noise N(0, 0.5^2) is added to the PD action and the sum is clipped to [-1, 1]. D4RL's maze2d clipped
  the PD action before adding the noise as well; Minari's controller.py does not, and only without that inner
  clip does this generator match Minari's episode count (umaze: about 13,000 reached goals per 1M steps against
  13,210 in D4RL/pointmaze/umaze-v2; with the inner clip about 11,600, as the noise then slows the ball more);
- the run is cut into episodes by marking the step that reaches a goal as truncated (never terminated); the next
  episode starts from that step's observation, as Minari's DataCollector does.

The planner is Q-iteration as documented for D4RL/pointmaze and as in D4RL. (Minari's controller.py defaults to its
DFS solver and the script does not override that; in the U-maze both give the same paths, in the medium and large
mazes DFS paths can be longer than the shortest.)
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec
from minari.data_collector import EpisodeBuffer

from offrl.data.generators import GeneratedDataset, Progress
from offrl.dataset_info import reference_scores
from offrl.envs.robotics import robotics_envs

robotics_envs()  # before any gymnasium_robotics import: it prints a notice on first import
from gymnasium_robotics.envs.maze.maze_v4 import Maze  # noqa: E402

ENV_IDS = {"umaze": "PointMaze_UMaze-v3", "medium": "PointMaze_Medium-v3", "large": "PointMaze_Large-v3"}

# Minari sets the time limit of the collection env to the dataset size so the env itself never cuts the run.
COLLECTION_MAX_EPISODE_STEPS = 1_000_000

# Evaluation as in D4RL maze2d: one fixed goal cell ("g"), start anywhere else, and the env's registered time
# limit (300 / 600 / 800 steps). These are Minari's EVAL_ENV_MAPS.
G = "g"  # a goal cell in Gymnasium-Robotics maze maps
EVAL_MAZE_MAPS = {
    "umaze": [
        [1, 1, 1, 1, 1],
        [1, G, 0, 0, 1],
        [1, 1, 1, 0, 1],
        [1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1],
    ],
    "medium": [
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 1, 1, 0, 0, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 0, 0, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 0, 0, 1, 0, 1],
        [1, 0, 0, 0, 1, 0, G, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ],
    "large": [
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
        [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1],
        [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1, 0, G, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    ],
}

PLANNER_ITERATIONS = 50
PLANNER_GAMMA = 0.99
P_GAIN = 10.0
D_GAIN = -1.0
ACTION_NOISE_STD = 0.5
# Variants for the coverage-vs-optimality question (Park et al. 2024), same planner and controller: `-expert`
# without noise (the controller's own paths, narrowest coverage) and `-explore` with N(0, 2^2) noise. The PD
# action is mostly beyond the clip at 1, so noise changes optimality little: on 30k UMaze steps the noise-free,
# 1.0 and 2.0 controllers reach 377, 379 and 342 goals while visiting 3396, 4778 and 6648 cells of
# (position / 0.25, velocity / 0.5).
EXPERT_ACTION_NOISE_STD = 0.0
EXPLORE_ACTION_NOISE_STD = 2.0
# The controller moves on to the next waypoint once within this distance of the current one.
WAYPOINT_THRESHOLD = 0.1
# Intermediate waypoints are the cell centre minus U(0, 0.2) per axis, so that paths vary between visits.
WAYPOINT_JITTER = 0.2
# The env counts a goal as reached within this distance (sparse reward 1, info["success"]).
GOAL_RADIUS = 0.45

Cell = tuple[int, int]
# Grid moves as (row, col) offsets, in the order of Minari's solver: argmax takes the first of equal values, so
# the order decides between equally short paths.
MOVES = ((0, 1), (0, -1), (-1, 0), (1, 0))


def q_iteration(
    free: np.ndarray, goal: Cell, iterations: int = PLANNER_ITERATIONS, gamma: float = PLANNER_GAMMA
) -> np.ndarray:
    """Q[row, col, move] on the maze grid for reaching `goal`: reward 1 for a move onto the goal cell, a move
    into a wall leads nowhere (worth 0). `free` is the boolean grid of cells that are not walls."""
    rows, cols = free.shape

    def shifted(grid: np.ndarray) -> np.ndarray:
        """grid[row + d_row, col + d_col] for every move, as [rows, cols, moves]; outside the grid reads 0."""
        padded = np.pad(grid, 1)
        return np.stack([padded[1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols] for dr, dc in MOVES], axis=-1)

    goal_grid = np.zeros((rows, cols))
    goal_grid[goal] = 1.0
    reward = shifted(goal_grid)
    move_is_free = shifted(free)
    q = np.zeros((rows, cols, len(MOVES)))
    for _ in range(iterations):
        q = reward + gamma * np.where(move_is_free, shifted(q.max(axis=-1)), 0.0)
    return q


class WaypointPlanner:
    """Paths of cells to a goal cell, greedy in the Q-iteration values (Minari's QIteration solver)."""

    def __init__(self, maze_map: list[list[int | str]]):
        self.free = np.array([[cell != 1 for cell in row] for row in maze_map])
        self._q_by_goal: dict[Cell, np.ndarray] = {}

    def path(self, start: Cell, goal: Cell) -> dict[Cell, Cell]:
        """{cell: next cell} from `start` until the goal cell. From the goal cell itself the path steps out to a
        neighbour and back, as Minari's solver does."""
        if goal not in self._q_by_goal:  # Q depends only on the goal; the goal cells are few
            self._q_by_goal[goal] = q_iteration(self.free, goal)
        q = self._q_by_goal[goal]
        path: dict[Cell, Cell] = {}
        cell = start
        while True:
            d_row, d_col = MOVES[int(np.argmax(q[cell]))]
            path[cell] = next_cell = (cell[0] + d_row, cell[1] + d_col)
            if next_cell == goal:
                return path
            if len(path) > self.free.size or not self.free[next_cell]:
                raise ValueError(f"no path from cell {start} to cell {goal} within {PLANNER_ITERATIONS} moves")
            cell = next_cell


def pd_action(waypoint: np.ndarray, position: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """PD control towards a waypoint. Not clipped: Minari adds the action noise first (see the module docstring),
    and the env clips to [-1, 1] itself."""
    return P_GAIN * (waypoint - position) + D_GAIN * velocity


class WaypointController:
    """Follows the planner's path to obs['desired_goal'] with `pd_action`; replans whenever the goal moves.

    It remembers which waypoint it is heading for, so the behaviour policy is not Markovian (as in Minari)."""

    def __init__(self, maze: Maze, rng: np.random.Generator):
        self.maze = maze
        self.planner = WaypointPlanner(maze.maze_map)
        self.rng = rng  # draws the waypoint jitter
        self.goal_xy: np.ndarray | None = None

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        position, velocity = obs["achieved_goal"], obs["observation"][2:]
        if self.goal_xy is None or np.linalg.norm(self.goal_xy - obs["desired_goal"]) > 1e-3:
            self._replan(position, obs["desired_goal"])
        if np.linalg.norm(self.target_xy - position) <= WAYPOINT_THRESHOLD and self.target_cell != self.goal_cell:
            self.target_cell = self.path[self.target_cell]
            if self.target_cell == self.goal_cell:
                self.target_xy = self.goal_xy
            else:
                self.target_xy = self._cell_centre(self.target_cell) - self.rng.uniform(size=2) * WAYPOINT_JITTER
        return pd_action(self.target_xy, position, velocity)

    def _replan(self, position: np.ndarray, goal_xy: np.ndarray) -> None:
        start = self._cell_of(position)
        self.goal_xy = goal_xy.copy()
        self.goal_cell = self._cell_of(goal_xy)
        self.path = self.planner.path(start, self.goal_cell)
        # The first waypoint is the next cell's exact centre, even when that cell holds the goal (Minari's
        # controller then stops at the centre, which lies within GOAL_RADIUS of any goal in that cell).
        self.target_cell = self.path[start]
        self.target_xy = self._cell_centre(self.target_cell)

    def _cell_of(self, xy: np.ndarray) -> Cell:
        row, col = self.maze.cell_xy_to_rowcol(xy)
        return int(row), int(col)

    def _cell_centre(self, cell: Cell) -> np.ndarray:
        return self.maze.cell_rowcol_to_xy(np.array(cell))


class _EpisodeRecorder:
    """One episode's rows, in Minari's layout: T + 1 observations and infos, T of the rest."""

    def __init__(self, obs: dict[str, np.ndarray], info: dict):
        self.observations = [obs]
        self.infos = [_state_info(obs, info)]
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.terminations: list[bool] = []
        self.truncations: list[bool] = []

    def add(self, action, obs, reward, terminated, truncated, info) -> None:
        self.actions.append(action)
        self.observations.append(obs)
        self.infos.append(_state_info(obs, info))
        self.rewards.append(float(reward))
        self.terminations.append(bool(terminated))
        self.truncations.append(bool(truncated))

    def __len__(self) -> int:
        return len(self.actions)

    def to_buffer(self, episode_id: int, seed: int | None) -> EpisodeBuffer:
        def stack(rows: list[dict], dtype=None) -> dict[str, np.ndarray]:
            return {key: np.stack([row[key] for row in rows]).astype(dtype or rows[0][key].dtype) for key in rows[0]}

        return EpisodeBuffer(
            id=episode_id,
            seed=seed,
            observations=stack(self.observations, np.float32),
            actions=np.stack(self.actions).astype(np.float32),
            rewards=np.array(self.rewards),
            terminations=np.array(self.terminations),
            truncations=np.array(self.truncations),
            infos=stack(self.infos),
        )


def _state_info(obs: dict[str, np.ndarray], info: dict) -> dict[str, np.ndarray]:
    """The infos Minari records: success, and the simulator state (qpos, qvel, goal) to restore a step."""
    return {
        "success": np.asarray(info["success"]),
        "qpos": obs["observation"][:2],
        "qvel": obs["observation"][2:],
        "goal": obs["desired_goal"],
    }


def collection_env(maze: str) -> gym.Env:
    return gym.make(
        ENV_IDS[maze], continuing_task=True, reset_target=True, max_episode_steps=COLLECTION_MAX_EPISODE_STEPS
    )


def eval_env_spec(maze: str) -> EnvSpec:
    registered = gym.spec(ENV_IDS[maze])
    kwargs = {**registered.kwargs, "maze_map": EVAL_MAZE_MAPS[maze], "continuing_task": True, "reset_target": False}
    return dataclasses.replace(registered, kwargs=kwargs)


def collect(
    env: gym.Env,
    *,
    steps: int | None,
    episodes: int | None,
    seed: int,
    progress: Progress,
    action_noise_std: float = ACTION_NOISE_STD,
) -> list[EpisodeBuffer]:
    """Run the noisy waypoint controller in a continuing PointMaze env, cutting an episode at each reached goal."""
    rng = np.random.default_rng(seed)  # action noise and waypoint jitter, in the order Minari draws them
    obs, info = env.reset(seed=seed)
    controller = WaypointController(env.unwrapped.maze, rng)
    recorder = _EpisodeRecorder(obs, info)
    finished: list[EpisodeBuffer] = []
    total_steps = 0
    while True:
        noisy_action = controller(obs) + rng.normal(0.0, action_noise_std, size=2)
        # Stored as float32; the env gets the very same values so the data replays exactly.
        action = np.clip(noisy_action, -1.0, 1.0).astype(np.float32)
        obs, reward, terminated, env_truncated, info = env.step(action)
        total_steps += 1
        out_of_steps = steps is not None and total_steps == steps
        # A reached goal ends the episode as a truncation: the task goes on, with a new goal, from this state.
        truncated = env_truncated or info["success"] or out_of_steps
        recorder.add(action, obs, reward, terminated, truncated, info)
        if not (terminated or truncated):
            continue
        # Minari keeps the reset seed with the episode that starts from that reset.
        finished.append(recorder.to_buffer(episode_id=len(finished), seed=None if finished else seed))
        progress(len(recorder))
        if out_of_steps or (episodes is not None and len(finished) == episodes):
            return finished
        if terminated or env_truncated:  # the env's own time limit: only runs past 1M steps get here
            obs, info = env.reset()
            controller = WaypointController(env.unwrapped.maze, rng)
        recorder = _EpisodeRecorder(obs, info)


def generate(
    maze: str,
    *,
    steps: int | None,
    episodes: int | None,
    seed: int,
    progress: Progress,
    action_noise_std: float = ACTION_NOISE_STD,
) -> GeneratedDataset:
    """A dataset of `steps` env steps (the last episode cut there) or of `episodes` complete episodes, in the
    maze "umaze", "medium" or "large"; the same seed gives the same arrays. `action_noise_std` other than the
    recipe's 0.5 makes a variant that is no longer D4RL's (the description says so)."""
    if maze not in ENV_IDS:
        raise ValueError(f"unknown maze {maze!r}; expected one of {sorted(ENV_IDS)}")
    if (steps is None) == (episodes is None):
        raise ValueError("give exactly one of steps and episodes")
    env = collection_env(maze)
    try:
        buffers = collect(env, steps=steps, episodes=episodes, seed=seed, progress=progress, action_noise_std=action_noise_std)
        env_spec = env.spec
    finally:
        env.close()
    ref_min, ref_max = reference_scores(ENV_IDS[maze])
    variant = (
        "" if action_noise_std == ACTION_NOISE_STD
        else f" This variant adds N(0, {action_noise_std}^2) noise instead of the recipe's N(0, {ACTION_NOISE_STD}^2)."
    )
    return GeneratedDataset(
        episodes=buffers,
        env_spec=env_spec,
        eval_env_spec=eval_env_spec(maze),
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        algorithm_name="QIteration waypoint planner + PD controller",
        description=(
            f"Collected in {ENV_IDS[maze]} (sparse reward) as Minari's D4RL/pointmaze/{maze}-v2 and D4RL's "
            f"maze2d-{maze}: a PD controller follows waypoints planned by Q-iteration over the maze grid, with "
            "Gaussian action noise. The task is continuing: on reaching a goal the env draws a new one and the "
            "ball carries on; each reached goal ends an episode as a truncation. Evaluation uses one fixed goal."
            + variant
        ),
        metadata={
            "recipe": "minari-dataset-generation-scripts/scripts/pointmaze/create_pointmaze_dataset.py",
            "env_id": ENV_IDS[maze],
            "seed": seed,
            "planner": "q_iteration",
            "planner_iterations": PLANNER_ITERATIONS,
            "planner_gamma": PLANNER_GAMMA,
            "p_gain": P_GAIN,
            "d_gain": D_GAIN,
            "waypoint_threshold": WAYPOINT_THRESHOLD,
            "waypoint_jitter": WAYPOINT_JITTER,
            "action_noise_std": action_noise_std,
            "action": "clip(pd_action + noise, -1, 1), pd_action unclipped as in Minari",
            "goal_radius": GOAL_RADIUS,
            "episode_end": "truncated at each reached goal",
        },
    )
