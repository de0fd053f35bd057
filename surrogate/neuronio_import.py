"""Convert the published NeuronIO pickle files into a store of this toolkit.

    python -m surrogate.neuronio_import SRC... --out neuronio.zarr

SRC are pickle files or folders of them (every ``*.p``, ``*.pkl`` and ``*.pickle``
inside, in name order). Files are read one at a time, each written out simulation by
simulation, and released before the next is opened, so memory stays at one file. A
killed import resumes: run the same command again; files already converted are skipped
without being read (they are recognised by name and size), a half-written file is read
again and its missing simulations written.

Supported layout (Beniaguev, Segev & London 2021, `SelfishGene/neuron_as_deep_net`,
`simulate_L5PC_and_create_dataset.py`): one pickle per 128 simulations, written by
Python 2 with protocol 2 (read here with ``encoding="latin1"``), holding a dict

- ``Params`` with ``totalSimDurationInSec`` (int), ``randomSeed`` (int), the per-segment
  lists ``allSegmentsType`` ("basal"/"apical"), ``allSegmentsLength`` (µm),
  ``allSegments_DistFromSoma`` (µm), ``allSegments_SectionInd`` (index into
  ``allSectionsType``, basal sections first), and ``excitatorySynapseType``,
  ``inhibitorySynapseType``, ``useActiveDendrites``, ``Ih_vshift`` (recorded when present);
- ``Results["listOfSingleSimulationDicts"]``: one dict per simulation with
  ``exInputSpikeTimes`` and ``inhInputSpikeTimes`` ({segment index: [spike times in
  whole ms]}, segments absent when silent), ``somaVoltageLowRes`` (float16, mV, one sample
  per ms at t = 0, 1, … ms), ``outputSpikeTimes`` (float16, ms), and optionally
  ``somaVoltageHighRes`` / ``recordingTimeHighRes`` (float16 mV / float32 ms, 8 samples
  per ms), ``nexusVoltageLowRes`` (float16) and ``dendriticVoltagesLowRes``
  (float16, segment × time).

Mapping to the store: input rows 0..n−1 are the excitatory synapses of segments 0..n−1,
rows n..2n−1 the inhibitory ones (the published row order), an input spike at t ms marks
bin floor(t); soma (and nexus, dendritic) voltages are converted to float32; sections
are named ``dend[k]`` / ``apic[k]`` by their order within each tree and a segment's ``x``
is its centre, (j + 0.5)/nseg. ``sim_seed`` holds the source file's ``randomSeed`` (the
original drew all simulations of a file from one seed).

Output spike times. The originals were stored as float16, which at 4–6 s has a spacing
of 4 ms. With ``--spike-times recover`` (default) each stored time is replaced by the
exact time of the high-resolution soma sample that the original detector would have
found (a local maximum above −25 mV) and that rounds to the stored float16 value; times
that cannot be matched, or files without the high-resolution trace, keep the float16
value (counted in the summary). ``--spike-times float16`` keeps them all. Note that the
published training code labels a spike at t in bin int(t − 0.5); this store, like every
store of the toolkit, labels bin floor(t).

Pickles can run code when loaded; only the numpy array and scalar constructors that
these files use are allowed unless you pass ``--trust-pickle``.
"""

import argparse
import io
import os
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from biophys import store
from elmbridge.cli import run_cli
from elmbridge.errors import MissingDataError, UserError
from elmbridge.provenance import software_versions

SOURCE_SUFFIXES = (".p", ".pkl", ".pickle")
SPIKE_MODES = ("recover", "float16")
SPIKE_THRESHOLD_MV = -25.0
IMPORT_LOG = "neuronio_import"

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays/scalars, nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UserError(
                f"the pickle asks for {module}.{name}, which a NeuronIO file does not need; "
                "if you trust the file, pass --trust-pickle"
            )
        # numpy 2 moved numpy.core to numpy._core; files name whichever wrote them.
        old, new = "numpy.core.", "numpy._core."
        if module.startswith(old) and hasattr(np, "_core"):
            module = new + module.removeprefix(old)
        elif module.startswith(new) and not hasattr(np, "_core"):
            module = old + module.removeprefix(new)
        return super().find_class(module, name)


