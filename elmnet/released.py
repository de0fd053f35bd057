"""The published NeuronIO-trained Branch-ELM models (Spieler et al. 2024, MIT licence).

A released model is a folder with `model_config.json` (the authors' field names) and
`neuronio_best_model_state.pt` (their state dict), plus evaluation files. This module
translates both into an `ELMNeuron` that computes what the published model computes.

All 15 models ship with the toolkit as package data (`elmnet/data/released_models/`,
with their licence and SOURCES.md), so looking one up by name works offline. A name is
looked for, in order: in a models folder the caller names; in the packaged copy; in the
user cache; and last it is downloaded from the public repository into that folder or
the cache (kept for newer releases and trimmed installs). Every copy found by name is
verified against the checksums in `released_models.json`.
"""

import importlib.resources
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from elmbridge.download import cache_dir, fetch, verify
from elmbridge.errors import MissingDataError, UserError
from elmbridge.runs import load_torch
from elmnet.neuron import ELMConfig, ELMNeuron

log = logging.getLogger(__name__)

MANIFEST: dict[str, Any] = json.loads(
    Path(__file__).with_name("released_models.json").read_text(encoding="utf-8")
)
RELEASED_MODEL_NAMES: tuple[str, ...] = tuple(sorted(MANIFEST["files"]))
CONFIG_FILE = "model_config.json"
STATE_FILE = "neuronio_best_model_state.pt"
# Package data of `elmnet` (listed in pyproject.toml so that every install ships it).
PACKAGED_RELPATH = ("data", "released_models")
USER_CACHE_FOLDER = "released-models"

# The authors' configuration fields and ours.
_CONFIG_FIELDS = {
    "num_input": "d_in",
    "num_output": "d_out",
    "num_memory": "d_m",
    "num_branch": "d_tree",
    "num_synapse_per_branch": "d_brch",
    "memory_tau_min": "tau_min",
    "memory_tau_max": "tau_max",
    "learn_memory_tau": "learn_tau_m",
    "mlp_activation": "activation",
    "mlp_num_layers": "n_mlp_layers",
    "mlp_hidden_size": "d_mlp",
    "lambda_value": "lam",
    "tau_s_value": "tau_s",
    "w_s_value": "w_s_init",
    "delta_t": "dt",
    "input_to_synapse_routing": "routing",
}
_ROUTINGS = {"neuronio_routing": "neuronio", "random_routing": "random", None: "none"}
_STATE_KEYS = {
    "_proto_w_s": "theta_s",
    "_proto_tau_m": "theta_m",
    "input_to_synapse_indices": "syn_index",
    "valid_indices_mask": "syn_valid",
    "w_y.weight": "head.weight",
    "w_y.bias": "head.bias",
}


def config_from_released(fields: dict[str, Any], tau_s: float | None = None) -> ELMConfig:
    """Our `ELMConfig` for the authors' `model_config.json` fields (all use v1 dynamics)."""
    unknown = sorted(set(fields) - set(_CONFIG_FIELDS))
    if unknown:
        raise UserError(
            f"released model configuration has fields this loader does not know: {unknown}; "
            "loading it could silently change what the model computes"
        )
    values = {
        _CONFIG_FIELDS[k]: v
        for k, v in fields.items()
        if v is not None or k == "input_to_synapse_routing"
    }
    routing = values.get("routing")
    if routing not in _ROUTINGS:
        raise UserError(f"released model has unknown routing {routing!r}")
    values["routing"] = _ROUTINGS[routing]
    if tau_s is not None:
        values["tau_s"] = tau_s
    return ELMConfig(dynamics="v1", **values)


