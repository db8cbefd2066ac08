"""The one action-bounds helper every algorithm acts through: the unit-box map and its inverse, and the clamp."""

import torch
from torch import nn

from offrl.nn.action_bounds import clamp_action, from_unit_box, register_action_bounds, to_unit_box


def test_unit_box_maps_onto_the_bounds_and_back():
    low, high = torch.tensor([-2.0, 0.0, -1.0]), torch.tensor([1.0, 4.0, 1.0])
    unit = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [0.0, 0.5, -0.25]])
    action = from_unit_box(unit, low, high)
    assert torch.equal(action[0], low) and torch.equal(action[1], high)
    assert torch.allclose(action[2], torch.tensor([-0.5, 3.0, -0.25]))
    assert torch.allclose(to_unit_box(action, low, high), unit)
    # Dataset actions a rounding error outside the box map into [-1, 1], as tanh actors need.
    assert to_unit_box(high + 1e-3, low, high).max() == 1.0 and to_unit_box(low - 1e-3, low, high).min() == -1.0


def test_the_symmetric_unit_box_is_mapped_exactly():
    unit = torch.rand(1000, 3) * 2 - 1
    low, high = -torch.ones(3), torch.ones(3)
    assert torch.equal(from_unit_box(unit, low, high), unit) and torch.equal(to_unit_box(unit, low, high), unit)


def test_clamp_keeps_each_dimension_in_its_own_bounds():
    low, high = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.5])
    clamped = clamp_action(torch.tensor([[3.0, -3.0], [0.2, 0.2]]), low, high)
    assert torch.equal(clamped, torch.tensor([[1.0, 0.0], [0.2, 0.2]]))


def test_the_bounds_are_float32_buffers_saved_with_the_module():
    module = nn.Module()
    register_action_bounds(module, [-1, -2], [1, 2])
    assert module.action_low.dtype == torch.float32 and set(module.state_dict()) == {"action_low", "action_high"}
