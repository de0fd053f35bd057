"""Enwik8 (Hutter Prize): byte-level language modelling, scored in bits per character.

`enwik8.zip` (mattmahoney.net/dc/) holds the file `enwik8`, the first 10⁸ bytes of an
English Wikipedia XML dump. The standard split is the first 90M bytes for training, the
next 5M for validation and the last 5M for test; a smaller file (tests) is split in the
same proportions: valid = test = n // 20 bytes, train the rest.

The vocabulary is byte-level: the distinct byte values of the whole file, in byte order
(the standard preparation builds its dictionary from all three splits; the document
quotes V = 204 for it, which cannot be checked here without the data).

Checksum: no sha256 of `enwik8.zip` is known to this toolkit and the site publishes none,
so the download is fetched with sha256=None (unverified) and only its size is checked:
the extracted file must be 100,000,000 bytes.
"""

import math
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from elmbridge.download import cache_dir, fetch, sha256_file
from elmbridge.errors import MissingDataError, UserError

ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
ENWIK8_ZIP_SHA256: str | None = None  # not known here; see the module docstring
ENWIK8_BYTES = 100_000_000
MEMBER = "enwik8"
HOW_TO_GET = (
    f"Download {ENWIK8_URL} and pass the zip (or the extracted file `enwik8`, or a folder "
    "holding either) as the data path (--data), or run with --download on a machine with "
    "internet access."
)


def split_sizes(n: int) -> tuple[int, int, int]:
    """(train, valid, test) byte counts: 90M/5M/5M for 10⁸ bytes, the same shares else."""
    held_out = n // 20
    return n - 2 * held_out, held_out, held_out


def read_bytes(path: str | Path) -> np.ndarray:
    """The bytes of `enwik8`: a plain file, a zip holding `enwik8`, or a folder with either."""
    path = Path(path)
    if path.is_dir():
        for name in (MEMBER, f"{MEMBER}.zip"):
            if (path / name).is_file():
                return read_bytes(path / name)
        raise MissingDataError(f"{path} holds neither {MEMBER} nor {MEMBER}.zip. {HOW_TO_GET}")
    if not path.is_file():
        raise MissingDataError(f"Enwik8 file {path} not found. {HOW_TO_GET}")
    if zipfile.is_zipfile(path):
        data = _read_member(path)
    elif path.suffix.lower() == ".zip" or _starts_like_a_zip(path):
        # A damaged or truncated zip (or an HTML error page saved as .zip) would otherwise
        # be trained on as if it were the text.
        raise UserError(
            f"{path} is not a readable zip archive (truncated or not a zip); "
            f"download it again. {HOW_TO_GET}"
        )
    else:
        data = path.read_bytes()
    if len(data) < 1000:
        raise UserError(f"{path} holds only {len(data)} bytes; that is not enough text")
    return np.frombuffer(data, dtype=np.uint8)


def _starts_like_a_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def _read_member(path: Path) -> bytes:
    """The text of `enwik8` inside the zip at `path`; a damaged archive is a `UserError`."""
    try:
        with zipfile.ZipFile(path) as archive:
            if MEMBER not in archive.namelist():
                raise UserError(
                    f"{path} does not hold a file named {MEMBER!r} (it has "
                    f"{archive.namelist()[:5]}); expected the Hutter Prize enwik8.zip"
                )
            return archive.read(MEMBER)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise UserError(
            f"{path} is a damaged zip archive ({err}); download it again. {HOW_TO_GET}"
        ) from err


def find_enwik8(data: str | Path | None = None, download: bool = False) -> Path:
    """The path to read: `data` if given, else the cached `enwik8.zip` (fetched when
    `download` is set)."""
    if data is not None:
        if not Path(data).exists():
            raise MissingDataError(f"Enwik8 data path {data} does not exist. {HOW_TO_GET}")
        return Path(data)
    cached = cache_dir("enwik8") / "enwik8.zip"
    if cached.is_file():
        return cached
    if not download:
        raise MissingDataError(f"Enwik8 is not in the cache ({cached}). {HOW_TO_GET}")
    return download_enwik8(cached)


