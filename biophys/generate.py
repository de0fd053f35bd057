"""Make or extend a NeuronIO dataset: many seeded simulations, run in parallel, resumable.

A dataset is a set of independent simulations. Simulation ``i`` draws everything random
(its input spike trains, its synaptic release) from one seed derived from the run's base
seed and ``i`` alone (`simulation_seed`), so it is the same whether it was made in one
run, in a resumed run, or when the store was later extended to more simulations.

Jobs run through `elmbridge.parallel` (a local process pool by default, an existing Dask
scheduler, or in-process). Each worker process builds the cell once and reuses it. The
calling process is the only writer: it stores each result with
`biophys.store.write_simulation` as it arrives, and a lock beside the store keeps a
second run from writing into it at the same time. Killed at any moment, a rerun of the
same command finishes the missing simulations and redoes none of the finished ones.

Where simulations come from is a `Simulator`: the NEURON one (`NEURON`) by default; the
tests substitute a fast stand-in with the same contract.
"""

import contextlib
import functools
import hashlib
import numbers
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from biophys import store
from elmbridge import parallel, provenance
from elmbridge.errors import UserError


def simulation_seed(base_seed: int, index: int) -> int:
    """The seed of simulation `index` of a run with `base_seed` (a non-negative int64).

    It is the first 63 bits of the state of ``SeedSequence(base_seed).spawn(...)[index]``,
    so it depends on nothing but the two numbers, and seeds of different simulations
    collide with probability ~n²/2⁶⁴.
    """
    child = np.random.SeedSequence(base_seed, spawn_key=(index,))
    return int(child.generate_state(1, np.uint64)[0] >> np.uint64(1))


# 100× the published NeuronIO data set: more is a typo, not a data set.
MAX_SIMULATIONS = 1_000_000


@dataclass(frozen=True)
class SimulationSettings:
    """What every simulation of a run shares; everything here decides the data.

    Attributes:
        cell: cell name (see `biophys.cells.CELL_NAMES`).
        duration_ms: simulated time per simulation, whole ms (one bin per ms).
        input_variant: NeuronIO input protocol ("nmda"/"ampa"); None for the cell's
            default, or when the inputs are given explicitly.
        dt_ms: integration step, ms (fixed-step; CVode's initial step otherwise).
        cvode: integrate with NEURON's variable-step CVode instead of fixed steps.
        record_nexus: also record the apical nexus voltage.
        record_dendrites: also record the voltage of every dendritic segment.
        release_probability: probability that a presynaptic spike releases transmitter.
        morphology_path: an alternative morphology file; None for the cell's own.
    """

    cell: str = "L5PC"
    duration_ms: int = 6000
    input_variant: str | None = None
    dt_ms: float = 0.025
    cvode: bool = False
    record_nexus: bool = False
    record_dendrites: bool = False
    release_probability: float = 1.0
    morphology_path: str | None = None

    def __post_init__(self):
        if not isinstance(self.duration_ms, numbers.Integral) or self.duration_ms <= 0:
            raise UserError(
                f"the duration must be a positive whole number of ms, got {self.duration_ms!r}"
            )
        if not (np.isfinite(self.dt_ms) and self.dt_ms > 0):
            raise UserError(f"dt must be a positive number of ms, got {self.dt_ms!r}")
        steps_per_ms = 1.0 / self.dt_ms
        if not self.cvode and abs(steps_per_ms - round(steps_per_ms)) > 1e-9 * steps_per_ms:
            raise UserError(
                f"dt = {self.dt_ms} ms does not divide 1 ms, so voltages could not be sampled "
                "on the 1 ms grid; use e.g. 0.025, 0.05 or 0.1"
            )
        if not 0.0 <= self.release_probability <= 1.0:
            raise UserError(
                f"the release probability must lie in [0, 1], got {self.release_probability!r}"
            )


