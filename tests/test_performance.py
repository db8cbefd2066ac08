"""The update loop: several updates per trainer step and compiled updates train exactly like the plain loop,
losses are logged as window means without per-step logging, bad settings fail in one sentence; evaluation in
worker processes returns the numbers of evaluation in this one."""

from __future__ import annotations

import functools
import platform
import tempfile
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from conftest import trainer as quiet_trainer
from conftest import write_synthetic

from offrl.algos.admpo import ADMPOOffline
from offrl.algos.compiled import let_gcc_vectorize_inductor_loops
from offrl.algos.mopo import MOPO
from offrl.algos.bc import BC
from offrl.algos.rsp import RSP
from offrl.algos.value_policy import ValuePolicy
from offrl.callbacks.throughput import UpdateLoop
from offrl.cli.dynamics import fit_dynamics_phase, needs_dynamics_fit
from offrl.data.datamodules import HindsightDataModule, SkipStepDataModule, TransitionDataModule
from offrl.data.replay import ReplayDataModule
from offrl.errors import OffrlError

HOPPER = "test/performance/hopper-v0"
MAZE = "test/performance/maze-v0"


@pytest.fixture(scope="module", autouse=True)
def datasets():
    write_synthetic(HOPPER, [40] * 10)
    write_synthetic(MAZE, [40] * 10, goal=True)


class StepRecorder(L.Callback):
    """Each step's returned losses and the logged metrics after it."""

    def __init__(self):
        self.outputs, self.logged = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.outputs.append({name: loss.item() for name, loss in outputs.items()})
        self.logged.append({name: value.item() for name, value in trainer.callback_metrics.items()})


def fit(model, datamodule, max_steps: int, loop: UpdateLoop, recorder=None, log_every: int = 48, **options) -> L.Trainer:
    if needs_dynamics_fit(model):  # MOPO, ADMPO-OFF: the model's fit comes first, as `offrl fit` runs it
        L.seed_everything(0)
        with tempfile.TemporaryDirectory() as folder:
            fit_dynamics_phase(model, datamodule, Path(folder), accelerator="cpu", progress_bar=False)
    L.seed_everything(0)
    trainer = quiet_trainer(max_steps, [loop] + ([recorder] if recorder else []), evaluate=False, log_every_n_steps=log_every, **options)
    trainer.fit(model, datamodule)
    return trainer