def download_enwik8(
    dest: str | Path | None = None, url: str = ENWIK8_URL, expected_bytes: int = ENWIK8_BYTES
) -> Path:
    """Fetch enwik8.zip into `dest` (default: the cache) and check the size of its text."""
    dest = Path(dest) if dest is not None else cache_dir("enwik8") / "enwik8.zip"
    fetch(url, dest, ENWIK8_ZIP_SHA256, what="enwik8.zip")
    try:
        with zipfile.ZipFile(dest) as archive:
            size = archive.getinfo(MEMBER).file_size
    except (zipfile.BadZipFile, KeyError) as err:
        dest.unlink(missing_ok=True)
        raise MissingDataError(
            f"{url} did not give a zip holding {MEMBER} ({err}). {HOW_TO_GET}"
        ) from err
    if size != expected_bytes:
        dest.unlink(missing_ok=True)
        raise MissingDataError(
            f"{url} gave an {MEMBER} of {size} bytes, not {expected_bytes}; removed. {HOW_TO_GET}"
        )
    return dest


@dataclass
class Enwik8:
    """The three splits as token ids (uint8) and the byte value of each token."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocab: np.ndarray  # (V,) byte value of token i
    path: Path

    @classmethod
    def load(cls, path: str | Path) -> "Enwik8":
        data = read_bytes(path)
        vocab = np.unique(data)
        lookup = np.zeros(256, dtype=np.uint8)
        lookup[vocab] = np.arange(len(vocab), dtype=np.uint8)
        ids = lookup[data]
        n_train, n_valid, _ = split_sizes(len(ids))
        return cls(
            ids[:n_train],
            ids[n_train : n_train + n_valid],
            ids[n_train + n_valid :],
            vocab,
            Path(path),
        )

    @property
    def n_tokens(self) -> int:
        """V, the vocabulary size."""
        return len(self.vocab)

    def split(self, name: str) -> np.ndarray:
        if name not in ("train", "valid", "test"):
            raise UserError(f"Enwik8 splits are train, valid and test, not {name!r}")
        return getattr(self, name)

    def describe(self) -> dict:
        """Data provenance for the run record."""
        return {
            "task": "enwik8",
            "path": str(self.path),
            "sha256": sha256_file(self.path) if self.path.is_file() else None,
            "bytes": {s: len(self.split(s)) for s in ("train", "valid", "test")},
            "vocabulary_size": self.n_tokens,
        }


class Streams:
    """A split cut into `batch` contiguous streams, served in windows of `bptt` steps.

    Row b of every batch continues row b of the previous one, so the model's state carries
    across batches (truncated backpropagation through time). Window i predicts bytes
    i·bptt + 1 … (i+1)·bptt of each stream from the bytes before them; the last window
    may be shorter.
    """

    def __init__(self, ids: np.ndarray, batch: int, bptt: int):
        if batch < 1 or bptt < 1:
            raise UserError(f"batch and bptt must be positive, got {batch} and {bptt}")
        length = len(ids) // batch
        if length < 2:
            raise UserError(f"{len(ids)} bytes cannot feed {batch} streams")
        self.streams = torch.from_numpy(np.ascontiguousarray(ids[: batch * length])).view(
            batch, length
        )
        self.bptt = bptt

    def __len__(self) -> int:
        return math.ceil((self.streams.shape[1] - 1) / self.bptt)

    def window(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), both (batch, ≤ bptt) int64."""
        start = (i % len(self)) * self.bptt
        stop = min(start + self.bptt, self.streams.shape[1] - 1)
        return self.streams[:, start:stop].long(), self.streams[:, start + 1 : stop + 1].long()


Model = Callable[[torch.Tensor, object], tuple[torch.Tensor, object]]


