"""Writing spike data sets in the HDF5 layout of the Spiking Heidelberg Digits (SHD).

Layout of the official `shd_train.h5` / `shd_test.h5` (Cramer et al. 2020), which readers
written for SHD expect unchanged:

=============================  ===========================================================
dataset                        content (dtype written here)
=============================  ===========================================================
spikes/times                   (n_samples,) variable-length float32, spike times in s
spikes/units                   (n_samples,) variable-length uint16, channel 0..699
labels                         (n_samples,) uint16, word id: 0-9 English, 10-19 German
extra/speaker                  (n_samples,) uint16, speaker id
extra/keys                     (20,) UTF-8 strings, the word of each label
extra/meta_info/gender         (n_speakers,) UTF-8 strings, indexed by speaker id
extra/meta_info/age            (n_speakers,) float32, years (NaN: not applicable)
extra/meta_info/body_height    (n_speakers,) float32, m (NaN: not applicable)
=============================  ===========================================================

The SHD documentation fixes the kinds (variable-length float and integer arrays per
sample, integer labels and speakers, per-speaker meta data) but not the widths; the widths
above hold every value exactly (float32 keeps the 1/24 kHz spike-time grid to well under a
microsecond). Provenance goes into root attributes (JSON strings), which SHD readers ignore.
"""

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from elmbridge.files import atomic_path

TIMES_DTYPE = np.float32
UNITS_DTYPE = np.uint16
LABEL_DTYPE = np.uint16


def write_shd(
    path: str | os.PathLike,
    times: Sequence[np.ndarray],
    units: Sequence[np.ndarray],
    labels: Sequence[int],
    speakers: Sequence[int],
    keys: Sequence[str],
    meta_info: Mapping[str, Sequence[Any]],
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write one SHD-layout file atomically (a killed write leaves no partial file).

    Args:
        path: the .h5 file.
        times: per sample, spike times in s.
        units: per sample, the channel of each spike.
        labels: per sample, the word id (index into `keys`).
        speakers: per sample, the speaker id (index into the `meta_info` arrays).
        keys: the word of each label.
        meta_info: per-speaker arrays: "gender" (strings), "age", "body_height" (numbers).
        attrs: root attributes; values that are not str/number are stored as JSON.
    """
    n = len(times)
    if not (len(units) == len(labels) == len(speakers) == n):
        raise ValueError("times, units, labels and speakers must have one entry per sample")
    vlen_times = h5py.vlen_dtype(TIMES_DTYPE)
    vlen_units = h5py.vlen_dtype(UNITS_DTYPE)
    text = h5py.string_dtype("utf-8")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        ds_t = f.create_dataset("spikes/times", (n,), dtype=vlen_times)
        ds_u = f.create_dataset("spikes/units", (n,), dtype=vlen_units)
        for i, (t, u) in enumerate(zip(times, units, strict=True)):
            if len(t) != len(u):
                raise ValueError(f"sample {i}: {len(t)} spike times but {len(u)} units")
            ds_t[i] = np.asarray(t, dtype=TIMES_DTYPE)
            ds_u[i] = np.asarray(u, dtype=UNITS_DTYPE)
        f.create_dataset("labels", data=np.asarray(labels, dtype=LABEL_DTYPE))
        f.create_dataset("extra/speaker", data=np.asarray(speakers, dtype=LABEL_DTYPE))
        f.create_dataset("extra/keys", data=list(keys), dtype=text)
        meta = f.create_group("extra/meta_info")
        meta.create_dataset("gender", data=list(meta_info["gender"]), dtype=text)
        for name in ("age", "body_height"):
            meta.create_dataset(name, data=np.asarray(meta_info[name], dtype=np.float32))
        for key, value in (attrs or {}).items():
            if isinstance(value, str | int | float | np.integer | np.floating):
                f.attrs[key] = value
            else:
                f.attrs[key] = json.dumps(value, sort_keys=True, default=str)
