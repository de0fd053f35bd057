"""Where the L5PC morphology comes from, and reading it into NEURON.

Hay's reconstruction ``cell1.asc`` (ModelDB 139653) ships with the toolkit as package
data (`biophys/data/morphologies/`, see its SOURCES.md), so the defaults work offline. It
is looked for, in order: an explicit path; a folder the user names in
``$ELMBRIDGE_MORPHOLOGIES``; the packaged copy; the user cache (``<cache>/morphologies``);
a verified download from ModelDB's GitHub mirror. Every copy but an explicit path must
match cell1.asc's sha256. If none works, the real L5 thick-tufted reconstruction that
ships inside the PyPI package ``bluepyopt`` is used instead, with a loud notice: the cell
then gets a distinct name, and the file's name and sha256 are recorded with every dataset.
"""

import functools
import importlib.resources
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from elmbridge.download import cache_dir, copy_verified, fetch, sha256_file
from elmbridge.errors import MissingDataError, UserError

log = logging.getLogger(__name__)

CELL1_NAME = "cell1.asc"
CELL1_SHA256 = "293d0aa92af8d03dbdcc40a711ba3923522615c3a65df485906538a1de986e23"
CELL1_URL = (
    "https://raw.githubusercontent.com/ModelDBRepository/139653/master/morphologies/cell1.asc"
)
MORPHOLOGY_DIR_ENV = "ELMBRIDGE_MORPHOLOGIES"
# Package data of `biophys` (listed in pyproject.toml so that every install ships it).
PACKAGED_RELPATH = ("data", "morphologies", CELL1_NAME)
# A real L5 thick-tufted pyramidal cell inside the bluepyopt wheel (checked in 1.14.26).
FALLBACK_PACKAGE = "bluepyopt"
FALLBACK_RELPATH = "tests/test_ephys/testdata/acc/l5pc/C060114A7.asc"


@dataclass(frozen=True)
class Morphology:
    """A located morphology file.

    Attributes:
        path: the file.
        name: its file name, e.g. "cell1.asc".
        sha256: hex sha256 of its bytes.
        is_cell1: True when it is Hay's cell1.asc (checked by sha256), the NeuronIO cell.
    """

    path: Path
    name: str
    sha256: str

    @property
    def is_cell1(self) -> bool:
        return self.sha256 == CELL1_SHA256


def morphology_dir() -> Path:
    """The folder downloads of cell1.asc go to: ``<user cache>/morphologies``.

    A folder named in ``$ELMBRIDGE_MORPHOLOGIES`` is only read, never written: it is
    often shared, read-only reference data.
    """
    return cache_dir("morphologies")


def user_morphology_dir() -> Path | None:
    """The folder named in ``$ELMBRIDGE_MORPHOLOGIES``, or None when it is not set."""
    env = os.environ.get(MORPHOLOGY_DIR_ENV)
    return Path(env).expanduser() if env else None


def _from_file(path: Path) -> Morphology:
    return Morphology(path=path.resolve(), name=path.name, sha256=sha256_file(path))


def packaged_morphology_path() -> Path | None:
    """The cell1.asc shipped inside the `biophys` package, as a file NEURON can read.

    None when the installation lacks it (a trimmed install). From a zipped install the
    file is first copied into the user cache, because NEURON reads only real files.
    """
    resource = importlib.resources.files("biophys").joinpath(*PACKAGED_RELPATH)
    if not resource.is_file():
        return None
    if isinstance(resource, Path):
        return resource
    with importlib.resources.as_file(resource) as real:
        dest = morphology_dir() / CELL1_NAME
        return copy_verified(real, dest, CELL1_SHA256, what="the packaged cell1.asc")


