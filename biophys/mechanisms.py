"""The toolkit's NMODL mechanisms: compiled on first use, cached, loaded once per process.

The sources live in ``biophys/mechanisms/*.mod`` (Hay et al. 2011 channels, the calcium
shell and the synapses). They are compiled with NEURON's ``nrnivmodl`` into the user
cache, in a folder named by `mechanisms_hash` (the sources and the NEURON version), so
an edit of a .mod file or a NEURON upgrade triggers a fresh build and old builds are
never reused by mistake. A file lock makes concurrent first use from several processes
(Dask workers, SLURM array jobs sharing a home directory) build exactly once.

Nobody needs to run ``nrnivmodl`` by hand: `load_mechanisms` does everything.
"""

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from filelock import FileLock

from elmbridge.download import cache_dir
from elmbridge.errors import UserError

log = logging.getLogger(__name__)

MOD_DIR = Path(__file__).resolve().parent / "mechanisms"

# What the library defines; used to detect a clash with mechanisms loaded from elsewhere.
CHANNELS = (
    "CaDynamics_E2",
    "Ca_HVA",
    "Ca_LVAst",
    "Ih",
    "Im",
    "K_Pst",
    "K_Tst",
    "NaTa_t",
    "NaTs2_t",
    "Nap_Et2",
    "SK_E2",
    "SKv3_1",
)
SYNAPSES = ("AmpaNmdaSyn", "DoubleExpSyn")
STIMULI = ("EpspClamp",)

_loaded_library: Path | None = None


class MechanismBuildError(RuntimeError):
    """nrnivmodl failed; the message carries the compiler output and where to look."""


def mod_files() -> list[Path]:
    """The NMODL sources of the toolkit, sorted by name."""
    return sorted(MOD_DIR.glob("*.mod"))


def _neuron_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("neuron")
    except importlib.metadata.PackageNotFoundError:  # a NEURON built from source
        import neuron

        return str(getattr(neuron, "__version__", "unknown"))


def mechanisms_hash() -> str:
    """Short hash of the .mod sources (names and bytes) and the NEURON version."""
    digest = hashlib.sha256()
    digest.update(f"neuron {_neuron_version()}\n".encode())
    for path in mod_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _nrnivmodl() -> str:
    """Path of ``nrnivmodl``: beside this Python first (virtualenvs), then on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("nrnivmodl", path=search)
    if found is None:
        raise MechanismBuildError(
            "nrnivmodl was not found beside this Python or on PATH. Install NEURON into this "
            "environment (`pip install neuron`) so that its compiler wrapper is available."
        )
    return found


def _library_in(folder: Path) -> Path | None:
    """The shared library nrnivmodl made in `folder` (its layout varies by platform)."""
    for pattern in ("*/libnrnmech.so", "*/.libs/libnrnmech.so", "*/libnrnmech.dylib"):
        hits = sorted(folder.glob(pattern))
        if hits:
            return hits[0]
    return None


def _build(final: Path) -> None:
    """Compile the sources into `final`, atomically: a killed build leaves nothing."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.build.", dir=final.parent))
    try:
        for path in mod_files():
            shutil.copy2(path, tmp / path.name)
        log.info("compiling NEURON mechanisms into %s (once per version)", final)
        result = subprocess.run(
            [_nrnivmodl(), "."], cwd=tmp, capture_output=True, text=True, check=False
        )
        if result.returncode != 0 or _library_in(tmp) is None:
            (final.parent / f"{final.name}.build-log.txt").write_text(
                result.stdout + "\n" + result.stderr
            )
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
            raise MechanismBuildError(
                f"nrnivmodl failed (exit {result.returncode}) on {MOD_DIR}; full log in "
                f"{final.parent / (final.name + '.build-log.txt')}. It needs a C++ compiler "
                f"(gcc or clang) on PATH. Last lines:\n{tail}"
            )
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compiled_library() -> Path:
    """Path of the compiled mechanism library, building it first if needed.

    Safe to call from many processes at once: the first one builds under a file lock,
    the others wait and then reuse its result.
    """
    root = cache_dir("mechanisms")
    final = root / mechanisms_hash()
    library = _library_in(final) if final.is_dir() else None
    if library is not None:
        return library
    with FileLock(str(root / f"{final.name}.lock")):
        if not final.is_dir():
            _build(final)
    library = _library_in(final)
    if library is None:
        raise MechanismBuildError(
            f"{final} exists but holds no libnrnmech; delete that folder and try again."
        )
    return library


def loaded_mechanism_names() -> set[str]:
    """Names of all density and point-process mechanisms NEURON knows in this process."""
    from neuron import h

    names = set()
    for kind in (0, 1):
        mt = h.MechanismType(kind)
        name = h.ref("")
        for i in range(int(mt.count())):
            mt.select(i)
            mt.selected(name)
            names.add(name[0])
    return names


def load_mechanisms() -> Path:
    """Compile (first use only) and load the toolkit's mechanisms into this process.

    Idempotent: later calls return at once. Returns the library path.

    Raises:
        UserError: NEURON already holds mechanisms of the same names from another
            library (typically auto-loaded from an ``x86_64/`` folder in the working
            directory), which NEURON cannot replace.
        MechanismBuildError: the compiler failed.
    """
    global _loaded_library
    if _loaded_library is not None:
        return _loaded_library
    clash = loaded_mechanism_names() & set(CHANNELS + SYNAPSES + STIMULI)
    if clash:
        raise UserError(
            f"NEURON already has mechanisms named {sorted(clash)} from another library "
            "(NEURON auto-loads ./x86_64 or ./arm64 when `neuron` is imported from a "
            "folder that holds one). Run from a folder without compiled mechanisms."
        )
    library = compiled_library()
    from neuron import h

    if not h.nrn_load_dll(str(library)):
        raise MechanismBuildError(f"NEURON could not load {library}")
    _loaded_library = library
    return library
