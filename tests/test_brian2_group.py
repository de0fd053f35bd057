"""ELM surrogates inside Brian2: the bridge computes what the surrogate computes alone."""

import brian2 as b2
import numpy as np
import pytest
import torch

from elmbridge.errors import UserError
from elmnet.config import ELMConfig
from elmnet.neuron import ELMNeuron
from surrogate.brian2_group import SurrogateGroup, SurrogateStepper, neuronio_signs, spike_draws


@pytest.fixture
def toy_model():
    torch.manual_seed(0)
    model = ELMNeuron(ELMConfig(d_in=16, d_m=4, d_tree=4, d_brch=4, routing="neuronio"))
    with torch.no_grad():
        model.head.bias[0] = -1.0  # spike probabilities around 0.25: plenty of spikes
    return model


def run_bridge(model, spikes, dt_ms, rule="sample", seed=3):
    """Drive a SurrogateGroup with `spikes` (n, d_in, T) through Brian2 Synapses."""
    n, _, n_ms = spikes.shape
    b2.start_scope()
    b2.defaultclock.dt = dt_ms * b2.ms
    group = SurrogateGroup(n, model, rule=rule, threshold=0.28, seed=seed)
    neuron, channel, t = np.nonzero(spikes)
    source = b2.SpikeGeneratorGroup(len(t), np.arange(len(t)), t * b2.ms)
    synapses = b2.Synapses(source, group.inputs, on_pre="count_post += 1")
    synapses.connect(i=np.arange(len(t)), j=group.channel(neuron, channel))
    state = b2.StateMonitor(group.neurons, ["p_spike", "v"], record=True, dt=1 * b2.ms, when="end")
    fired = b2.SpikeMonitor(group.neurons)
    network = b2.Network(group, source, synapses, state, fired)
    network.run((n_ms + 1) * b2.ms, namespace={})
    trains = fired.spike_trains()
    times = [np.round(trains[i] / b2.ms).astype(int) for i in range(n)]
    return state.p_spike[:, 1 : n_ms + 1].T, state.v[:, 1 : n_ms + 1].T / b2.mV, times


def run_alone(model, spikes, rule="sample", seed=3):
    n, d_in, n_ms = spikes.shape
    stepper = SurrogateStepper(model, n, neuronio_signs(d_in))
    rng = np.random.default_rng(seed)
    ps, vs, fires = [], [], []
    for t in range(n_ms):
        p, v = stepper.step(spikes[:, :, t].astype(np.float32))
        ps.append(p), vs.append(v), fires.append(spike_draws(p, rng, rule, 0.28))
    fires = np.array(fires)
    # A spike for bin t leaves the group at the start of millisecond t + 1.
    return np.array(ps), np.array(vs), [np.flatnonzero(fires[:, i]) + 1 for i in range(n)]


@pytest.mark.parametrize(("dt_ms", "rule"), [(1.0, "sample"), (0.25, "sample"), (1.0, "threshold")])
def test_bridge_equals_the_surrogate_alone(toy_model, dt_ms, rule):
    b2.prefs.codegen.target = "numpy"
    rng = np.random.default_rng(1)
    spikes = rng.random((3, 16, 60)) < 0.15
    p, v, times = run_bridge(toy_model, spikes, dt_ms, rule)
    p_alone, v_alone, times_alone = run_alone(toy_model, spikes, rule)
    np.testing.assert_array_equal(p, p_alone)
    np.testing.assert_allclose(v, v_alone, rtol=1e-12)
    assert sum(len(t) for t in times) > 10  # the comparison covers real spikes
    for a, b in zip(times, times_alone, strict=True):
        np.testing.assert_array_equal(a, b)
    # Stepping one millisecond at a time is the whole-sequence forward pass.
    x = torch.from_numpy((spikes.transpose(0, 2, 1) * neuronio_signs(16)).astype(np.float32))
    with torch.no_grad():
        whole = torch.sigmoid(toy_model(x)[0][..., 0]).double().numpy().T
    np.testing.assert_allclose(p, whole, atol=1e-6)


def test_background_rates_and_bad_options(toy_model):
    group = SurrogateGroup(2, toy_model, background_hz=(5.0, 10.0))
    assert group.background_per_ms[:8] == pytest.approx(0.005)
    assert group.background_per_ms[8:] == pytest.approx(0.010)
    with pytest.raises(UserError, match="at least one neuron"):
        SurrogateGroup(0, toy_model)
    with pytest.raises(UserError, match="rule"):
        SurrogateGroup(1, toy_model, rule="max")
    with pytest.raises(UserError, match="background_hz"):
        SurrogateGroup(1, toy_model, background_hz=-1.0)
    with pytest.raises(UserError, match=r"channel in \[0, 16\)"):
        group.channel(0, 16)


def test_circuit_demo_runs_and_replays_in_neuron(tmp_path, released_models_dir):
    """A tiny circuit end to end: raster, rates, speed and the NEURON replay."""
    import json

    from surrogate import circuit_demo

    out = tmp_path / "circuit"
    args = ["--model", str(released_models_dir / "num_memory_20"), "--n-pc", "3", "--n-int",
            "2", "--duration-ms", "40", "--validate-cells", "1", "--draws", "3",
            "--codegen", "numpy", "--out", str(out)]  # fmt: skip
    assert circuit_demo.main(args) == 0
    result = json.loads((out / "circuit.json").read_text())
    assert (out / "circuit.png").stat().st_size > 10_000
    assert result["surrogate_neuron_s_per_s"] > 0 and result["neuron_cost_s_per_cell_s"] > 0
    (row,) = result["validation"]
    assert row["NEURON_rate_Hz"] >= 0 and row["surrogate_rate_Hz"] >= 0
    with pytest.raises(UserError, match="validate-cells"):
        circuit_demo.main([*args[:-2], "--out", str(tmp_path / "x"), "--validate-cells", "9"])
    assert not (tmp_path / "x").exists()
