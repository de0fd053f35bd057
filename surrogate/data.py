"""NeuronIO stores as surrogate training and evaluation data.

A store (`biophys.store`) holds whole simulations. Surrogates see them in two ways:

- training: random windows (500 ms by default) starting at least 500 ms into a
  simulation (`WindowDataset`, a PyTorch dataset that reads one window per item);
- evaluation: each simulation whole, cut into the published sequential windows
  (`evaluation_windows`).

Inputs are encoded +1 (excitatory spike) / −1 (inhibitory spike) per 1 ms bin; targets
are the spike label on the 1 ms grid (`biophys.store.spike_train`: a spike at t ms marks
bin floor(t)) and the soma target of `elmnet.neuronio` (clipped at −55 mV, offset
−67.7 mV, scaled by 0.1).

Nothing here loads a whole store: items read their own window, and each process (the
main one or a DataLoader worker) opens the store on first use.

This module is the surrogate's only door to data: the rest of `surrogate` reads stores
through it, and it reads them through `biophys.store`, the one owner of their layout.
"""

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biophys import store
from elmbridge.errors import UserError
from elmbridge.provenance import stable_hash
from elmnet.neuron import ELMNeuron
from elmnet.neuronio import encode_inputs, soma_target

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class StoreInfo:
    """What a surrogate needs to know about a store, read from its metadata only.

    Attributes:
        path: the store folder.
        n_time: 1 ms bins per simulation.
        input_kind: "exc"/"inh" per input.
        input_segment: dendritic segment index per input.
        simulations: labels of the completed simulations (the store's `simulation`
            coordinate), in increasing order.
        attrs: the store's attributes (protocol and provenance of the data).
        input_tree, input_distance_um: tree and path distance (µm) of each input's segment.
        segments: the store's segment table (`biophys.store.SEGMENT_FIELDS`; µm).
    """

    path: Path
    n_time: int
    input_kind: tuple[str, ...]
    input_segment: tuple[int, ...]
    simulations: tuple[int, ...]
    attrs: dict[str, Any] = field(repr=False)
    input_tree: tuple[str, ...] = ()
    input_distance_um: tuple[float, ...] = ()
    segments: dict[str, tuple] = field(default_factory=dict, repr=False)

    @property
    def n_inputs(self) -> int:
        return len(self.input_kind)

    @property
    def attrs_hash(self) -> str:
        """Short hash of all the store's attributes (they also log every run that wrote it)."""
        return stable_hash(self.attrs)

    @property
    def protocol_hash(self) -> str:
        """Short hash of what decides the data (schema and protocol).

        Unlike `attrs_hash` it survives a resumed or extended generation, which only adds
        simulations and history; it changes when the store is remade differently.
        """
        return stable_hash(store.data_identity(self.attrs))

    @property
    def protocol(self) -> Any:
        """How the data were made, as the store records it (None when it does not)."""
        return store.data_identity(self.attrs)["protocol"]

    @property
    def cell(self) -> str | None:
        """The cell name the store records, when it records one."""
        return store.recorded_cell(self.attrs)

    def provenance(self) -> dict[str, Any]:
        """Data provenance for a run record: path, attrs hash, size and protocol."""
        return {
            "store": str(self.path.resolve()),
            "attrs_hash": self.attrs_hash,
            "protocol_hash": self.protocol_hash,
            "n_simulations": len(self.simulations),
            "n_time_ms": self.n_time,
            "n_inputs": self.n_inputs,
            "protocol": self.protocol,
        }


def inspect_store(path: str | os.PathLike, min_time_ms: int = 0, verify: bool = False) -> StoreInfo:
    """Open a store's metadata and check it can serve surrogate data.

    Args:
        path: the store folder.
        min_time_ms: the simulations must be at least this long (e.g. window + skip).
        verify: also re-read every completed simulation against its checksum (a fit does,
            before it writes anything; readers check each simulation when they read it).

    Raises:
        MissingDataError: no store at `path`.
        UserError: not a NeuronIO store, no completed simulation, too short, or (with
            `verify`) damaged.
    """
    path = Path(path)
    meta = store.read_metadata(path)
    if verify:
        store.refuse_damaged(path, store.find_damaged(path))
    if not meta.simulations:
        raise UserError(
            f"{path} holds no completed simulation yet; finish it with the "
            "`python -m biophys.simulate` command that made it"
        )
    if meta.n_time < min_time_ms:
        raise UserError(
            f"the simulations in {path} are {meta.n_time} ms long; this needs at least "
            f"{min_time_ms} ms (window plus the skipped start). Make longer simulations."
        )
    return StoreInfo(
        path=path,
        n_time=meta.n_time,
        input_kind=meta.input_kind,
        input_segment=meta.input_segment,
        simulations=meta.simulations,
        attrs=meta.attrs,
        input_tree=meta.input_tree,
        input_distance_um=meta.input_distance_um,
        segments=meta.segments,
    )


