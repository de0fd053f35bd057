"""NeuronIO-style datasets: xarray on zarr, one chunk per simulation.

This module is the only code that knows the on-disk layout; the simulator and the
NeuronIO importer write through it, and every reader opens stores through it:
`open_dataset` (lazy xarray), `read_metadata` (shapes, input table, finished simulations,
attributes), `SimulationReader` (fast reads of parts of single simulations),
`completed_simulations`, and `get_attribute` / `set_attribute` for the bookkeeping a
writer keeps in the store's attributes.

Layout, schema ``elmbridge.neuronio/1`` (dimension names in brackets):

===================  ==================================  ==================================
variable             dims                                meaning
===================  ==================================  ==================================
input_spikes         (simulation, time, input_byte)      uint8, presynaptic spikes bit-packed
                                                         along the input axis (`pack_inputs`)
soma_v               (simulation, time)                  float32, somatic voltage, mV
spike_times          (simulation, spike)                 float64, output spike times, ms,
                                                         NaN after the last spike
n_spikes             (simulation)                        int32, number of output spikes
sim_seed             (simulation)                        int64, seed of this simulation
checksum             (simulation)                        uint64, digest of the simulation's
                                                         data (`simulation_digest`), written
                                                         just before `completed`
completed            (simulation)                        bool, written last: a simulation
                                                         counts only once this is True
nexus_v (optional)   (simulation, time)                  float32, apical nexus voltage, mV
dend_v (optional)    (simulation, time, segment)         float32, dendritic voltages, mV
===================  ==================================  ==================================

Coordinates: ``time`` (ms, bin starts), ``input`` with ``input_kind`` ("exc"/"inh") and
``input_segment``, and ``segment`` with ``segment_section``, ``segment_x``,
``segment_tree``, ``segment_path_distance_um`` and ``segment_length_um``.

Integrity: every simulation's data carry a checksum, written with them. `find_damaged`
re-reads completed simulations and names those whose chunks are missing, truncated,
corrupted or no longer match; `prepare_store` (and so ``python -m biophys.simulate`` on an
existing store) restores deleted array metadata and recomputes damaged simulations;
`open_dataset` and `SimulationReader` refuse them. The root attribute ``arrays`` lists the
arrays a store was made with, so that a deleted one is noticed.

Voltages are sampled at the start of each 1 ms bin; inputs mark a spike in bin k when it
arrives in [k, k+1) ms. Every chunk holds one simulation, and zarr writes each chunk file
atomically, so a killed writer never leaves a torn simulation: at worst an unfinished one
whose ``completed`` flag is still False.
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from elmbridge.errors import MissingDataError, UserError

SCHEMA = "elmbridge.neuronio/1"
INPUT_KINDS = ("exc", "inh")
SEGMENT_FIELDS = ("section", "x", "tree", "path_distance_um", "length_um")
# Attributes that describe the data itself; only this module writes them.
RESERVED_ATTRIBUTES = ("schema", "protocol", "history", "arrays")
# The arrays that hold one simulation's data: the checksum covers these (when present).
DATA_ARRAYS = ("input_spikes", "soma_v", "spike_times", "n_spikes", "sim_seed", "nexus_v", "dend_v")
# Arrays of a store made before checksums existed.
LEGACY_ARRAYS = ("input_spikes", "soma_v", "spike_times", "n_spikes", "sim_seed", "completed")


@dataclass
class SimulationRecord:
    """The outputs of one simulation, as the store holds them.

    Attributes:
        input_spikes: (time, input) bool, presynaptic spikes per 1 ms bin.
        soma_v: (time,) somatic voltage in mV at the start of each bin.
        spike_times: (n,) output spike times in ms (float64, sub-ms precision).
        seed: the seed that generated this simulation's input.
        nexus_v: (time,) nexus voltage in mV, when recorded.
        dend_v: (time, segment) dendritic voltages in mV, when recorded.
    """

    input_spikes: np.ndarray
    soma_v: np.ndarray
    spike_times: np.ndarray
    seed: int
    nexus_v: np.ndarray | None = None
    dend_v: np.ndarray | None = None


@dataclass
class StoreSpec:
    """Everything fixed for a store: shapes, input and segment tables, protocol.

    `protocol` is a JSON-serialisable description of how the data were made (cell,
    input protocol, duration, dt, base seed, recording options). Two stores with equal
    `protocol` can be extended into each other; the check compares it exactly.
    `attrs` carry provenance that may differ between runs (software versions, dates).
    """

    n_time: int
    input_kind: Sequence[str]
    input_segment: Sequence[int]
    segments: Mapping[str, Sequence[Any]]
    protocol: Mapping[str, Any]
    spike_capacity: int | None = None
    record_nexus: bool = False
    record_dendrites: bool = False
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.n_time <= 0:
            raise UserError(f"a store needs at least one time bin, got n_time={self.n_time}")
        if len(self.input_kind) != len(self.input_segment):
            raise UserError("input_kind and input_segment must have one entry per input")
        bad = set(self.input_kind) - set(INPUT_KINDS)
        if bad:
            raise UserError(f"input kinds must be 'exc' or 'inh', got {sorted(bad)}")
        missing = [f for f in SEGMENT_FIELDS if f not in self.segments]
        if missing:
            raise UserError(f"segment table lacks {missing}")
        if self.spike_capacity is None:
            # 500 Hz is far above any sustained rate of a cortical neuron.
            self.spike_capacity = max(1, self.n_time // 2)

    @property
    def n_inputs(self) -> int:
        return len(self.input_kind)

    @property
    def n_segments(self) -> int:
        return len(self.segments["section"])


def pack_inputs(spikes: np.ndarray) -> np.ndarray:
    """Bit-pack a (..., input) binary array along its last axis (8 inputs per byte)."""
    return np.packbits(np.asarray(spikes, dtype=bool), axis=-1, bitorder="little")


def unpack_inputs(packed: np.ndarray, n_inputs: int) -> np.ndarray:
    """Inverse of `pack_inputs`: (..., input_byte) uint8 -> (..., input) uint8 of 0/1."""
    return np.unpackbits(np.asarray(packed), axis=-1, count=n_inputs, bitorder="little")


def spike_train(spike_times: np.ndarray, n_time: int, t0_ms: float = 0.0) -> np.ndarray:
    """Binary output-spike train on the 1 ms grid from NaN-padded spike times.

    Args:
        spike_times: (..., spike) spike times in ms, NaN-padded.
        n_time: number of 1 ms bins, starting at `t0_ms`.
        t0_ms: time of the first bin's start, ms.

    Returns:
        (..., n_time) uint8, 1 where a spike falls in [t0 + k, t0 + k + 1) ms.
    """
    spike_times = np.asarray(spike_times, dtype=np.float64)
    lead = spike_times.shape[:-1]
    out = np.zeros((*lead, n_time), dtype=np.uint8)
    flat_t = spike_times.reshape(-1, spike_times.shape[-1])
    flat_out = out.reshape(-1, n_time)
    for row, times in enumerate(flat_t):
        bins = np.floor(times[np.isfinite(times)] - t0_ms).astype(np.int64)
        bins = bins[(bins >= 0) & (bins < n_time)]
        flat_out[row, bins] = 1
    return out


def _template(spec: StoreSpec, n_simulations: int) -> xr.Dataset:
    """An all-empty dataset of the store's full shape, used only to write metadata."""
    import dask.array as da

    n_t, n_b = spec.n_time, (spec.n_inputs + 7) // 8

    def empty(shape, dtype, chunks):
        return da.zeros(shape, dtype=dtype, chunks=chunks)

    data_vars = {
        "input_spikes": (
            ("simulation", "time", "input_byte"),
            empty((n_simulations, n_t, n_b), np.uint8, (1, n_t, n_b)),
            {
                "description": "presynaptic spikes per 1 ms bin, bit-packed along inputs",
                "packing": "numpy.packbits(axis=-1, bitorder='little')",
                "n_inputs": spec.n_inputs,
            },
        ),
        "soma_v": (
            ("simulation", "time"),
            empty((n_simulations, n_t), np.float32, (1, n_t)),
            {"units": "mV", "description": "somatic voltage at the start of each bin"},
        ),
        "spike_times": (
            ("simulation", "spike"),
            empty((n_simulations, spec.spike_capacity), np.float64, (1, spec.spike_capacity)),
            {"units": "ms", "description": "output spike times, NaN-padded"},
        ),
        "n_spikes": (("simulation",), empty((n_simulations,), np.int32, (1,)), {}),
        "sim_seed": (("simulation",), empty((n_simulations,), np.int64, (1,)), {}),
        "checksum": (
            ("simulation",),
            empty((n_simulations,), np.uint64, (1,)),
            {"description": "blake2b-64 of the simulation's data; 0: none written"},
        ),
        "completed": (("simulation",), empty((n_simulations,), bool, (1,)), {}),
    }
    if spec.record_nexus:
        data_vars["nexus_v"] = (
            ("simulation", "time"),
            empty((n_simulations, n_t), np.float32, (1, n_t)),
            {"units": "mV"},
        )
    if spec.record_dendrites:
        data_vars["dend_v"] = (
            ("simulation", "time", "segment"),
            empty((n_simulations, n_t, spec.n_segments), np.float32, (1, n_t, spec.n_segments)),
            {"units": "mV"},
        )
    seg = spec.segments
    coords = {
        "simulation": np.arange(n_simulations),
        "time": ("time", np.arange(n_t, dtype=np.float64), {"units": "ms"}),
        "input": np.arange(spec.n_inputs),
        "input_kind": ("input", np.asarray(spec.input_kind, dtype=object)),
        "input_segment": ("input", np.asarray(spec.input_segment, dtype=np.int32)),
        "segment": np.arange(spec.n_segments),
        "segment_section": ("segment", np.asarray(seg["section"], dtype=object)),
        "segment_x": ("segment", np.asarray(seg["x"], dtype=np.float64)),
        "segment_tree": ("segment", np.asarray(seg["tree"], dtype=object)),
        "segment_path_distance_um": (
            "segment",
            np.asarray(seg["path_distance_um"], dtype=np.float64),
            {"units": "um"},
        ),
        "segment_length_um": (
            "segment",
            np.asarray(seg["length_um"], dtype=np.float64),
            {"units": "um"},
        ),
    }
    attrs = {"schema": SCHEMA, "protocol": dict(spec.protocol), **dict(spec.attrs)}
    attrs["arrays"] = sorted([*data_vars, *(name for name in coords)])
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def check_writable_target(path: str | os.PathLike) -> Path:
    """Refuse an output path that is not, and cannot become, a store of ours.

    Creates the parent folder when needed and probes it with a real write (permission
    bits say nothing for root or read-only mounts). Returns the path as a `Path`.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} exists and is a file, not a zarr store; choose another --out")
    if path.is_dir() and any(path.iterdir()) and not (path / "zarr.json").exists():
        raise UserError(
            f"{path} is a non-empty folder that is not a zarr store; refusing to write into "
            "it. Choose a new path ending in .zarr."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {path.parent}: {err}; choose another --out") from err
    target = path if path.exists() else path.parent
    try:
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as err:
        raise UserError(f"cannot write to {target}: {err.strerror}; choose another --out") from err
    return path


def _create(path: Path, spec: StoreSpec, n_simulations: int) -> None:
    """Write an empty store at `path`, replacing one that may be there, in one rename.

    The metadata is built beside the target first, so a kill at any moment leaves either
    the old store, no store, or the new one at `path`, never a half-made one.
    """
    resolved = path.resolve()
    staging = resolved.with_name(f".{resolved.name}.creating")
    discarded = resolved.with_name(f".{resolved.name}.discarded")
    for leftover in (staging, discarded):
        shutil.rmtree(leftover, ignore_errors=True)
    _template(spec, n_simulations).to_zarr(
        staging, mode="w-", compute=False, consolidated=False, zarr_format=3
    )
    if (resolved / "zarr.json").exists():
        os.replace(resolved, discarded)
    os.replace(staging, resolved)
    shutil.rmtree(discarded, ignore_errors=True)


def prepare_store(
    path: str | os.PathLike, spec: StoreSpec, n_simulations: int, report=print
) -> list[int]:
    """Create the store, or reopen and extend a compatible one; return what is left to do.

    Args:
        path: the store folder (conventionally ending in ``.zarr``).
        spec: shapes, tables and protocol of the store.
        n_simulations: how many simulations the store should hold in the end.

    A store made with another protocol is refused, unless none of its simulations has
    finished: then it holds nothing worth keeping and is made anew. In a store of the
    same protocol, deleted array metadata is restored and damaged simulations
    (`find_damaged`) are marked unfinished, each with a line through `report`.

    Returns:
        Indices of the simulations that are not yet completed, in increasing order.

    Raises:
        UserError: the path is not a store of ours, or holds data made with another
            protocol or layout.
    """
    if n_simulations <= 0:
        raise UserError(f"n_simulations must be positive, got {n_simulations}")
    path = check_writable_target(path)
    if not (path / "zarr.json").exists():
        _create(path, spec, n_simulations)
        return list(range(n_simulations))

    group = _open_group(path, mode="r+")
    stored, requested = group.attrs.get("protocol"), _jsonable(spec.protocol)
    if stored != requested:
        if "completed" in group and not np.asarray(group["completed"][:]).any():
            # Nothing finished under the old protocol (e.g. its first simulation failed):
            # there is nothing to keep, so the corrected command simply starts afresh.
            _create(path, spec, n_simulations)
            return list(range(n_simulations))
        raise UserError(
            f"{path} was made with another protocol; it cannot be extended with these "
            f"arguments ({_describe_differences(stored, requested)}). Use a new --out path, "
            "or the store's own arguments."
        )
    _repair(path, spec, report)
    group = _open_group(path, mode="r+")
    have = group["completed"].shape[0]
    if n_simulations > have:
        # `completed` grows last: until it has, a rerun sees the old size and redoes the
        # whole (idempotent) extension, so a kill here never leaves arrays of mixed length.
        arrays = [a for name, a in group.arrays() if name != "completed"]
        for array in arrays:
            if array.ndim and "simulation" in _dims(array):
                array.resize((n_simulations, *array.shape[1:]))
        group["simulation"][have:] = np.arange(have, n_simulations)
        # Fill value of a fresh bool chunk is False, so new simulations start unfinished.
        group["completed"].resize((n_simulations,))
    completed = np.asarray(group["completed"][:])
    return [i for i in range(n_simulations) if i >= len(completed) or not completed[i]]


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        return {prefix or "protocol": obj}
    flat = {}
    for key, value in obj.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _describe_differences(stored: Any, requested: Any, limit: int = 4) -> str:
    """One line naming the protocol entries that differ, e.g. 'duration_ms: 6000 != 300'."""
    a, b = _flatten(stored), _flatten(requested)
    keys = [k for k in sorted(a.keys() | b.keys()) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    parts = [
        f"{k}: store {a.get(k, '<absent>')!r}, requested {b.get(k, '<absent>')!r}" for k in keys
    ]
    more = f"; and {len(parts) - limit} more" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more


def _jsonable(obj: Any) -> Any:
    """The form an object takes after a round trip through zarr's JSON attributes."""
    import json

    return json.loads(json.dumps(obj, default=str))


