"""Small task files in the official formats, written by the tests themselves."""

import io
import zipfile
from pathlib import Path

import h5py
import numpy as np

SHD_KEYS = (
    "zero one two three four five six seven eight nine "
    "null eins zwei drei vier fünf sechs sieben acht neun"
).split()


def write_shd(path: Path, labels, seed: int, channel_offset: int = 0) -> dict:
    """An SHD-layout h5: sample i says digit labels[i] % 10 with spikes in a band of 60
    channels that depends on the digit, at times in [0, 1.2) s (so some fall past 1 s).

    Returns what was written (times, units, labels) for comparisons.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.uint16)
    times, units = [], []
    for label in labels:
        n = int(rng.integers(40, 120))
        band = channel_offset + 60 * (int(label) % 10)
        u = rng.integers(band, band + 60, size=n).astype(np.uint16)
        t = np.sort(rng.uniform(0.0, 1.2, size=n)).astype(np.float16)
        times.append(t)
        units.append(u)
    with h5py.File(path, "w") as f:
        f.create_dataset("spikes/times", data=np.array(times, dtype=object),
                         dtype=h5py.vlen_dtype(np.float16))  # fmt: skip
        f.create_dataset("spikes/units", data=np.array(units, dtype=object),
                         dtype=h5py.vlen_dtype(np.uint16))  # fmt: skip
        f.create_dataset("labels", data=labels)
        f.create_dataset("extra/speaker", data=rng.integers(0, 12, size=len(labels)))
        f.create_dataset("extra/keys", data=np.array([k.encode() for k in SHD_KEYS]))
        f.create_dataset("extra/meta_info/gender", data=np.array([b"female", b"male"]))
    return {"times": times, "units": units, "labels": labels}


def write_shd_pair(folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Path:
    """shd_train.h5 and shd_test.h5 with every word id present."""
    folder.mkdir(parents=True, exist_ok=True)
    write_shd(folder / "shd_train.h5", np.arange(n_train) % 20, seed)
    write_shd(folder / "shd_test.h5", (np.arange(n_test) * 7) % 20, seed + 1)
    return folder


WORDS = ("the of and in to a is was for on as with by he at from his an were are which this "
         "be or has had first one their its after new who they two her she been other when "
         "time during there into school more years over only city some world would where "
         "later up such used many can state about national out known university united "
         "then made").split()  # fmt: skip


def enwik8_like_text(n_bytes: int, seed: int) -> bytes:
    """Wiki-flavoured text with markup and some UTF-8: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    words = np.array([*WORDS, "Zürich"])
    out = io.BytesIO()
    while out.tell() < n_bytes:
        title = " ".join(rng.choice(WORDS, size=2)).title()
        n = int(rng.integers(20, 60))
        body = words[rng.integers(len(WORDS), size=n)]
        body[rng.random(n) < 0.01] = "Zürich"
        linked = rng.random(n) < 0.05
        text = " ".join(f"[[{w}]]" if link else w for w, link in zip(body, linked, strict=True))
        out.write(f"<page>\n  <title>{title}</title>\n  <text>'''{title}''' ".encode())
        out.write(f"{text} .</text>\n</page>\n".encode())
    return out.getvalue()[:n_bytes]


def write_enwik8_zip(path: Path, n_bytes: int = 1 << 20, seed: int = 0) -> bytes:
    """A zip holding a file named `enwik8` of `n_bytes`; returns the text."""
    text = enwik8_like_text(n_bytes, seed)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("enwik8", text)
    return text
