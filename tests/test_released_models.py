"""The published Branch-ELM models load and compute what their equations say."""

import json
import shutil

import pytest
import torch

from elmbridge.errors import MissingDataError, UserError
from elmnet.params import neuron_parameters
from elmnet.reference import reference_forward
from elmnet.released import RELEASED_MODEL_NAMES, fetch_released, load_released
from elmnet.routing import neuronio_routing


def authors_params(folder) -> tuple[dict, dict]:
    """Reference parameters read straight from the authors' files, not via our loader."""
    state = torch.load(folder / "neuronio_best_model_state.pt", map_location="cpu")
    cfg = json.loads((folder / "model_config.json").read_text())
    n_lin = len([k for k in state if k.startswith("mlp.network.") and k.endswith(".weight")])
    params = {
        "theta_s": state["_proto_w_s"],
        "index": state["input_to_synapse_indices"],
        "valid": state["valid_indices_mask"],
        "theta_m": state["_proto_tau_m"],
        "mlp": [
            (state[f"mlp.network.{2 * i}.weight"], state[f"mlp.network.{2 * i}.bias"])
            for i in range(n_lin)
        ],
        "head": (state["w_y.weight"], state["w_y.bias"]),
    }
    scalars = {
        "tau_min": cfg["memory_tau_min"],
        "tau_max": cfg["memory_tau_max"],
        "dt": 1.0,
        "tau_s": float(state["tau_s"][0]),
        "lam": 5.0,
        "activation": cfg.get("mlp_activation", "relu"),
        "d_tree": cfg["num_branch"],
        "dynamics": "v1",
    }
    return params, scalars


def test_every_released_model_loads_with_published_parameter_count(released_models_dir):
    assert len(RELEASED_MODEL_NAMES) == 15
    for name in RELEASED_MODEL_NAMES:
        folder = released_models_dir / name
        model = load_released(folder)
        stats = json.loads((folder / "model_stats.json").read_text())
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert n_params == stats["model_param_count"], name
        assert neuron_parameters(model.config).total == stats["model_param_count"], name
        index, valid = neuronio_routing(1278, 45, 100)
        assert torch.equal(model.syn_index, index) and torch.equal(model.syn_valid, valid)
    assert load_released(released_models_dir / "best_elm_neuron").config.activation == "silu"


@pytest.mark.parametrize("name", ["num_memory_1", "num_memory_20", "best_elm_neuron"])
def test_released_model_computes_the_published_equations(released_models_dir, name):
    folder = released_models_dir / name
    model = load_released(folder).double()
    g = torch.Generator().manual_seed(0)
    spikes = (torch.rand(2, 120, 1278, generator=g) < 0.02).double()
    sign = torch.cat([torch.ones(639), -torch.ones(639)]).double()
    x = spikes * sign  # NeuronIO encoding: +1 excitatory, −1 inhibitory
    y, _ = model(x)
    ref = reference_forward(*authors_params(folder), x)
    torch.testing.assert_close(y, ref, rtol=1e-9, atol=1e-9)


def test_name_lookup_uses_verified_cache(released_models_dir, tmp_path):
    cache = tmp_path / "models"
    shutil.copytree(released_models_dir / "num_memory_5", cache / "num_memory_5")
    assert fetch_released("num_memory_5", cache) == cache / "num_memory_5"
    assert load_released("num_memory_5", cache).config.d_m == 5


def test_bad_sources_are_clear(released_models_dir, tmp_path):
    with pytest.raises(UserError, match="neither a folder nor a released model"):
        load_released("num_memory_21", tmp_path)
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(released_models_dir / "num_memory_1" / "model_config.json", partial)
    with pytest.raises(MissingDataError, match=r"missing neuronio_best_model_state\.pt"):
        load_released(partial)
    corrupt = tmp_path / "num_memory_2"
    shutil.copytree(released_models_dir / "num_memory_2", corrupt)
    (corrupt / "model_config.json").write_text('{"num_memory": 3}')
    with pytest.raises(UserError, match="published checksum"):
        load_released(corrupt)
    # Offline, a name that is not cached cannot be fetched: the error says how to get it.
    with pytest.raises(MissingDataError, match="by hand"):
        fetch_released("num_memory_7", tmp_path / "empty")
