"""RSP per-action latency at batch 1 with paper-size networks (1024x2), as JSON on the last stdout line.

    python benchmarks/rsp_latency.py [--device cpu|cuda] [--calls 2000] [--threads N] [--quick]

One call = what an environment loop pays for an action: a CPU observation and goal in, a CPU action out
(`RSP.act` under `torch.inference_mode`, the sub-goal recursion included). Cases: depth 1 (scales [32], the
paper's default) and depth 2 (scales [16, 32]), PointMaze sizes (4-dim observation, 2-dim goal, 2-dim action).
Reported: mean, median and p99 wall-clock milliseconds, eager, and `cpu_mean_ms`, this process's CPU time per
call (on a shared, loaded CPU the wall-clock figures measure the scheduler; CPU time is the compute cost); on CUDA also the same `act` captured once in a CUDA
graph and replayed (`cuda_graph`), both end to end from the host and on-device only (inputs already on the
GPU, one synchronise). Paper claim: under 1 ms per action; offrl's target is <= 0.2 ms on a GPU.
Weights are the untrained initialisation: latency does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable

import torch

from offrl.algos.rsp import RSP

OBS_DIM, GOAL_DIM, ACTION_DIM = 4, 2, 2  # PointMaze


def planner(scales: list[int], hidden: list[int], device: torch.device) -> RSP:
    model = RSP(hidden_dims=hidden, normalize_observations=False)
    model.build_planner(sorted(scales, reverse=True), OBS_DIM, GOAL_DIM, ACTION_DIM, [-1.0] * ACTION_DIM, [1.0] * ACTION_DIM, True)
    return model.to(device).eval()


def timings_ms(call: Callable[[], object], calls: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        call()
    samples = torch.empty(calls, dtype=torch.float64)
    cpu_start = time.process_time()
    for i in range(calls):
        start = time.perf_counter()
        call()
        samples[i] = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    samples *= 1000.0
    return {
        "cpu_mean_ms": round(1000.0 * cpu_seconds / calls, 4),
        "mean_ms": round(samples.mean().item(), 4),
        "median_ms": round(samples.median().item(), 4),
        "p99_ms": round(samples.quantile(0.99).item(), 4),
    }


def measure(model: RSP, device: torch.device, calls: int, warmup: int) -> dict[str, dict[str, float]]:
    observation, goal = torch.randn(1, OBS_DIM), torch.randn(1, GOAL_DIM)
    if device.type == "cuda":
        observation, goal = observation.pin_memory(), goal.pin_memory()

    @torch.inference_mode()
    def eager() -> torch.Tensor:
        return model.act(observation.to(device, non_blocking=True), goal.to(device, non_blocking=True)).cpu()

    results = {"eager": timings_ms(eager, calls, warmup)}
    if device.type != "cuda":
        return results

    static_observation, static_goal = observation.to(device), goal.to(device)
    with torch.inference_mode():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm up (cuBLAS handles, workspaces) off the capture stream
            for _ in range(3):
                model.act(static_observation, static_goal)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_action = model.act(static_observation, static_goal)
        graph.replay()
        torch.testing.assert_close(static_action, model.act(static_observation, static_goal))

    def graph_from_host() -> torch.Tensor:
        static_observation.copy_(observation, non_blocking=True)
        static_goal.copy_(goal, non_blocking=True)
        graph.replay()
        return static_action.cpu()

    def graph_on_device() -> None:
        graph.replay()
        torch.cuda.synchronize()

    results["cuda_graph"] = timings_ms(graph_from_host, calls, warmup)
    results["cuda_graph_on_device"] = timings_ms(graph_on_device, calls, warmup)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per case")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="reduced budget: 300 calls, 50 warm-up")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.warmup = 300, 50
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA build of torch and a GPU")
    torch.manual_seed(0)
    hidden = [1024, 1024]
    cases = {}
    for name, scales in (("depth1_scales32", [32]), ("depth2_scales16_32", [16, 32])):
        cases[name] = measure(planner(scales, hidden, device), device, args.calls, args.warmup)
        print(name, cases[name], flush=True)
    print(
        json.dumps(
            {
                "benchmark": "rsp_latency",
                "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "batch": 1,
                "hidden_dims": hidden,
                "calls": args.calls,
                "paper_claim_ms": 1.0,
                "cases": cases,
            }
        )
    )


if __name__ == "__main__":
    main()
