"""The surrogate's model file: an ELM configuration and its weights, nothing executable.

`best.pt` of a fit's run folder (`elmbridge.runs`) is such a file, and so is any model
a user saves with `save_model`. Loading never unpickles (`elmbridge.runs.load_torch`).
"""

import os
from pathlib import Path
from typing import Any

from elmbridge.errors import UserError
from elmbridge.runs import load_torch, save_torch
from elmnet.config import ELMConfig
from elmnet.neuron import ELMNeuron

MODEL_FORMAT = "elmbridge.surrogate-model/1"


def save_model(model: ELMNeuron, path: str | os.PathLike, **info: Any) -> None:
    """Write a model file: the ELM configuration, the weights and `info` (epoch, metrics)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {"format": MODEL_FORMAT, "elm_config": model.config.to_dict(), "state_dict": state}
    save_torch({**blob, **info}, path)


def load_model_file(path: str | os.PathLike) -> tuple[ELMNeuron, dict[str, Any]]:
    """The model in a model file (eval mode, CPU) and the file's other entries."""
    path = Path(path)
    blob = load_torch(path)
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise UserError(f"{path} is not a surrogate model file of this toolkit")
    try:
        model = ELMNeuron(ELMConfig.from_dict(blob["elm_config"]))
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, RuntimeError) as err:
        first = str(err).splitlines()[0][:160]
        raise UserError(
            f"{path}: the weights do not fit the model configuration ({first})"
        ) from err
    info = {k: v for k, v in blob.items() if k not in ("state_dict", "format")}
    return model.eval(), info