@dataclass(frozen=True)
class SimulationJob:
    """One simulation to run: its slot, its seed and, when given, its input spikes.

    `packed_inputs` holds explicit inputs bit-packed along time (8x less to ship to a
    worker than booleans); None means the worker draws NeuronIO inputs from `seed`.
    """

    index: int
    seed: int
    settings: SimulationSettings
    packed_inputs: np.ndarray | None = None

    def input_spikes(self) -> np.ndarray | None:
        """The explicit inputs as (n_inputs, duration_ms) bool, or None."""
        if self.packed_inputs is None:
            return None
        bits = np.unpackbits(
            self.packed_inputs, axis=-1, count=self.settings.duration_ms, bitorder="little"
        )
        return bits.astype(bool)


@dataclass(frozen=True)
class Simulator:
    """Where the generator gets cells, input protocols and simulations.

    Attributes:
        describe_cell: ``(name, morphology_path) -> CellDescription`` (see the contract
            in `biophys.cells`); raises `UserError` for an unknown name.
        protocol_parameters: ``variant -> dict``, JSON-able, recorded in the store.
        run_job: a top-level (picklable) function ``SimulationJob -> SimulationRecord``;
            it runs on the workers.
    """

    describe_cell: Callable[[str, str | None], Any]
    protocol_parameters: Callable[[str], Mapping[str, Any]]
    run_job: Callable[[SimulationJob], store.SimulationRecord]


@functools.lru_cache(maxsize=4)
def _describe_cell(name: str, morphology_path: str | None = None):
    from biophys.cells import describe_cell

    return describe_cell(name, morphology_path=morphology_path)


def _protocol_parameters(variant: str) -> dict:
    from biophys.protocol import protocol_parameters

    return protocol_parameters(variant)


def run_simulation_job(job: SimulationJob) -> store.SimulationRecord:
    """Run one NEURON simulation (on a worker); the cell is built once per process."""
    from biophys.protocol import neuronio_inputs
    from biophys.simulation import simulate

    s = job.settings
    inputs = job.input_spikes()
    if inputs is None:
        cell = _describe_cell(s.cell, s.morphology_path)
        inputs = neuronio_inputs(cell, s.duration_ms, job.seed, variant=s.input_variant)
    return simulate(
        s.cell,
        inputs,
        seed=job.seed,
        dt_ms=s.dt_ms,
        cvode=s.cvode,
        record_nexus=s.record_nexus,
        record_dendrites=s.record_dendrites,
        release_probability=s.release_probability,
        morphology_path=s.morphology_path,
    )


NEURON = Simulator(_describe_cell, _protocol_parameters, run_simulation_job)


