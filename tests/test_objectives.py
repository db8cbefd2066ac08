"""Value and extraction objectives against cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from offrl.nn.mlp import mlp
from offrl.objectives.bc import gaussian_nll, mse
from offrl.objectives.extraction import awr_loss, awr_weights, ddpgbc_loss, opex_step, sfbc_select
from offrl.objectives.value import (
    contrastive_critic_loss,
    contrastive_critic_value,
    contrastive_logits,
    expectile_loss,
    iql_q_loss,
    iql_value_loss,
    sarsa_q_loss,
)
from offrl.nn.optim import polyak_update


def expectile_by_bisection(x: torch.Tensor, tau: float) -> float:
    """Root of τ·E[(x − m)+] = (1 − τ)·E[(m − x)+], in float64."""
    x = x.double()
    low, high = x.min().item(), x.max().item()
    for _ in range(200):
        m = 0.5 * (low + high)
        balance = tau * (x - m).clamp(min=0).mean() - (1 - tau) * (m - x).clamp(min=0).mean()
        low, high = (m, high) if balance > 0 else (low, m)
    return 0.5 * (low + high)


# ---------------------------------------------------------------- expectile / IQL / SARSA


def test_expectile_loss_values():
    diff = torch.tensor([2.0, -1.0])
    assert expectile_loss(diff, 0.9).item() == pytest.approx((0.9 * 4 + 0.1 * 1) / 2)
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * (4 + 1) / 2)


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.9])
def test_expectile_loss_minimiser_is_the_expectile(tau):
    generator = torch.Generator().manual_seed(0)
    # A skewed sample, so the expectiles sit well apart from the mean.
    x = torch.empty(2000).exponential_(1.0, generator=generator)
    m = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.SGD([m], lr=0.5)
    for _ in range(500):
        optimizer.zero_grad()
        expectile_loss(x - m, tau).backward()
        optimizer.step()
    assert m.item() == pytest.approx(expectile_by_bisection(x, tau), abs=1e-4)
    if tau == 0.5:
        assert m.item() == pytest.approx(x.mean().item(), abs=1e-4)
    else:
        assert m.item() > x.mean().item() + 0.1


def fit_tabular_sarsa(rewards, next_states, terminated, gamma, steps=600):
    """One action per state: Q(s) on transitions s -> next_states[s], full batch, semi-gradient with a target."""
    states = torch.arange(len(rewards))
    rewards = torch.tensor(rewards)
    next_states = torch.tensor(next_states)
    terminated = torch.tensor(terminated)
    q = torch.zeros(2, len(rewards), requires_grad=True)  # twin critics
    q_target = q.detach().clone()
    optimizer = torch.optim.SGD([q], lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        sarsa_q_loss(q[:, states], rewards, gamma, terminated, q_target[:, next_states]).backward()
        optimizer.step()
        polyak_update([q_target], [q], tau=0.5)
    return q.detach()


def test_sarsa_two_state_cycle_converges_to_true_value():
    # s0 -> s1 with r = 1, s1 -> s0 with r = 2: V0 = 1 + γV1, V1 = 2 + γV0.
    gamma = 0.9
    v0 = (1 + gamma * 2) / (1 - gamma**2)
    v1 = 2 + gamma * v0
    q = fit_tabular_sarsa([1.0, 2.0], [1, 0], [False, False], gamma)
    expected = torch.tensor([v0, v1]).expand(2, 2)
    assert torch.allclose(q, expected, atol=1e-2), (q, expected)


def test_sarsa_chain_stops_bootstrapping_at_termination():
    # s0 -> s1 with r = 1, s1 terminates with r = 2 (its "next state" s0 must be ignored): V1 = 2, V0 = 1 + 2γ.
    gamma = 0.9
    q = fit_tabular_sarsa([1.0, 2.0], [1, 0], [False, True], gamma)
    expected = torch.tensor([1 + 2 * gamma, 2.0]).expand(2, 2)
    assert torch.allclose(q, expected, atol=1e-2), (q, expected)


def fit_tabular_iql(expectile, steps=600):
    """s0 has actions {0, 1, 2} with r = 0, 1, 3 leading to s1; s1 terminates with r = 1.

    So Q(s0, ·) = r + γ = (0.9, 1.9, 3.9) and Q(s1) = 1.
    """
    gamma = 0.9
    states = torch.tensor([0, 0, 0, 1])
    actions = torch.tensor([0, 1, 2, 0])
    rewards = torch.tensor([0.0, 1.0, 3.0, 1.0])
    next_states = torch.tensor([1, 1, 1, 0])
    terminated = torch.tensor([False, False, False, True])
    q = torch.zeros(2, 2, 3, requires_grad=True)  # [twin, state, action]
    v = torch.zeros(2, requires_grad=True)
    q_target = q.detach().clone()
    optimizer = torch.optim.SGD([q, v], lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        value_loss = iql_value_loss(v[states], q_target[:, states, actions], expectile)
        q_loss = iql_q_loss(q[:, states, actions], rewards, gamma, terminated, v[next_states])
        (value_loss + q_loss).backward()
        optimizer.step()
        polyak_update([q_target], [q], tau=0.5)
    return q.detach(), v.detach()


def test_iql_expectile_towards_one_approaches_max_q():
    q_data = torch.tensor([0.9, 1.9, 3.9])
    q, v = fit_tabular_iql(0.99)
    assert torch.allclose(q[:, 0], q_data.expand(2, 3), atol=1e-2)
    assert v[1].item() == pytest.approx(1.0, abs=1e-2)
    assert v[0].item() == pytest.approx(expectile_by_bisection(q_data, 0.99), abs=1e-2)
    assert v[0].item() >= q_data.mean().item()
    assert q_data.max().item() - v[0].item() < 0.06


def test_iql_expectile_half_is_sarsa_mean():
    _, v = fit_tabular_iql(0.5)
    assert v[0].item() == pytest.approx((0.9 + 1.9 + 3.9) / 3, abs=1e-2)


def test_iql_value_loss_uses_min_over_twins():
    v = torch.zeros(3)
    twins = torch.tensor([[1.0, 2.0, 3.0], [0.5, 4.0, 3.0]])
    assert iql_value_loss(v, twins, 0.7).item() == pytest.approx(
        expectile_loss(torch.tensor([0.5, 2.0, 3.0]), 0.7).item()
    )


def test_polyak_update():
    target, online = torch.zeros(3), torch.ones(3)
    polyak_update([target], [online], tau=0.25)
    assert torch.allclose(target, torch.full((3,), 0.25))
    polyak_update([target], [online], tau=1.0)
    assert torch.equal(target, online)


# ---------------------------------------------------------------- CRL


def test_contrastive_value_is_the_logit_diagonal():
    generator = torch.Generator().manual_seed(0)
    phi, psi = torch.randn(2, 5, 8, generator=generator), torch.randn(2, 5, 8, generator=generator)
    logits = contrastive_logits(phi, psi)
    assert logits.shape == (2, 5, 5)
    assert torch.allclose(contrastive_critic_value(phi, psi), logits.diagonal(dim1=-2, dim2=-1), atol=1e-6)


GOAL_DIM = 8


def toy_goal_batch(batch: int, generator: torch.Generator):
    """s, a uniform in [-1, 1]^8; the future goal is s + a plus small noise."""
    s = torch.rand(batch, GOAL_DIM, generator=generator) * 2 - 1
    a = torch.rand(batch, GOAL_DIM, generator=generator) * 2 - 1
    g = s + a + 0.02 * torch.randn(batch, GOAL_DIM, generator=generator)
    return s, a, g


def ranking(phi: nn.Module, psi: nn.Module, generator: torch.Generator, batch: int = 64) -> tuple[float, float]:
    """(top-1 accuracy of the true goal among the batch's goals, fraction of negatives ranked below it)."""
    with torch.no_grad():
        s, a, g = toy_goal_batch(batch, generator)
        logits = contrastive_logits(phi(torch.cat([s, a], -1)), psi(g))
    positive = logits.diagonal()
    top1 = (logits.argmax(1) == torch.arange(batch)).float().mean().item()
    pairwise = ((positive[:, None] > logits).float().sum(1) / (batch - 1)).mean().item()
    return top1, pairwise


def test_contrastive_critic_ranks_true_future_goal_first():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    phi = mlp(2 * GOAL_DIM, [64, 64], 16, layer_norm=True, activation=nn.GELU)
    psi = mlp(GOAL_DIM, [64, 64], 16, layer_norm=True, activation=nn.GELU)
    untrained_top1, _ = ranking(phi, psi, generator)
    optimizer = torch.optim.Adam([*phi.parameters(), *psi.parameters()], lr=3e-3)
    for _ in range(500):
        s, a, g = toy_goal_batch(64, generator)
        loss = contrastive_critic_loss(phi(torch.cat([s, a], -1)), psi(g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    top1, pairwise = ranking(phi, psi, generator)
    assert untrained_top1 < 0.3, untrained_top1
    assert top1 > 0.9, top1
    assert pairwise > 0.99, pairwise


# ---------------------------------------------------------------- AWR


def test_awr_weights_capped_and_monotone():
    advantage = torch.linspace(-5, 5, 101)
    weights = awr_weights(advantage, temperature=3.0, max_weight=100.0)
    assert weights.max().item() == pytest.approx(100.0)
    assert (weights <= 100.0 + 1e-4).all()
    assert (weights.diff() >= 0).all()
    uncapped = advantage * 3.0 < math.log(100.0)
    assert (weights[uncapped].diff() > 0).all()
    assert torch.allclose(weights[uncapped], torch.exp(3.0 * advantage[uncapped]), rtol=1e-5)
    assert awr_weights(torch.tensor([1e6]), 10.0).item() == pytest.approx(100.0)


def test_awr_loss_weights_log_prob_without_grad_into_advantage():
    log_prob = torch.tensor([-1.0, -2.0], requires_grad=True)
    advantage = torch.tensor([0.0, math.log(2.0)], requires_grad=True)
    loss = awr_loss(log_prob, advantage, temperature=1.0)
    assert loss.item() == pytest.approx(-(1 * -1.0 + 2 * -2.0) / 2)
    loss.backward()
    assert torch.allclose(log_prob.grad, torch.tensor([-0.5, -1.0]))
    assert advantage.grad is None


# ---------------------------------------------------------------- DDPG+BC


def quadratic_q(a: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    return -((a - best) ** 2).sum(-1)


def test_ddpgbc_gradient_follows_q_when_alpha_is_zero():
    generator = torch.Generator().manual_seed(0)
    best = torch.tensor([0.3, -0.5])
    a = (torch.rand(16, 2, generator=generator) * 2 - 1).requires_grad_()
    data = torch.rand(16, 2, generator=generator) * 2 - 1
    ddpgbc_loss(quadratic_q(a, best), mse(a, data), alpha=0.0).backward()
    descent = -a.grad
    towards_best = best - a.detach()
    cosine = torch.nn.functional.cosine_similarity(descent, towards_best, dim=-1)
    assert torch.allclose(cosine, torch.ones(16), atol=1e-5)


def test_ddpgbc_q_term_is_scale_free():
    a = torch.tensor([[0.2, 0.1], [-0.4, 0.9]], requires_grad=True)
    best = torch.tensor([0.3, -0.5])
    grads = []
    for scale in (1.0, 1000.0):
        (grad,) = torch.autograd.grad(ddpgbc_loss(scale * quadratic_q(a, best), torch.zeros(()), 0.0), a)
        grads.append(grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4)


def test_ddpgbc_gradient_follows_data_when_q_is_flat():
    generator = torch.Generator().manual_seed(0)
    data = torch.rand(16, 2, generator=generator) * 2 - 1
    mean = (torch.rand(16, 2, generator=generator) * 2 - 1).requires_grad_()
    # Deterministic actor: ‖π(s) − a‖²; stochastic actor: −log N(a; μ, 1).
    for bc_term in (mse(mean, data), gaussian_nll(mean, torch.zeros_like(mean), data)):
        flat_q = 5.0 + 0.0 * mean.sum(-1)
        (grad,) = torch.autograd.grad(ddpgbc_loss(flat_q, bc_term, alpha=1.0), mean)
        cosine = torch.nn.functional.cosine_similarity(-grad, data - mean.detach(), dim=-1)
        assert torch.allclose(cosine, torch.ones(16), atol=1e-5)


# ---------------------------------------------------------------- SfBC and OPEX


def test_sfbc_picks_max_q_sample():
    generator = torch.Generator().manual_seed(0)
    actions = torch.randn(8, 5, 3, generator=generator)
    q = torch.randn(8, 5, generator=generator)
    chosen = sfbc_select(actions, q)
    assert chosen.shape == (8, 3)
    for b in range(8):
        assert torch.equal(chosen[b], actions[b, q[b].argmax()])
    fixed = sfbc_select(torch.tensor([[[0.0], [1.0], [2.0]]]), torch.tensor([[0.1, 0.7, -3.0]]))
    assert fixed.tolist() == [[1.0]]


def test_opex_increases_q_and_leaves_input_alone():
    generator = torch.Generator().manual_seed(0)
    best = torch.tensor([0.3, -0.5])
    action = torch.rand(32, 2, generator=generator) * 2 - 1
    before = action.clone()
    improved = opex_step(action, lambda a: quadratic_q(a, best), step_size=0.1)
    assert (quadratic_q(improved, best) > quadratic_q(action, best)).all()
    assert torch.equal(action, before)
    assert not improved.requires_grad
    converged = opex_step(action, lambda a: quadratic_q(a, best), step_size=0.1, steps=100)
    assert torch.allclose(converged, best.expand(32, 2), atol=1e-4)


def test_opex_respects_action_bounds():
    generator = torch.Generator().manual_seed(0)
    best = torch.tensor([2.0, -3.0])
    action = torch.rand(32, 2, generator=generator) * 2 - 1
    improved = opex_step(action, lambda a: quadratic_q(a, best), step_size=1.0, steps=5)
    assert torch.equal(improved, torch.tensor([1.0, -1.0]).expand(32, 2))
    low, high = torch.tensor([-0.5, -0.25]), torch.tensor([0.5, 0.25])
    bounded = opex_step(action, lambda a: quadratic_q(a, best), 1.0, 5, action_low=low, action_high=high)
    assert torch.equal(bounded, torch.tensor([0.5, -0.25]).expand(32, 2))


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_opex_works_without_grad_mode(context):
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    with context():
        action = torch.zeros(4, 2)
        improved = opex_step(action, lambda a: critic(a).squeeze(-1), step_size=1e-2)
    with torch.no_grad():
        assert (critic(improved) > critic(action.clone())).all()


def test_td3_target_smoothing_keeps_noise_clipped_centred_and_inside_the_bounds():
    from offrl.objectives.value import smoothed_target_action

    torch.manual_seed(0)
    low, high = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 4.0])  # half-ranges 1 and 2
    action = torch.tensor([[0.0, 2.0]]).expand(20000, 2)
    assert torch.equal(smoothed_target_action(action, 0.0, 0.5, low, high), action)
    smoothed = smoothed_target_action(action, 0.2, 0.5, low, high)
    offset = smoothed - action
    assert (offset[:, 0].abs() <= 0.5 + 1e-6).all() and (offset[:, 1].abs() <= 1.0 + 1e-6).all()
    assert offset.mean(0).abs().max() < 0.01
    assert torch.allclose(offset.std(0), torch.tensor([0.2, 0.4]), rtol=0.05)  # slightly under: the clip
    at_bound = smoothed_target_action(torch.tensor([[1.0, 4.0]]).expand(1000, 2), 0.2, 0.5, low, high)
    assert (at_bound <= high).all() and (at_bound < high).any()
