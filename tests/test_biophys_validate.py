"""Validation against Hay et al. 2011 protocols and the published models.

The status and exit-code decision is tested on synthetic values (no NEURON); the cells
themselves at reduced step durations.
"""

import json
import math

import numpy as np
import pytest

from biophys import validate
from biophys.cells import CELL_NAMES

ALL_FEATURES = (*validate.EXPERIMENT, *validate.COUNTS)


def test_ca_spike_is_the_first_excursion_above_threshold():
    t = np.arange(0, 100, 0.025)
    v = np.full_like(t, -70.0)
    v[(t >= 20) & (t < 50)] = -20.0  # 30 ms above -55 mV
    v[(t >= 30) & (t < 31)] = 5.0
    v[(t >= 70) & (t < 75)] = 0.0  # a second, later excursion is ignored
    peak, width = validate.ca_spike(t, v)
    assert peak == 5.0
    assert width == pytest.approx(30.0 - 0.025)
    assert all(math.isnan(x) for x in validate.ca_spike(t, np.full_like(t, -70.0)))


# --- the decision, on synthetic values --------------------------------------------------

# BAC_Ca_spike_peak_mV: experiment 6.73 ± 2.54 mV, so 19.64 mV is z = +5.1 (beyond 5 SD);
# the tolerance is ±1 mV around the published value.
CA = "BAC_Ca_spike_peak_mV"


def test_in_range_is_ok_whatever_the_published_value():
    f = validate.judge_feature(CA, 7.0, published=19.64)
    assert f.status == "ok"
    assert f.matches_published is False  # shown with "*", but no failure
    assert validate.exit_status([f]) == 0


def test_out_of_range_but_as_published_exits_0():
    f = validate.judge_feature(CA, 19.9, published=19.64)
    assert f.z > validate.FAR_SD
    assert (f.status, f.published, f.matches_published) == ("as published", 19.64, True)
    assert validate.exit_status([validate.judge_feature("BAC_Ca_spike_width_ms", 37.0), f]) == 0


def test_out_of_both_exits_1():
    f = validate.judge_feature(CA, 21.0, published=19.64)  # 1.36 mV from published
    assert (f.status, f.matches_published) == ("FAR", False)
    assert validate.exit_status([validate.judge_feature("BAC_Ca_spike_width_ms", 37.0), f]) == 1
    # no published value to fall back on: the experimental criterion alone
    assert validate.judge_feature(CA, 19.9).status == "FAR"


def test_strict_ignores_the_published_value():
    f = validate.judge_feature(CA, 19.64, published=19.64, strict=True)
    assert (f.status, f.matches_published) == ("FAR", True)
    assert validate.exit_status([f]) == 1
    assert validate.judge_feature(CA, 7.0, published=19.64, strict=True).status == "ok"


def test_spike_counts_must_match_exactly():
    assert validate.judge_feature("bAP_somatic_spikes", 2, published=2).status == "as published"
    assert validate.judge_feature("bAP_somatic_spikes", 3, published=2).status == "FAR"
    assert validate.judge_feature("bAP_somatic_spikes", 1, published=2).status == "ok"


@pytest.mark.parametrize(
    ("name", "published", "inside", "outside"),
    [
        ("resting_potential_mV", -81.09, -80.2, -79.9),  # ±1 mV
        ("input_resistance_MOhm", 42.91, 43.7, 43.9),  # ±2 %
        ("step3_mean_frequency_Hz", 22.5, 23.5, 24.0),  # ±5 %
        ("step3_time_to_first_spike_ms", 5.3, 5.55, 5.6),  # ±5 %
        ("step3_ISI_CV", 0.17, 0.186, 0.188),  # ±10 %
    ],
)
def test_tolerance_by_feature_kind(name, published, inside, outside):
    assert validate.within_tolerance(name, inside, published)
    assert not validate.within_tolerance(name, outside, published)
    assert not validate.within_tolerance(name, math.nan, published)


def test_every_feature_has_a_stated_tolerance():
    for name in ALL_FEATURES:
        assert validate.feature_kind(name) in validate.TOLERANCE
        assert validate.judge_feature(name, 0.0).tolerance


def test_published_values_ship_with_the_package_for_every_feature():
    data = validate.published_cells()
    assert data["about"]
    for model in data["models"].values():
        assert set(model["features"]) == set(ALL_FEATURES)
        assert model["source"]
    assert set(data["cells"]) <= set(CELL_NAMES)
    # Hay 2011 is the 34 degC model, NeuronIO the 6.3 degC one (the published table's A, B)
    assert data["models"][data["cells"]["L5PC-hay2011"]]["celsius_degC"] == 34.0
    assert data["models"][data["cells"]["L5PC"]]["celsius_degC"] == 6.3


