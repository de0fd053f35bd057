"""Held-out test stores for surrogate studies: one fixed store per cell, never trained on.

A study that compares fits (`benchmarks.surrogate_efficiency`, `benchmarks.biology`)
scores every fit of a cell on the same simulations (`surrogate.fit --test-data`), made
from a data seed of their own and large enough to hold a stated number of scored spike
bins: a number from a dozen spike bins is not a measurement.
"""

import math
import os
import re
from pathlib import Path
from typing import Any

from surrogate.config import FitConfig, preset_config
from surrogate.data import StoreReader, inspect_store
from surrogate.evaluate import EvalProtocol
from surrogate.fit import default_store_path, ensure_data

# The test store of the cpu presets: 12 × 6 s from data seed 1000, grown to 24 simulations
# when it holds fewer than 50 scored spike bins (the L5PC fires ≈0.6–0.8 Hz, unevenly).
CPU_TEST_STORE = dict(n_sims=12, duration_ms=6000, data_seed=1000, min_spike_bins=50, max_sims=24)


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
