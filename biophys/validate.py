"""Does the built cell behave like a layer-5b pyramidal neuron? Hay et al. 2011 protocols.

``python -m biophys.validate --cell L5PC`` measures, with somatic and dendritic current
injection (no synaptic input):

- resting potential and input resistance (-0.1 nA step);
- the f-I curve for 2 s somatic steps, with spike frequency, time to first spike, AP
  height and ISI CV at Hay's three step amplitudes (0.619, 0.793, 1.507 nA);
- back-propagating AP attenuation along the apical trunk after a 5 ms, 1.9 nA somatic
  pulse, with the amplitude at 660 and 800 µm;
- BAC firing: the somatic pulse followed 5 ms later by an EPSP-shaped current (0.5 nA
  peak, rise 0.5 ms, decay 5 ms) at 620 µm. Paired, they trigger a dendritic Ca2+ spike
  and a burst; each alone does not.

It prints each value next to the experimental mean ± SD, its z-score and the value of
the published model that the cell restates (`published_values`), saves plots and a JSON
record, and sets the exit status (`exit_status`):

- a feature within `FAR_SD` standard deviations of the experimental mean (a spike count:
  within its allowed difference) is "ok" (|z| <= 2) or "near";
- a feature beyond that, but within `TOLERANCE` of the published model's own value, is
  "as published": the original model deviates there too, so ours is a faithful
  restatement, not a regression;
- a feature that departs from both is "FAR", and the command exits with status 1.
  ``--strict`` judges by the experimental ranges alone (no "as published").

Every protocol follows the published runs (`biophys/data/published_cells.json`): fixed
steps of 0.025 ms from ``finitialize(v_init)``, stimuli starting after a 700 ms settle.
A published value is compared only when the run repeats its protocol (cell1.asc, the
cell's own temperature, dt, settle and, for the step features, 2 s steps).

Experimental values (mean, SD):
- Hay et al. 2011 (PLoS Comput Biol 7:e1002107), the feature statistics they fitted to,
  as tabulated in the public Hay specification of the in_silico_framework
  (biophysics_fitting/hay_specification.py) and, for the bAP, in BluePyOpt's L5PC example
  (examples/l5pc/config/features.json, recordings at 660 and 800 µm).
- Resting potential and input resistance of L5b pyramidal cells of rat barrel cortex:
  Tanaka et al. 2011, J Neurosci 31:18223, Table 3 (n = 5), via NeuroElectro.
Dendritic sites follow Hay's rule: at a given path distance, the thickest apical branch.
"""

import argparse
import functools
import gc
import importlib.resources
import json
import logging
import math
import sys
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biophys.cells import CELL_NAMES, get_model
from biophys.morphology import find_morphology
from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.files import atomic_path, check_output_dir, write_json
from elmbridge.provenance import run_record

log = logging.getLogger(__name__)

