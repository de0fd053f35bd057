"""The stores a fit reads from the user cache: the default training stores of a cell and
its held-out test store.

A default store is simulated by `python -m biophys.simulate` into the cache when missing
and resumed when a killed run left it unfinished (`ensure_data`). Simulation i of a
biophys store is the same whatever the store's size, so the first n simulations of a
large store are the data of a store of n (`first_simulations`), and a store grows by
being extended.

The held-out test store of a cell (`make_test_store`, sized by `HELDOUT_TEST`) is made
from a data seed of its own and never trained on. Every fit of a cell that uses it, the
default `python -m surrogate.fit` and the studies that compare fits
(`benchmarks.surrogate_efficiency`, `benchmarks.biology`), is scored on the same
simulations, large enough to hold a stated number of scored spike bins: a number from a
dozen spike bins is not a measurement.
"""

import importlib.util
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from elmbridge.download import cache_dir
from elmbridge.errors import MissingDataError, UserError
from surrogate.config import FitConfig, preset_config
from surrogate.data import StoreInfo, StoreReader, count_completed_simulations, inspect_store
from surrogate.evaluate import EvalProtocol

# Seconds of wall time per simulated second of the full L5PC on one core (docs/l5pc-model.md).
SIM_COST_S_PER_S = 10.0

# The held-out test store: 12 × 6 s from data seed 1000, grown to at most 24 simulations
# while it holds fewer than 50 scored spike bins (the L5PC fires ≈0.6–0.8 Hz, unevenly:
# 12 of its first 20 held-out simulations hold no spike).
HELDOUT_TEST = dict(n_sims=12, duration_ms=6000, data_seed=1000, min_spike_bins=50, max_sims=24)


def default_store_path(cell: str, n_sims: int, duration_ms: int, seed: int) -> Path:
    """Where the default dataset of a cell lives in the user cache."""
    return cache_dir("datasets") / f"{cell}_{n_sims}x{duration_ms}ms_seed{seed}.zarr"


def generate_store(cell: str, n_sims: int, duration_ms: int, seed: int, path: Path) -> None:
    """Make (or finish) a store with `python -m biophys.simulate` in a subprocess.

    The subprocess inherits the terminal, so its progress bar shows; it resumes a store
    that a killed earlier attempt left unfinished.
    """
    if importlib.util.find_spec("biophys.simulate") is None:
        raise MissingDataError(
            f"no dataset at {path}, and this installation cannot make one: the simulator "
            "(biophys.simulate) is not available. Make a store elsewhere with `python -m "
            "biophys.simulate` and pass it with --data."
        )
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    command = [
        sys.executable, "-m", "biophys.simulate", "--cell", cell, "--n-sims", str(n_sims),
        "--duration-ms", str(duration_ms), "--seed", str(seed), "--out", str(path),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0:
        raise UserError(
            f"making the dataset failed (exit status {done.returncode}; see the messages "
            f"above). Run it by hand to resume: {' '.join(command[1:])}"
        )


def ensure_data(config: FitConfig) -> tuple[StoreInfo, float | None]:
    """The store to fit on, generating the default one when it is missing or unfinished.

    Returns:
        the store and the seconds spent generating it (None when nothing was made).
    """
    needed = config.min_start_ms + config.window_ms
    if config.data is not None:
        info = inspect_store(config.data, min_time_ms=needed, verify=True)
        return first_simulations(info, config.first_sims), None
    path = default_store_path(config.cell, config.n_sims, config.duration_ms, config.data_seed)
    have = count_completed_simulations(path)
    elapsed = None
    if have < config.n_sims:
        cores = os.cpu_count() or 1
        todo = config.n_sims - have
        minutes = todo * config.duration_ms / 1000 * SIM_COST_S_PER_S / cores / 60
        print(
            f"No complete default dataset for {config.cell} at {path} ({have} of "
            f"{config.n_sims} simulations).\nGenerating {todo} simulations of "
            f"{config.duration_ms} ms with biophys (≈{minutes:.0f} min on {cores} cores); "
            "interrupting is safe, the next run continues it.",
            flush=True,
        )
        start = time.perf_counter()
        generate_store(config.cell, config.n_sims, config.duration_ms, config.data_seed, path)
        elapsed = time.perf_counter() - start
    return inspect_store(path, min_time_ms=needed, verify=True), elapsed


def first_simulations(info: StoreInfo, n: int | None) -> StoreInfo:
    """The store restricted to its first `n` completed simulations (all when None).

    Simulation i of a biophys store is the same whatever the store's size, so the first n
    simulations of a large store are the data of a store of n.
    """
    if n is None:
        return info
    if n > len(info.simulations):
        raise UserError(
            f"--n-sims {n}: {info.path} holds only {len(info.simulations)} completed "
            "simulations; extend it with biophys.simulate or ask for fewer"
        )
    return replace(info, simulations=tuple(info.simulations[:n]))


def cached_test_sizes(cell: str, test: dict[str, Any]) -> list[int]:
    """Sizes of the test stores of `cell` already in the cache (a grown one included)."""
    folder = default_store_path(cell, 1, test["duration_ms"], test["data_seed"]).parent
    pattern = re.compile(
        rf"^{re.escape(cell)}_(\d+)x{test['duration_ms']}ms_seed{test['data_seed']}\.zarr$"
    )
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name)))


