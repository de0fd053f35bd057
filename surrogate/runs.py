"""The run directory of a surrogate fit, and the model files in it.

A run directory holds::

    run.json          config, seed, software versions, data provenance, splits
    metrics.csv       one row per epoch (training loss, validation metrics, lr, time)
    checkpoint.pt     the latest finished epoch: model, optimiser, schedule, history
    best_model.pt     the model of the best validation epoch (what `evaluate` loads)
    result.json       test metrics and timings; written last, marks the run finished
    report/           metrics.json and report.png of the test evaluation
    tensorboard/      event files, when TensorBoard is installed

Every file is written atomically, so a killed run leaves the previous epoch's files.
"""

import os
from pathlib import Path
from typing import Any

import torch

from elmbridge.errors import MissingDataError, UserError
from elmbridge.files import atomic_path, read_json
from elmnet.neuron import ELMConfig, ELMNeuron

RUN_FILE = "run.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_MODEL_FILE = "best_model.pt"
RESULT_FILE = "result.json"
REPORT_DIR = "report"
MODEL_FORMAT = "elmbridge.surrogate-model/1"


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_model(model: ELMNeuron, path: str | os.PathLike, **info: Any) -> None:
    """Write a model file: the ELM configuration, the weights and `info` (epoch, metrics)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch(
        {"format": MODEL_FORMAT, "elm_config": model.config.to_dict(), "state_dict": state, **info},
        path,
    )


def load_model_file(path: str | os.PathLike) -> tuple[ELMNeuron, dict[str, Any]]:
    """The model in a model file (eval mode, CPU) and the file's other entries."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"no model file at {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign or truncated files
        raise UserError(f"{path} is not a readable model file ({err})") from err
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise UserError(f"{path} is not a surrogate model file of this toolkit")
    model = ELMNeuron(ELMConfig.from_dict(blob["elm_config"]))
    model.load_state_dict(blob["state_dict"])
    info = {k: v for k, v in blob.items() if k not in ("state_dict", "format")}
    return model.eval(), info


def is_run_dir(path: str | os.PathLike) -> bool:
    """True if `path` is a run directory (it has a run record)."""
    return (Path(path) / RUN_FILE).is_file()


def read_run(path: str | os.PathLike) -> dict[str, Any]:
    """The run record of a run directory."""
    path = Path(path)
    if not is_run_dir(path):
        raise MissingDataError(f"{path} is not a surrogate run directory (no {RUN_FILE})")
    return read_json(path / RUN_FILE)


def run_result(path: str | os.PathLike) -> dict[str, Any] | None:
    """The final result of a finished run, or None while it is unfinished."""
    file = Path(path) / RESULT_FILE
    return read_json(file) if file.is_file() else None