FAR_SD = 5.0  # a feature this many SDs from the experimental mean fails the validation
HAY = "Hay et al. 2011"
TANAKA = "Tanaka et al. 2011 (L5b)"
STEP_AMPS_NA = (0.619, 0.793, 1.507)
FI_AMPS_NA = (0.2, 0.4, 0.619, 0.793, 1.0, 1.2, 1.507)
BAP_SITES_UM = (660.0, 800.0)
BAC_SITE_UM = 620.0
PULSE = {"amp_nA": 1.9, "dur_ms": 5.0}
EPSP = {"imax_nA": 0.5, "tau_rise_ms": 0.5, "tau_decay_ms": 5.0, "delay_ms": 5.0}
CA_THRESHOLD_MV = -55.0  # Hay et al.: a dendritic Ca2+ spike is the time above -55 mV
EXPERIMENT = {
    "resting_potential_mV": (-64.8, 8.7, TANAKA),
    "input_resistance_MOhm": (48.7, 29.5, TANAKA),
    "step1_mean_frequency_Hz": (9.0, 0.88, HAY),
    "step2_mean_frequency_Hz": (14.5, 0.56, HAY),
    "step3_mean_frequency_Hz": (22.5, 2.2222, HAY),
    "step1_time_to_first_spike_ms": (43.25, 7.32, HAY),
    "step2_time_to_first_spike_ms": (19.125, 7.31, HAY),
    "step3_time_to_first_spike_ms": (7.25, 1.0, HAY),
    "step1_AP_height_mV": (26.2274, 4.9703, HAY),
    "step2_AP_height_mV": (16.5209, 6.1127, HAY),
    "step3_AP_height_mV": (16.4368, 6.9322, HAY),
    "step1_ISI_CV": (0.1204, 0.0321, HAY),
    "step2_ISI_CV": (0.1083, 0.0368, HAY),
    "step3_ISI_CV": (0.0954, 0.014, HAY),
    "bAP_amplitude_660um_mV": (45.0, 10.0, HAY),
    "bAP_amplitude_800um_mV": (36.0, 9.33, HAY),
    "BAC_mean_ISI_ms": (9.901, 0.8517, HAY),
    "BAC_Ca_spike_peak_mV": (6.73, 2.54, HAY),
    "BAC_Ca_spike_width_ms": (37.43, 1.27, HAY),
}
# Spike counts: experimental value, allowed difference.
COUNTS = {
    "bAP_somatic_spikes": (1, 0, HAY),
    "BAC_somatic_spikes": (3, 1, HAY),
}

# How far our value may lie from the published model's own value and still count as
# "as published": kind -> (mode, amount, why). The published values come from the same
# equations, parameters, protocol and dt in NEURON 9, so what may be left between the
# two is numerical: NEURON's Import3d of cell1.asc and Hay's hoc distance loops against
# our reader and loops, the order of floating-point sums (another NEURON build or
# machine), and the rounding of the published table (0.01-0.1 mV, 0.1 ms, 0.001 CV).
# Such differences shift spike times by a fraction of dt, which over a 2 s step can move
# a spike across the step end, and move sampled peaks by tenths of a mV. The amounts
# cover that and no more: a changed parameter or protocol moves these features by more.
# Observed on cell1.asc in NEURON 9: every feature of both cells lies within 5 % of its
# tolerance, at the rounding of the table; a feature close to its tolerance is news.
TOLERANCE: dict[str, tuple[str, float, str]] = {
    "mV": (
        "abs",
        1.0,
        "potentials and peaks: a sampled peak moves by tenths of a mV when spikes shift "
        "by a fraction of dt; the Ca2+ peak, the most sensitive, moves 1.3 mV with CVode",
    ),
    "MOhm": ("rel", 0.02, "input resistance: passive, set by the imported segment areas"),
    "Hz": ("rel", 0.05, "a 2 s step: one spike more or less at the step end (0.5 Hz at 10 Hz)"),
    "ms": (
        "rel",
        0.05,
        "latencies, ISIs and widths: rounding to 0.1 ms and spike times that drift by a few dt",
    ),
    "CV": ("rel", 0.10, "ISI CV: a ratio of ISI statistics that amplifies small ISI shifts"),
    "count": ("abs", 0.0, "spike counts: exact, a count is not a numerical detail"),
}


def feature_kind(name: str) -> str:
    """The `TOLERANCE` kind of a feature, from its name (units suffix or spike count)."""
    if name in COUNTS:
        return "count"
    if name.endswith("ISI_CV"):
        return "CV"
    for unit in ("mV", "MOhm", "Hz", "ms"):
        if name.endswith(f"_{unit}"):
            return unit
    raise ValueError(f"feature {name!r} has no tolerance kind")


def tolerance_text(kind: str) -> str:
    """A tolerance for the table and the help text, e.g. "±1 mV", "±5 %", "exact"."""
    mode, amount, _ = TOLERANCE[kind]
    if kind == "count":
        return "exact"
    return f"±{amount * 100:g} %" if mode == "rel" else f"±{amount:g} {kind}"