def scored_spike_bins(path: Path, protocol: EvalProtocol) -> int:
    """Spike bins the evaluation protocol scores in a store: after the skipped start, in
    simulations whose spike count passes its filter."""
    info = inspect_store(path)
    reader = StoreReader(path)
    total = 0
    for sim in info.simulations:
        _, spike, _ = reader.read(int(sim))
        if protocol.min_spikes <= spike.sum() <= protocol.max_spikes:
            total += int(spike[protocol.skip_ms :].sum())
    return total


def store_config(cell: str, n_sims: int, duration_ms: int, data_seed: int) -> FitConfig:
    """The fit configuration whose default store is this one (for `ensure_data`)."""
    return preset_config(cell=cell, n_sims=n_sims, duration_ms=duration_ms, data_seed=data_seed)


def make_test_store(cell: str, test: dict[str, Any], protocol: EvalProtocol) -> dict[str, Any]:
    """The cell's test store in the cache, grown until it holds `test["min_spike_bins"]`
    scored spike bins (or `test["max_sims"]` simulations). Growing renames the store to
    its new size and extends it: simulation i of a biophys store is the same whatever the
    store's size.

    Args:
        test: n_sims, duration_ms (ms), data_seed, min_spike_bins, max_sims.

    Returns:
        path, n_sims, generation_s (s of simulation this call spent; None: none),
        scored_spike_bins.
    """
    sizes = cached_test_sizes(cell, test)
    n = max([test["n_sims"], *sizes])
    seconds = 0.0
    while True:
        info, made = ensure_data(store_config(cell, n, test["duration_ms"], test["data_seed"]))
        seconds += made or 0.0
        bins = scored_spike_bins(info.path, protocol)
        if bins >= test["min_spike_bins"] or n >= test["max_sims"]:
            break
        grown = min(test["max_sims"], math.ceil(n * 1.25 * test["min_spike_bins"] / max(bins, 1)))
        print(
            f"the {cell} test store holds {bins} scored spike bins (< "
            f"{test['min_spike_bins']}); growing it from {n} to {grown} simulations",
            flush=True,
        )
        target = default_store_path(cell, grown, test["duration_ms"], test["data_seed"])
        if not target.exists():
            os.replace(info.path, target)
        n = grown
    if bins < test["min_spike_bins"]:
        print(f"notice: the {cell} test store holds only {bins} scored spike bins at its "
              f"largest size, {n} simulations")  # fmt: skip
    return {"path": str(info.path.resolve()), "n_sims": len(info.simulations),
            "generation_s": seconds or None, "scored_spike_bins": bins}  # fmt: skip


def with_heldout_test(config: FitConfig) -> FitConfig:
    """`config` with the cell's held-out test store as its `test_data`, made (or grown) in
    the cache first, when it asks for one: `test_store` "heldout", on a default store
    (no `data`) and no `test_data` given. Any other `config` is returned unchanged."""
    if config.test_store != "heldout" or config.test_data is not None or config.data is not None:
        return config
    entry = make_test_store(config.cell, HELDOUT_TEST, config.protocol())
    return replace(config, test_data=entry["path"])