def _dims(array: zarr.Array) -> tuple[str, ...]:
    return tuple(array.metadata.dimension_names or ())


def _open_group(path: Path, mode: str) -> zarr.Group:
    if not (Path(path) / "zarr.json").exists():
        raise MissingDataError(
            f"no dataset at {path}. Make one with `python -m biophys.simulate --out {path}`."
        )
    try:
        json.loads((Path(path) / "zarr.json").read_text(encoding="utf-8"))
        group = zarr.open_group(path, mode=mode, zarr_format=3)
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise UserError(
            f"the root metadata of {path} (zarr.json) is damaged ({type(err).__name__}); the "
            "store cannot be read. Make it anew with `python -m biophys.simulate --out` a new "
            "path, or restore zarr.json from a backup."
        ) from err
    if group.attrs.get("schema") != SCHEMA:
        raise UserError(
            f"{path} is a zarr store but not a NeuronIO dataset of this toolkit "
            f"(schema {group.attrs.get('schema')!r}, expected {SCHEMA!r})."
        )
    return group


def append_history(path: str | os.PathLike, entry: Mapping[str, Any]) -> None:
    """Append one run's provenance (JSON-able) to the store's ``history`` attribute.

    A store may be filled by several runs (resumed, extended, on other machines); each
    records itself here so that the software behind every simulation stays known.
    """
    group = _open_group(Path(path), mode="r+")
    history = list(group.attrs.get("history", []))
    history.append(_jsonable(dict(entry)))
    group.attrs["history"] = history


