"""Point-neuron baselines: the PyTorch twin and the Brian2 equations against closed forms."""

import math

import brian2 as b2
import numpy as np
import pytest
import torch

from elmbridge.errors import UserError
from surrogate.point_neurons import (
    PointNeuron,
    PointNeuronConfig,
    brian2_equations,
    brian2_namespace,
    input_groups,
)


def neuron(kind, substeps=4):
    groups, names = input_groups(["exc", "exc", "inh", "inh"])
    torch.manual_seed(0)
    return PointNeuron(PointNeuronConfig(kind, 4, groups, names, substeps=substeps))


def constant_conductance(model, g_exc):
    """A conductance that does not decay: one kick at t = 0 with τ_g → ∞."""
    with torch.no_grad():
        model.log_tau_g.fill_(math.log(1e12))
        model.v_t.fill_(100.0)  # no spike: the subthreshold solution only
    x = torch.zeros(1, 50, 4)
    x[0, 0, 0] = 1.0
    with torch.no_grad():
        model.log_w[0] = math.log(g_exc)
    return x


def closed_form(t_ms, v0, e_l, tau_m, g, e_syn):
    """τ_m dv/dt = (E_L − v) + g (E − v), g constant: exponential relaxation."""
    v_inf = (e_l + g * e_syn) / (1 + g)
    return v_inf + (v0 - v_inf) * np.exp(-t_ms * (1 + g) / tau_m)


def test_lif_twin_is_exact_at_constant_conductance():
    model = neuron("lif")
    x = constant_conductance(model, g_exc=0.5)
    y, _ = model(x)
    soma = y[0, :, 1].detach().double().numpy() / 0.1 - 67.7
    t = np.arange(1, 51, dtype=np.float64)  # v_free of bin k is v at the end of bin k
    expected = closed_form(t, -75.0, -75.0, 20.0, 0.5, 0.0)
    np.testing.assert_allclose(soma, expected, atol=1e-4)


def test_adex_twin_converges_to_the_closed_form():
    """Subthreshold with a = 0 and V_T far away, AdEx is the LIF; forward Euler's error
    falls with the step."""
    errors = []
    for substeps in (4, 16):
        model = neuron("adex", substeps)
        x = constant_conductance(model, g_exc=0.5)
        with torch.no_grad():
            model.a.fill_(0.0)
        y, _ = model(x)
        soma = y[0, :, 1].detach().double().numpy() / 0.1 - 67.7
        expected = closed_form(np.arange(1, 51.0), -75.0, -75.0, 20.0, 0.5, 0.0)
        errors.append(np.abs(soma - expected).max())
    assert errors[1] < errors[0] / 3 and errors[1] < 0.05


def test_lif_spikes_reset_and_score():
    model = neuron("lif")
    x = torch.zeros(1, 40, 4)
    x[0, :, 0] = 1.0  # strong, steady excitation
    with torch.no_grad():
        model.log_w[0] = math.log(2.0)
    y, (_, v, _) = model(x)
    score = y[0, :, 0]
    assert (score > 0).sum() >= 2  # it crossed V_T more than once: reset works
    assert float(v.detach()) < float(model.v_t.detach())


def test_brian2_equations_match_the_closed_form():
    model = neuron("lif")
    constant_conductance(model, g_exc=0.5)
    b2.start_scope()
    b2.prefs.codegen.target = "numpy"
    ns = brian2_namespace(model)
    group = b2.NeuronGroup(1, brian2_equations("lif", 2), method="exponential_euler", namespace=ns)
    group.v = -75 * b2.mV
    group.g_0 = 0.5
    monitor = b2.StateMonitor(group, "v", record=0, dt=1 * b2.ms)
    b2.run(20 * b2.ms)
    expected = closed_form(monitor.t / b2.ms, -75.0, -75.0, 20.0, 0.5, 0.0)
    np.testing.assert_allclose(monitor.v[0] / b2.mV, expected, atol=1e-3)
    assert "Delta_T * exp" in brian2_equations("adex", 2)


def test_groups_and_bad_configs():
    groups, names = input_groups(
        ["exc", "exc", "exc", "inh"], ["basal", "apical", "apical", "apical"], [50, 200, 900, 900]
    )
    assert [names[g] for g in groups] == ["basal-exc", "apical-exc", "tuft-exc", "tuft-inh"]
    with pytest.raises(UserError, match="unknown point neuron"):
        PointNeuronConfig("hh", 1, (0,), ("all-exc",))
    with pytest.raises(UserError, match="group labels"):
        PointNeuronConfig("lif", 2, (0,), ("all-exc",))


def test_fit_trains_and_evaluates_a_lif_on_a_store(tmp_path):
    """`surrogate.fit --model lif` goes through the same loop, files and evaluation."""
    from toy_cell import make_toy_store

    from surrogate.evaluate import load_model
    from surrogate.fit import fit, preset_config

    store_path = tmp_path / "toy.zarr"
    make_toy_store(store_path, n_sims=4, n_time=1100)
    config = preset_config(data=str(store_path), cell="toy", model="lif", epochs=2,
                           batches_per_epoch=3, batch_size=2, val_fraction=0.25,
                           test_fraction=0.25, max_spikes=1000, lr=1e-2)  # fmt: skip
    result = fit(config, tmp_path / "run", progress=False)
    model, desc = load_model(tmp_path / "run")
    assert isinstance(model, PointNeuron) and desc["model_kind"] == "lif"
    assert result["n_parameters"] == desc["n_parameters"] == 16 + 2 + 5
    assert 0 <= result["test_metrics"]["AUC"] <= 1
    with pytest.raises(UserError, match="ELM neurons only"):
        preset_config(model="adex", init="num_memory_20")
    # The command line knows the option.
    from surrogate.fit import build_parser

    assert build_parser().parse_args(["--model", "adex"]).model == "adex"