@dataclass
class ExplicitInputs:
    """Input spike trains given by the user, shared by all simulations or one per each.

    Attributes:
        spikes: (n_inputs, T) for the same inputs in every simulation, or
            (n_sims, n_inputs, T); 0/1 values of any integer or bool dtype (may be a
            memory map).
        source: where they came from (a file name), for the store's attrs.
    """

    spikes: np.ndarray
    source: str = "array"
    _digest: str | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExplicitInputs":
        """Open a .npy file without reading it into memory."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"input spike file {path} does not exist")
        try:
            spikes = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise UserError(f"cannot read {path} as a .npy array: {err}") from err
        return cls(spikes, source=path.name)

    def __post_init__(self):
        a = self.spikes
        if a.ndim not in (2, 3):
            raise UserError(
                f"input spikes must have shape (n_inputs, T) or (n_sims, n_inputs, T), got "
                f"{a.shape}"
            )
        if not (a.dtype == bool or np.issubdtype(a.dtype, np.integer)):
            raise UserError(f"input spikes must be 0/1 integers or booleans, got dtype {a.dtype}")

    @property
    def per_simulation(self) -> bool:
        return self.spikes.ndim == 3

    @property
    def n_inputs(self) -> int:
        return self.spikes.shape[-2]

    @property
    def n_time(self) -> int:
        return self.spikes.shape[-1]

    def for_simulation(self, index: int) -> np.ndarray:
        """(n_inputs, T) bool inputs of simulation `index`, checked to be 0/1."""
        rows = np.asarray(self.spikes[index] if self.per_simulation else self.spikes)
        if rows.dtype != bool and ((rows != 0) & (rows != 1)).any():
            raise UserError(
                f"input spikes of simulation {index} hold values other than 0 and 1; give "
                "one spike at most per input and 1 ms bin"
            )
        return rows.astype(bool)

    def packed(self, index: int) -> np.ndarray:
        return np.packbits(self.for_simulation(index), axis=-1, bitorder="little")

    def digest(self) -> str:
        """sha256 of the 0/1 content and shape (independent of dtype and file layout)."""
        if self._digest is None:
            h = hashlib.sha256(repr(self.spikes.shape).encode())
            for i in range(self.spikes.shape[0] if self.per_simulation else 1):
                h.update(self.packed(i).tobytes())
            self._digest = h.hexdigest()
        return self._digest


@dataclass
class GenerationResult:
    """What a `generate` call left behind.

    Attributes:
        path: the store.
        n_simulations: simulations the store has room for.
        n_completed: simulations finished (all of them, when the run was not cut short).
        n_run: simulations this call ran.
        mean_rate_hz: mean output firing rate over the finished simulations, Hz.
        wall_s: wall time of the simulation phase, s.
    """

    path: Path
    n_simulations: int
    n_completed: int
    n_run: int
    mean_rate_hz: float
    wall_s: float

    def summary(self) -> str:
        return (
            f"{self.path}: {self.n_completed}/{self.n_simulations} simulations, "
            f"mean firing rate {self.mean_rate_hz:.2f} Hz"
        )


def _protocol(
    settings: SimulationSettings,
    cell: Any,
    base_seed: int,
    variant: str | None,
    protocol_params: Mapping[str, Any] | None,
    inputs: ExplicitInputs | None,
) -> dict[str, Any]:
    """Exactly what decides the data; a store is extended only under an equal protocol."""
    if inputs is None:
        input_block = {"source": "neuronio", "variant": variant, "parameters": protocol_params}
    else:
        input_block = {
            "source": "explicit",
            "per_simulation": inputs.per_simulation,
            "sha256": inputs.digest(),
        }
    return {
        "cell": {
            "name": cell.name,
            "morphology_sha256": cell.morphology_sha256,
            "mechanisms_hash": cell.mechanisms_hash,
            "parameters_hash": provenance.stable_hash(cell.parameters),
        },
        "inputs": input_block,
        "duration_ms": settings.duration_ms,
        "dt_ms": settings.dt_ms,
        "cvode": settings.cvode,
        "base_seed": base_seed,
        "release_probability": settings.release_probability,
        "record_nexus": settings.record_nexus,
        "record_dendrites": settings.record_dendrites,
    }


def _attrs(
    settings: SimulationSettings,
    cell: Any,
    base_seed: int,
    variant: str | None,
    protocol_params: Mapping[str, Any] | None,
    inputs: ExplicitInputs | None,
) -> dict[str, Any]:
    """Readable provenance of the store (the protocol holds the part that must match)."""
    return {
        "cell": cell.name,
        "morphology_name": cell.morphology_name,
        "morphology_sha256": cell.morphology_sha256,
        "mechanisms_hash": cell.mechanisms_hash,
        "synapse_model": cell.synapse_model,
        "cell_parameters": cell.parameters,
        "input_protocol": variant if inputs is None else f"explicit ({inputs.source})",
        "protocol_parameters": protocol_params or {},
        "base_seed": base_seed,
        "seed_derivation": "numpy SeedSequence(base_seed, spawn_key=(simulation,)), "
        "first 63 bits of generate_state(1, uint64)",
        "duration_ms": settings.duration_ms,
        "dt_ms": settings.dt_ms,
        "cvode": settings.cvode,
        "release_probability": settings.release_probability,
        "record_nexus": settings.record_nexus,
        "record_dendrites": settings.record_dendrites,
        "software": provenance.software_versions(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


@contextlib.contextmanager
def store_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock beside the store; the OS releases it when the process dies.

    Raises `UserError` at once when another process holds it.
    """
    path = Path(path).resolve()
    lock = FileLock(str(path.with_name(f".{path.name}.lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout as err:
        raise UserError(
            f"another run is writing to {path} (lock {lock.lock_file}); wait for it to "
            "finish or stop it, then run this command again"
        ) from err
    try:
        yield
    finally:
        lock.release()


def generate(
    out: str | os.PathLike,
    n_sims: int,
    settings: SimulationSettings,
    *,
    seed: int = 0,
    inputs: ExplicitInputs | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any | None = None,
    simulator: Simulator = NEURON,
    log: Callable[[str], None] | None = None,
) -> GenerationResult:
    """Make the store `out` hold `n_sims` finished simulations, running only missing ones.

    Args:
        out: the store folder (conventionally ``*.zarr``); created, resumed or extended.
        n_sims: how many simulations the store holds in the end.
        settings: what every simulation shares.
        seed: the run's base seed (non-negative); simulation i uses
            ``simulation_seed(seed, i)``.
        inputs: explicit input spike trains instead of the NeuronIO protocol.
        workers: worker processes of a local cluster (default: one per core).
        scheduler: None (local cluster), "synchronous" (in this process), or the address
            of a running Dask scheduler.
        client: an existing Dask client to use instead (then `workers` and `scheduler`
            must be None).
        simulator: where cells and simulations come from (default: NEURON).
        log: called with one line per step for the user (e.g. `print`); None is silent.

    Raises:
        UserError: bad arguments, an unusable output path, or a store made with another
            protocol.
    """
    say = log or (lambda _msg: None)
    if not isinstance(n_sims, int | np.integer) or n_sims <= 0:
        raise UserError(f"the number of simulations must be a positive integer, got {n_sims!r}")
    n_sims = int(n_sims)
    if n_sims > MAX_SIMULATIONS:
        raise UserError(
            f"{n_sims} simulations is more than one store should hold ({MAX_SIMULATIONS}); "
            "split the work into several stores"
        )
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise UserError(f"the seed must be a non-negative integer, got {seed!r}")
    if workers is not None and workers < 1:
        raise UserError(f"the number of workers must be at least 1, got {workers}")
    if workers is not None and scheduler not in (None, parallel.SYNCHRONOUS):
        raise UserError(
            "--workers sets the size of a local cluster; with --scheduler the cluster "
            "decides how many workers there are. Give one or the other."
        )
    if client is not None and (workers is not None or scheduler is not None):
        raise UserError("give either a Dask client or workers/scheduler, not both")
    if inputs is not None:
        if settings.input_variant is not None:
            raise UserError("explicit inputs replace the input protocol; give one or the other")
        _check_inputs_shape(inputs, n_sims, settings.duration_ms)

    cell = simulator.describe_cell(settings.cell, settings.morphology_path)
    if inputs is not None and inputs.n_inputs != len(cell.input_kind):
        raise UserError(
            f"the input spikes have {inputs.n_inputs} rows, but {cell.name} has "
            f"{len(cell.input_kind)} inputs (rows in the cell's input order)"
        )
    variant = None if inputs is not None else (settings.input_variant or cell.input_protocol)
    protocol_params = None if variant is None else dict(simulator.protocol_parameters(variant))
    # Jobs carry the resolved variant so that every worker draws the same protocol.
    settings = replace(settings, input_variant=variant)
    spec = store.StoreSpec(
        n_time=settings.duration_ms,
        input_kind=cell.input_kind,
        input_segment=cell.input_segment,
        segments=cell.segments,
        protocol=_protocol(settings, cell, seed, variant, protocol_params, inputs),
        record_nexus=settings.record_nexus,
        record_dendrites=settings.record_dendrites,
        attrs=_attrs(settings, cell, seed, variant, protocol_params, inputs),
    )

    path = store.check_writable_target(out)
    with store_lock(path):
        todo = store.prepare_store(path, spec, n_sims)
        done = n_sims - len(todo)
        where = _where(client, workers, scheduler)
        say(
            f"{cell.name}: {n_sims} simulations of {settings.duration_ms} ms "
            f"({'CVode' if settings.cvode else f'dt {settings.dt_ms} ms'}, inputs: "
            f"{variant or 'explicit ' + inputs.source}, base seed {seed}) -> {path}"
        )
        if inputs is not None and not inputs.per_simulation and settings.release_probability == 1:
            say(
                "note: every simulation gets the same inputs and release is certain, so all "
                "simulations will be identical"
            )
        say(
            f"{done} already stored, {len(todo)} to run"
            + (f" on {where}" if todo else "; nothing to do")
        )
        t0 = time.perf_counter()
        if todo:
            store.append_history(
                path,
                {
                    **provenance.run_record({"n_sims": n_sims, "settings": asdict(settings)}, seed),
                    "n_simulations_to_run": len(todo),
                },
            )
            jobs = _jobs(todo, seed, settings, inputs)
            with _client(client, workers, scheduler) as active:
                for job, record in parallel.map_unordered(
                    simulator.run_job,
                    jobs,
                    client=active,
                    desc=f"simulating {cell.name}",
                    total=len(todo),
                ):
                    _check_record(job, record)
                    store.write_simulation(path, job.index, record)
        wall_s = time.perf_counter() - t0
    result = summarize(path)
    if result.n_simulations > n_sims:
        say(
            f"note: the store holds {result.n_simulations} simulations; a smaller --n-sims "
            "does not shrink it"
        )
    result.n_run, result.wall_s = len(todo), wall_s
    return result


def summarize(path: str | os.PathLike) -> GenerationResult:
    """Count the simulations of a store, the finished ones and their mean firing rate."""
    ds = store.open_dataset(path, completed_only=False, verify=False)
    completed = ds["completed"].values
    n_spikes = ds["n_spikes"].values[completed]
    duration_s = ds.sizes["time"] / 1000.0
    rate = float(n_spikes.sum() / (len(n_spikes) * duration_s)) if len(n_spikes) else float("nan")
    return GenerationResult(
        path=Path(path),
        n_simulations=ds.sizes["simulation"],
        n_completed=int(completed.sum()),
        n_run=0,
        mean_rate_hz=rate,
        wall_s=0.0,
    )


def _check_inputs_shape(inputs: ExplicitInputs, n_sims: int, duration_ms: int) -> None:
    if inputs.n_time != duration_ms:
        raise UserError(
            f"the input spikes cover {inputs.n_time} ms (last axis), but the duration is "
            f"{duration_ms} ms; leave --duration-ms out or make them agree"
        )
    if inputs.per_simulation and inputs.spikes.shape[0] != n_sims:
        raise UserError(
            f"the input spikes hold {inputs.spikes.shape[0]} simulations (first axis), but "
            f"{n_sims} were asked for; leave --n-sims out or make them agree"
        )


def _jobs(
    todo: list[int], seed: int, settings: SimulationSettings, inputs: ExplicitInputs | None
) -> Iterator[SimulationJob]:
    for index in todo:
        packed = None if inputs is None else inputs.packed(index)
        yield SimulationJob(index, simulation_seed(seed, index), settings, packed)


def _check_record(job: SimulationJob, record: store.SimulationRecord) -> None:
    # A record from the wrong seed would silently break reproducibility of the store.
    if int(record.seed) != job.seed:
        raise RuntimeError(
            f"simulation {job.index} came back with seed {record.seed}, expected {job.seed}"
        )


def _where(client: Any | None, workers: int | None, scheduler: str | None) -> str:
    if client is not None:
        return f"the Dask cluster at {client.scheduler.address}"
    if scheduler == parallel.SYNCHRONOUS:
        return "this process (synchronous)"
    if scheduler is not None:
        return f"the Dask cluster at {scheduler}"
    return f"a local cluster of {workers or os.cpu_count() or 1} worker processes"


def _client(client: Any | None, workers: int | None, scheduler: str | None):
    if client is not None:
        return contextlib.nullcontext(client)
    return parallel.dask_client(scheduler, n_workers=workers)
