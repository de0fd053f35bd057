"""SHD-Adding (Spieler et al. 2024; docs/elm-model.md §3): add the digits of two spoken words.

A sample is two SHD samples drawn independently, with replacement, from the same split,
each cut to its first second and binned, concatenated in time (2 ms bins: 2 × 500 steps).
The label is (label₁ mod 10) + (label₂ mod 10): 19 classes, language ignored. The loss is
the cross-entropy at the last step.

Splits: a random 20 % of SHD-train (fixed by `data_seed`) is the validation pool, the
rest the training pool; test pairs come from SHD-test only. Validation and test pairs are
fixed by `data_seed`; training batches are drawn on the fly from (seed, step), so a run
resumed at step s sees exactly the batches it would have seen.
"""

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from elmbridge.download import sha256_file
from elmbridge.errors import UserError
from elmnet.tasks.shd import BinnedSpikes, SHDSplit, find_shd, load_split

N_CLASSES = 19
SPLITS = ("train", "valid", "test")


def digit_sum(labels_a: np.ndarray, labels_b: np.ndarray) -> np.ndarray:
    """The SHD-Adding label of each pair: the sum of the two digit values (0–18)."""
    return np.asarray(labels_a) % 10 + np.asarray(labels_b) % 10


class SHDAdding:
    """The SHD-Adding task on an SHD train/test pair of files.

    Args:
        train, test: the two SHD splits (`elmnet.tasks.shd.load_split`).
        bin_ms: bin size in ms; each word gives ceil(1000 / bin_ms) steps.
        data_seed: fixes the validation split and the validation and test pairs.
        val_fraction: share of SHD-train held out for validation.
        n_val_pairs, n_test_pairs: fixed pairs per split (default: one per sample).
        duration_ms: where each word is cut.
    """

    def __init__(
        self,
        train: SHDSplit,
        test: SHDSplit,
        bin_ms: float = 2.0,
        data_seed: int = 0,
        val_fraction: float = 0.2,
        n_val_pairs: int | None = None,
        n_test_pairs: int | None = None,
        duration_ms: float = 1000.0,
    ):
        if not 0 < val_fraction < 1:
            raise UserError(f"val_fraction must be in (0, 1), got {val_fraction}")
        n_val = round(val_fraction * len(train))
        if n_val < 1 or len(train) - n_val < 1 or len(test) < 1:
            raise UserError(
                f"SHD-Adding needs samples in every split: {len(train)} train samples with "
                f"val_fraction={val_fraction} and {len(test)} test samples do not suffice"
            )
        self.files = {"train": train.path, "test": test.path}
        self.bin_ms, self.data_seed, self.val_fraction = bin_ms, data_seed, val_fraction
        self._binned = {"train": train.binned(bin_ms, duration_ms)}
        self._binned["test"] = test.binned(bin_ms, duration_ms)
        self.n_bins = self._binned["train"].n_bins
        self.n_channels = train.n_channels
        order = np.random.default_rng([data_seed, 0]).permutation(len(train))
        self.pools = {
            "train": np.sort(order[n_val:]),
            "valid": np.sort(order[:n_val]),
            "test": np.arange(len(test)),
        }
        self.fixed_pairs = {
            "valid": self._draw(
                self.pools["valid"], n_val_pairs or n_val, np.random.default_rng([data_seed, 1])
            ),
            "test": self._draw(
                self.pools["test"], n_test_pairs or len(test), np.random.default_rng([data_seed, 2])
            ),
        }

    @property
    def n_steps(self) -> int:
        """Time steps of one pair."""
        return 2 * self.n_bins

    @staticmethod
    def _draw(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 2) sample indices: both members drawn independently, with replacement."""
        return pool[rng.integers(len(pool), size=(n, 2))]

    def _source(self, split: str) -> BinnedSpikes:
        return self._binned["test" if split == "test" else "train"]

    def pairs_to_batch(self, split: str, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (n, 2·n_bins, 700) float32 spike counts and y (n,) int64 digit sums."""
        source = self._source(split)
        first, second = source.dense(pairs[:, 0]), source.dense(pairs[:, 1])
        x = np.concatenate([first, second], axis=1)
        y = digit_sum(source.labels[pairs[:, 0]], source.labels[pairs[:, 1]]).astype(np.int64)
        return x, y

    def train_batch(self, seed: int, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The training batch of `step`, a pure function of (seed, step)."""
        rng = np.random.default_rng([seed, 3, step])
        return self.pairs_to_batch("train", self._draw(self.pools["train"], batch_size, rng))

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The fixed pairs of "valid" or "test", in batches."""
        if split not in self.fixed_pairs:
            raise UserError(f"fixed pairs exist for 'valid' and 'test', not {split!r}")
        pairs = self.fixed_pairs[split]
        for start in range(0, len(pairs), batch_size):
            yield self.pairs_to_batch(split, pairs[start : start + batch_size])

    def describe(self) -> dict:
        """Data provenance for the run record."""
        return {
            "task": "shd-adding",
            "files": {
                split: {"path": str(path), "sha256": sha256_file(path)}
                for split, path in self.files.items()
            },
            "bin_ms": self.bin_ms,
            "n_steps": self.n_steps,
            "data_seed": self.data_seed,
            "val_fraction": self.val_fraction,
            "pool_sizes": {k: len(v) for k, v in self.pools.items()},
            "fixed_pairs": {k: len(v) for k, v in self.fixed_pairs.items()},
        }


# ---------------------------------------------------------------------------------------
# The task as `elmnet.train` runs it: the network's setup, the training defaults and the
# adapter. These are the document's values (docs/elm-model.md §3–4); where it gives none
# (epochs, clipping) the value is ours and `elmnet.train --help` says so.

NETWORK = dict(
    d_in=700, n_out=N_CLASSES, N=96, d_m=5, d_tree=30, d_brch=10, rho=0.25,
    tau_min=1.0, tau_max=500.0, tau_r=5.0, dropout_in=0.2, dropout_rec=0.2,
)  # fmt: skip
TRAINING = dict(
    optimizer="adamax", lr=5e-3, batch=8, steps_per_epoch=2000, epochs=50, warmup=0,
    clip=1.0, eval_every=None, log_every=100,
)  # fmt: skip


class Task:
    """SHD-Adding for the trainer: last-step cross-entropy; validation by accuracy."""

    metric, higher_is_better = "accuracy", True

    def __init__(self, args):
        train_path, test_path = find_shd(args.data, download=args.download)
        self.data = SHDAdding(
            load_split(train_path), load_split(test_path), bin_ms=args.bin_ms,
            data_seed=args.data_seed, n_val_pairs=args.val_pairs, n_test_pairs=args.test_pairs,
        )  # fmt: skip
        self.args, self.d_in, self.n_out = args, self.data.n_channels, N_CLASSES

    def batch(self, step: int, device):
        """Training batch `step` (drawn from (seed, step)): input (B, T, 700), the state to
        start from (None: zeros, pairs are independent), labels (B,)."""
        x, y = self.data.train_batch(self.args.seed, step, self.args.batch)
        return torch.from_numpy(x).to(device), None, torch.from_numpy(y).to(device)

    def loss(self, out, target):
        """Last-step cross-entropy (nats) of the forward output `out` of a training batch."""
        return F.cross_entropy(out.logits[:, -1], target, label_smoothing=self.args.label_smoothing)

    def batch_loss(self, model, step: int, device):
        """The loss of training batch `step` and the forward output."""
        x, state, target = self.batch(step, device)
        out = model.run(x, state)
        return self.loss(out, target), out

    def evaluate(self, model, split: str, device) -> dict:
        """Mean loss (nats), accuracy and sample count on `split` ("valid" or "test")."""
        correct, total, loss = 0, 0, 0.0
        with torch.no_grad():
            for x, y in self.data.eval_batches(split, self.args.eval_batch):
                logits = model(torch.from_numpy(x).to(device))[0][:, -1].float()
                y = torch.from_numpy(y).to(device)
                loss += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(-1) == y).sum().item()
                total += len(y)
        return {"loss": loss / total, "value": correct / total, "n": total}

    def carried(self):
        """State carried from one training batch to the next: none (pairs are independent)."""
        return None

    def restore(self, carried) -> None:
        pass
