import copy

import torch

from offrl.nn.mlp import mlp
from offrl.nn.optim import adam


def test_adam_is_fused_on_the_cpu_and_steps_as_torchs_foreach_adam():
    torch.manual_seed(0)
    network = mlp(6, [32, 32], 3, False)
    reference, initial = copy.deepcopy(network), copy.deepcopy(network)
    optimizer = adam(network.parameters(), lr=1e-3)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3, foreach=True)
    assert optimizer.defaults["fused"] and not reference_optimizer.defaults["fused"]

    for _ in range(200):
        inputs, targets = torch.randn(64, 6), torch.randn(64, 3)
        for net, opt in ((network, optimizer), (reference, reference_optimizer)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(inputs), targets).backward()
            opt.step()

    moved = sum((p - q).abs().sum() for p, q in zip(network.parameters(), initial.parameters()))
    assert moved > 1.0  # the steps did move the parameters
    for fused_param, foreach_param in zip(network.parameters(), reference.parameters()):
        torch.testing.assert_close(fused_param, foreach_param, rtol=1e-5, atol=1e-6)


def test_adam_of_parameters_on_a_device_without_the_fused_kernel_falls_back_to_foreach():
    parameter = torch.nn.Parameter(torch.zeros(3, device="meta"))
    assert not adam([parameter], lr=1e-3).defaults["fused"]
