"""Spiking Heidelberg Digits (Cramer, Stradmann, Schemmel, Zenke 2020): files and binning.

The official files `shd_train.h5` and `shd_test.h5` (docs/datasets.md) hold, per sample,
`spikes/times` (variable-length, seconds) and `spikes/units` (variable-length channel
ids 0–699), plus `labels` (0–9 English "zero".."nine", 10–19 German "null".."neun"),
`extra/speaker` and `extra/keys`. Any file in this layout loads, including synthetic ones.

Checksums: the files are published gzipped at zenkelab.org together with a list of MD5
sums (`md5sums.txt`). No sha256 of them is known to this toolkit, so `download_shd`
fetches with sha256=None and then checks each archive against the MD5 list it downloads
from the same site; when that list cannot be had it says so and keeps the unverified file.
"""

import gzip
import hashlib
import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from elmbridge.download import cache_dir, fetch
from elmbridge.errors import MissingDataError, UserError
from elmbridge.files import atomic_path

SHD_BASE_URL = "https://zenkelab.org/datasets"
SHD_FILES = {"train": "shd_train.h5", "test": "shd_test.h5"}
# Published sha256 sums are not known here (see the module docstring): MD5 from the site.
SHD_SHA256: dict[str, str | None] = {"train": None, "test": None}
N_CHANNELS = 700
HOW_TO_GET = (
    "Get shd_train.h5.gz and shd_test.h5.gz from https://zenkelab.org/datasets/ (check them "
    "against md5sums.txt there), gunzip them into one folder and pass that folder as the "
    "data path (--data), or run with --download on a machine with internet access."
)


@dataclass
class SHDSplit:
    """One SHD file: spike times (s) and units per sample, labels, speakers."""

    times: list[np.ndarray]
    units: list[np.ndarray]
    labels: np.ndarray  # (n,) int64 word ids 0–19
    speakers: np.ndarray | None
    keys: list[str] | None
    path: Path
    n_channels: int = N_CHANNELS

    def __len__(self) -> int:
        return len(self.labels)

    def binned(self, bin_ms: float, duration_ms: float = 1000.0) -> "BinnedSpikes":
        """Spike counts in bins of `bin_ms`, keeping spikes before `duration_ms`.

        A sample gives ceil(duration_ms / bin_ms) bins; spike at t seconds falls in bin
        floor(1000 t / bin_ms). Stored sparsely (the flat index of each spike).
        """
        if not bin_ms > 0 or not duration_ms > 0:
            raise UserError(
                f"bin size and duration must be positive, got bin_ms={bin_ms}, "
                f"duration_ms={duration_ms}"
            )
        n_bins = math.ceil(duration_ms / bin_ms - 1e-9)
        flat = []
        for times, units in zip(self.times, self.units, strict=True):
            t_ms = np.asarray(times, dtype=np.float64) * 1000.0
            keep = (t_ms >= 0) & (t_ms < duration_ms)
            bins = np.floor(t_ms[keep] / bin_ms).astype(np.int64)
            flat.append((bins * self.n_channels + units[keep]).astype(np.int64))
        return BinnedSpikes(flat, self.labels, n_bins, self.n_channels, bin_ms)


@dataclass
class BinnedSpikes:
    """Binned spike counts of every sample of a split, sparse: `flat[i]` holds
    bin · n_channels + unit for each spike of sample i."""

    flat: list[np.ndarray]
    labels: np.ndarray
    n_bins: int
    n_channels: int
    bin_ms: float

    def dense(self, indices) -> np.ndarray:
        """(len(indices), n_bins, n_channels) float32 spike counts."""
        size = self.n_bins * self.n_channels
        out = np.zeros((len(indices), size), dtype=np.float32)
        for row, i in enumerate(indices):
            out[row] = np.bincount(self.flat[i], minlength=size)
        return out.reshape(len(indices), self.n_bins, self.n_channels)


