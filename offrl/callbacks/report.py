"""What a person running `offrl fit` sees without TensorBoard: a terminal progress bar in updates, one estimate of
the run's duration from its first updates, a progress line every minute when stdout is not a terminal (a log file
has no progress bar), one line per evaluation, and an end-of-run summary, printed and written to the run folder as
summary.json beside curves.png. `offrl test` writes its own summary.json and marks its scores on the run's curves."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks.progress import ProgressBar
from tqdm.auto import tqdm

from offrl.reports import SCORE_METRICS, is_test_folder, plot_run, write_text


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def say(trainer: L.Trainer, line: str) -> None:
    """A line on the console, above the progress bar when one is drawn."""
    bar = trainer.progress_bar_callback
    if isinstance(bar, UpdateProgressBar) and bar.bar is not None:
        bar.print(line)
    else:
        print(line, flush=True)


class UpdateProgressBar(ProgressBar):
    """One terminal bar over updates (not trainer steps, which hold performance.updates_per_step updates each) to
    trainer.max_steps, with updates/s, the time left and the last evaluation score. Drawn only on a terminal."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled, self.bar, self.score = True, None, ""

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def print(self, *args, **kwargs) -> None:
        tqdm.write(" ".join(map(str, args)))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled and trainer.is_global_zero and sys.stdout.isatty():
            total = trainer.max_steps if trainer.max_steps > 0 else None
            self.bar = tqdm(total=total, initial=trainer.global_step, desc="training", unit="update", dynamic_ncols=True, smoothing=0.1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.bar is not None:
            self.bar.update(trainer.global_step - self.bar.n)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.set_description("evaluating", refresh=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is None:
            return
        metric = next((name for name in SCORE_METRICS if name in trainer.callback_metrics), None)
        if metric is not None:
            self.bar.set_postfix_str(f"{metric.split('/')[1]} {float(trainer.callback_metrics[metric]):.3g}", refresh=False)
        self.bar.set_description("training", refresh=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(content, indent=1))


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
            say(
                trainer,
                f"offrl: ≈ {duration(left)} to trainer.max_steps {trainer.max_steps} on {pl_module.device.type} at "
                f"{rate:.1f} updates/s (update {step} now)",
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
            say(trainer, f"offrl: update {trainer.global_step}: {', '.join(parts)}")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {name: float(trainer.callback_metrics[name]) for name in SCORE_METRICS if name in trainer.callback_metrics}
        if not metrics or not trainer.is_global_zero:
            return
        parts = [f"{name.split('/')[1]} {value:.3g}" for name, value in metrics.items()]
        update = getattr(pl_module, "checkpoint_updates", trainer.global_step)  # the test loop counts from 0
        print(f"offrl: test of update {update}: {', '.join(parts)}", flush=True)
        log_dir = trainer.logger.log_dir if trainer.logger is not None else None
        if log_dir is not None:
            write_json(Path(log_dir) / "summary.json", {"update": update, "test": metrics})
            run_dir = Path(log_dir).parent
            if is_test_folder(Path(log_dir)):  # beside the run it tests
                plot_run(run_dir, tests={name: (update, value) for name, value in metrics.items()}, test_name=Path(log_dir).name)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.write_end_files(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run stopped after its last update (during its final evaluation) is resumed with nothing left to train:
        # Lightning then skips on_train_end, and this resume is what finishes the run.
        log_dir = trainer.logger.log_dir if trainer.logger is not None else None
        finished = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        if trainer.is_global_zero and finished and log_dir is not None and not (Path(log_dir) / "summary.json").exists():
            self.write_end_files(trainer)

    def write_end_files(self, trainer: L.Trainer) -> None:
        """The end-of-run summary, printed and written as summary.json, and curves.png beside it."""
        seconds = time.perf_counter() - self._start[0] if self._start else 0.0
        updates = trainer.global_step - self._start[1] if self._start else 0
        summary = {"updates": trainer.global_step, "train_seconds": round(seconds, 1),
                   "updates_per_s": round(updates / seconds, 2) if seconds else None, "evaluations": self.evaluations}
        metric = next((name for name in SCORE_METRICS if self.evaluations and name in self.evaluations[-1]), None)
        timed = f" in {duration(seconds)} ({summary['updates_per_s']} updates/s)" if seconds else ""  # none when resumed at the end
        lines = [f"offrl: trained {trainer.global_step} updates{timed}"]
        if metric is not None:
            best = max(self.evaluations, key=lambda row: row.get(metric, float("-inf")))
            summary["last"] = {"update": self.evaluations[-1]["update"], metric: self.evaluations[-1][metric]}
            summary["best"] = {"update": best["update"], metric: best[metric]}
            lines.append(f"offrl: {metric}: last {self.evaluations[-1][metric]:.3g} (update {self.evaluations[-1]['update']}), "
                         f"best {best[metric]:.3g} (update {best['update']})")
        say(trainer, "\n".join(lines))
        log_dir = trainer.logger.log_dir if trainer.logger is not None else None
        if log_dir is not None:
            write_json(Path(log_dir) / "summary.json", summary)
            flush = getattr(trainer.logger.experiment, "flush", None)
            if flush is not None:
                flush()  # the curves are read back from the event files
            plot_run(Path(log_dir))

    def state_dict(self) -> dict:
        return {"evaluations": self.evaluations}

    def load_state_dict(self, state_dict: dict) -> None:
        self.evaluations = list(state_dict.get("evaluations", []))
