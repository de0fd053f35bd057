"""The run folder that every training loop of the toolkit writes, and how to read it back.

One layout for `surrogate.fit`, `elmnet.train` and the sweeps built on them::

    run.json        what the run is: kind, config, seed, software versions, data provenance
    metrics.csv     one row per log or evaluation (its columns: the union of the rows' keys)
    checkpoint.pt   the latest state to resume from: tensors and plain values only
    best.pt         the model of the best validation score so far
    result.json     the final result; written last, so that it means "finished"
    report/         figures and tables of the final evaluation (when the loop makes them)
    tensorboard/    event files, when TensorBoard is installed

Every file is replaced atomically, so a killed run leaves the previous state intact.
Nothing here unpickles: `.pt` files are read with `torch.load(weights_only=True)`, so a
checkpoint from elsewhere cannot run code. `run_status(folder)` answers "is this run
finished, and what did it score?" from the folder alone.

Folders of the earlier layouts (`best_model.pt` of the surrogate; `config.json` and
`test.json` of `elmnet.train`) are renamed to this layout when opened, with a notice.
"""

import csv
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from elmbridge.errors import MissingDataError, UserError
from elmbridge.files import atomic_path, read_json, user_writes, write_json
from elmbridge.provenance import run_record

RUN_FILE = "run.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
RESULT_FILE = "result.json"
REPORT_DIR = "report"
TENSORBOARD_DIR = "tensorboard"