def fallback_morphology_path() -> Path | None:
    """The bluepyopt L5 thick-tufted morphology, if bluepyopt is installed."""
    spec = importlib.util.find_spec(FALLBACK_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / FALLBACK_RELPATH
    return path if path.is_file() else None


def find_morphology(path: str | os.PathLike | None = None) -> Morphology:
    """Locate the L5PC morphology (see the module docstring for the order).

    The answer is remembered for the life of the process (per explicit path, morphology
    folder and cache), so that a simulation loop neither re-hashes the file nor retries
    a failed download each time.

    Args:
        path: an explicit Neurolucida .asc file; used as given.

    Raises:
        UserError: `path` is given but does not exist.
        MissingDataError: neither cell1.asc nor the bluepyopt fallback can be had; the
            message says how to get either.
    """
    explicit = None if path is None else str(Path(path).expanduser().resolve())
    folder = user_morphology_dir()
    try:
        cache = str(morphology_dir())
    except OSError:
        # A read-only home must not stop the packaged copy from being used.
        cache = None
    return _find(explicit, None if folder is None else str(folder), cache)


def _verified_copy(candidate: Path | None, where: str) -> Path | None:
    """`candidate` if it is cell1.asc by checksum; a wrong file is reported and skipped."""
    if candidate is None or not candidate.is_file():
        return None
    if sha256_file(candidate) == CELL1_SHA256:
        return candidate
    log.warning(
        "%s (%s) does not have cell1.asc's sha256 %s; ignoring it", candidate, where, CELL1_SHA256
    )
    return None


@functools.lru_cache(maxsize=32)
def _find(path: str | None, folder: str | None, cache: str | None) -> Morphology:
    if path is not None:
        if not Path(path).is_file():
            raise UserError(f"morphology file {path} does not exist; give a Neurolucida .asc file")
        return _from_file(Path(path))

    candidates = (
        (None if folder is None else Path(folder) / CELL1_NAME, f"${MORPHOLOGY_DIR_ENV}"),
        (packaged_morphology_path(), "the copy packaged with biophys"),
        (None if cache is None else Path(cache) / CELL1_NAME, "the user cache"),
    )
    for candidate, where in candidates:
        found = _verified_copy(candidate, where)
        if found is not None:
            return _from_file(found)
    try:
        if cache is None:
            raise MissingDataError(
                "Hay's cell1.asc is not installed and the user cache cannot be created to "
                "download it; set $ELMBRIDGE_CACHE to a writable folder, or put cell1.asc "
                f"in a folder named by ${MORPHOLOGY_DIR_ENV}"
            )
        # Only the user cache receives downloads: a folder named in the environment may
        # be read-only shared data.
        target = Path(cache) / CELL1_NAME
        return _from_file(fetch(CELL1_URL, target, CELL1_SHA256, what="Hay's cell1.asc"))
    except MissingDataError as err:
        fallback = fallback_morphology_path()
        if fallback is None:
            raise MissingDataError(
                f"{err}\nAlternatively install bluepyopt (`pip install bluepyopt`): its wheel "
                f"ships another real L5 thick-tufted morphology ({FALLBACK_RELPATH}), which "
                "the toolkit then uses under a distinct cell name."
            ) from err
        log.warning(
            "NOTICE: Hay's cell1.asc is unavailable (%s). Using the L5 thick-tufted "
            "morphology %s from bluepyopt instead: results are NOT the NeuronIO cell, and "
            "the cell is named accordingly.",
            err,
            fallback,
        )
        return _from_file(fallback)


def instantiate(morphology: Morphology, owner: object) -> None:
    """Read a Neurolucida file into NEURON as sections owned by `owner`.

    NEURON's Import3d sets ``owner.soma``, ``owner.dend``, ``owner.apic``, ``owner.axon``
    (lists of sections, children attached at soma(0.5)) and ``owner.all``.
    """
    from neuron import h

    h.load_file("stdrun.hoc")
    h.load_file("import3d.hoc")
    reader = h.Import3d_Neurolucida3()
    reader.quiet = 1
    reader.input(str(morphology.path))
    h.Import3d_GUI(reader, False).instantiate(owner)
    for part in ("soma", "dend", "apic"):
        if not getattr(owner, part, None):
            raise UserError(
                f"{morphology.path} has no {part} sections; an L5 pyramidal morphology "
                "needs a soma, basal dendrites and an apical dendrite"
            )
