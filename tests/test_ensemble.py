"""One member of a vectorised ensemble evaluated alone is that member's slice of the whole ensemble, values and
gradients."""

from __future__ import annotations

import pytest
import torch

from offrl.nn.ensemble import ensemble_member_forward, ensemble_mlp


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("member", [0, 2])
def test_one_member_alone_is_its_slice_of_the_ensemble(layer_norm, member):
    torch.manual_seed(0)
    ensemble = ensemble_mlp(3, 5, [16, 16], 2, layer_norm)
    x = torch.randn(8, 5)
    whole = ensemble(x)
    alone = ensemble_member_forward(ensemble, x, member)
    torch.testing.assert_close(alone, whole[member])
    whole_grads = torch.autograd.grad(whole[member].square().sum(), list(ensemble.parameters()))
    alone_grads = torch.autograd.grad(alone.square().sum(), list(ensemble.parameters()))
    for whole_grad, alone_grad in zip(whole_grads, alone_grads):
        torch.testing.assert_close(alone_grad, whole_grad)
        assert not alone_grad[[m for m in range(3) if m != member]].any()  # the other members get nothing