def within_tolerance(name: str, value: float, published: float) -> bool:
    """True when `value` lies within the `TOLERANCE` of its kind around `published`."""
    if not (math.isfinite(value) and math.isfinite(published)):
        return False
    mode, amount, _ = TOLERANCE[feature_kind(name)]
    allowed = amount * abs(published) if mode == "rel" else amount
    return abs(value - published) <= allowed + 1e-9  # 1e-9: exact counts compare as floats


PUBLISHED_FILE = "published_cells.json"
STEP_FEATURE_PREFIX = "step"  # features of the 2 s current steps


@functools.cache
def published_cells() -> dict[str, Any]:
    """The published models' feature values shipped with the package (see "about")."""
    text = importlib.resources.files("biophys").joinpath("data", PUBLISHED_FILE).read_text()
    return json.loads(text)


def published_values(
    cell: str,
    *,
    settle_ms: float,
    step_ms: float,
    dt_ms: float,
    celsius_degC: float,
    is_cell1: bool = True,
) -> tuple[dict[str, float], str]:
    """The published model's values that a run with these settings can be compared with.

    Returns ({feature: value}, note). A value is left out when the run does not repeat
    the published protocol (the note says why): another morphology than cell1.asc, a
    temperature (degC), dt or settle (ms) other than the published run's, or, for the
    step features only, steps other than 2 s. Cells without a published model (e.g.
    L5PC-passive) get no values.
    """
    data = published_cells()
    key = data["cells"].get(cell)
    if key is None:
        return {}, f"{cell} has no published model"
    model, run = data["models"][key], data["run"]
    label = model["source"].split(":")[0]  # e.g. "Hay et al. 2011, ModelDB 139653"
    if not is_cell1:
        return {}, f"{label} is for {run['morphology']}"
    for what, ours, theirs in (
        ("celsius", celsius_degC, model["celsius_degC"]),
        ("dt_ms", dt_ms, run["dt_ms"]),
        ("settle_ms", settle_ms, run["settle_ms"]),
    ):
        if not math.isclose(ours, theirs):
            return {}, f"{label} not compared: {what} {ours:g}, the published run used {theirs:g}"
    values = {k: float(v) for k, v in model["features"].items()}
    if not math.isclose(step_ms, run["step_ms"]):
        values = {k: v for k, v in values.items() if not k.startswith(STEP_FEATURE_PREFIX)}
        return values, f"{label}; step features not compared ({step_ms:g} ms steps, not 2 s)"
    return values, label


@dataclass
class Feature:
    """One measured feature next to its experimental reference and its published value.

    status: "ok" (|z| <= 2), "near" (<= far_sd), "as published" (beyond far_sd but
    within `tolerance` of `published`), "FAR" (beyond both), or "n/a" (not measurable).
    published: the published model's value, None when no comparable run exists.
    matches_published: whether value lies within `tolerance` of it (None: no value).
    """

    name: str
    value: float
    mean: float
    sd: float | None
    source: str
    z: float | None
    status: str
    published: float | None = None
    tolerance: str = ""
    matches_published: bool | None = None


def judge_feature(
    name: str,
    value: float,
    published: float | None = None,
    far_sd: float = FAR_SD,
    strict: bool = False,
) -> Feature:
    """Judge one feature value against the experiment and, unless `strict`, the published
    model's value (see `Feature.status`)."""
    kind = feature_kind(name)
    matches = None if published is None else within_tolerance(name, value, published)
    extra = {
        "published": published,
        "tolerance": tolerance_text(kind),
        "matches_published": matches,
    }
    if name in COUNTS:
        expected, slack, source = COUNTS[name]
        ok = math.isfinite(value) and abs(value - expected) <= slack
        status = "ok" if ok else "as published" if matches and not strict else "FAR"
        return Feature(name, value, expected, None, source, None, status, **extra)
    mean, sd, source = EXPERIMENT[name]
    if not math.isfinite(value):
        return Feature(name, value, mean, sd, source, None, "n/a", **extra)
    z = (value - mean) / sd
    if abs(z) <= 2:
        status = "ok"
    elif abs(z) <= far_sd:
        status = "near"
    else:
        status = "as published" if matches and not strict else "FAR"
    return Feature(name, value, mean, sd, source, z, status, **extra)