def _first_line(err: Exception) -> str:
    """An exception's message cut to its first line (errors are one line each)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_pickle(path: str | os.PathLike, trust: bool = False) -> dict[str, Any]:
    """Read one NeuronIO pickle (Python 2 protocol-2 files are read as latin-1)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        unpickler = pickle.Unpickler if trust else _ArraysOnlyUnpickler
        obj = unpickler(io.BytesIO(data), encoding="latin1").load()
    except OSError as err:
        raise MissingDataError(f"cannot read {path}: {err}") from err
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        if isinstance(err, UserError):
            raise UserError(f"{path}: {_first_line(err)}") from err
        raise UserError(
            f"{path} is not a readable pickle ({_first_line(err)}); is the file complete?"
        ) from err
    if not (isinstance(obj, dict) and "Params" in obj and "Results" in obj):
        raise UserError(f"{path} is a pickle but not a NeuronIO file (no Params/Results dict)")
    return obj


def source_files(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """The pickle files named by `sources` (files, or folders searched for pickles)."""
    files: list[Path] = []
    for src in map(Path, sources):
        if src.is_dir():
            found = sorted(p for p in src.iterdir() if p.suffix in SOURCE_SUFFIXES)
            if not found:
                raise MissingDataError(f"no pickle files ({', '.join(SOURCE_SUFFIXES)}) in {src}")
            files += found
        elif src.is_file():
            files.append(src)
        else:
            raise MissingDataError(f"{src} does not exist")
    names = [f.name for f in files]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"several sources share a file name, which identifies them: {duplicates}")
    return files


def _param(params: dict[str, Any], key: str, path: Path) -> Any:
    if key not in params:
        raise UserError(f"{path}: Params lacks {key!r}; this is not a supported NeuronIO file")
    return params[key]


def segment_table(params: dict[str, Any], path: Path) -> dict[str, list]:
    """The store's segment table from a file's Params (see the module docstring)."""
    kinds = [str(t) for t in _param(params, "allSegmentsType", path)]
    section_of = [int(s) for s in _param(params, "allSegments_SectionInd", path)]
    section_kinds = [str(t) for t in _param(params, "allSectionsType", path)]
    lengths = [float(x) for x in _param(params, "allSegmentsLength", path)]
    distances = [float(x) for x in _param(params, "allSegments_DistFromSoma", path)]
    if not len(kinds) == len(section_of) == len(lengths) == len(distances):
        raise UserError(f"{path}: the per-segment lists in Params differ in length")
    prefix = {"basal": "dend", "apical": "apic"}
    counters = {"basal": 0, "apical": 0}
    section_name = []
    for kind in section_kinds:
        if kind not in prefix:
            raise UserError(f"{path}: unknown section type {kind!r} (expected basal/apical)")
        section_name.append(f"{prefix[kind]}[{counters[kind]}]")
        counters[kind] += 1
    nseg = np.bincount(section_of, minlength=len(section_kinds))
    position = np.zeros(len(section_kinds), dtype=int)
    xs = []
    for s in section_of:
        xs.append((position[s] + 0.5) / nseg[s])
        position[s] += 1
    return {
        "section": [section_name[s] for s in section_of],
        "x": xs,
        "tree": kinds,
        "path_distance_um": distances,
        "length_um": lengths,
    }


def _first_simulation(experiment: dict[str, Any], path: Path) -> dict[str, Any]:
    sims = experiment["Results"].get("listOfSingleSimulationDicts")
    if not sims:
        raise UserError(f"{path} holds no simulation (Results.listOfSingleSimulationDicts)")
    return sims[0]


def file_spec(
    experiment: dict[str, Any], path: Path, spike_times: str, dendrites: bool, nexus: bool
) -> store.StoreSpec:
    """The store specification of one file; files of one store must agree on it."""
    params = experiment["Params"]
    first = _first_simulation(experiment, path)
    n_time = round(float(_param(params, "totalSimDurationInSec", path)) * 1000)
    segments = segment_table(params, path)
    n_seg = len(segments["section"])
    record_nexus = nexus and "nexusVoltageLowRes" in first
    if dendrites and "dendriticVoltagesLowRes" not in first:
        raise UserError(f"{path} has no dendritic voltages; leave out --dendrites")
    protocol = {
        "source": "NeuronIO pickle files (Beniaguev, Segev & London 2021)",
        "cell": "L5PC-neuronio",
        "duration_ms": n_time,
        "n_segments": n_seg,
        "excitatory_synapse": str(params.get("excitatorySynapseType", "unknown")),
        "inhibitory_synapse": str(params.get("inhibitorySynapseType", "unknown")),
        "active_dendrites": bool(params.get("useActiveDendrites", True)),
        "Ih_vshift": float(params.get("Ih_vshift", 0)),
        "spike_times": spike_times,
        "record_nexus": record_nexus,
        "record_dendrites": dendrites,
    }
    return store.StoreSpec(
        n_time=n_time,
        input_kind=["exc"] * n_seg + ["inh"] * n_seg,
        input_segment=list(range(n_seg)) * 2,
        segments=segments,
        protocol=protocol,
        record_nexus=record_nexus,
        record_dendrites=dendrites,
        attrs={"cell": "L5PC-neuronio", "software": software_versions()},
    )