def load_split(path: str | Path) -> SHDSplit:
    """Read one SHD HDF5 file in the official layout."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"SHD file {path} not found. {HOW_TO_GET}")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("spikes/times", "spikes/units", "labels") if k not in f]
            if missing:
                raise UserError(
                    f"{path} is not in the SHD layout: it lacks {missing}. Expected "
                    "spikes/times, spikes/units (one variable-length array per sample) and "
                    "labels."
                )
            times = [np.asarray(t) for t in f["spikes/times"][:]]
            units = [np.asarray(u).astype(np.int64) for u in f["spikes/units"][:]]
            labels = np.asarray(f["labels"][:]).astype(np.int64)
            speakers = np.asarray(f["extra/speaker"][:]) if "extra/speaker" in f else None
            keys = None
            if "extra/keys" in f:
                keys = [k.decode() if isinstance(k, bytes) else str(k) for k in f["extra/keys"][:]]
    except OSError as err:
        raise UserError(f"cannot read {path} as HDF5 ({err}). {HOW_TO_GET}") from err
    if not len(times) == len(units) == len(labels):
        raise UserError(
            f"{path}: spikes/times ({len(times)}), spikes/units ({len(units)}) and labels "
            f"({len(labels)}) must have one entry per sample"
        )
    for i, (t, u) in enumerate(zip(times, units, strict=True)):
        if t.shape != u.shape:
            raise UserError(f"{path}: sample {i} has {t.size} spike times but {u.size} units")
        if t.size and not np.isfinite(t).all():
            # Binning would drop NaN or infinite times without a word and train on the rest.
            raise UserError(f"{path}: sample {i} has spike times that are not finite numbers")
        if t.size and t.min() < 0:
            raise UserError(f"{path}: sample {i} has negative spike times ({float(t.min())} s)")
        if u.size and (u.min() < 0 or u.max() >= N_CHANNELS):
            raise UserError(f"{path}: sample {i} has units outside 0–{N_CHANNELS - 1}")
    if labels.size and (labels.min() < 0 or labels.max() > 19):
        raise UserError(f"{path}: labels must be word ids 0–19, got {labels.min()}–{labels.max()}")
    return SHDSplit(times, units, labels, speakers, keys, path)


def md5_file(path: str | Path) -> str:
    """Hex MD5 of a file (the checksum zenkelab.org publishes)."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download_shd(dest: str | Path | None = None, base_url: str = SHD_BASE_URL) -> Path:
    """Fetch and gunzip shd_train.h5 and shd_test.h5 into `dest` (default: the cache).

    Each archive is checked against the MD5 list the site publishes (`md5sums.txt`); a
    mismatch deletes the archive and raises. Returns the folder.
    """
    dest = Path(dest) if dest is not None else cache_dir("shd")
    dest.mkdir(parents=True, exist_ok=True)
    todo = [s for s, name in SHD_FILES.items() if not (dest / name).is_file()]
    if not todo:
        return dest
    published = _published_md5(dest, base_url)
    for split in todo:
        name = SHD_FILES[split]
        archive = fetch(
            f"{base_url}/{name}.gz", dest / f"{name}.gz", SHD_SHA256[split], what=f"SHD {split}"
        )
        expected = published.get(f"{name}.gz")
        if expected is None:
            warnings.warn(
                f"no published MD5 for {name}.gz could be read from {base_url}/md5sums.txt; "
                f"{archive} is unverified.",
                stacklevel=2,
            )
        elif (got := md5_file(archive)) != expected:
            archive.unlink()
            raise MissingDataError(
                f"SHD {split}: {name}.gz from {base_url} has MD5 {got}, but the site publishes "
                f"{expected}; the download was removed. Try again, or {HOW_TO_GET}"
            )
        with atomic_path(dest / name) as tmp, gzip.open(archive) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        archive.unlink()
    return dest


def _published_md5(dest: Path, base_url: str) -> dict[str, str]:
    try:
        listing = fetch(f"{base_url}/md5sums.txt", dest / "md5sums.txt", None, what="SHD MD5 list")
    except MissingDataError:
        return {}
    sums = {}
    for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def find_shd(data: str | Path | None = None, download: bool = False) -> tuple[Path, Path]:
    """Paths of (shd_train.h5, shd_test.h5).

    Args:
        data: a folder holding both files; None looks in the user cache.
        download: fetch them into the cache when they are not there.
    """
    folder = Path(data) if data is not None else cache_dir("shd")
    paths = tuple(folder / SHD_FILES[s] for s in ("train", "test"))
    if all(p.is_file() for p in paths):
        return paths
    if data is None and download:
        download_shd(folder)
        return paths
    missing = ", ".join(str(p) for p in paths if not p.is_file())
    raise MissingDataError(f"SHD files missing: {missing}. {HOW_TO_GET}")