def write_simulation(path: str | os.PathLike, index: int, record: SimulationRecord) -> None:
    """Write one finished simulation into its slot of a prepared store.

    The `completed` flag is written after all data, so a kill at any moment leaves the
    slot either complete or marked unfinished.
    """
    group = _open_group(Path(path), mode="r+")
    n_time = group["soma_v"].shape[1]
    n_inputs = int(group["input_spikes"].attrs["n_inputs"])
    if record.input_spikes.shape != (n_time, n_inputs):
        raise UserError(
            f"input_spikes has shape {record.input_spikes.shape}, the store expects "
            f"(time, input) = {(n_time, n_inputs)}"
        )
    times = np.sort(np.asarray(record.spike_times, dtype=np.float64))
    capacity = group["spike_times"].shape[1]
    if len(times) > capacity:
        raise UserError(
            f"simulation {index} fired {len(times)} spikes, more than the store's capacity "
            f"{capacity}; the cell is far outside its physiological range"
        )
    padded = np.full(capacity, np.nan)
    padded[: len(times)] = times
    values = {
        "input_spikes": pack_inputs(record.input_spikes),
        "soma_v": record.soma_v,
        "spike_times": padded,
        "n_spikes": len(times),
        "sim_seed": record.seed,
    }
    for name, value in (("nexus_v", record.nexus_v), ("dend_v", record.dend_v)):
        if name in group:
            if value is None:
                raise UserError(f"the store records {name} but the simulation did not")
            values[name] = value
    values = {name: np.asarray(v, dtype=group[name].dtype) for name, v in values.items()}
    try:
        group["completed"][index] = False
        for name, value in values.items():
            group[name][index] = value
        if "checksum" in group:
            group["checksum"][index] = simulation_digest(values)
        group["completed"][index] = True
    except OSError as err:
        raise UserError(
            f"could not write simulation {index} to {path} ({err.strerror or err}); the "
            "simulations stored before it are intact and this one stays unfinished: free "
            "space and run the same command again to resume"
        ) from err


