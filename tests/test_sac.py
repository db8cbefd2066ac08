"""SAC core: the losses against hand-computed cases, the tanh-Gaussian likelihood, the temperature's direction,
Polyak averaging, and one agent update that moves each network the right way."""

from __future__ import annotations

import math

import torch
from tensordict import TensorDict

from offrl.algos.sac import SACAgent, TanhGaussianActor
from offrl.objectives.sac import sac_actor_loss, sac_critic_loss, sac_temperature_loss


def test_critic_loss_matches_a_hand_computed_soft_target():
    q = torch.tensor([[1.0, 2.0], [3.0, 0.0]], requires_grad=True)  # [E=2, B=2]
    next_q = torch.tensor([[4.0, 1.0], [2.0, 5.0]], requires_grad=True)
    reward, terminated = torch.tensor([1.0, -1.0]), torch.tensor([False, True])
    next_log_prob, alpha = torch.tensor([-1.0, 2.0]), torch.tensor(0.5)
    # y0 = 1 + 0.9 * (min(4, 2) - 0.5 * -1) = 3.25; y1 = -1 (terminated: no bootstrap).
    expected = ((1 - 3.25) ** 2 + (2 + 1) ** 2) / 2 + ((3 - 3.25) ** 2 + (0 + 1) ** 2) / 2
    loss = sac_critic_loss(q, reward, 0.9, terminated, next_q, next_log_prob, alpha)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    loss.backward()
    assert next_q.grad is None  # the target is detached
    assert torch.allclose(q.grad, torch.tensor([[1 - 3.25, 3.0], [3 - 3.25, 1.0]]))


def test_actor_loss_value_and_gradient_direction():
    q_pi = torch.tensor([[1.0, 5.0], [2.0, 3.0]], requires_grad=True)
    log_prob = torch.tensor([0.5, -0.5], requires_grad=True)
    alpha = torch.tensor(2.0, requires_grad=True)
    loss = sac_actor_loss(q_pi, log_prob, alpha)
    assert math.isclose(loss.item(), ((2 * 0.5 - 1) + (2 * -0.5 - 3)) / 2)
    loss.backward()
    # Descent raises the smaller critic's Q only, lowers log pi (more entropy), and leaves alpha alone.
    assert torch.equal(q_pi.grad, torch.tensor([[-0.5, 0.0], [0.0, -0.5]]))
    assert torch.all(log_prob.grad > 0)
    assert alpha.grad is None


def test_temperature_loss_moves_alpha_toward_the_target_entropy():
    target_entropy = -2.0
    for log_prob, alpha_should in ((torch.full((8,), 5.0), "rise"), (torch.full((8,), -5.0), "fall")):
        # log pi = 5: entropy -5 below the target -2, so alpha must rise; log pi = -5: entropy above, alpha falls.
        log_alpha = torch.zeros((), requires_grad=True)
        optimizer = torch.optim.SGD([log_alpha], lr=0.1)
        for _ in range(5):
            optimizer.zero_grad()
            sac_temperature_loss(log_alpha, log_prob, target_entropy).backward()
            optimizer.step()
        assert (log_alpha.item() > 0) == (alpha_should == "rise"), (log_prob[0], log_alpha)


def test_tanh_gaussian_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 2, [16])
    observation = torch.randn(64, 3)
    torch.manual_seed(1)
    action, log_prob = actor(observation)
    torch.manual_seed(1)
    mean, log_std = actor.net(observation)
    pre_tanh = mean + log_std.exp() * torch.randn_like(mean)
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Independent(torch.distributions.Normal(mean, log_std.exp()), 1),
        [torch.distributions.TanhTransform()],
    ).log_prob(torch.tanh(pre_tanh))
    assert torch.allclose(action, torch.tanh(pre_tanh))
    finite = action.abs().max(-1).values < 0.999  # TanhTransform's inverse loses precision near +-1
    assert torch.allclose(log_prob[finite], reference[finite], atol=1e-3)