def state_from_released(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the authors' state-dict entries to ours (`tau_s` goes into the config)."""
    ours = {}
    for key, value in state.items():
        if key == "tau_s":
            continue
        if key in _STATE_KEYS:
            ours[_STATE_KEYS[key]] = value
        elif key.startswith("mlp.network."):
            ours["mlp." + key.removeprefix("mlp.network.")] = value
        else:
            raise UserError(f"released state dict has an unexpected entry {key!r}")
    if "syn_valid" in ours:
        ours["syn_valid"] = ours["syn_valid"].bool()
    return ours


def _uniform_tau_s(state: dict[str, torch.Tensor]) -> float | None:
    tau_s = state.get("tau_s")
    if tau_s is None:
        return None
    if not torch.all(tau_s == tau_s.flatten()[0]):
        raise UserError(
            "released model has per-synapse time constants tau_s that differ; this "
            "implementation sums synapse traces per branch and needs one tau_s"
        )
    return float(tau_s.flatten()[0])


def packaged_models_dir() -> Path | None:
    """The folder of released models shipped inside the `elmnet` package.

    None when the installation lacks it, or when the package is not a plain folder on
    disk (a zipped install): look-ups then go on to the user cache and the download.
    """
    resource = importlib.resources.files("elmnet").joinpath(*PACKAGED_RELPATH)
    if isinstance(resource, Path) and resource.is_dir():
        return resource
    return None


def is_verified_release(folder: str | os.PathLike, name: str) -> bool:
    """True if `folder` holds every file of the released model `name` with its checksum."""
    folder = Path(folder)
    return all(verify(folder / file, sha256) for file, sha256 in MANIFEST["files"][name].items())


def _check_name(name: str) -> None:
    if name not in MANIFEST["files"]:
        raise UserError(
            f"no released model called {name!r}; choose one of {', '.join(RELEASED_MODEL_NAMES)}"
        )


def fetch_released(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Folder of the released model `name` in `cache`, downloaded and verified when needed.

    This is the last step of `find_released`; it never looks at the packaged copy.

    Args:
        name: one of `RELEASED_MODEL_NAMES`, e.g. "num_memory_20".
        cache: folder holding one sub-folder per model (default: the user cache).

    Raises:
        MissingDataError: a file is missing and cannot be downloaded (offline); the
            message says where to put it by hand.
    """
    _check_name(name)
    folder = Path(cache) / name if cache is not None else cache_dir(USER_CACHE_FOLDER, name)
    base = (
        f"https://raw.githubusercontent.com/{MANIFEST['repository']}/{MANIFEST['commit']}/"
        f"{MANIFEST['path']}/{name}"
    )
    for file, sha256 in MANIFEST["files"][name].items():
        fetch(f"{base}/{file}", folder / file, sha256, what=f"released model {name}/{file}")
    return folder


def find_released(name: str, models_dir: str | os.PathLike | None = None) -> Path:
    """Folder of the released model `name`, verified against the published checksums.

    Looked for in `models_dir`, then in the packaged copy, then in the user cache; only
    when none holds a verified copy is it downloaded (into `models_dir` when given, else
    into the user cache).

    Args:
        name: one of `RELEASED_MODEL_NAMES`, e.g. "num_memory_20".
        models_dir: a folder holding one sub-folder per model, e.g. a checkout's copy.

    Raises:
        UserError: `name` is not a released model.
        MissingDataError: no verified copy anywhere and the download failed.
    """
    _check_name(name)
    # Callables, so that the user cache is only created (in $HOME, which may be read-only)
    # when the earlier places do not have the model.
    places = (
        (lambda: None if models_dir is None else Path(models_dir), "the models folder given"),
        (packaged_models_dir, "the copy packaged with elmnet"),
        (lambda: cache_dir(USER_CACHE_FOLDER), "the user cache"),
    )
    for place, where in places:
        base = place()
        if base is None or not (base / name).is_dir():
            continue
        if is_verified_release(base / name, name):
            return base / name
        # A damaged copy must not be used; a later place (or the download) can stand in.
        log.warning(
            "%s (%s) does not match the published checksums of %s; ignoring it",
            base / name,
            where,
            name,
        )
    return fetch_released(name, models_dir)


def resolve_released(source: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """A released-model folder from a path, or from a model name (`find_released`).

    Args:
        source: a folder, used as given, or a name such as "num_memory_20".
        cache: a models folder to look in first for names (see `find_released`).
    """
    path = Path(source)
    if path.is_dir():
        return path
    if str(source) in MANIFEST["files"]:
        return find_released(str(source), cache)
    raise UserError(
        f"{source!r} is neither a folder nor a released model name; names: "
        f"{', '.join(RELEASED_MODEL_NAMES)}"
    )


def load_released(source: str | os.PathLike, cache: str | os.PathLike | None = None) -> ELMNeuron:
    """Build our ELM neuron from a released model and load its weights.

    Args:
        source: a released-model folder, or a name such as "num_memory_20" (looked up in
            `cache`, then the packaged copy, the user cache, and downloaded last).
        cache: a folder of released models to look in first for names.

    Returns:
        The neuron in eval mode, float32, on the CPU.
    """
    folder = resolve_released(source, cache)
    missing = [f for f in (CONFIG_FILE, STATE_FILE) if not (folder / f).is_file()]
    if missing:
        raise MissingDataError(
            f"{folder} is not a complete released model: missing {', '.join(missing)}. "
            f"A model folder holds {CONFIG_FILE} and {STATE_FILE}."
        )
    name = folder.name
    if name in MANIFEST["files"]:
        for file in (CONFIG_FILE, STATE_FILE):
            if not verify(folder / file, MANIFEST["files"][name][file]):
                raise UserError(
                    f"{folder / file} does not match the published checksum of {name}; "
                    "the file is corrupted or from another release"
                )
    fields = _read_json(folder / CONFIG_FILE)
    if not isinstance(fields, dict):
        raise UserError(f"{folder / CONFIG_FILE} is not a model configuration (a JSON object)")
    state = load_torch(folder / STATE_FILE)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{folder / STATE_FILE} is not a state dict of tensors")
    try:
        config = config_from_released(fields, tau_s=_uniform_tau_s(state))
        model = ELMNeuron(config)
        model.load_state_dict(state_from_released(state), strict=True)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else repr(err)
        raise UserError(f"the weights in {folder} do not fit its configuration: {first}") from err
    return model.eval()


def _read_json(path: Path) -> Any:
    """A JSON file of a model folder; a damaged one is one clear line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({type(err).__name__}); the folder is "
                        "damaged or not a released model") from err  # fmt: skip


def released_metadata(folder: str | os.PathLike) -> dict[str, Any]:
    """The evaluation, statistics and training files of a released model, when present."""
    folder = Path(folder)
    out = {}
    for stem in ("eval_results", "model_stats", "train_config"):
        file = folder / f"{stem}.json"
        if file.is_file():
            out[stem] = _read_json(file)
    return out