def parameters(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def iql_ddpgbc() -> tuple[ValuePolicy, TransitionDataModule]:
    return ValuePolicy(value="iql", extraction="ddpgbc", hidden_dims=[16, 16]), TransitionDataModule(HOPPER, batch_size=32, steps_per_epoch=20)


def rsp() -> tuple[RSP, SkipStepDataModule]:
    # Stage-wise with 4 steps per stage: the update switches networks (and graphs) twice in 12 steps.
    model = RSP(hidden_dims=[16, 16], steps_per_stage=4, normalize_observations=False)
    return model, SkipStepDataModule(MAZE, batch_size=32, steps_per_epoch=12, scales=[2, 4])


def mopo() -> tuple[MOPO, TransitionDataModule]:
    # Roll-out rounds at updates 0 and 8: trainer-step starts with 1 and with 4 updates per step.
    model = MOPO(
        rollout_horizon=2, dynamics_hidden_dims=[8], dynamics_members=3,
        dynamics_elites=2, dynamics_max_epochs=1, dynamics_updates_per_epoch=5, hidden_dims=[16, 16], model_rows=16,
        rollout_every=8, rollout_batch_size=32,
    )
    return model, TransitionDataModule(HOPPER, batch_size=8, steps_per_epoch=16)


@pytest.mark.parametrize("make,max_steps", [(iql_ddpgbc, 20), (rsp, 12), (mopo, 16)])
def test_several_updates_per_step_train_exactly_like_one(make, max_steps):
    one = make()
    trainer_one = fit(*one, max_steps, UpdateLoop(updates_per_step=1))
    several = make()
    trainer_several = fit(*several, max_steps, UpdateLoop(updates_per_step=4))
    assert trainer_one.global_step == trainer_several.global_step == max_steps
    expected, got = parameters(one[0]), parameters(several[0])
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_curves_are_in_updates_whatever_the_updates_per_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = {}
    for per_step in (1, 4):
        logger = L.pytorch.loggers.TensorBoardLogger(tmp_path, name=f"k{per_step}")
        model, datamodule = iql_ddpgbc()
        fit(model, datamodule, 24, UpdateLoop(updates_per_step=per_step), log_every=8, logger=logger)
        events = EventAccumulator(logger.log_dir)
        events.Reload()
        logged[per_step] = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"] if tag.startswith("train/")}
    assert [step for step, _ in logged[1]["train/critic_loss"]] == [7, 15, 23]
    assert logged[4] == logged[1]


def bc() -> tuple[BC, TransitionDataModule]:
    return BC(hidden_dims=[16, 16]), TransitionDataModule(HOPPER, batch_size=32, steps_per_epoch=20)


def value_policy(value: str, extraction: str, **options):
    def make():
        data = HindsightDataModule(MAZE, batch_size=32, steps_per_epoch=20) if value == "crl" else TransitionDataModule(HOPPER, batch_size=32, steps_per_epoch=20)
        return ValuePolicy(value=value, extraction=extraction, hidden_dims=[16, 16], repr_dim=8, **options), data

    make.__name__ = f"{value}_{extraction}"
    return make


def admpo_off() -> tuple[ADMPOOffline, TransitionDataModule]:
    model = ADMPOOffline(
        max_window=2, rollout_horizon=2, dynamics_hidden_dim=8, dynamics_gru_layers=1, dynamics_residual_blocks=1,
        dynamics_max_epochs=1, dynamics_updates_per_epoch=5, hidden_dims=[16, 16], model_rows=16, rollout_every=8,
        rollout_batch_size=32,
    )
    return model, TransitionDataModule(HOPPER, batch_size=8, steps_per_epoch=16)


EVERY_OFFLINE_FAMILY = [
    (bc, 6), (value_policy("iql", "awr"), 6), (iql_ddpgbc, 6), (value_policy("td3", "ddpgbc", actor="deterministic"), 6),
    (value_policy("sarsa", "sfbc"), 6), (value_policy("crl", "ddpgbc"), 6), (rsp, 12), (mopo, 10), (admpo_off, 10),
]


@pytest.mark.parametrize("make,max_steps", EVERY_OFFLINE_FAMILY, ids=lambda x: getattr(x, "__name__", str(x)))
def test_compiled_update_gives_the_eager_numbers(make, max_steps, monkeypatch):
    eager = make()
    fit(*eager, max_steps, UpdateLoop())
    # The aot_eager backend traces the whole update (forward, backward, optimiser steps, target averaging,
    # learning-rate schedule) as torch.compile does, without the minutes of C++ code generation on this CPU.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    compiled = make()
    fit(*compiled, max_steps, UpdateLoop(compile=True))
    expected, got = parameters(eager[0]), parameters(compiled[0])
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def sac_online():
    from offrl.algos.sac import SAC

    return SAC(hidden_dims=[16]), ReplayDataModule("Pendulum-v1", batch_size=16, steps_per_epoch=12, capacity=400)


def admpo_online():
    from offrl.algos.admpo import ADMPOOnline

    # Model rounds at updates 0 and 6 (41 and 47 env steps): the updates sample a model buffer that grows between them.
    model = ADMPOOnline(
        max_window=2, dynamics_every=6, rollout_horizon=2, min_rollout_horizon=1, horizon_ramp_start=0, horizon_ramp_end=10,
        dynamics_hidden_dim=8, dynamics_gru_layers=1, dynamics_residual_blocks=1, dynamics_max_epochs=1,
        dynamics_updates_per_epoch=3, hidden_dims=[16], model_rows=8, rollout_batch_size=8, retain_rounds=2,
    )
    return model, ReplayDataModule("Hopper-v5", batch_size=8, steps_per_epoch=12, capacity=400)


@pytest.mark.parametrize("make", [sac_online, admpo_online], ids=lambda make: make.__name__)
def test_compiled_online_update_gives_the_eager_numbers(make, monkeypatch):
    """Online runs take env steps between updates and sample a growing replay buffer: compiled they train as eager."""
    from offrl.callbacks.online import OnlineInteraction

    def run(compile: bool):
        model, datamodule = make()
        L.seed_everything(0)
        quiet_trainer(12, [OnlineInteraction(warmup_steps=40, seed=0), UpdateLoop(compile=compile)], evaluate=False).fit(model, datamodule)
        return parameters(model)

    expected = run(compile=False)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    got = run(compile=True)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_the_inductor_compiled_update_gives_the_eager_numbers():
    """The real backend once (C++ code generation takes seconds here): the compiled update matches eager."""
    eager = value_policy("iql", "awr")()
    fit(*eager, 4, UpdateLoop())
    torch._dynamo.reset()
    compiled = value_policy("iql", "awr")()
    fit(*compiled, 4, UpdateLoop(compile=True))
    expected, got = parameters(eager[0]), parameters(compiled[0])
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64", reason="the gcc flag is set on x86-64 Linux only")
def test_compiled_cpu_kernels_are_built_with_gcc_loop_vectorization():
    """Without it a compiled update's ReLU masks cost ~30x their eager time (offrl.algos.compiled)."""
    from torch._inductor import cpp_builder, cpu_vec_isa

    let_gcc_vectorize_inductor_loops()
    options = cpp_builder.CppTorchOptions(vec_isa=cpu_vec_isa.pick_vec_isa(), shared=True)
    flags = cpp_builder.CppBuilder(name="k", sources="k.cpp", BuildOption=options, output_dir=".").get_command_line().split()
    if "-fno-tree-loop-vectorize" in flags:  # gcc: the last of the two wins
        assert "-ftree-loop-vectorize" in flags
        assert flags.index("-ftree-loop-vectorize") > flags.index("-fno-tree-loop-vectorize")


def test_losses_are_logged_as_means_over_each_logging_window():
    recorder = StepRecorder()
    fit(BC(hidden_dims=[16]), TransitionDataModule(HOPPER, batch_size=32, steps_per_epoch=20), 20, UpdateLoop(), recorder, log_every=5)
    losses = [step["bc_loss"] for step in recorder.outputs]
    for step in (4, 9, 14, 19):  # Lightning writes logs after steps 5, 10, 15, 20
        window = losses[step - 4 : step + 1]
        assert recorder.logged[step]["train/bc_loss"] == pytest.approx(sum(window) / 5, rel=1e-5)
    assert recorder.logged[5]["train/bc_loss"] == recorder.logged[4]["train/bc_loss"]  # nothing logged in between


def test_update_loop_settings_fail_in_one_sentence():
    with pytest.raises(OffrlError, match="steps_per_epoch 20 must be a multiple of performance.updates_per_step 3"):
        fit(BC(hidden_dims=[16]), TransitionDataModule(HOPPER, steps_per_epoch=20), 6, UpdateLoop(updates_per_step=3))
    with pytest.raises(OffrlError, match="log_every_n_steps 10 must be a multiple of performance.updates_per_step 4"):
        fit(BC(hidden_dims=[16]), TransitionDataModule(HOPPER, steps_per_epoch=20), 8, UpdateLoop(updates_per_step=4), log_every=10)
    with pytest.raises(OffrlError, match="updates_per_step must be a positive integer"):
        UpdateLoop(updates_per_step=0)
    with pytest.raises(OffrlError, match="need a cuda device"):
        fit(BC(hidden_dims=[16]), TransitionDataModule(HOPPER, steps_per_epoch=20), 2, UpdateLoop(cuda_graphs=True))
    model, datamodule = mopo()
    with pytest.raises(OffrlError, match="rollout_every 8 must be a multiple of performance.updates_per_step 16"):
        fit(model, datamodule, 16, UpdateLoop(updates_per_step=16), log_every=16)
    model, datamodule = mopo()
    with pytest.raises(OffrlError, match="cannot capture a model-based SAC update"):
        fit(model, datamodule, 16, UpdateLoop(cuda_graphs=True))


def test_parallel_evaluation_returns_the_serial_numbers():
    from offrl.data import registry
    from offrl.envs.evaluation import evaluate
    from offrl.envs.factory import make_eval_env

    _, info = registry.load(MAZE)

    def act(observation, goal):  # deterministic: head for the goal
        return torch.clamp(goal - observation[:, :2], -1, 1)

    metrics = []
    for parallel in (False, True):
        env = make_eval_env(info, num_envs=2, seed=3, parallel=parallel)
        metrics.append(evaluate(act, env, info, 2, torch.device("cpu")))
        env.close()
    serial, parallel = metrics
    assert serial["eval/success"] == 1.0 and serial["eval/return"] > 0  # a run with something to compare
    assert parallel["eval/return"] == pytest.approx(serial["eval/return"])
    assert parallel["eval/success"] == serial["eval/success"]


def test_shipped_offline_configs_run_ten_updates_per_step_and_their_cadences_allow_it():
    """No shipped recipe repeats performance.updates_per_step: its auto default spreads Lightning's per-step work over
    10 updates for every config that trains from a dataset (all their "every N updates" settings are multiples of 10)
    and keeps one for the online ones, which take env steps between updates."""
    from offrl.callbacks.throughput import updates_per_step

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*/*.yaml"))
    checked = 0
    for path in configs:
        config = yaml.safe_load(path.read_text())
        assert "updates_per_step" not in (config.get("performance") or {}), path
        if "model" not in config or "trainer" not in config or path.parent.name == "dynamics":
            continue  # a layer (value_extraction/opex.yaml, ...), or a dynamics fit (its epoch comes from the data)
        online = path.parent.name in ("sac", "admpo_on")
        cadences = [
            config["data"]["init_args"].get("steps_per_epoch"), config.get("checkpoint", {}).get("every_n_train_steps"),
            config["trainer"].get("log_every_n_steps", 50), config["model"]["init_args"].get("rollout_every"),
        ]
        assert updates_per_step("auto", not online, [every for every in cadences if every]) == (1 if online else 10), path
        checked += 1
    assert checked >= 45


def test_auto_updates_per_step_is_ten_offline_when_every_cadence_allows_and_one_otherwise():
    model, datamodule = BC(hidden_dims=[16]), TransitionDataModule(HOPPER, steps_per_epoch=20)
    fit(model, datamodule, 20, UpdateLoop(), log_every=10)
    assert datamodule.updates_per_step == 10
    model, datamodule = BC(hidden_dims=[16]), TransitionDataModule(HOPPER, steps_per_epoch=15)
    fit(model, datamodule, 15, UpdateLoop(), log_every=5)
    assert datamodule.updates_per_step == 1
    with pytest.raises(OffrlError, match="updates_per_step must be a positive integer or auto, got 'fast'"):
        UpdateLoop(updates_per_step="fast")


def test_evaluation_parallel_setting_reaches_the_env_built_for_fit():
    from torchrl.envs import ParallelEnv, SerialEnv

    from offrl.callbacks.evaluation import EvaluationCallback
    from offrl.data import registry

    _, info = registry.load(MAZE)

    class FitTrainer:  # what on_fit_start reads
        is_global_zero, limit_val_batches = True, 1
        datamodule = type("Data", (), {"info": info})()

    for parallel, kind in ((False, SerialEnv), (True, ParallelEnv)):
        callback = EvaluationCallback(num_episodes=2, num_envs=2, parallel=parallel)
        callback.on_fit_start(FitTrainer(), None)
        assert isinstance(callback.env, kind)
        callback.env.close()


def test_compile_on_more_than_one_device_is_refused_in_one_sentence():
    """The one-graph update's gradients never pass DDP's all-reduce hooks, so each process would train alone."""
    trainer = type("Trainer", (), {"world_size": 2})()
    with pytest.raises(OffrlError, match="performance.compile works on one device"):
        UpdateLoop(compile=True).setup(trainer, BC(hidden_dims=[16]), "fit")


def test_compile_auto_compiles_long_single_process_cpu_runs_only(monkeypatch):
    from types import SimpleNamespace

    from offrl.callbacks import throughput

    def run(max_steps=throughput.AUTO_COMPILE_MIN_UPDATES, device="cpu", world_size=1):
        return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), world_size=world_size, max_steps=max_steps)

    monkeypatch.setattr(throughput, "has_inductor_cpp_compiler", lambda: True)
    assert UpdateLoop.auto_compiles(run())
    assert not UpdateLoop.auto_compiles(run(max_steps=throughput.AUTO_COMPILE_MIN_UPDATES - 1))
    assert not UpdateLoop.auto_compiles(run(max_steps=-1))  # no known length
    assert not UpdateLoop.auto_compiles(run(device="cuda"))
    assert not UpdateLoop.auto_compiles(run(world_size=2))
    monkeypatch.setattr(throughput, "has_inductor_cpp_compiler", lambda: False)
    assert not UpdateLoop.auto_compiles(run())
    with pytest.raises(OffrlError, match="performance.compile must be true, false or auto, got 'yes'"):
        UpdateLoop(compile="yes")