def test_polyak_moves_the_target_tau_of_the_way():
    agent = SACAgent(3, 2, [-1, -1], [1, 1], hidden_dims=[8], tau=0.25)
    with torch.no_grad():
        for parameter in agent.critic.parameters():
            parameter.add_(1.0)
    before = [p.clone() for p in agent.target_critic.parameters()]
    agent.update_target()
    for old, new, online in zip(before, agent.target_critic.parameters(), agent.critic.parameters()):
        assert torch.allclose(new, 0.75 * old + 0.25 * online)


def batch_of(size: int, obs_dim: int = 3, action_dim: int = 2, low: float = -2.0, high: float = 2.0) -> TensorDict:
    return TensorDict(
        {
            "observation": torch.randn(size, obs_dim),
            "action": torch.empty(size, action_dim).uniform_(low, high),
            "next": {"observation": torch.randn(size, obs_dim), "reward": torch.randn(size), "terminated": torch.rand(size) < 0.1},
        },
        batch_size=[size],
    )


def test_agent_actions_are_in_the_env_box_and_maps_round_trip():
    torch.manual_seed(0)
    agent = SACAgent(3, 2, [-2.0, 0.0], [2.0, 1.0], hidden_dims=[8])
    observation = 100 * torch.randn(256, 3)  # big inputs saturate tanh
    for deterministic in (True, False):
        action = agent.act(observation, deterministic)
        assert (action >= torch.tensor([-2.0, 0.0])).all() and (action <= torch.tensor([2.0, 1.0])).all()
    action = torch.tensor([[-1.0, 0.25]])
    assert torch.allclose(agent.to_env_action(agent.to_unit_action(action)), action)
    assert agent.target_entropy == -2.0


def test_one_update_of_each_group_lowers_its_own_loss_only_through_its_own_parameters():
    torch.manual_seed(0)
    agent = SACAgent(3, 2, [-2, -2], [2, 2], hidden_dims=[32, 32], init_alpha=0.5)
    batch = batch_of(512)
    groups = agent.parameter_groups()
    assert set(groups) == {"actor", "critic", "alpha"}
    optimizers = {name: torch.optim.Adam(params, lr=3e-3) for name, params in groups.items()}
    torch.manual_seed(1)  # the same policy samples in both passes
    losses = agent.losses(batch)
    sum(losses.values()).backward()
    # The frozen critic gets gradient from the critic loss alone: compare with that loss's own gradient.
    critic_grads = [p.grad.clone() for p in groups["critic"]]
    agent.zero_grad()
    torch.manual_seed(1)
    agent.losses(batch)["critic_loss"].backward()
    assert all(torch.allclose(a, p.grad) for a, p in zip(critic_grads, groups["critic"]))
    assert all(p.grad is None or not p.grad.any() for p in agent.target_critic.parameters())

    first = {name: loss.item() for name, loss in losses.items()}
    for _ in range(20):
        for optimizer in optimizers.values():
            optimizer.zero_grad()
        torch.manual_seed(1)
        sum(agent.losses(batch).values()).backward()
        for optimizer in optimizers.values():
            optimizer.step()
    torch.manual_seed(1)
    after = {name: loss.item() for name, loss in agent.losses(batch).items()}
    assert after["critic_loss"] < first["critic_loss"]
    assert after["actor_loss"] < first["actor_loss"]
    # A fresh policy's entropy lies far above -|A|, so alpha falls (log alpha down).
    assert agent.log_alpha.item() < math.log(0.5)


def test_fixed_temperature_has_no_alpha_parameters():
    agent = SACAgent(3, 2, [-1, -1], [1, 1], hidden_dims=[8], init_alpha=0.2, learn_alpha=False)
    assert agent.parameter_groups()["alpha"] == []
    assert math.isclose(agent.alpha.item(), 0.2, rel_tol=1e-6)
