"""The compile engine: any offrl algorithm's eager update (offrl.algos.base.OfflineAlgorithm.update) wrapped as
one torch.compile graph and/or captured as a CUDA graph, from outside the algorithm, as d3rlpy wraps its impl.
OfflineAlgorithm.update_fn calls `accelerated` when performance.compile or performance.cuda_graphs asks for it; an
algorithm's `losses` only follows the rules in offrl.algos.base's docstring."""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

import torch
from tensordict import TensorDict

from offrl.algos.base import UpdateFn, forget_gradients
from offrl.errors import OffrlError
from offrl.nn.mlp import with_parameters
from offrl.nn.optim import adam_step_in_graph

if TYPE_CHECKING:
    from offrl.algos.base import OfflineAlgorithm

COMPILED_GRAPHS_PER_PROCESS = 64  # compiled update graphs (phases, fits, shape changes) before dynamo refuses more


def prepare_optimizers_for_capture(optimizers: list[torch.optim.Optimizer], device: torch.device) -> None:
    """Compiled or graphed optimiser steps read the learning rate from a tensor (a float would be baked into a
    graph, or recompile at every scheduler step; schedulers fill the tensor in place). On cuda the steps must be
    capturable: graphs need it, and foreach Adam takes a tensor learning rate only then."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            if not isinstance(group["lr"], torch.Tensor):
                group["lr"] = torch.tensor(group["lr"], device=device)
            if device.type == "cuda":
                group["capturable"] = True


def let_gcc_vectorize_inductor_loops() -> None:
    """torch 2.13's inductor builds its CPU kernels with gcc's -fno-tree-loop-vectorize, which leaves the vector
    mask -> bool conversion a scalar loop: every ReLU mask a compiled update saves for its backward then costs
    many times the eager op (measured in benchmarks/README.md, "CPU yardstick"). gcc takes
    the last of two opposite flags, and inductor appends its -march value after its own, so the architecture flag
    carries -ftree-loop-vectorize. Left alone when the user set TORCHINDUCTOR_CPP_MARCH, or off x86-64 Linux."""
    import torch._inductor.config as inductor_config

    if inductor_config.cpp.march is None and platform.system() == "Linux" and platform.machine() == "x86_64":
        inductor_config.cpp.march = "native -ftree-loop-vectorize"


def accelerated(
    module: OfflineAlgorithm,
    optimizers: list[torch.optim.Optimizer],
    phase: Hashable,
    compile: bool,
    cuda_graphs: bool,
    before_backward: Callable[[torch.Tensor], None] | None = None,
) -> UpdateFn:
    """`module.update` of one phase: eager, compiled as one graph (`CompiledUpdate`) and/or captured whole
    (forward, backward, optimiser steps) as a CUDA graph that is replayed on every later batch of the same shapes
    (tensordict's CudaGraphModule)."""
    if compile or cuda_graphs:
        prepare_optimizers_for_capture(optimizers, module.device)
    if compile:
        if module.device.type == "cpu":
            let_gcc_vectorize_inductor_loops()
        # Every phase's graph (and a module's later fits in one process) is a cache entry of the one function
        # `_update_in_one_graph`; past dynamo's limit of 8 a fullgraph compile fails instead of running eager.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, COMPILED_GRAPHS_PER_PROCESS)
        update = CompiledUpdate(module, optimizers, phase)
    else:
        update = module.eager_update(optimizers, phase, before_backward)
    if cuda_graphs:
        if module.device.type != "cuda":
            raise OffrlError(f"CUDA-graph updates need a cuda device, got {module.device}; set performance.cuda_graphs false")
        from tensordict.nn import CudaGraphModule

        # CudaGraphModule takes and returns TensorDicts: the batch is copied into the captured input, losses out.
        losses_td = functools.partial(_losses_as_tensordict, update)
        graphed = CudaGraphModule(losses_td, in_keys=[], warmup=3 if compile else 2, device=module.device)
        update = functools.partial(_losses_as_dict, graphed)
    return update


class CompiledUpdate:
    """`module.update` of one phase as ONE torch.compile graph. Gradients come from torch.func.grad of the summed
    losses instead of `backward()`, and each Adam steps through `adam_step_in_graph`: torch.compile graph-breaks at
    `backward()` and around every `optimizer.step()`, and the ~10 pieces of a compiled update each pay a guard
    check and lose the fusion across their borders (benchmarks/README.md). The first call runs the eager update,
    which creates the optimisers' state and shows which parameters this phase's losses reach: only those step
    later, as in eager, where a parameter without a gradient does not step (TD3's actor between its updates).
    One device only (UpdateLoop refuses more): the gradients pass neither DDP's hooks nor the strategy's
    before-backward hook."""

    def __init__(self, module: OfflineAlgorithm, optimizers: list[torch.optim.Optimizer], phase: Hashable):
        self.module, self.optimizers, self.phase = module, optimizers, phase
        self.graph: UpdateFn | None = None

    def __call__(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        if self.graph is not None:
            self.module._phase = self.phase  # set outside the graph: dynamo traces no module mutation
            return self.graph(batch)
        losses = self.module.update(batch, self.optimizers, phase=self.phase)
        names = {parameter: name for name, parameter in self.module.named_parameters()}
        # Per optimiser and param group, the parameters the eager update stepped.
        stepped = [[[p for p in group["params"] if p.grad is not None] for group in optimizer.param_groups] for optimizer in self.optimizers]
        forget_gradients(self.optimizers)  # the graph's gradients never land in .grad
        trained = {names[p]: p for groups in stepped for group in groups for p in group}
        update = functools.partial(_update_in_one_graph, self.module, self.optimizers, trained, stepped, names)
        self.graph = torch.compile(update, fullgraph=True)
        return losses


def _update_in_one_graph(
    module: OfflineAlgorithm,
    optimizers: list[torch.optim.Optimizer],
    trained: dict[str, torch.nn.Parameter],
    stepped: list[list[list[torch.nn.Parameter]]],
    names: dict[torch.nn.Parameter, str],
    batch: TensorDict,
) -> dict[str, torch.Tensor]:
    """`OfflineAlgorithm.update` (same losses, same summed gradient, same steps) in a form torch.compile traces whole."""

    def summed_losses(parameters: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with with_parameters(module, parameters):
            losses = module.losses(batch)
        return torch.stack(list(losses.values())).sum(), losses

    gradients, losses = torch.func.grad(summed_losses, has_aux=True)(trained)
    with torch.no_grad():
        for optimizer, groups in zip(optimizers, stepped):
            adam_step_in_graph(optimizer, groups, [[gradients[names[p]] for p in group] for group in groups])
        module.after_optimizer_step()
    return {name: loss.detach() for name, loss in losses.items()}


def _losses_as_tensordict(update: UpdateFn, batch: TensorDict) -> TensorDict:
    return TensorDict(update(batch))


def _losses_as_dict(graphed: Callable[[TensorDict], TensorDict], batch: TensorDict) -> dict[str, torch.Tensor]:
    # Back to the UpdateFn contract: iterating a TensorDict walks its (empty) batch dimension, not its keys.
    return dict(graphed(batch).items())