def exit_status(features: list[Feature]) -> int:
    """1 when any feature is "FAR" (departs from the experiment and the published model)."""
    return 1 if any(f.status == "FAR" for f in features) else 0


LEAD_MS = 10.0  # each protocol starts this long before its stimulus: the pre-stimulus baseline


class _Bench:
    """Current-clamp protocols on the process's built cell (its synapses stay silent).

    As in the published runs, the cell rests from ``finitialize(v_init)`` with fixed
    steps of `dt_ms` (no CVode) and every stimulus starts at `settle_ms`. That matters at
    the published values' precision: with a CVode settle and the steps starting 100 ms
    later, the NeuronIO cell's 0.619 nA ISI CV was 0.127 instead of the published 0.133
    and its latencies 0.1 ms longer. The state `LEAD_MS` before the onset is saved once
    and every protocol starts from it. One IClamp at the soma and one EPSP-shaped current
    at the BAC site serve every protocol, so that the saved state always fits the model.
    """

    def __init__(self, cell: str, morphology_path: str | None, dt_ms: float, settle_ms: float):
        from neuron import h

        self.h = h
        self.model = get_model(cell, morphology_path)
        self.dt = dt_ms
        self.onset = settle_ms  # absolute time of every stimulus onset, ms
        self.soma = self.model.cell.soma[0](0.5)
        sec, x = self.model.cell.site(BAC_SITE_UM)
        self.dend = sec(x)
        self.soma_clamp = h.IClamp(self.soma)
        self.soma_clamp.delay, self.soma_clamp.dur, self.soma_clamp.amp = 0.0, 0.0, 0.0
        self.epsp = h.EpspClamp(self.dend)
        self.epsp.tau_r, self.epsp.tau_d = EPSP["tau_rise_ms"], EPSP["tau_decay_ms"]
        self.epsp.imax = EPSP["imax_nA"]
        self.epsp.onset = 1e9
        for syn in self.model.synapses:  # a previous simulate() may have left p < 1
            syn.p_release = 1.0
        h.celsius = self.model.params["celsius_degC"]
        h.CVode().active(0)
        h.dt = dt_ms
        # SaveState.restore needs the same sections as at save: let dead ones go first
        gc.collect()
        h.finitialize(self.model.params["v_init_mV"])
        h.continuerun(settle_ms - LEAD_MS)
        self.state = h.SaveState()
        self.state.save()

    def run(self, duration_ms, pulse=None, epsp_onset_ms=None, record=()):
        """Simulate from `LEAD_MS` before the stimulus onset to `duration_ms` after it.

        pulse: (duration ms, amplitude nA) of a somatic current step at the onset.
        epsp_onset_ms: onset of Hay's EPSP-shaped current at the BAC site after the
            stimulus onset, if any.
        record: segments whose voltage to return besides the soma.

        Returns the time (ms, 0 = the stimulus onset) and the voltages (mV).
        """
        h = self.h
        h.dt = self.dt
        h.CVode().active(0)
        dur, amp = pulse if pulse is not None else (0.0, 0.0)
        c = self.soma_clamp
        c.delay, c.dur, c.amp = self.onset, dur, amp
        self.epsp.onset = 1e9 if epsp_onset_ms is None else self.onset + epsp_onset_ms
        t_vec = h.Vector().record(h._ref_t)
        v_vecs = [h.Vector().record(seg._ref_v) for seg in (self.soma, *record)]
        h.finitialize(self.model.params["v_init_mV"])
        self.state.restore()
        h.frecord_init()  # restart recording at the restored time
        h.continuerun(self.onset + duration_ms)
        t = t_vec.as_numpy().copy() - self.onset
        return t, [v.as_numpy().copy() for v in v_vecs]