def _events_to_bins(events: dict, n_segments: int, n_time: int, path: Path) -> np.ndarray:
    """(time, segment) bool from {segment: [spike times in ms]}."""
    out = np.zeros((n_time, n_segments), dtype=bool)
    for segment, times in events.items():
        segment = int(segment)
        bins = np.floor(np.asarray(times, dtype=np.float64)).astype(np.int64)
        outside = bins.size and (bins.min() < 0 or bins.max() >= n_time)
        if outside or not 0 <= segment < n_segments:
            raise UserError(
                f"{path}: an input event (segment {segment}) lies outside {n_segments} "
                f"segments × {n_time} ms"
            )
        out[bins, segment] = True
    return out


def recover_spike_times(
    stored: np.ndarray, t_high_ms: np.ndarray | None, v_high_mv: np.ndarray | None
) -> tuple[np.ndarray, int]:
    """Exact spike times from the high-resolution soma trace, matched to float16 values.

    A candidate is a sample above −25 mV that is not lower than either neighbour. Each
    stored time, in order, takes the first later candidate whose time rounds to it in
    float16; a stored time without one keeps its float16 value.

    Returns:
        times (float64, ms) and how many of them kept the float16 value.
    """
    stored = np.asarray(stored, dtype=np.float16)
    if t_high_ms is None or v_high_mv is None or stored.size == 0:
        return stored.astype(np.float64), int(stored.size)
    v = np.asarray(v_high_mv, dtype=np.float64)
    t = np.asarray(t_high_ms, dtype=np.float64)
    peak = v > SPIKE_THRESHOLD_MV
    peak[1:] &= v[1:] >= v[:-1]
    peak[:-1] &= v[:-1] >= v[1:]
    candidates = t[peak]
    rounded = candidates.astype(np.float16)
    out = stored.astype(np.float64)
    unmatched = 0
    cursor = 0
    for i, value in enumerate(stored):
        hits = np.flatnonzero(rounded[cursor:] == value)
        if hits.size:
            cursor += int(hits[0])
            out[i] = candidates[cursor]
            cursor += 1
        else:
            unmatched += 1
    return out, unmatched


def simulation_record(
    sim: dict[str, Any], spec: store.StoreSpec, seed: int, spike_times: str, path: Path
) -> tuple[store.SimulationRecord, int]:
    """One simulation of a file as a store record, and its count of float16 spike times."""
    n_seg, n_time = spec.n_segments, spec.n_time
    try:
        exc = _events_to_bins(sim["exInputSpikeTimes"], n_seg, n_time, path)
        inh = _events_to_bins(sim["inhInputSpikeTimes"], n_seg, n_time, path)
        soma = np.asarray(sim["somaVoltageLowRes"], dtype=np.float32)
        stored = np.asarray(sim["outputSpikeTimes"]).ravel()
    except KeyError as err:
        raise UserError(f"{path}: a simulation lacks {err}; not a supported NeuronIO file") from err
    if soma.shape != (n_time,):
        raise UserError(f"{path}: somaVoltageLowRes has {soma.size} samples, expected {n_time}")
    if spike_times == "recover":
        times, n_kept = recover_spike_times(
            stored, sim.get("recordingTimeHighRes"), sim.get("somaVoltageHighRes")
        )
    else:
        times, n_kept = stored.astype(np.float16).astype(np.float64), stored.size
    record = store.SimulationRecord(
        input_spikes=np.concatenate([exc, inh], axis=1),
        soma_v=soma,
        spike_times=times,
        seed=seed,
    )
    if spec.record_nexus:
        record.nexus_v = np.asarray(sim["nexusVoltageLowRes"], dtype=np.float32)
    if spec.record_dendrites:
        record.dend_v = np.asarray(sim["dendriticVoltagesLowRes"], dtype=np.float32).T
    return record, int(n_kept)


def _import_log(path: Path) -> dict[str, Any]:
    """What earlier runs imported into `path`: their options and files (with sim ranges)."""
    if not store.store_exists(path):
        return {}
    return dict(store.get_attribute(path, IMPORT_LOG, {}))