def count_completed_simulations(path: str | os.PathLike) -> int:
    """How many simulations of the store at `path` have finished; 0 when there is no store.

    Raises:
        UserError: `path` holds a zarr store that is not a NeuronIO store of this toolkit.
    """
    if not store.store_exists(path):
        return 0
    return len(store.completed_simulations(path))


def check_inputs_fit(info: StoreInfo, d_in: int, routing: str, what: str = "the model") -> None:
    """Refuse a store whose inputs a model cannot read (count, or order for routing).

    `neuronio` routing pairs input i with input i + d_in/2, so the store must list all
    excitatory inputs first and the inhibitory ones of the same segments after them.
    """
    if info.n_inputs != d_in:
        raise UserError(
            f"{what} expects {d_in} inputs but the store {info.path} has {info.n_inputs}; "
            "use a model made for this store's cell, or fit a new one on it"
        )
    if routing == "neuronio":
        half = d_in // 2
        kinds, segs = info.input_kind, info.input_segment
        ordered = (
            d_in % 2 == 0
            and all(k == "exc" for k in kinds[:half])
            and all(k == "inh" for k in kinds[half:])
            and segs[:half] == segs[half:]
        )
        if not ordered:
            raise UserError(
                f"neuronio routing needs the inputs ordered [excitatory per segment, "
                f"inhibitory for the same segments], but {info.path} lists them otherwise; "
                "use routing 'random' for this store"
            )