def test_published_values_only_for_the_published_protocol():
    full = {"settle_ms": 700.0, "step_ms": 2000.0, "dt_ms": 0.025, "celsius_degC": 6.3}
    values, _ = validate.published_values("L5PC", **full)
    assert set(values) == set(ALL_FEATURES)
    assert values["BAC_Ca_spike_peak_mV"] == 19.64
    assert validate.published_values("L5PC-hay2011", **{**full, "celsius_degC": 34.0})[0][
        "BAC_Ca_spike_peak_mV"
    ] == pytest.approx(6.64)
    short, note = validate.published_values("L5PC", **{**full, "step_ms": 300.0})
    assert short and not any(name.startswith("step") for name in short)
    assert "step" in note
    for changed in ({"settle_ms": 200.0}, {"dt_ms": 0.05}, {"celsius_degC": 34.0}):
        assert validate.published_values("L5PC", **{**full, **changed})[0] == {}
    assert validate.published_values("L5PC", **full, is_cell1=False)[0] == {}
    assert validate.published_values("L5PC-passive", **full)[0] == {}


def _synthetic_run(values):
    """A stand-in for `run_validation` that judges fixed values (no NEURON)."""

    def run(cell, *, far_sd, strict, **_):
        published = {CA: 19.64, "bAP_somatic_spikes": 2.0}
        features = [
            validate.judge_feature(name, value, published.get(name), far_sd, strict)
            for name, value in values.items()
        ]
        traces = {"bac_counts": {"paired (BAC)": 3}, "published": "synthetic"}
        return features, traces

    return run


@pytest.mark.parametrize(
    ("ca_peak", "strict", "code"),
    [(7.0, False, 0), (19.9, False, 0), (21.0, False, 1), (19.9, True, 1), (7.0, True, 0)],
)
def test_main_exit_code(ca_peak, strict, code, monkeypatch, tmp_path, capsys):
    values = {CA: ca_peak, "BAC_Ca_spike_width_ms": 37.0, "bAP_somatic_spikes": 1.0}
    monkeypatch.setattr(validate, "run_validation", _synthetic_run(values))
    monkeypatch.setattr(validate, "plot", lambda *a, **k: None)
    args = ["--celsius", "6.3", "--out", str(tmp_path), *(["--strict"] if strict else [])]
    assert validate.main(args) == code
    out, err = capsys.readouterr()
    assert "published" in out.splitlines()[0]
    assert ("FAIL" in err) == bool(code)
    record = json.loads((tmp_path / "validation_L5PC.json").read_text())
    assert record["provenance"]["config"]["strict"] is strict


# --- the cells, at reduced step durations ------------------------------------------------

# Features whose protocols do not depend on the step duration, so that at the published
# 700 ms settle they are compared with the published models even with short steps.
DURATION_FREE = (
    "resting_potential_mV",
    "input_resistance_MOhm",
    "bAP_amplitude_660um_mV",
    "bAP_amplitude_800um_mV",
    "BAC_mean_ISI_ms",
    "BAC_Ca_spike_peak_mV",
    "BAC_Ca_spike_width_ms",
    "bAP_somatic_spikes",
    "BAC_somatic_spikes",
)
# The NeuronIO cell's two far ones come from its Ca2+ hot-zone factor, and the published
# NeuronIO model shows them too (README); Hay's own 2011 set is in range on all of them.
AS_PUBLISHED = {"L5PC": {"BAC_Ca_spike_peak_mV", "bAP_somatic_spikes"}, "L5PC-hay2011": set()}


@pytest.mark.parametrize("cell", ["L5PC", "L5PC-hay2011"])
def test_quick_validation_prints_table_plots_and_status(cell, tmp_path, capsys):
    code = validate.main(["--cell", cell, "--step-ms", "300", "--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    for name in ALL_FEATURES:
        assert name in out
    assert (tmp_path / f"validation_{cell}.png").stat().st_size > 10_000
    record = json.loads((tmp_path / f"validation_{cell}.json").read_text())
    features = {f["name"]: f for f in record["features"]}
    assert record["provenance"]["config"]["step_ms"] == 300
    assert code == (1 if any(f["status"] == "FAR" for f in features.values()) else 0)

    # the duration-free features reproduce the published model, and only the pinned
    # ones need it to pass
    for name in DURATION_FREE:
        assert features[name]["published"] is not None, name
        assert features[name]["matches_published"], (name, features[name])
    as_published = {n for n in DURATION_FREE if features[n]["status"] == "as published"}
    assert as_published == AS_PUBLISHED[cell]
    assert not any(features[n]["status"] == "FAR" for n in DURATION_FREE)
    for name in AS_PUBLISHED[cell]:  # what --strict would make of them
        f = features[name]
        strict = validate.judge_feature(name, f["value"], f["published"], strict=True)
        assert strict.status == "FAR"
    # 300 ms steps are not the published 2 s ones: judged by the experiment alone
    assert all(features[f"step{k}_ISI_CV"]["published"] is None for k in (1, 2, 3))

    # physiology that must hold whatever the tolerance: a resting, excitable L5PC
    assert -90 < features["resting_potential_mV"]["value"] < -60
    assert 20 < features["input_resistance_MOhm"]["value"] < 100
    freqs = [features[f"step{k}_mean_frequency_Hz"]["value"] for k in (1, 2, 3)]
    assert 0 < freqs[0] <= freqs[1] <= freqs[2]
    # BAC firing: the distal EPSP alone does not fire the soma, paired it makes a burst
    counts = record["bac_counts"]
    assert counts["EPSP"] == 0
    assert counts["paired (BAC)"] >= 2
    assert np.isfinite(features["BAC_Ca_spike_width_ms"]["value"])