def simulation_digest(values: Mapping[str, np.ndarray]) -> int:
    """64-bit blake2b of one simulation's data arrays (names, dtypes, shapes and bytes).

    Never 0: 0 is the checksum array's fill value, meaning "no checksum written".
    """
    digest = hashlib.blake2b(digest_size=8)
    for name in sorted(values):
        array = np.ascontiguousarray(values[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return int.from_bytes(digest.digest(), "little") or 1


def expected_arrays(group: zarr.Group) -> tuple[str, ...]:
    """The arrays the store was made with (its ``arrays`` attribute; older stores: the
    arrays every store has)."""
    return tuple(group.attrs.get("arrays", LEGACY_ARRAYS))


def _missing_arrays(path: Path, group: zarr.Group) -> list[str]:
    return [name for name in expected_arrays(group) if not (path / name / "zarr.json").is_file()]


def _refuse_missing_arrays(path: Path, group: zarr.Group) -> None:
    missing = _missing_arrays(path, group)
    if missing:
        raise UserError(
            f"{path} lacks the metadata of its array(s) {', '.join(missing)}; run the "
            "`python -m biophys.simulate` command that made it (same --out and options) to "
            "restore them and recompute what is lost"
        )


def _read_simulation(group: zarr.Group, index: int) -> dict[str, np.ndarray]:
    """One simulation's data arrays, as stored."""
    return {name: np.asarray(group[name][index]) for name in DATA_ARRAYS if name in group}


def check_simulation(group: zarr.Group, index: int, checksum: int) -> str | None:
    """Why simulation `index` is damaged, or None when its data match `checksum`."""
    if checksum == 0:
        return "its checksum is missing"
    try:
        values = _read_simulation(group, index)
    except Exception as err:  # codecs raise many types for truncated or corrupt chunks
        return f"its chunks cannot be read ({type(err).__name__})"
    if simulation_digest(values) != checksum:
        return "its data do not match the checksum written with them"
    return None


def find_damaged(path: str | os.PathLike, indices: Sequence[int] | None = None) -> dict[int, str]:
    """Completed simulations whose data are missing, unreadable or altered.

    Args:
        path: the store.
        indices: simulations to check (default: every completed one).

    Returns:
        {simulation: why}. Empty for a store made before checksums existed.
    """
    path = Path(path)
    group = _open_group(path, mode="r")
    if "checksum" not in group:
        return {}
    try:
        completed = np.asarray(group["completed"][:])
        checksums = np.asarray(group["checksum"][:])
    except Exception as err:  # a damaged bookkeeping chunk
        raise UserError(
            f"{path}: the completion or checksum records cannot be read "
            f"({type(err).__name__}); run the `python -m biophys.simulate` command that made "
            "the store to repair it"
        ) from err
    todo = np.flatnonzero(completed) if indices is None else indices
    damaged = {}
    for index in todo:
        why = check_simulation(group, int(index), int(checksums[index]))
        if why is not None:
            damaged[int(index)] = why
    return damaged


def refuse_damaged(path: str | os.PathLike, damaged: Mapping[int, str]) -> None:
    """Raise a one-line `UserError` naming damaged simulations and the fix."""
    if not damaged:
        return
    shown = "; ".join(f"simulation {i}: {why}" for i, why in list(damaged.items())[:4])
    more = f" (and {len(damaged) - 4} more)" if len(damaged) > 4 else ""
    raise UserError(
        f"{path} has damaged simulations ({shown}{more}); run the `python -m biophys.simulate` "
        "command that made the store (same --out and options) to recompute them"
    )


def _repair(path: Path, spec: StoreSpec, report) -> None:
    """Restore deleted array metadata, adopt checksums in older stores, and mark damaged
    simulations unfinished so that they are recomputed."""
    group = _open_group(path, mode="r+")
    n = group["simulation"].shape[0] if (path / "simulation" / "zarr.json").is_file() else None
    missing = _missing_arrays(path, group)
    legacy = "arrays" not in group.attrs
    if legacy:
        missing = [*missing, "checksum"] if "checksum" not in group else missing
    if missing:
        if n is None:
            n = max(group[a].shape[0] for a in DATA_ARRAYS if a in group)
        staging = path.with_name(f".{path.name}.template")
        shutil.rmtree(staging, ignore_errors=True)
        _template(spec, n).to_zarr(staging, mode="w-", compute=False, consolidated=False,
                                   zarr_format=3)  # fmt: skip
        for name in missing:
            (path / name).mkdir(exist_ok=True)
            shutil.copyfile(staging / name / "zarr.json", path / name / "zarr.json")
        shutil.rmtree(staging, ignore_errors=True)
        if not legacy:
            report(f"restored the metadata of the deleted array(s) {', '.join(missing)}")
        group = _open_group(path, mode="r+")
    if legacy:
        # A store from before checksums: its finished simulations are trusted once, and
        # checked from now on.
        for index in np.flatnonzero(group["completed"][:]):
            group["checksum"][index] = simulation_digest(_read_simulation(group, int(index)))
        group.attrs["arrays"] = sorted({*LEGACY_ARRAYS, "checksum", *group.array_keys()})
        report("note: this store predates checksums; its finished simulations now have them")
    damaged = find_damaged(path)
    for index, why in damaged.items():
        report(f"simulation {index} is damaged ({why}); it will be recomputed")
        group["completed"][index] = False


def open_dataset(
    path: str | os.PathLike, completed_only: bool = True, verify: bool = True
) -> xr.Dataset:
    """Open a NeuronIO store lazily (dask-backed).

    Args:
        path: the store folder.
        completed_only: drop simulations that have not finished (default True).
        verify: first re-read every completed simulation once and check it against its
            checksum (`find_damaged`); a store of 1000 six-second simulations takes
            seconds. False opens without reading any data.

    Raises:
        MissingDataError: there is no store at `path`.
        UserError: `path` holds something else than a NeuronIO store of this toolkit, an
            array's metadata is missing, or (with `verify`) a simulation is damaged.

    Example:
        >>> ds = open_dataset("data/L5PC.zarr")  # doctest: +SKIP
        >>> ds["soma_v"].sel(simulation=0).values  # (time,) mV  # doctest: +SKIP
    """
    group = _open_group(Path(path), mode="r")
    _refuse_missing_arrays(Path(path), group)
    if verify:
        refuse_damaged(path, find_damaged(path))
    ds = xr.open_zarr(path, consolidated=False, zarr_format=3)
    if completed_only:
        done = np.flatnonzero(ds["completed"].values)
        ds = ds.isel(simulation=done)
    return ds


def completed_simulations(path: str | os.PathLike) -> np.ndarray:
    """Indices of the finished simulations of a store."""
    return np.flatnonzero(_open_group(Path(path), mode="r")["completed"][:])


def store_exists(path: str | os.PathLike) -> bool:
    """True when a zarr store (of any kind) is at `path`; says nothing about its schema."""
    return (Path(path) / "zarr.json").exists()


def data_identity(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """What decides a store's data, from its attributes: its schema and protocol.

    Resuming or extending a store adds simulations and history but leaves this alone;
    remaking it differently changes it.
    """
    return {"schema": attrs.get("schema"), "protocol": attrs.get("protocol")}


def recorded_cell(attrs: Mapping[str, Any]) -> str | None:
    """The cell name a store records (top-level or in its protocol), or None."""
    protocol = attrs.get("protocol")
    for source in (attrs, protocol if isinstance(protocol, Mapping) else {}):
        if isinstance(source.get("cell"), str):
            return source["cell"]
    return None


@dataclass(frozen=True)
class StoreMetadata:
    """A store's shapes and tables, read from its metadata only.

    Attributes:
        n_time: 1 ms bins per simulation.
        input_kind: "exc"/"inh" per input.
        input_segment: dendritic segment index per input.
        simulations: labels (the ``simulation`` coordinate) of the completed simulations,
            in increasing order.
        attrs: the store's attributes (protocol and provenance of the data).
        input_tree: the dendritic tree ("basal", "apical") of each input's segment.
        input_distance_um: each input's segment's path distance from the soma, µm.
        segments: the segment table, columns `SEGMENT_FIELDS` (lengths and distances µm).
    """

    n_time: int
    input_kind: tuple[str, ...]
    input_segment: tuple[int, ...]
    simulations: tuple[int, ...]
    attrs: dict[str, Any] = field(repr=False)
    input_tree: tuple[str, ...] = ()
    input_distance_um: tuple[float, ...] = ()
    segments: dict[str, tuple] = field(default_factory=dict, repr=False)


def read_metadata(path: str | os.PathLike) -> StoreMetadata:
    """Shapes, input table, finished simulations and attributes of a store.

    Raises:
        MissingDataError: there is no store at `path`.
        UserError: `path` holds something else than a NeuronIO store of this toolkit.
    """
    ds = open_dataset(path, verify=False)
    segment = ds["input_segment"].values
    # Each array is read once: indexing `.values` per input re-reads it every time.
    table = {name: ds[f"segment_{name}"].values for name in SEGMENT_FIELDS}
    return StoreMetadata(
        n_time=int(ds.sizes["time"]),
        input_kind=tuple(str(k) for k in ds["input_kind"].values),
        input_segment=tuple(int(s) for s in segment),
        simulations=tuple(int(s) for s in ds["simulation"].values),
        attrs=dict(ds.attrs),
        input_tree=tuple(str(table["tree"][i]) for i in segment),
        input_distance_um=tuple(float(table["path_distance_um"][i]) for i in segment),
        segments={
            name: tuple(v.item() if hasattr(v, "item") else v for v in values)
            for name, values in table.items()
        },
    )


class SimulationReader:
    """Reads parts of single simulations of one store, opened once, without dask.

    Meant for many small reads (training windows, one simulation at a time); for whole
    arrays use `open_dataset`. Each simulation is checked against its checksum the first
    time it is read, and the last few read are kept decoded in memory (a window read
    decodes the whole simulation's chunk anyway). A pickled reader reopens the store
    where it is unpickled.

    Attributes:
        path: the store folder.
        n_time: 1 ms bins per simulation.
        n_inputs: number of inputs.
        input_kind: (n_inputs,) array of "exc"/"inh".
    """

    def __init__(self, path: str | os.PathLike, cache_simulations: int = 32):
        self.path = Path(path)
        self._group = _open_group(self.path, mode="r")
        _refuse_missing_arrays(self.path, self._group)
        self.n_time = int(self._group["soma_v"].shape[1])
        self.n_inputs = int(self._group["input_spikes"].attrs["n_inputs"])
        self.input_kind = np.array([str(k) for k in self._group["input_kind"][:]])
        self._completed = np.asarray(self._group["completed"][:])
        self._checksums = (
            np.asarray(self._group["checksum"][:]) if "checksum" in self._group else None
        )
        self._cache_size = int(cache_simulations)
        self._cache: dict[int, dict[str, np.ndarray]] = {}

    def __reduce__(self):
        return (type(self), (self.path, self._cache_size))

    def _simulation(self, simulation: int) -> dict[str, np.ndarray]:
        """The decoded, verified data of one simulation (from the cache when there)."""
        if simulation in self._cache:
            return self._cache[simulation]
        if not 0 <= simulation < len(self._completed) or not self._completed[simulation]:
            raise UserError(
                f"{self.path} has no simulation {simulation} (none finished by that label)"
            )
        try:
            values = _read_simulation(self._group, simulation)
        except Exception as err:  # codecs raise many types for truncated or corrupt chunks
            refuse_damaged(self.path, {simulation: f"its chunks cannot be read ({err!r:.80})"})
        if self._checksums is not None:
            checksum = int(self._checksums[simulation])
            if checksum == 0 or simulation_digest(values) != checksum:
                why = "its checksum is missing" if checksum == 0 else "its data do not match"
                refuse_damaged(self.path, {simulation: why})
        if len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[simulation] = values
        return values

    def read(
        self, simulation: int, start: int = 0, stop: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inputs, output spikes and somatic voltage of one simulation over [start, stop) ms.

        Args:
            simulation: the simulation's label (its ``simulation`` coordinate, which is its
                index).
            start, stop: first and one-past-last 1 ms bin (default: the whole simulation).

        Returns:
            input_spikes (T, n_inputs) uint8 0/1, spikes (T,) uint8 0/1 (`spike_train`,
            a spike at t ms marks bin floor(t)), soma_v (T,) float32 in mV.

        Raises:
            UserError: the store has no finished simulation with that label, or it is
                damaged.
        """
        stop = self.n_time if stop is None else stop
        one = self._simulation(int(simulation))
        inputs = unpack_inputs(one["input_spikes"][start:stop], self.n_inputs)
        spikes = spike_train(one["spike_times"], stop - start, t0_ms=float(start))
        return inputs, spikes, one["soma_v"][start:stop].astype(np.float32)


def get_attribute(path: str | os.PathLike, name: str, default: Any = None) -> Any:
    """One attribute of a store (e.g. a writer's own bookkeeping), or `default`.

    Raises:
        MissingDataError: there is no store at `path`.
        UserError: `path` holds something else than a NeuronIO store of this toolkit.
    """
    return _open_group(Path(path), mode="r").attrs.get(name, default)


def set_attribute(path: str | os.PathLike, name: str, value: Any) -> None:
    """Set one JSON-able attribute of a store, for a writer's own bookkeeping.

    zarr writes the metadata file atomically, so a kill keeps the previous value. The
    attributes that describe the data (`RESERVED_ATTRIBUTES`) are refused: only this
    module writes them.

    Raises:
        UserError: `name` is reserved, or `path` is not a NeuronIO store of this toolkit.
        MissingDataError: there is no store at `path`.
    """
    if name in RESERVED_ATTRIBUTES:
        raise UserError(f"the store attribute {name!r} is written by biophys.store only")
    _open_group(Path(path), mode="r+").attrs[name] = _jsonable(value)
