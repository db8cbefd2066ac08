"""Test-time policy improvement (Park et al., arXiv 2406.09329, section 6): callbacks that change how a policy
with a critic (offrl.algos.value_policy.ValuePolicy, any value x extraction pair) acts during evaluation roll-outs,
at `fit`'s evaluations and at `offrl test`. The trained networks are left as they were once an evaluation ends.

- OPEX (on-the-fly policy extraction): the action is moved along the critic's gradient, a <- a + eta * grad_a Q(s, a),
  `steps` times; the policy is unchanged.
- TTT (test-time training): before each action the actor takes `steps` gradient steps of a DDPG+BC objective on
  the states just met, against the frozen critic: maximise Q(s, pi(s)) / sg(mean |Q|) - alpha * ||pi(s) - pi_0(s)||^2,
  pi_0 the policy as trained (there are no dataset actions at test-time states, so the behaviour term keeps the
  policy near the one the critic was trained with). This is the DDPG+BC-on-visited-states form the paper
  describes; the anchor pi_0 is offrl's choice.

Turn them on from a config or the command line, e.g.
    offrl test --config configs/iql_ddpgbc/hopper-medium.yaml --ckpt_path last \
        --trainer.callbacks+=offrl.callbacks.test_time.OPEX --trainer.callbacks.step_size 0.03
EvaluationCallback evaluates `improved_act(trainer, module)`: the module's `act` wrapped by every such callback.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import lightning as L
import torch

from offrl.envs.evaluation import ActFn
from offrl.errors import OffrlError
from offrl.objectives.bc import mse
from offrl.nn.mlp import frozen, joined
from offrl.nn.optim import adam
from offrl.objectives.extraction import ddpgbc_loss, opex_step


@runtime_checkable
class ImprovablePolicy(Protocol):
    """What test-time improvement needs of an algorithm (offrl.algos.value_policy.ValuePolicy has it): a critic
    over actions and a deterministic actor, with their input normalisation. Built modules also hold `actor`,
    `critic`, `action_low` and `action_high`."""

    def action_value(self, observation: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        """Q(s, a) on raw observations and env actions, differentiable in the action."""

    def normalized_inputs(self, observation: torch.Tensor, goal: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The observation and goal as the networks see them."""

    def policy_action(self, actor_input: torch.Tensor, actor: torch.nn.Module | None = None) -> torch.Tensor:
        """The deterministic env action of `actor` (default: the module's own) on normalised inputs."""

    def q_value(self, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        """Q(s, a) on normalised inputs."""


class TestTimeImprovement(L.Callback):
    """A callback that wraps an ImprovablePolicy's `act` for the length of one evaluation."""

    __test__ = False  # not a pytest class, despite the name

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, ImprovablePolicy):
            raise OffrlError(
                f"{type(self).__name__} needs a critic to improve actions with, which {type(pl_module).__name__} "
                "has not; use it with offrl.algos.value_policy.ValuePolicy"
            )

    def improving(self, module: ImprovablePolicy, act: ActFn) -> contextlib.AbstractContextManager[ActFn]:
        raise NotImplementedError


@contextlib.contextmanager
def improved_act(trainer: L.Trainer, module: L.LightningModule) -> Iterator[ActFn]:
    """`module.act` wrapped by the trainer's TestTimeImprovement callbacks, in their order."""
    with contextlib.ExitStack() as stack:
        act = module.act
        for callback in trainer.callbacks:
            if isinstance(callback, TestTimeImprovement):
                act = stack.enter_context(callback.improving(module, act))
        yield act


class OPEX(TestTimeImprovement):
    def __init__(self, step_size: float = 0.03, steps: int = 1):
        """
        Args:
            step_size: eta in a <- a + eta * grad_a Q(s, a) (the paper tunes it per task).
            steps: gradient steps per action.
        """
        if step_size <= 0:
            raise OffrlError(f"OPEX step_size must be positive, got {step_size}")
        if steps < 1:
            raise OffrlError(f"OPEX steps must be a positive integer, got {steps}")
        self.step_size, self.steps = step_size, steps

    @contextlib.contextmanager
    def improving(self, module: ImprovablePolicy, act: ActFn) -> Iterator[ActFn]:
        def opex_act(observation: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
            return opex_step(
                act(observation, goal),
                lambda action: module.action_value(observation, goal, action),
                self.step_size,
                self.steps,
                module.action_low,
                module.action_high,
            )

        yield opex_act


class TTT(TestTimeImprovement):
    def __init__(self, lr: float = 3e-4, steps: int = 1, alpha: float = 1.0, normalize_q: bool = True):
        """
        Args:
            lr: Adam learning rate of the test-time actor updates.
            steps: actor updates per environment step (each on the states of all evaluation envs at that step).
            alpha: weight of ||pi(s) - pi_0(s)||^2, the pull towards the trained policy.
            normalize_q: divide the Q term by sg(mean |Q|), as in DDPG+BC.
        """
        if lr <= 0:
            raise OffrlError(f"TTT lr must be positive, got {lr}")
        if steps < 1:
            raise OffrlError(f"TTT steps must be a positive integer, got {steps}")
        if alpha < 0:
            raise OffrlError(f"TTT alpha must be non-negative, got {alpha}")
        self.lr, self.steps, self.alpha, self.normalize_q = lr, steps, alpha, normalize_q

    def update(self, module: ImprovablePolicy, reference: torch.nn.Module, optimizer, observation, goal) -> None:
        """`steps` DDPG+BC updates of the actor on these states; the critic only passes gradients through."""
        # Observations may be inference tensors (Lightning evaluates in inference mode): copy them out of it.
        obs, goal = module.normalized_inputs(observation.clone(), None if goal is None else goal.clone())
        actor_input = joined(obs, goal)
        with torch.no_grad():
            reference_action = module.policy_action(actor_input, reference)
        for _ in range(self.steps):
            action = module.policy_action(actor_input)
            with frozen(module.critic):
                q = module.q_value(obs, goal, action)
            loss = ddpgbc_loss(q, mse(action, reference_action), self.alpha, self.normalize_q)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    @contextlib.contextmanager
    def improving(self, module: ImprovablePolicy, act: ActFn) -> Iterator[ActFn]:
        with torch.inference_mode(False):
            trained = copy.deepcopy(module.actor.state_dict())
            reference = copy.deepcopy(module.actor).requires_grad_(False)
        optimizer = adam(module.actor.parameters(), lr=self.lr)

        def ttt_act(observation: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
            with torch.inference_mode(False), torch.enable_grad():
                self.update(module, reference, optimizer, observation, goal)
            return act(observation, goal)

        try:
            yield ttt_act
        finally:
            with torch.inference_mode(False), torch.no_grad():
                module.actor.load_state_dict(trained)
