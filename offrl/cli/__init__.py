"""The `offrl` command: `fit`/`validate`/`test` (offrl.cli.fit), `data ...` (offrl.cli.data), `sweep`
(offrl.cli.sweep) and `report` (offrl.cli.report); errors a user can cause end in one `offrl: error:` line, and known noise is silenced."""

from __future__ import annotations

import errno
import logging
import re
import sys
import warnings

from offrl.errors import OffrlError


def user_error(err: BaseException) -> OffrlError | None:
    """The OffrlError behind `err`, if any: config parsing and Lightning wrap errors raised inside them."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OffrlError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def path_fault(err: BaseException) -> str | None:
    """One sentence for a fault of the machine on a path offrl reads or writes (read-only or full folder, a file
    where a folder should be, a missing file), or None when `err` is not one."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.filename is not None and err.errno is not None:
            fix = {
                errno.ENOSPC: "free disk space there",
                errno.EACCES: "make it writable or point offrl elsewhere",
                errno.EROFS: "point offrl at a writable folder",
                errno.ENOTDIR: "a file stands where a folder should be: move it",
                errno.EEXIST: "a file stands where a folder should be: move it",
                errno.ENOENT: "check the path",
            }.get(err.errno, "check the path and the disk")
            return f"cannot use {err.filename} ({err.strerror}); {fix}, then run the command again"
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def out_of_memory(err: BaseException) -> str | None:
    """One sentence for an allocation that failed for lack of memory (torch's CPU and CUDA wording), or None."""
    message = str(err)
    if type(err).__name__ != "OutOfMemoryError" and "can't allocate memory" not in message:
        return None
    found = re.search(r"tried to allocate (\d+) bytes", message)
    tried = f"it tried to allocate {int(found.group(1)) / 2**30:.1f} GiB" if found else "an allocation failed"
    return f"out of memory ({tried}); lower model.hidden_dims or data.batch_size, or use a device with more memory"


# Messages every run printed that a user can do nothing about, each with why it does not apply to offrl.
KNOWN_NOISE = (
    (r"`author_email` is set to None", "Minari asks dataset authors for an e-mail; offrl's generated datasets name their recipe"),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", "Lightning 2.6's pytree helper under torch 2.13, not offrl code"),
    (r"Your `IterableDataset` has `__len__` defined", "offrl's step loader runs without workers, so its length is exact"),
    (r"Using ModelCheckpoint with manual optimization", "offrl's update steps the optimisers itself; a checkpoint holds the state after an update, which resumes exactly"),
    (r"The number of training batches \(\d+\) is smaller than the logging interval", "Lightning compares trainer steps with log_every_n_steps, which offrl counts in updates"),
)


class DropLightningLines(logging.Filter):
    """Log lines of Lightning's that say nothing a user can act on: the advertisement for its cloud logger at every
    fit, and the note that a checkpoint saved by StopCheckpoint holds the full state (as every offrl checkpoint does)."""

    LINES = ("litlogger", "`weights_only` was not set")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(line in message for line in self.LINES)


def silence_known_noise() -> None:
    for message, _why in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.checkpoint_connector"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropLightningLines) for f in logger.filters):  # main() may run many times in a process
            logger.addFilter(DropLightningLines())


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    silence_known_noise()
    try:
        # Each command imports only what it needs: `offrl data list` answers before Lightning would have loaded.
        if args and args[0] == "data":
            from offrl.cli.data import data_main

            data_main(args[1:])
        elif args and args[0] == "sweep":
            from offrl.cli.sweep import sweep_main

            sweep_main(args[1:])
        elif args and args[0] == "report":
            from offrl.cli.report import report_main

            report_main(args[1:])
        else:
            from offrl.cli.fit import run_lightning, with_full_class_paths

            if argv is None:
                sys.argv[1:] = with_full_class_paths(args)  # LightningCLI reads sys.argv when given no args
                run_lightning(None)
            else:
                run_lightning(with_full_class_paths(args))
    except Exception as err:
        found = user_error(err) or path_fault(err) or out_of_memory(err)
        if found is None:
            raise
        print(f"offrl: error: {found}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("offrl: interrupted", file=sys.stderr)
        sys.exit(130)