@torch.no_grad()
def evaluate_bpc(
    model: Model,
    ids: np.ndarray,
    *,
    batch: int = 1,
    bptt: int = 100,
    device: str | torch.device = "cpu",
    max_bytes: int | None = None,
    progress: bool = True,
) -> dict:
    """Bits per character over a split, carrying the state through all of it.

    With batch = 1 every byte after the first is predicted from all bytes before it;
    with more streams the first byte of each stream is not predicted and the last
    len % batch bytes are dropped.

    Args:
        model: `model(x, state) -> (logits, state)`, x (B, T) int64 token ids.
        ids: the split's token ids.
        max_bytes: evaluate only the first `max_bytes` bytes (quick validation).

    Returns:
        {"bpc", "nll_nats" (mean per byte), "n_predictions"}.
    """
    if max_bytes is not None:
        ids = ids[:max_bytes]
    streams = Streams(ids, batch, bptt)
    state, total, count = None, 0.0, 0
    for i in tqdm(range(len(streams)), desc="bpc", disable=not progress, leave=False):
        x, y = (t.to(device) for t in streams.window(i))
        logits, state = model(x, state)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
        count += y.numel()
    nll = total / count
    return {"bpc": nll / math.log(2), "nll_nats": nll, "n_predictions": count}


# ---------------------------------------------------------------------------------------
# The task as `elmnet.train` runs it: the network's setup (the d_m = 20 point of the
# document's P ≈ 3.51M sweep; V = 204 is replaced by the data's own vocabulary), the
# training defaults and the adapter (docs/elm-model.md §4).

NETWORK = dict(
    d_in=204, n_out=204, N=742, d_m=20, d_tree=50, d_brch=15, rho=0.8,
    tau_min=0.1, tau_max=100.0, tau_r=2.0, token_scale=3.0,
)  # fmt: skip
TRAINING = dict(
    optimizer="adam", lr=5e-4, batch=8, steps_per_epoch=None, epochs=None, steps=300_000,
    warmup=100, clip=1.0, eval_every=5000, log_every=100,
)  # fmt: skip


class Task:
    """Enwik8 for the trainer: truncated BPTT with the state carried across batches; BPC."""

    metric, higher_is_better = "bpc", False

    def __init__(self, args):
        self.data = Enwik8.load(find_enwik8(args.data, download=args.download))
        self.streams = Streams(self.data.train, args.batch, args.bptt)
        self.args, self.d_in, self.n_out = args, self.data.n_tokens, self.data.n_tokens
        self.state = None

    def batch(self, step: int, device):
        """BPTT window `step`: tokens (B, bptt), the state carried from the previous
        window (None at the start of a pass), next-byte targets (B, bptt)."""
        window = step % len(self.streams)
        if window == 0:  # a new pass over the training streams starts from zero state
            self.state = None
        x, y = (t.to(device) for t in self.streams.window(window))
        return x, self.state, y

    def loss(self, out, target):
        """Mean cross-entropy (nats) of the window's output `out`; carries its state on."""
        self.state = out.state.detach()
        return F.cross_entropy(
            out.logits.flatten(0, 1), target.flatten(), label_smoothing=self.args.label_smoothing
        )

    def batch_loss(self, model, step: int, device):
        """The loss of BPTT window `step` and the forward output; carries the state on."""
        x, state, target = self.batch(step, device)
        out = model.run(x, state)
        return self.loss(out, target), out

    def evaluate(self, model, split: str, device) -> dict:
        """Loss (nats), bits per character and prediction count on `split`."""
        a = self.args
        if split == "valid":
            batch, limit = a.val_batch, a.val_bytes
        else:
            batch, limit = a.test_batch, a.test_bytes
        with torch.no_grad():
            result = evaluate_bpc(
                model, self.data.split(split), batch=batch, bptt=a.bptt, device=device,
                max_bytes=limit, progress=a.progress,
            )  # fmt: skip
        return {"loss": result["nll_nats"], "value": result["bpc"], "n": result["n_predictions"]}

    def carried(self):
        """The network state carried into the next batch, as a tuple of tensors."""
        return None if self.state is None else tuple(self.state)

    def restore(self, carried) -> None:
        from elmnet.network import ELMNetworkState

        self.state = None if carried is None else ELMNetworkState(*carried)
