"""Plain SHD classification (Cramer et al. 2020): which of the 20 words was spoken.

A sample is one SHD sample, cut to its first second and binned (2 ms bins: 500 steps);
the label is its word id (0–19: English and German digits are different classes). The
loss is the cross-entropy at the last step, the metric accuracy.

Splits as in SHD-Adding (`elmnet.tasks.shd_adding`): a random 20 % of SHD-train (fixed
by `data_seed`) is the validation set, the rest the training pool; the test set is
SHD-test. Training batches are drawn with replacement from (seed, step), so a run resumed
at step s sees exactly the batches it would have seen.
"""

from collections.abc import Iterator

import numpy as np

from elmbridge.download import sha256_file
from elmbridge.errors import UserError
from elmnet.tasks import shd_adding
from elmnet.tasks.shd import SHDSplit, find_shd, load_split

N_CLASSES = 20


class SHDClassify:
    """SHD word classification on an SHD train/test pair of files.

    Args:
        train, test: the two SHD splits (`elmnet.tasks.shd.load_split`).
        bin_ms: bin size in ms; a sample gives ceil(1000 / bin_ms) steps.
        data_seed: fixes the validation split.
        val_fraction: share of SHD-train held out for validation.
        n_val, n_test: evaluate only this many samples of the split (default: all); the
            validation samples are a random subset fixed by `data_seed`, the test samples
            the file's first ones.
        duration_ms: where each sample is cut.
    """

    def __init__(
        self,
        train: SHDSplit,
        test: SHDSplit,
        bin_ms: float = 2.0,
        data_seed: int = 0,
        val_fraction: float = 0.2,
        n_val: int | None = None,
        n_test: int | None = None,
        duration_ms: float = 1000.0,
    ):
        if not 0 < val_fraction < 1:
            raise UserError(f"val_fraction must be in (0, 1), got {val_fraction}")
        held_out = round(val_fraction * len(train))
        if held_out < 1 or len(train) - held_out < 1 or len(test) < 1:
            raise UserError(
                f"SHD classification needs samples in every split: {len(train)} train samples "
                f"with val_fraction={val_fraction} and {len(test)} test samples do not suffice"
            )
        for name, value in (("n_val", n_val), ("n_test", n_test)):
            if value is not None and value < 1:
                raise UserError(f"{name} must be at least 1, got {value}")
        self.files = {"train": train.path, "test": test.path}
        self.bin_ms, self.data_seed, self.val_fraction = bin_ms, data_seed, val_fraction
        self._binned = {"train": train.binned(bin_ms, duration_ms)}
        self._binned["test"] = test.binned(bin_ms, duration_ms)
        self.n_bins = self._binned["train"].n_bins
        self.n_channels = train.n_channels
        # The same permutation as SHD-Adding's, so both tasks hold out the same samples.
        order = np.random.default_rng([data_seed, 0]).permutation(len(train))
        self.pools = {
            "train": np.sort(order[held_out:]),
            "valid": np.sort(order[:held_out][: n_val or held_out]),
            "test": np.arange(min(len(test), n_test or len(test))),
        }

    @property
    def n_steps(self) -> int:
        """Time steps of one sample."""
        return self.n_bins

    def to_batch(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (n, n_bins, 700) float32 spike counts and y (n,) int64 word ids."""
        source = self._binned["test" if split == "test" else "train"]
        return source.dense(indices), source.labels[indices].astype(np.int64)

    def train_batch(self, seed: int, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The training batch of `step`, a pure function of (seed, step)."""
        rng = np.random.default_rng([seed, 3, step])
        pool = self.pools["train"]
        return self.to_batch("train", pool[rng.integers(len(pool), size=batch_size)])

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every sample of "valid" or "test", in batches."""
        if split not in ("valid", "test"):
            raise UserError(f"evaluation splits are 'valid' and 'test', not {split!r}")
        pool = self.pools[split]
        for start in range(0, len(pool), batch_size):
            yield self.to_batch(split, pool[start : start + batch_size])

    def describe(self) -> dict:
        """Data provenance for the run record."""
        return {
            "task": "shd",
            "files": {
                split: {"path": str(path), "sha256": sha256_file(path)}
                for split, path in self.files.items()
            },
            "bin_ms": self.bin_ms,
            "n_steps": self.n_steps,
            "data_seed": self.data_seed,
            "val_fraction": self.val_fraction,
            "pool_sizes": {k: len(v) for k, v in self.pools.items()},
        }


# ---------------------------------------------------------------------------------------
# The task as `elmnet.train` runs it. The network and the training follow SHD-Adding's
# setup (docs/elm-model.md §4) with 20 outputs: the brief of this task asks for exactly
# that, so that the two SHD tasks differ only in what is to be remembered.

NETWORK = {**shd_adding.NETWORK, "n_out": N_CLASSES}
TRAINING = dict(shd_adding.TRAINING)


class Task(shd_adding.Task):
    """SHD classification for the trainer: last-step cross-entropy; accuracy.

    The loss, the evaluation and the (absent) carried state are SHD-Adding's; only the
    data differ. `--val-pairs` / `--test-pairs` cap the samples evaluated (here single
    samples).
    """

    def __init__(self, args):
        train_path, test_path = find_shd(args.data, download=args.download)
        self.data = SHDClassify(
            load_split(train_path), load_split(test_path), bin_ms=args.bin_ms,
            data_seed=args.data_seed, n_val=args.val_pairs, n_test=args.test_pairs,
        )  # fmt: skip
        self.args, self.d_in, self.n_out = args, self.data.n_channels, N_CLASSES
