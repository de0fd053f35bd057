"""The surrogate's model file: a model's kind, configuration and weights, nothing executable.

`best.pt` of a fit's run folder (`elmbridge.runs`) is such a file, and so is any model
a user saves with `save_model`. Loading never unpickles (`elmbridge.runs.load_torch`).
Kinds: "elm" (`elmnet.ELMNeuron`), "lif" and "adex" (`surrogate.point_neurons`).
"""

import os
from pathlib import Path
from typing import Any

from elmbridge.errors import UserError
from elmbridge.runs import load_torch, save_torch
from elmnet.config import ELMConfig
from elmnet.neuron import ELMNeuron
from elmnet.params import neuron_parameters
from surrogate.point_neurons import PointNeuron, PointNeuronConfig

MODEL_FORMAT = "elmbridge.surrogate-model/1"


def model_kind(model) -> str:
    """ "elm" for an ELM neuron, else the point neuron's kind."""
    return "elm" if isinstance(model, ELMNeuron) else model.config.kind


def build_model(kind: str, config: dict[str, Any]):
    """A fresh model of `kind` from its configuration dict."""
    if kind == "elm":
        return ELMNeuron(ELMConfig.from_dict(config))
    if kind in ("lif", "adex"):
        return PointNeuron(PointNeuronConfig.from_dict(config))
    raise UserError(f"unknown model kind {kind!r} in a model file; known: elm, lif, adex")


def count_parameters(model) -> int:
    """P: the closed form for an ELM neuron, the trainable tensors' sizes otherwise."""
    if isinstance(model, ELMNeuron):
        return neuron_parameters(model.config).total
    return sum(p.numel() for p in model.parameters())


def save_model(model, path: str | os.PathLike, **info: Any) -> None:
    """Write a model file: kind, configuration, weights and `info` (epoch, metrics)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {"format": MODEL_FORMAT, "kind": model_kind(model), "model_config":
            model.config.to_dict(), "state_dict": state}  # fmt: skip
    save_torch({**blob, **info}, path)


def load_model_file(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """The model in a model file (eval mode, CPU) and the file's other entries."""
    path = Path(path)
    blob = load_torch(path)
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise UserError(f"{path} is not a surrogate model file of this toolkit")
    try:
        kind = blob.get("kind", "elm")  # files before point neurons hold ELMs only
        model = build_model(kind, blob.get("model_config", blob.get("elm_config")))
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, RuntimeError) as err:
        first = str(err).splitlines()[0][:160]
        raise UserError(
            f"{path}: the weights do not fit the model configuration ({first})"
        ) from err
    info = {k: v for k, v in blob.items() if k not in ("state_dict", "format", "kind")}
    return model.eval(), info