def _write_import_log(path: Path, log: dict[str, Any]) -> None:
    # The store writes its attributes atomically, so a kill here keeps the previous log.
    store.set_attribute(path, IMPORT_LOG, log)


def import_files(
    sources: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    *,
    spike_times: str = "recover",
    dendrites: bool = False,
    nexus: bool = True,
    trust_pickle: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Convert NeuronIO pickles into (or onto the end of) the store `out`.

    Args:
        sources: pickle files or folders of them.
        out: the store folder.
        spike_times: "recover" exact times from the high-resolution trace, or keep the
            stored "float16" values.
        dendrites: also store the dendritic voltages (≈15 MB per 6 s simulation).
        nexus: store the nexus voltage when the files have it.
        trust_pickle: allow any object in the pickles.
        progress: show progress bars.

    Returns:
        summary: files converted and skipped, simulations written, float16 spike times kept.
    """
    if spike_times not in SPIKE_MODES:
        raise UserError(f"spike_times must be one of {SPIKE_MODES}, got {spike_times!r}")
    out = Path(out)
    files = source_files(list(sources))
    options = {"spike_times": spike_times, "dendrites": dendrites, "nexus": nexus}
    log = _import_log(out)
    if log and log["options"] != options:
        raise UserError(
            f"{out} was imported with other options ({log['options']}); use the same options "
            f"to add to it, or a new --out"
        )
    log = {"options": options, "files": log.get("files", [])}
    summary = {"converted": 0, "skipped": 0, "simulations": 0, "float16_spike_times": 0}
    for path in tqdm(files, desc="files", unit="file", disable=not progress):
        size = path.stat().st_size
        entry = next((e for e in log["files"] if e["name"] == path.name), None)
        if entry is not None and entry["bytes"] != size:
            raise UserError(
                f"{out} already holds a file named {path.name} of another size "
                f"({entry['bytes']} bytes, now {size}); use a new --out"
            )
        if entry is not None:
            done = set(store.completed_simulations(out).tolist())
            wanted = range(entry["first"], entry["first"] + entry["count"])
            if done.issuperset(wanted):
                summary["skipped"] += 1
                continue
        experiment = load_pickle(path, trust=trust_pickle)
        spec = file_spec(experiment, path, spike_times, dendrites, nexus)
        sims = experiment["Results"]["listOfSingleSimulationDicts"]
        seed = int(experiment["Params"].get("randomSeed", -1))
        if entry is None:
            first = max((e["first"] + e["count"] for e in log["files"]), default=0)
            entry = {"name": path.name, "bytes": size, "first": first, "count": len(sims)}
        todo = set(store.prepare_store(out, spec, entry["first"] + entry["count"]))
        if entry not in log["files"]:
            log["files"].append(entry)
            _write_import_log(out, log)
        for k, sim in enumerate(
            tqdm(sims, desc=path.name, unit="sim", leave=False, disable=not progress)
        ):
            index = entry["first"] + k
            if index not in todo:
                continue
            record, n_kept = simulation_record(sim, spec, seed, spike_times, path)
            store.write_simulation(out, index, record)
            summary["simulations"] += 1
            summary["float16_spike_times"] += n_kept
        summary["converted"] += 1
        del experiment, sims
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m surrogate.neuronio_import", description=__doc__.split("\n")[0]
    )
    parser.add_argument("sources", nargs="+", metavar="SRC", help="pickle files or folders")
    parser.add_argument("--out", required=True, type=Path, help="the store to write (.zarr)")
    parser.add_argument("--spike-times", choices=SPIKE_MODES, default="recover")
    parser.add_argument("--dendrites", action="store_true", help="also store dendritic voltages")
    parser.add_argument("--no-nexus", action="store_true", help="leave out the nexus voltage")
    parser.add_argument("--trust-pickle", action="store_true", help="allow any pickled object")
    args = parser.parse_args(argv)
    summary = import_files(
        args.sources,
        args.out,
        spike_times=args.spike_times,
        dendrites=args.dendrites,
        nexus=not args.no_nexus,
        trust_pickle=args.trust_pickle,
    )
    n_total = len(store.completed_simulations(args.out))
    print(
        f"{summary['converted']} files converted, {summary['skipped']} already done; "
        f"{summary['simulations']} simulations written, {n_total} in {args.out}"
    )
    if args.spike_times == "recover" and summary["float16_spike_times"]:
        print(
            f"{summary['float16_spike_times']} output spike times could not be recovered "
            "exactly and keep their float16 value"
        )


if __name__ == "__main__":
    run_cli(main)
