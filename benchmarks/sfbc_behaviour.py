"""SfBC's candidates against the data they should imitate, on a MuJoCo recipe of configs/value_extraction/.

SfBC acts with the argmax-Q of N actions sampled from its fitted behaviour policy pi(a|s) = N(mu(s), sigma). The
candidates are only the behaviour's when sigma matches the data's spread around mu: per action dimension this
prints the behaviour residual std(a_data - mu(s)) over the dataset, the candidates' spread std(a_cand - mu(s)), their
ratio, the share of candidate coordinates (and of the chosen actions') on the action bounds against the data's, and
the final evaluation of the trained SfBC policy beside BC (configs/bc/hopper-medium.yaml) at the same updates.

    python benchmarks/sfbc_behaviour.py --updates 50000 --seeds 0 1      # ~10 min per seed and method on one CPU thread

Prints JSON as its last line; writes benchmarks/results/sfbc_behaviour.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def fitted(config: Path, updates: int, seed: int, extra: list[str]):
    from offrl.cli.fit import run_lightning

    with tempfile.TemporaryDirectory() as run_dir:
        args = [
            "--config", str(config), f"--seed_everything={seed}", f"--data.seed={seed}", f"--trainer.max_steps={updates}",
            f"--data.steps_per_epoch={updates}", "--trainer.accelerator=cpu", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={run_dir}",
            "--checkpoint.save_last=false", *extra,
        ]
        cli = run_lightning(args, run=False)
        start = time.perf_counter()
        cli.trainer.fit(cli.model, cli.datamodule)
        seconds = time.perf_counter() - start
    return cli, float(cli.trainer.callback_metrics["eval/normalized_score"]), seconds


@torch.no_grad()
def candidate_statistics(model, transitions, states: int = 10000) -> dict:
    """On `states` dataset transitions drawn uniformly (seed 0)."""
    from offrl.algos.value_policy import sfbc_action

    generator_state = torch.get_rng_state()
    torch.manual_seed(0)
    transitions = transitions[torch.randperm(transitions.batch_size[0])[:states]]
    obs = model.observation_normalizer(transitions["observation"])
    mean, log_std = model.actor(obs)
    low, high = model.action_low, model.action_high
    residual = transitions["action"] - model.clip_action(mean)
    n = model.hparams.sfbc_num_samples
    noise = torch.randn(mean.shape[0], n, mean.shape[1])
    candidates = model.clip_action(mean[:, None] + log_std.exp()[:, None] * noise)
    chosen = sfbc_action(model, obs, None)
    torch.set_rng_state(generator_state)

    def on_bounds(actions):
        return float(((actions <= low + 1e-6) | (actions >= high - 1e-6)).float().mean())

    behaviour_std = residual.std(0)
    candidate_std = (candidates - model.clip_action(mean)[:, None]).flatten(0, 1).std(0)
    return {
        "behaviour_residual_std": [round(v, 4) for v in behaviour_std.tolist()],
        "candidate_spread_std": [round(v, 4) for v in candidate_std.tolist()],
        "spread_ratio": [round(v, 3) for v in (candidate_std / behaviour_std).tolist()],
        "candidates_on_bounds": round(on_bounds(candidates), 4),
        "chosen_on_bounds": round(on_bounds(chosen), 4),
        "data_on_bounds": round(on_bounds(transitions["action"]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="hopper-medium", help="a configs/value_extraction/ MuJoCo recipe")
    parser.add_argument("--updates", type=int, default=50000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sfbc_behaviour.md")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = []
    for seed in args.seeds:
        config = ROOT / "configs" / "value_extraction" / f"{args.dataset}.yaml"
        cli, sfbc_score, sfbc_seconds = fitted(config, args.updates, seed, ["--model.value=iql", "--model.extraction=sfbc"])
        stats = candidate_statistics(cli.model.cpu().eval(), cli.datamodule.transitions.cpu())
        bc_config = ROOT / "configs" / "bc" / f"{args.dataset}.yaml"
        _, bc_score, bc_seconds = fitted(bc_config, args.updates, seed, [])
        rows.append({"seed": seed, "sfbc_score": round(sfbc_score, 1), "bc_score": round(bc_score, 1),
                     "sfbc_seconds": round(sfbc_seconds), "bc_seconds": round(bc_seconds), **stats})
        print(json.dumps(rows[-1]), flush=True)

    lines = [
        f"# SfBC's behaviour policy on {args.dataset}", "",
        f"`python benchmarks/sfbc_behaviour.py --dataset {args.dataset} --updates {args.updates} --seeds {' '.join(map(str, args.seeds))}`"
        f" ({datetime.date.today()}, CPU, one torch thread). IQL value + SfBC (N = 32 candidates from the fitted Gaussian"
        " behaviour policy) from configs/value_extraction, BC from configs/bc, the same updates and seed; score = the"
        " last evaluation's D4RL-normalised return (10 episodes).", "",
        "| seed | SfBC score | BC score | behaviour residual std | candidate spread std | ratio | candidates on bounds | chosen on bounds | data on bounds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['sfbc_score']} | {r['bc_score']} | {r['behaviour_residual_std']} | {r['candidate_spread_std']} | "
            f"{r['spread_ratio']} | {r['candidates_on_bounds']:.1%} | {r['chosen_on_bounds']:.1%} | {r['data_on_bounds']:.1%} |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    print(json.dumps({"dataset": args.dataset, "updates": args.updates, "rows": rows}))


if __name__ == "__main__":
    main()