# Earlier layouts → this one.
LEGACY_NAMES = {"best_model.pt": BEST_FILE, "config.json": RUN_FILE, "test.json": RESULT_FILE}


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` through a temporary file and an atomic rename.

    A full disk raises a `UserError` that says the previous file is intact.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except OSError as err:
        raise UserError(
            f"could not write {path} ({err.strerror or err}); the previous {path.name}, if "
            "any, is intact: free space and run the same command again to resume"
        ) from err


def load_torch(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Read a `.pt` file of tensors and plain values, never executing code from it.

    Raises:
        MissingDataError: no file at `path`.
        UserError: the file is truncated, foreign, or holds pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"no file at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for foreign, truncated or unsafe files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{path} is not a readable checkpoint of this toolkit ({first[:160]}); it may be "
            "truncated, from another program, or hold pickled objects, which are never loaded"
        ) from err


@dataclass(frozen=True)
class RunStatus:
    """What a folder says about its run, read from the folder alone.

    Attributes:
        path: the folder.
        exists: it holds a run record.
        finished: it holds the final result.
        kind: what made it ("surrogate-fit", "elmnet-train", …), when recorded.
        config: the recorded configuration ({} when there is no run).
        result: the final result, or None while unfinished.
        resumable: an unfinished run with a checkpoint to continue from.
    """

    path: Path
    exists: bool
    finished: bool
    kind: str | None
    config: dict[str, Any]
    result: dict[str, Any] | None
    resumable: bool


def run_status(path: str | os.PathLike) -> RunStatus:
    """Is the run in `path` finished, and what did it score? Reads the folder only.

    Example:
        >>> status = run_status("runs/L5PC_dm20_laptop_seed0")  # doctest: +SKIP
        >>> status.finished, status.result["test_metrics"]["AUC"]  # doctest: +SKIP
    """
    folder = RunFolder(path, upgrade=False)
    record = folder.record() if folder.exists() else {}
    result = folder.result()
    return RunStatus(
        path=folder.path,
        exists=folder.exists(),
        finished=result is not None,
        kind=record.get("kind"),
        config=record.get("config", {}),
        result=result,
        resumable=result is None and folder.checkpoint_path().is_file(),
    )


class RunFolder:
    """A run folder: creation with provenance, resume checks, checkpoints, result.

    Args:
        path: the folder (created on `start`).
        upgrade: rename files of the earlier layouts to this one (with a notice).
    """

    def __init__(self, path: str | os.PathLike, upgrade: bool = True):
        self.path = Path(path)
        if upgrade:
            self._upgrade_legacy()

    def _find(self, name: str) -> Path:
        """`name` in this folder, or its legacy name when only that exists."""
        current = self.path / name
        if current.exists():
            return current
        for old, new in LEGACY_NAMES.items():
            if new == name and (self.path / old).exists():
                return self.path / old
        return current

    def _upgrade_legacy(self) -> None:
        renamed = []
        for old, new in LEGACY_NAMES.items():
            if (self.path / old).is_file() and not (self.path / new).exists():
                os.replace(self.path / old, self.path / new)
                renamed.append(f"{old} → {new}")
        if renamed:
            print(f"notice: {self.path} used an earlier run layout; renamed {', '.join(renamed)}")

    def exists(self) -> bool:
        """True if the folder holds a run record."""
        return self._find(RUN_FILE).is_file()

    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    def best_path(self) -> Path:
        return self._find(BEST_FILE)

    def record(self) -> dict[str, Any]:
        """The run record (run.json)."""
        if not self.exists():
            raise MissingDataError(f"{self.path} is not a run folder (no {RUN_FILE})")
        try:
            record = read_json(self._find(RUN_FILE))
        except ValueError as err:
            raise UserError(f"{self._find(RUN_FILE)} is not valid JSON ({err})") from err
        if not isinstance(record, dict):
            raise UserError(f"{self._find(RUN_FILE)} is not a run record")
        return record

    def result(self) -> dict[str, Any] | None:
        """The final result, or None while the run is unfinished."""
        file = self._find(RESULT_FILE)
        if not file.is_file():
            return None
        try:
            return read_json(file)
        except ValueError as err:
            raise UserError(f"{file} is not valid JSON ({err}); delete it to rerun") from err

    def check_writable(self) -> None:
        """Refuse, before any work, a path that is a file, lies under one, or can't be made."""
        for parent in (self.path, *self.path.parents):
            if parent.exists():
                if not parent.is_dir():
                    raise UserError(f"cannot make the run folder {self.path}: {parent} is a file")
                if not os.access(parent, os.W_OK):
                    raise UserError(
                        f"cannot write the run folder {self.path}: {parent} is read-only"
                    )
                return

    def start(
        self,
        kind: str,
        config: dict[str, Any],
        seed: int,
        data: dict[str, Any] | None = None,
        *,
        reuse_folder: bool = False,
        **extra: Any,
    ) -> dict[str, Any]:
        """Create the folder and write its run record (config, seed, versions, data).

        Returns the record. The caller has validated everything before: a refused
        command must leave nothing behind. A non-empty folder that is not a run is
        refused unless `reuse_folder` (a run just discarded, whose side files remain).
        """
        self.check_writable()
        foreign = self.path.exists() and any(self.path.iterdir()) and not self.exists()
        if foreign and not reuse_folder:
            raise UserError(f"{self.path} is a non-empty folder but not a run folder; choose --out")
        record = run_record(config, seed, data)
        record["kind"] = kind
        record.update(extra)
        write_json(self.path / RUN_FILE, record)
        return record

    def check_same_config(
        self,
        config: dict[str, Any],
        ignore: Iterable[str] = (),
        recorded: dict[str, Any] | None = None,
    ) -> None:
        """Raise a `UserError` listing the differences when `config` is not the recorded one.

        `recorded` replaces run.json's config (for records of an earlier layout).
        """
        old = self.record().get("config", {}) if recorded is None else recorded
        skip = set(ignore)
        keys = [k for k in dict.fromkeys([*old, *config]) if k not in skip]
        diff = [
            f"{k}: {old.get(k)!r} → {config.get(k)!r}" for k in keys if old.get(k) != config.get(k)
        ]
        if diff:
            raise UserError(
                f"{self.path} holds a run with another configuration; run the same command to "
                f"resume it, or choose another --out. Differences: {'; '.join(diff)}"
            )

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write the resume state (tensors and plain values) atomically."""
        save_torch(state, self.checkpoint_path())

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The resume state, or None when the run has none yet."""
        if not self.checkpoint_path().is_file():
            return None
        return load_torch(self.checkpoint_path(), map_location)

    def save_best(self, payload: dict[str, Any]) -> None:
        save_torch(payload, self.path / BEST_FILE)

    def load_best(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        return load_torch(self.best_path(), map_location)

    def finish(self, result: dict[str, Any]) -> None:
        """Write the final result: from now on the run counts as finished."""
        write_json(self.path / RESULT_FILE, result)

    def discard(self) -> None:
        """Delete the files of this layout (for an explicit restart)."""
        for name in (CHECKPOINT_FILE, BEST_FILE, METRICS_FILE, RESULT_FILE, RUN_FILE):
            (self.path / name).unlink(missing_ok=True)


class BestTracker:
    """The best validation score so far and the step it came from.

    Args:
        higher_is_better: True for accuracy or AUC, False for a loss or an error.
    """

    def __init__(self, higher_is_better: bool, value: float = math.nan, step: int = -1):
        self.higher_is_better, self.value, self.step = higher_is_better, value, step

    def update(self, value: float, step: int) -> bool:
        """Record `value` at `step`; True if it is the best so far (the first always is).

        A non-finite value never beats a finite one.
        """
        if self.step >= 0 and math.isfinite(self.value):
            if not math.isfinite(value):
                return False
            better = value > self.value if self.higher_is_better else value < self.value
            if not better:
                return False
        elif self.step >= 0 and not math.isfinite(value):
            return False
        self.value, self.step = float(value), int(step)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"higher_is_better": self.higher_is_better, "value": self.value, "step": self.step}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "BestTracker":
        return cls(bool(state["higher_is_better"]), float(state["value"]), int(state["step"]))


class MetricsLog:
    """metrics.csv of a run, plus TensorBoard scalars when TensorBoard is installed.

    Rows may carry different keys; the file's columns are their union, in first-seen
    order. On resume, rows logged after the checkpoint's step are dropped, so a resumed
    run writes the same file as an uninterrupted one.

    Args:
        path: the CSV file.
        resume_step: keep the file's rows with `step` ≤ this; None starts a new file.
        tensorboard_dir: where to write event files (None: no TensorBoard).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        resume_step: int | None = None,
        tensorboard_dir: str | os.PathLike | None = None,
    ):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and self.path.is_file():
            self.rows = [r for r in read_metrics(self.path) if _step(r) <= resume_step]
        self.columns = list(dict.fromkeys(k for row in self.rows for k in row))
        self._rewrite()
        self._board = _tensorboard(tensorboard_dir)

    def log(self, **row: Any) -> None:
        """Append one row (it must have a `step`)."""
        self.rows.append(row)
        if set(row) <= set(self.columns):
            with user_writes(self.path), open(self.path, "a", newline="", encoding="utf-8") as fh:
                csv.DictWriter(fh, self.columns, lineterminator="\n").writerow(row)
        else:
            self.columns = list(dict.fromkeys([*self.columns, *row]))
            self._rewrite()
        if self._board is not None:
            prefix = f"{row['split']}/" if isinstance(row.get("split"), str) else ""
            for key, value in row.items():
                if isinstance(value, float) and math.isfinite(value):
                    self._board.add_scalar(prefix + key, value, int(row["step"]))
            self._board.flush()

    def _rewrite(self) -> None:
        with (
            user_writes(self.path),
            atomic_path(self.path) as tmp,
            open(tmp, "w", newline="", encoding="utf-8") as fh,
        ):
            writer = csv.DictWriter(fh, self.columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)

    def close(self) -> None:
        if self._board is not None:
            self._board.close()


def _tensorboard(folder: str | os.PathLike | None):
    if folder is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # TensorBoard is optional (the `tensorboard` extra)
        return None
    return SummaryWriter(str(folder))


def _step(row: dict[str, Any]) -> float:
    value = row.get("step")
    return value if isinstance(value, int | float) else math.inf


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a metrics.csv, numbers parsed (empty cells stay "")."""
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text