def _efel_values(t, v, start, end, feature) -> np.ndarray:
    """An eFEL feature of a trace (spikes detected at -20 mV, eFEL's default)."""
    import efel

    efel.set_setting("Threshold", -20.0)
    trace = {"T": t, "V": v, "stim_start": [start], "stim_end": [end]}
    values = efel.get_feature_values([trace], [feature], raise_warnings=False)[0][feature]
    return np.zeros(0) if values is None else np.asarray(values, dtype=float)


def _spike_times(t, v, start, end) -> np.ndarray:
    return _efel_values(t, v, start, end, "peak_time")


def _efel_mean(t, v, start, end, feature) -> float:
    values = _efel_values(t, v, start, end, feature)
    return float(values.mean()) if values.size else float("nan")


def ca_spike(t: np.ndarray, v_dend: np.ndarray) -> tuple[float, float]:
    """Peak (mV) and width (ms) of the first dendritic Ca2+ spike in a trace.

    Hay et al.'s definitions: the spike is the first excursion of the dendritic voltage
    above `CA_THRESHOLD_MV`; its width is the time spent above it, its peak the maximum
    reached meanwhile. NaN and NaN when the threshold is never crossed.
    """
    above = np.concatenate([[False], v_dend > CA_THRESHOLD_MV, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    if edges.size == 0:
        return float("nan"), float("nan")
    start, stop = edges[0], edges[1]
    return float(v_dend[start:stop].max()), float(t[stop - 1] - t[start])


def run_validation(
    cell: str = "L5PC",
    *,
    settle_ms: float = 700.0,
    step_ms: float = 2000.0,
    fi_amps_nA: tuple[float, ...] = FI_AMPS_NA,
    dt_ms: float = 0.025,
    morphology_path: str | None = None,
    celsius_degC: float | None = None,
    far_sd: float = FAR_SD,
    strict: bool = False,
):
    """Run all protocols. Returns (features, traces): a list of `Feature` and plot data.

    `settle_ms`: rest before every stimulus; `step_ms`: duration of the current steps;
    `dt_ms`: the fixed time step. `celsius_degC` overrides the cell's temperature (which
    only sets the Ca2+ Nernst potential); `far_sd` is the distance from the experimental
    mean, in SDs, beyond which a feature fails unless it is as published (`strict`:
    fails regardless). ``traces["published"]`` says which published model was compared
    and what was left out.
    """
    if settle_ms < 100 or step_ms < 200:
        raise UserError("settle_ms must be >= 100 and step_ms >= 200 for meaningful features")
    params = get_model(cell, morphology_path).params
    original = params["celsius_degC"]
    if celsius_degC is not None:
        params["celsius_degC"] = celsius_degC
    try:
        bench = _Bench(cell, morphology_path, dt_ms, settle_ms)
        values, traces = _run_protocols(bench, step_ms, fi_amps_nA)
        celsius = params["celsius_degC"]
    finally:
        params["celsius_degC"] = original
    published, note = published_values(
        cell,
        settle_ms=settle_ms,
        step_ms=step_ms,
        dt_ms=dt_ms,
        celsius_degC=celsius,
        is_cell1=find_morphology(morphology_path).is_cell1,
    )
    traces["published"] = note
    features = [
        judge_feature(name, values[name], published.get(name), far_sd, strict)
        for name in (*EXPERIMENT, *COUNTS)
    ]
    return features, traces


BAP_WINDOW_MS = 50.0  # bAP amplitude: the maximum within 50 ms of the pulse onset
BAC_WINDOW_MS = 300.0  # BAC: somatic spikes within 300 ms of the pulse onset (published runs)
BAC_PLOT_MS = 150.0  # the burst and the Ca2+ spike are over by then
RIN_STEP = {"amp_nA": -0.1, "dur_ms": 400.0}


def _run_protocols(bench: _Bench, step_ms: float, fi_amps_nA):
    values, traces = {}, {}

    t, (v,) = bench.run(RIN_STEP["dur_ms"] + 10.0, pulse=(RIN_STEP["dur_ms"], RIN_STEP["amp_nA"]))
    before = t < -bench.dt / 2  # t is a float sum of dt: half a step apart from the onset
    values["resting_potential_mV"] = float(v[before][-1])  # the last sample before the onset
    end = RIN_STEP["dur_ms"]
    v_ss = v[(t > end - 20.0) & (t < end - bench.dt / 2)].mean()
    values["input_resistance_MOhm"] = float((v[before].mean() - v_ss) / -RIN_STEP["amp_nA"])

    amps = sorted(set(fi_amps_nA) | set(STEP_AMPS_NA))
    freqs, step_traces = [], {}
    for amp in amps:
        t, (v,) = bench.run(step_ms + 50.0, pulse=(step_ms, amp))
        spikes = _spike_times(t, v, 0.0, step_ms)
        spikes = spikes[(spikes >= 0.0) & (spikes <= step_ms)]  # spikes during the step
        freqs.append(len(spikes) / (step_ms / 1000.0))
        if amp in STEP_AMPS_NA:
            k = STEP_AMPS_NA.index(amp) + 1
            step_traces[amp] = (t, v)
            values[f"step{k}_mean_frequency_Hz"] = freqs[-1]
            values[f"step{k}_time_to_first_spike_ms"] = (
                float(spikes[0]) if len(spikes) else float("nan")
            )
            values[f"step{k}_AP_height_mV"] = _efel_mean(t, v, 0.0, step_ms, "AP_height")
            values[f"step{k}_ISI_CV"] = _efel_mean(t, v, 0.0, step_ms, "ISI_CV")
    traces["fi"] = (amps, freqs)
    traces["steps"] = step_traces

    pulse = (PULSE["dur_ms"], PULSE["amp_nA"])
    trunk_d = np.arange(0.0, bench.model.cell.longest_apical_um, 50.0)[1:]
    trunk = [bench.model.cell.site(d, on_trunk=True) for d in trunk_d]
    hay_sites = [bench.model.cell.site(d) for d in BAP_SITES_UM]
    rec = [sec(x) for sec, x in (*trunk, *hay_sites)]
    t, vs = bench.run(BAP_WINDOW_MS, pulse=pulse, record=rec)
    before = t < -bench.dt / 2
    amp_of = [float(v[~before].max() - v[before][-1]) for v in vs]
    values["bAP_somatic_spikes"] = float(len(_spike_times(t, vs[0], 0.0, BAP_WINDOW_MS)))
    for d, a in zip(BAP_SITES_UM, amp_of[-2:], strict=True):
        values[f"bAP_amplitude_{int(d)}um_mV"] = a
    traces["bap"] = (trunk_d, amp_of[1 : 1 + len(trunk_d)])

    onset = EPSP["delay_ms"]
    w = BAC_WINDOW_MS
    bac = {
        "soma pulse": bench.run(w, pulse=pulse, record=[bench.dend]),
        "EPSP": bench.run(w, epsp_onset_ms=onset, record=[bench.dend]),
        "paired (BAC)": bench.run(w, pulse=pulse, epsp_onset_ms=onset, record=[bench.dend]),
    }
    traces["bac"] = bac
    t, (v, vd) = bac["paired (BAC)"]
    spikes = _spike_times(t, v, 0.0, w)
    values["BAC_somatic_spikes"] = float(len(spikes))
    values["BAC_mean_ISI_ms"] = float(np.diff(spikes).mean()) if len(spikes) > 1 else math.nan
    after = t >= -bench.dt / 2
    values["BAC_Ca_spike_peak_mV"], values["BAC_Ca_spike_width_ms"] = ca_spike(t[after], vd[after])
    for label, (tt, (vv, _)) in bac.items():
        traces.setdefault("bac_counts", {})[label] = len(_spike_times(tt, vv, 0.0, w))

    return values, traces


def format_table(features: list[Feature]) -> str:
    """The features as an aligned text table: ours, the published model's, the experiment.

    A published value beyond the tolerance from ours is marked with "*".
    """
    lines = [
        f"{'feature':30s} {'model':>9s} {'published':>10s} {'tolerance':>9s} "
        f"{'experiment':>18s} {'z':>6s}  {'status':12s}  source",
        "-" * 118,
    ]
    for f in features:
        exp = f"{f.mean:g} ± {f.sd:g}" if f.sd is not None else f"{f.mean:g}"
        z = f"{f.z:+.1f}" if f.z is not None else ""
        pub = "—" if f.published is None else f"{f.published:.4g}"
        pub += "*" if f.matches_published is False else " "
        lines.append(
            f"{f.name:30s} {f.value:9.4g} {pub:>10s} {f.tolerance:>9s} {exp:>18s} {z:>6s}  "
            f"{f.status:12s}  {f.source}"
        )
    return "\n".join(lines)


def plot(traces, features: list[Feature], path: Path, cell: str) -> None:
    """Step traces, f-I curve, bAP attenuation and BAC firing in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(13, 9))
    for amp, (t, v) in traces["steps"].items():
        ax[0, 0].plot(t, v, lw=0.6, label=f"{amp} nA")
    ax[0, 0].set(title="somatic current steps", xlabel="ms", ylabel="soma mV")
    ax[0, 0].legend(fontsize=8)

    amps, freqs = traces["fi"]
    ax[0, 1].plot(amps, freqs, "o-", label=cell)
    by_name = {f.name: f for f in features}
    for k, amp in enumerate(STEP_AMPS_NA, start=1):
        f = by_name[f"step{k}_mean_frequency_Hz"]
        ax[0, 1].errorbar(amp, f.mean, yerr=f.sd, fmt="s", color="k", capsize=3)
        if f.published is not None:
            ax[0, 1].plot(amp, f.published, "D", mfc="none", color="C2")
    ax[0, 1].set(
        title="f-I curve (black: Hay et al. 2011, green: published model)",
        xlabel="nA",
        ylabel="Hz",
    )

    d, a = traces["bap"]
    ax[1, 0].plot(d, a, "o-", ms=3, label="apical trunk")
    for site in BAP_SITES_UM:
        f = by_name[f"bAP_amplitude_{int(site)}um_mV"]
        ax[1, 0].errorbar(site, f.mean, yerr=f.sd, fmt="s", color="k", capsize=3)
        ax[1, 0].plot(site, f.value, "x", color="C3")
        if f.published is not None:
            ax[1, 0].plot(site, f.published, "D", mfc="none", color="C2")
    ax[1, 0].set(
        title="bAP amplitude (black: experiment, green: published model)",
        xlabel="µm from soma",
        ylabel="mV",
    )

    for k, (label, (t, (v, vd))) in enumerate(traces["bac"].items()):
        offset = 120.0 * k
        ax[1, 1].plot(t, v + offset, color="C0", lw=0.7)
        ax[1, 1].plot(t, vd + offset, color="C3", lw=0.7)
        ax[1, 1].text(BAC_PLOT_MS, offset - 60, label, ha="right", fontsize=8)
    ax[1, 1].set(
        title=f"BAC firing (blue soma, red {BAC_SITE_UM:g} µm)",
        xlabel="ms",
        ylabel="mV (offset)",
        xlim=(-LEAD_MS, BAC_PLOT_MS),
    )
    fig.suptitle(f"{cell}: validation against Hay et al. 2011 protocols")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _tolerance_help() -> str:
    rows = [
        textwrap.fill(
            why, 88, initial_indent=f"  {tolerance_text(k):>7s}  ", subsequent_indent=" " * 11
        )
        for k, (_, _, why) in TOLERANCE.items()
    ]
    return (
        "tolerances around the published model's value (as published), by feature kind:\n"
        + "\n".join(rows)
        + "\n\nexit status: 0 when every feature is within the experimental range or as\n"
        "published, 1 when one departs from both (with --strict: from the experiment)."
    )


def check_validation_options(settle_ms, step_ms, dt_ms, celsius, far_sd) -> None:
    """Refuse numbers that make no sense before any NEURON work (one line each)."""
    for name, value in (("--settle-ms", settle_ms), ("--step-ms", step_ms), ("--dt-ms", dt_ms),
                        ("--far-sd", far_sd)):  # fmt: skip
        if not math.isfinite(value) or value <= 0:
            raise UserError(f"{name} must be a positive number, got {value:g}")
    if settle_ms > 60_000 or step_ms > 60_000:
        raise UserError("--settle-ms and --step-ms above 60 s are not a validation protocol")
    if dt_ms > 0.125 or not math.isclose(0.125 / dt_ms, round(0.125 / dt_ms)):
        raise UserError(f"--dt-ms must divide 0.125 ms (e.g. 0.025), got {dt_ms:g}")
    if celsius is not None and not -10 <= celsius <= 45:
        raise UserError(f"--celsius {celsius:g} °C is outside any physiological range")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m biophys.validate",
        description=__doc__,
        epilog=_tolerance_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cell", default="L5PC", choices=CELL_NAMES)
    parser.add_argument(
        "--quick", action="store_true", help="500 ms steps, Hay's three amplitudes only"
    )
    parser.add_argument("--settle-ms", type=float, help="rest before the stimuli (700)")
    parser.add_argument("--step-ms", type=float, help="duration of the current steps (2000)")
    parser.add_argument("--dt-ms", type=float, default=0.025)
    parser.add_argument(
        "--celsius", type=float, help="override the cell's temperature (Ca2+ Nernst only)"
    )
    parser.add_argument(
        "--far-sd", type=float, default=FAR_SD, help="fail beyond this many SDs (5)"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="judge by the experimental ranges alone: no 'as published' (exit 1 if any FAR)",
    )
    parser.add_argument("--morphology", help="a morphology file instead of cell1.asc")
    parser.add_argument("--out", default="outputs/validation", help="folder for plot and JSON")
    args = parser.parse_args(argv)
    settle = 700.0 if args.settle_ms is None else args.settle_ms
    step = (500.0 if args.quick else 2000.0) if args.step_ms is None else args.step_ms
    amps = STEP_AMPS_NA if args.quick else FI_AMPS_NA
    check_validation_options(settle, step, args.dt_ms, args.celsius, args.far_sd)
    check_output_dir(args.out)
    features, traces = run_validation(
        args.cell,
        settle_ms=settle,
        step_ms=step,
        fi_amps_nA=amps,
        dt_ms=args.dt_ms,
        morphology_path=args.morphology,
        celsius_degC=args.celsius,
        far_sd=args.far_sd,
        strict=args.strict,
    )
    print(format_table(features))
    print(f"published model: {traces['published']} (*: beyond the tolerance)")
    counts = traces["bac_counts"]
    print("BAC coincidence, somatic spikes: " + ", ".join(f"{k}: {n}" for k, n in counts.items()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"validation_{args.cell}.png"
    plot(traces, features, png, args.cell)
    celsius = args.celsius
    if celsius is None:
        celsius = get_model(args.cell, args.morphology).params["celsius_degC"]
    config = {
        "cell": args.cell,
        "settle_ms": settle,
        "step_ms": step,
        "dt_ms": args.dt_ms,
        "celsius_degC": celsius,
        "far_sd": args.far_sd,
        "strict": args.strict,
        "published": traces["published"],
        "tolerance": {k: {"mode": m, "amount": a} for k, (m, a, _) in TOLERANCE.items()},
    }
    write_json(
        out / f"validation_{args.cell}.json",
        {
            "features": [asdict(f) for f in features],
            "bac_counts": counts,
            "provenance": run_record(config, seed=0),
        },
    )
    print(f"plots: {png}")
    differs = [f.name for f in features if f.matches_published is False]
    if differs:
        # not a failure where the experiment agrees, but worth a look: the re-implementation
        # should reproduce the published model everywhere
        print(f"note: beyond the tolerance of the published model: {', '.join(differs)}")
    if exit_status(features):
        far = [f.name for f in features if f.status == "FAR"]
        against = "the experimental range" if args.strict else "the experiment and published model"
        print(f"FAIL: far from {against}: {', '.join(far)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
