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

It prints each value next to the experimental mean ± SD and its z-score, saves plots and
a JSON record, and exits with status 1 when a feature lies more than `FAR_SD` standard
deviations from the experimental mean (or a spike count is off by more than one).

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
import gc
import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from biophys.cells import CELL_NAMES, get_model
from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.files import atomic_path, write_json
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


@dataclass
class Feature:
    """One measured feature next to its experimental reference."""

    name: str
    value: float
    mean: float
    sd: float | None
    source: str
    z: float | None
    status: str  # "ok" (|z| <= 2), "near" (<= far_sd), "FAR", or "n/a" (not measurable)


def _feature(name: str, value: float, far_sd: float = FAR_SD) -> Feature:
    if name in COUNTS:
        expected, slack, source = COUNTS[name]
        ok = math.isfinite(value) and abs(value - expected) <= slack
        return Feature(name, value, expected, None, source, None, "ok" if ok else "FAR")
    mean, sd, source = EXPERIMENT[name]
    if not math.isfinite(value):
        return Feature(name, value, mean, sd, source, None, "n/a")
    z = (value - mean) / sd
    status = "ok" if abs(z) <= 2 else "near" if abs(z) <= far_sd else "FAR"
    return Feature(name, value, mean, sd, source, z, status)


class _Bench:
    """Current-clamp protocols on the process's built cell (its synapses stay silent).

    The cell first rests for `settle_ms` (integrated with CVode, which is exact enough
    at rest and nearly free); that state is saved once and every protocol starts from
    it, integrated with fixed steps of `dt_ms` like the datasets. One IClamp at the soma
    and one EPSP-shaped current at the BAC site serve every protocol, so that the saved
    state always fits the model.
    """

    def __init__(self, cell: str, morphology_path: str | None, dt_ms: float, settle_ms: float):
        from neuron import h

        self.h = h
        self.model = get_model(cell, morphology_path)
        self.dt = dt_ms
        self.settle = settle_ms
        self.soma = self.model.cell.soma[0](0.5)
        sec, x = self.model.cell.site(BAC_SITE_UM)
        self.dend = sec(x)
        self.soma_clamp = h.IClamp(self.soma)
        self.soma_clamp.delay, self.soma_clamp.dur, self.soma_clamp.amp = 0.0, 0.0, 0.0
        self.epsp = h.EpspClamp(self.dend)
        self.epsp.tau_r, self.epsp.tau_d = EPSP["tau_rise_ms"], EPSP["tau_decay_ms"]
        self.epsp.imax = EPSP["imax_nA"]
        for syn in self.model.synapses:  # a previous simulate() may have left p < 1
            syn.p_release = 1.0
        h.celsius = self.model.params["celsius_degC"]
        cv = h.CVode()
        cv.active(1)
        # SaveState.restore needs the same sections as at save: let dead ones go first
        gc.collect()
        h.finitialize(self.model.params["v_init_mV"])
        cv.solve(settle_ms)  # CVode stops exactly at settle_ms
        cv.active(0)
        self.state = h.SaveState()
        self.state.save()

    def run(self, duration_ms, pulse=None, epsp_onset_ms=None, record=()):
        """Simulate `duration_ms` from the rested state.

        pulse: (delay ms, duration ms, amplitude nA) of a somatic current step.
        epsp_onset_ms: onset of Hay's EPSP-shaped current at the BAC site, if any.
        record: segments whose voltage to return besides the soma.

        Returns the time (ms, 0 = end of settling) and the voltages.
        """
        h = self.h
        h.dt = self.dt
        h.CVode().active(0)
        delay, dur, amp = pulse if pulse is not None else (0.0, 0.0, 0.0)
        c = self.soma_clamp
        c.delay, c.dur, c.amp = self.settle + delay, dur, amp
        self.epsp.onset = 1e9 if epsp_onset_ms is None else self.settle + epsp_onset_ms
        t_vec = h.Vector().record(h._ref_t)
        v_vecs = [h.Vector().record(seg._ref_v) for seg in (self.soma, *record)]
        h.finitialize(self.model.params["v_init_mV"])
        self.state.restore()
        h.frecord_init()  # restart recording at the restored time
        h.continuerun(self.settle + duration_ms)
        t = t_vec.as_numpy().copy() - self.settle
        after = t >= 0
        return t[after], [v.as_numpy()[after].copy() for v in v_vecs]


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
):
    """Run all protocols. Returns (features, traces): a list of `Feature` and plot data.

    `celsius_degC` overrides the cell's temperature (which only sets the Ca2+ Nernst
    potential); `far_sd` is the distance from the experimental mean, in SDs, beyond
    which a feature fails.
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
    finally:
        params["celsius_degC"] = original
    features = [_feature(name, values[name], far_sd) for name in (*EXPERIMENT, *COUNTS)]
    return features, traces


def _run_protocols(bench: _Bench, step_ms: float, fi_amps_nA):
    values, traces = {}, {}

    t, (v,) = bench.run(50.0)
    values["resting_potential_mV"] = float(v[-1])
    rin_ms = 400.0
    t, (v,) = bench.run(rin_ms + 10.0, pulse=(10.0, rin_ms, -0.1))
    v0 = v[t < 10.0].mean()
    vss = v[(t > 10.0 + rin_ms - 20.0) & (t < 10.0 + rin_ms)].mean()
    values["input_resistance_MOhm"] = float((v0 - vss) / 0.1)

    amps = sorted(set(fi_amps_nA) | set(STEP_AMPS_NA))
    freqs, step_traces = [], {}
    for amp in amps:
        t, (v,) = bench.run(step_ms + 150.0, pulse=(100.0, step_ms, amp))
        spikes = _spike_times(t, v, 100.0, 100.0 + step_ms)
        freqs.append(len(spikes) / (step_ms / 1000.0))
        if amp in STEP_AMPS_NA:
            k = STEP_AMPS_NA.index(amp) + 1
            step_traces[amp] = (t, v)
            values[f"step{k}_mean_frequency_Hz"] = freqs[-1]
            values[f"step{k}_time_to_first_spike_ms"] = (
                float(spikes[0] - 100.0) if len(spikes) else float("nan")
            )
            values[f"step{k}_AP_height_mV"] = _efel_mean(t, v, 100, 100 + step_ms, "AP_height")
            values[f"step{k}_ISI_CV"] = _efel_mean(t, v, 100, 100 + step_ms, "ISI_CV")
    traces["fi"] = (amps, freqs)
    traces["steps"] = step_traces

    pulse = (10.0, PULSE["dur_ms"], PULSE["amp_nA"])
    trunk_d = np.arange(0.0, bench.model.cell.longest_apical_um, 50.0)[1:]
    trunk = [bench.model.cell.site(d, on_trunk=True) for d in trunk_d]
    hay_sites = [bench.model.cell.site(d) for d in BAP_SITES_UM]
    rec = [sec(x) for sec, x in (*trunk, *hay_sites)]
    t, vs = bench.run(60.0, pulse=pulse, record=rec)
    base = [v[t < 10.0][-1] for v in vs]
    amp_of = [float(v[t >= 10.0].max() - b) for v, b in zip(vs, base, strict=True)]
    values["bAP_somatic_spikes"] = float(len(_spike_times(t, vs[0], 10.0, 60.0)))
    for d, a in zip(BAP_SITES_UM, amp_of[-2:], strict=True):
        values[f"bAP_amplitude_{int(d)}um_mV"] = a
    traces["bap"] = (trunk_d, amp_of[1 : 1 + len(trunk_d)])

    onset = 10.0 + EPSP["delay_ms"]
    bac = {
        "soma pulse": bench.run(150.0, pulse=pulse, record=[bench.dend]),
        "EPSP": bench.run(150.0, epsp_onset_ms=onset, record=[bench.dend]),
        "paired (BAC)": bench.run(150.0, pulse=pulse, epsp_onset_ms=onset, record=[bench.dend]),
    }
    traces["bac"] = bac
    t, (v, vd) = bac["paired (BAC)"]
    spikes = _spike_times(t, v, 10.0, 150.0)
    values["BAC_somatic_spikes"] = float(len(spikes))
    values["BAC_mean_ISI_ms"] = float(np.diff(spikes).mean()) if len(spikes) > 1 else math.nan
    after = t >= 10.0
    values["BAC_Ca_spike_peak_mV"], values["BAC_Ca_spike_width_ms"] = ca_spike(t[after], vd[after])
    for label, (tt, (vv, _)) in bac.items():
        traces.setdefault("bac_counts", {})[label] = len(_spike_times(tt, vv, 10.0, 150.0))

    return values, traces


def format_table(features: list[Feature]) -> str:
    """The features as an aligned text table."""
    lines = [
        f"{'feature':32s} {'model':>9s} {'experiment':>18s} {'z':>7s}  status  source",
        "-" * 96,
    ]
    for f in features:
        exp = f"{f.mean:g} ± {f.sd:g}" if f.sd is not None else f"{f.mean:g}"
        z = f"{f.z:+.1f}" if f.z is not None else ""
        lines.append(f"{f.name:32s} {f.value:9.3g} {exp:>18s} {z:>7s}  {f.status:6s}  {f.source}")
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
    ax[0, 1].set(title="f-I curve (black: Hay et al. 2011)", xlabel="nA", ylabel="Hz")

    d, a = traces["bap"]
    ax[1, 0].plot(d, a, "o-", ms=3, label="apical trunk")
    for site in BAP_SITES_UM:
        f = by_name[f"bAP_amplitude_{int(site)}um_mV"]
        ax[1, 0].errorbar(site, f.mean, yerr=f.sd, fmt="s", color="k", capsize=3)
        ax[1, 0].plot(site, f.value, "x", color="C3")
    ax[1, 0].set(title="bAP amplitude (black: experiment)", xlabel="µm from soma", ylabel="mV")

    for k, (label, (t, (v, vd))) in enumerate(traces["bac"].items()):
        offset = 120.0 * k
        ax[1, 1].plot(t, v + offset, color="C0", lw=0.7)
        ax[1, 1].plot(t, vd + offset, color="C3", lw=0.7)
        ax[1, 1].text(t[-1], offset - 60, label, ha="right", fontsize=8)
    ax[1, 1].set(
        title=f"BAC firing (blue soma, red {BAC_SITE_UM:g} µm)",
        xlabel="ms",
        ylabel="mV (offset)",
        xlim=(0, 150),
    )
    fig.suptitle(f"{cell}: validation against Hay et al. 2011 protocols")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m biophys.validate", description=__doc__)
    parser.add_argument("--cell", default="L5PC", choices=CELL_NAMES)
    parser.add_argument(
        "--quick", action="store_true", help="500 ms steps, Hay's three amplitudes only"
    )
    parser.add_argument("--settle-ms", type=float, help="rest before the protocols (700)")
    parser.add_argument("--step-ms", type=float, help="duration of the current steps (2000)")
    parser.add_argument("--dt-ms", type=float, default=0.025)
    parser.add_argument(
        "--celsius", type=float, help="override the cell's temperature (Ca2+ Nernst only)"
    )
    parser.add_argument(
        "--far-sd", type=float, default=FAR_SD, help="fail beyond this many SDs (5)"
    )
    parser.add_argument("--morphology", help="a morphology file instead of cell1.asc")
    parser.add_argument("--out", default="outputs/validation", help="folder for plot and JSON")
    args = parser.parse_args(argv)
    settle = args.settle_ms or 700.0
    step = args.step_ms or (500.0 if args.quick else 2000.0)
    amps = STEP_AMPS_NA if args.quick else FI_AMPS_NA
    features, traces = run_validation(
        args.cell,
        settle_ms=settle,
        step_ms=step,
        fi_amps_nA=amps,
        dt_ms=args.dt_ms,
        morphology_path=args.morphology,
        celsius_degC=args.celsius,
        far_sd=args.far_sd,
    )
    print(format_table(features))
    counts = traces["bac_counts"]
    print("BAC coincidence, somatic spikes: " + ", ".join(f"{k}: {n}" for k, n in counts.items()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"validation_{args.cell}.png"
    plot(traces, features, png, args.cell)
    config = {
        "cell": args.cell,
        "settle_ms": settle,
        "step_ms": step,
        "dt_ms": args.dt_ms,
        "celsius_degC": args.celsius
        or get_model(args.cell, args.morphology).params["celsius_degC"],
        "far_sd": args.far_sd,
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
    far = [f.name for f in features if f.status == "FAR"]
    if far:
        print(f"FAIL: far outside the experimental range: {', '.join(far)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
