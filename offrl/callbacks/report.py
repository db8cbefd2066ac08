"""What a person running `offrl fit` sees without TensorBoard: one estimate of the run's duration from its first
updates, a progress line every minute when stdout is not a terminal (a log file has no progress bar), one line per
evaluation, and an end-of-run summary, printed and written to the run folder as summary.json."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import lightning as L

SCORE_METRICS = ("eval/normalized_score", "eval/success", "eval/return")


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class RunReport(L.Callback):
    def __init__(self, estimate_after_seconds: float = 20.0, estimate_after_updates: int = 200, progress_every_seconds: float = 60.0):
        """
        Args:
            estimate_after_seconds: print the duration estimate once this much training time has passed...
            estimate_after_updates: ...or this many updates were made, whichever comes first.
            progress_every_seconds: seconds between two progress lines when stdout is not a terminal.
        """
        self.estimate_after_seconds = estimate_after_seconds
        self.estimate_after_updates = estimate_after_updates
        self.progress_every_seconds = progress_every_seconds
        self._last_line = 0.0
        self._plain = False  # set at on_train_start
        self.evaluations: list[dict[str, float]] = []
        self._start: tuple[float, int] | None = None
        self._estimated = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._estimated = None, False
        self._plain = not sys.stdout.isatty()  # a log file gets progress lines instead of a bar

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now, step = time.perf_counter(), trainer.global_step
        if self._start is None:  # the first step pays for warm-up: time from its end
            self._start = (now, step)
            return
        seconds, updates = now - self._start[0], step - self._start[1]
        if self._estimated and self._plain and now - self._last_line >= self.progress_every_seconds:
            self._last_line = now
            if trainer.is_global_zero and trainer.max_steps > 0 and updates:
                rate = updates / seconds
                print(
                    f"offrl: update {step}/{trainer.max_steps} ({100 * step / trainer.max_steps:.0f} %), {rate:.1f} updates/s, "
                    f"≈ {duration((trainer.max_steps - step) / rate)} left",
                    flush=True,
                )
        if self._estimated or (seconds < self.estimate_after_seconds and updates < self.estimate_after_updates):
            return
        self._estimated, self._last_line = True, now
        rate = updates / seconds
        if trainer.is_global_zero and trainer.max_steps > 0:
            left = (trainer.max_steps - step) / rate
            print(
                f"offrl: ≈ {duration(left)} to trainer.max_steps {trainer.max_steps} on {pl_module.device.type} at "
                f"{rate:.1f} updates/s (update {step} now)",
                flush=True,
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = {name: float(trainer.callback_metrics[name]) for name in SCORE_METRICS if name in trainer.callback_metrics}
        if not metrics:
            return
        self.evaluations.append({"update": trainer.global_step, **metrics})
        if trainer.is_global_zero:
            parts = [f"{name.split('/')[1]} {value:.3g}" for name, value in metrics.items()]
            print(f"offrl: update {trainer.global_step}: {', '.join(parts)}", flush=True)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {name: float(trainer.callback_metrics[name]) for name in SCORE_METRICS if name in trainer.callback_metrics}
        if metrics and trainer.is_global_zero:
            parts = [f"{name.split('/')[1]} {value:.3g}" for name, value in metrics.items()]
            print(f"offrl: test of update {trainer.global_step}: {', '.join(parts)}", flush=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        seconds = time.perf_counter() - self._start[0] if self._start else 0.0
        updates = trainer.global_step - self._start[1] if self._start else 0
        summary = {"updates": trainer.global_step, "train_seconds": round(seconds, 1),
                   "updates_per_s": round(updates / seconds, 2) if seconds else None, "evaluations": self.evaluations}
        metric = next((name for name in SCORE_METRICS if self.evaluations and name in self.evaluations[-1]), None)
        lines = [f"offrl: trained {trainer.global_step} updates in {duration(seconds)}"
                 + (f" ({summary['updates_per_s']} updates/s)" if seconds else "")]
        if metric is not None:
            best = max(self.evaluations, key=lambda row: row.get(metric, float("-inf")))
            summary["last"] = {"update": self.evaluations[-1]["update"], metric: self.evaluations[-1][metric]}
            summary["best"] = {"update": best["update"], metric: best[metric]}
            lines.append(f"offrl: {metric}: last {self.evaluations[-1][metric]:.3g} (update {self.evaluations[-1]['update']}), "
                         f"best {best[metric]:.3g} (update {best['update']})")
        print("\n".join(lines), flush=True)
        log_dir = trainer.logger.log_dir if trainer.logger is not None else None
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            (Path(log_dir) / "summary.json").write_text(json.dumps(summary, indent=1))

    def state_dict(self) -> dict:
        return {"evaluations": self.evaluations}

    def load_state_dict(self, state_dict: dict) -> None:
        self.evaluations = list(state_dict.get("evaluations", []))
