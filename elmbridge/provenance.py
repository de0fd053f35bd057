"""What a run records about itself: config, seed, software versions and data origin."""

import hashlib
import importlib.metadata
import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The packages whose versions decide a result of this toolkit.
TRACKED_PACKAGES = (
    "elmbridge",
    "torch",
    "numpy",
    "scipy",
    "neuron",
    "brian2",
    "xarray",
    "zarr",
    "dask",
    "h5py",
)


def software_versions() -> dict[str, str]:
    """Python, platform and the installed versions of the tracked packages."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    commit = git_commit()
    if commit:
        versions["elmbridge_git_commit"] = commit
    return versions


def git_commit() -> str | None:
    """The git commit of the toolkit's source tree, when it runs from a checkout."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def stable_hash(obj: Any) -> str:
    """Short sha256 of a JSON-serialisable object, independent of key order."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run_record(
    config: dict[str, Any], seed: int, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The provenance block stored with every run's outputs."""
    return {
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "config": config,
        "seed": seed,
        "data": data or {},
        "software": software_versions(),
    }