def split_simulations(
    simulations: Sequence[int], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Assign whole simulations to train, validation and test splits.

    Each simulation gets a random key from (seed, its label) alone, and the splits take
    the simulations in key order: the test split the first round(test_fraction·N) (at
    least one when the fraction is positive), validation the next ones, training the
    rest. No simulation is in two splits.

    Returns:
        {"train": [...], "val": [...], "test": [...]}, labels sorted within each split.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise UserError(f"{name} must be in [0, 1), got {value}")
    sims = np.asarray(sorted(set(int(s) for s in simulations)), dtype=np.int64)
    n = sims.size

    def count(fraction: float) -> int:
        return max(1, round(fraction * n)) if fraction > 0 else 0

    n_test, n_val = count(test_fraction), count(val_fraction)
    if n - n_test - n_val < 1:
        raise UserError(
            f"{n} simulations cannot make {n_test} test, {n_val} validation and at least one "
            "training simulation; make more simulations or lower the fractions"
        )
    keys = [np.random.default_rng([seed, int(s)]).random() for s in sims]
    order = sims[np.argsort(keys, kind="stable")]
    return {
        "test": sorted(order[:n_test].tolist()),
        "val": sorted(order[n_test : n_test + n_val].tolist()),
        "train": sorted(order[n_test + n_val :].tolist()),
    }


class StoreReader:
    """Reads windows and whole simulations of one store; opens it lazily per process.

    Pickling drops the open handle, so a copy sent to a DataLoader worker opens the
    store again in that worker.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._ds: store.SimulationReader | None = None  # the open store, once read from
        self._sign: np.ndarray | None = None

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def _open(self) -> store.SimulationReader:
        if self._ds is None:
            self._ds = store.SimulationReader(self.path)
            self._sign = encode_inputs(np.ones(self._ds.n_inputs), self._ds.input_kind)
        return self._ds

    def read(
        self, simulation: int, start: int = 0, stop: int | None = None, spikes_int8: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inputs and targets of one simulation over bins [start, stop).

        Args:
            spikes_int8: x as int8 instead of float32 (the same values; the ELM neuron's
                spike product then reads 1 byte per entry instead of 4).

        Returns:
            x (T, n_inputs) float32 or int8 +1/−1/0, spike (T,) float32 0/1, soma_mv (T,)
            float32.
        """
        inputs, spike, soma_mv = self._open().read(simulation, start, stop)
        if spikes_int8:
            # The store holds 0/1 spikes and the signs are ±1: the product fits int8.
            x = inputs.astype(np.int8) * self._sign.astype(np.int8)
        else:
            x = inputs.astype(np.float32) * self._sign
        return x, spike.astype(np.float32), soma_mv


def model_input(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x as `model` takes it: an ELM neuron reads int8 spike counts as they are
    (computing in its parameters' dtype); any other model (the point neurons) gets them
    as its parameters' floating dtype. Floating x passes unchanged."""
    if x.is_floating_point() or isinstance(model, ELMNeuron):
        return x
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return x.to(dtype)


class WindowDataset(torch.utils.data.Dataset):
    """Random training windows over some simulations of a store.

    Item i of epoch e draws its simulation (uniformly) and its start (uniformly in
    [min_start_ms, n_time − window_ms]) from a generator seeded with (seed, e, i), so an
    epoch is the same whatever the number of DataLoader workers and after a resume.

    Items: x (window, n_inputs) int8 (+1 exc, −1 inh spike; float32 with input dropout,
    whose survivors are not integers), spike label (window,) float32, soma target
    (window,) float32 (`elmnet.neuronio.soma_target`). Pass x through `model_input`.

    With `input_dropout` p > 0 each input spike of an item is deleted with probability p
    (a synaptic release failure; drawn from the item's own generator, so it too survives
    worker counts and resumes) and the kept ones become ±1/(1 − p), so a synapse's
    expected drive equals the undropped one that evaluation sees.
    """

    def __init__(
        self,
        info: StoreInfo,
        simulations: Sequence[int],
        n_windows: int,
        window_ms: int = 500,
        min_start_ms: int = 500,
        seed: int = 0,
        input_dropout: float = 0.0,
    ):
        if not 0 <= input_dropout < 1:
            raise UserError(f"input_dropout must be in [0, 1), got {input_dropout}")
        if not simulations:
            raise UserError("a window dataset needs at least one simulation")
        if min_start_ms + window_ms > info.n_time:
            raise UserError(
                f"windows of {window_ms} ms starting at ≥ {min_start_ms} ms do not fit "
                f"simulations of {info.n_time} ms; make longer simulations or use a shorter "
                "window or skip"
            )
        self.reader = StoreReader(info.path)
        self.simulations = np.asarray(list(simulations), dtype=np.int64)
        self.n_windows = int(n_windows)
        self.window_ms = int(window_ms)
        self.min_start_ms = int(min_start_ms)
        self.max_start_ms = info.n_time - self.window_ms
        self.seed = int(seed)
        self.input_dropout = float(input_dropout)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose windows the items are (call before iterating)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_windows

    def window(self, index: int) -> tuple[int, int]:
        """(simulation, start in ms) of item `index` in the current epoch."""
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        sim = int(self.simulations[rng.integers(self.simulations.size)])
        start = int(rng.integers(self.min_start_ms, self.max_start_ms + 1))
        return sim, start

    def __getitem__(self, index: int):
        sim, start = self.window(index)
        dropout = self.input_dropout > 0
        x, spike, soma_mv = self.reader.read(
            sim, start, start + self.window_ms, spikes_int8=not dropout
        )
        if dropout:
            # A stream of its own (the trailing 1), so the windows stay those of p = 0.
            rng = np.random.default_rng([self.seed, self.epoch, int(index), 1])
            rows, cols = np.nonzero(x)
            dropped = rng.random(rows.size) < self.input_dropout
            x[rows[dropped], cols[dropped]] = 0.0
            x /= 1.0 - self.input_dropout
        return torch.from_numpy(x), torch.from_numpy(spike), torch.from_numpy(soma_target(soma_mv))


def evaluation_windows(n_time: int, window_ms: int = 500, burn_in_ms: int = 150) -> list[tuple]:
    """The published sequential evaluation windows of one simulation.

    Window k starts at k·(window − burn_in) ms and is run from a zero state. The first
    window's outputs are kept from its start, every later window's only after its
    burn-in, so the kept parts tile [0, n_time) exactly. The last window runs past the
    end on zero input.

    Returns:
        [(start, keep_from, keep_to)], ms: run the model on [start, start + window_ms)
        and keep the outputs for times [keep_from, keep_to).
    """
    if not 0 <= burn_in_ms < window_ms:
        raise UserError(f"burn-in must be in [0, window), got {burn_in_ms} and {window_ms}")
    stride = window_ms - burn_in_ms
    n_windows = 1 + math.ceil(max(n_time - window_ms, 0) / stride)
    out = []
    for k in range(n_windows):
        start = k * stride
        keep_from = 0 if k == 0 else start + burn_in_ms
        out.append((start, keep_from, min(start + window_ms, n_time)))
    return out
