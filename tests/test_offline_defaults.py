"""The default look-ups work on a fresh machine without network: the packaged data.

Every test here runs with an empty home and cache and with downloads failing, so a pass
means the files came from the installation itself, not from ../shared or the network.
"""

import json
import shutil
import socket
import urllib.request
from pathlib import Path

import pytest
from toy_cell import make_toy_store

from biophys import morphology as morph
from elmbridge.download import sha256_file
from elmbridge.errors import MissingDataError
from elmnet import released
from elmnet.released import MANIFEST, RELEASED_MODEL_NAMES

# Extra files beside the models: the authors' licence and our note on where they are from.
PACKAGED_EXTRAS = {"LICENSE", "SOURCES.md"}

# Downloads in a subprocess go through a proxy on a port where nothing listens, so they
# fail at once, as they would offline.
OFFLINE_ENV = {
    name: "http://127.0.0.1:9"
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
} | {"no_proxy": "", "NO_PROXY": ""}


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty home and cache, no morphology folder, and every network call failing.

    Returns the list of URLs that something tried to open (it should stay empty).
    """
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ELMBRIDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(morph.MORPHOLOGY_DIR_ENV, raising=False)
    attempts: list[str] = []

    def no_network(url, *args, **kwargs):
        attempts.append(getattr(url, "full_url", url))
        raise OSError("network is unreachable (test)")

    def no_socket(*args, **kwargs):
        attempts.append(f"socket {args[:1]}")
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket, "create_connection", no_socket)
    morph._find.cache_clear()
    yield attempts
    morph._find.cache_clear()


def _env(tmp_path: Path) -> dict[str, str]:
    """Environment of an offline subprocess with an empty home and cache."""
    home = tmp_path / "sub-home"
    home.mkdir(exist_ok=True)
    return {
        "HOME": str(home),
        "ELMBRIDGE_CACHE": str(tmp_path / "sub-cache"),
        "XDG_CACHE_HOME": str(tmp_path / "sub-xdg"),
        **OFFLINE_ENV,
    }


def test_default_morphology_is_the_packaged_cell1(offline):
    found = morph.find_morphology()
    assert found.is_cell1 and found.name == "cell1.asc"
    assert found.path == morph.packaged_morphology_path().resolve()
    assert found.path.is_relative_to(Path(morph.__file__).resolve().parent)
    assert offline == []


def test_morphology_folder_named_by_the_user_comes_first(offline, tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copyfile(morph.packaged_morphology_path(), folder / "cell1.asc")
    monkeypatch.setenv(morph.MORPHOLOGY_DIR_ENV, str(folder))
    assert morph.find_morphology().path == (folder / "cell1.asc").resolve()
    # A wrong file there is skipped for the packaged copy rather than used as cell1.
    (folder / "cell1.asc").write_text("not a morphology")
    morph._find.cache_clear()
    assert morph.find_morphology().path == morph.packaged_morphology_path().resolve()
    assert offline == []


def test_every_released_model_name_resolves_to_the_packaged_copy(offline):
    packaged = released.packaged_models_dir()
    for name in RELEASED_MODEL_NAMES:
        assert released.find_released(name) == packaged / name
    model = released.load_released("num_memory_20")
    assert model.config.d_m == 20
    assert offline == []


def test_models_folder_named_by_the_user_comes_first(offline, tmp_path):
    mine = tmp_path / "models"
    shutil.copytree(released.packaged_models_dir() / "num_memory_5", mine / "num_memory_5")
    assert released.find_released("num_memory_5", mine) == mine / "num_memory_5"
    # Not there, or damaged: the packaged copy stands in, without a download.
    assert released.find_released("num_memory_7", mine) == (
        released.packaged_models_dir() / "num_memory_7"
    )
    (mine / "num_memory_5" / "model_config.json").write_text("{}")
    assert released.find_released("num_memory_5", mine) == (
        released.packaged_models_dir() / "num_memory_5"
    )
    assert offline == []


def test_without_a_packaged_copy_the_download_is_tried(offline, monkeypatch):
    monkeypatch.setattr(released, "packaged_models_dir", lambda: None)
    with pytest.raises(MissingDataError, match="by hand"):
        released.find_released("num_memory_1")
    assert offline and "AaronSpieler/elmneuron" in offline[0]


def test_packaged_files_match_the_manifest():
    packaged = released.packaged_models_dir()
    assert packaged is not None
    on_disk = {p.relative_to(packaged).as_posix() for p in packaged.rglob("*") if p.is_file()}
    listed = {f"{name}/{file}" for name, files in MANIFEST["files"].items() for file in files}
    assert on_disk == listed | PACKAGED_EXTRAS
    for name, files in MANIFEST["files"].items():
        for file, sha256 in files.items():
            assert sha256_file(packaged / name / file) == sha256, f"{name}/{file}"
    assert "MIT License" in (packaged / "LICENSE").read_text(encoding="utf-8")
    assert MANIFEST["commit"] in (packaged / "SOURCES.md").read_text(encoding="utf-8")
    cell1 = morph.packaged_morphology_path()
    assert sha256_file(cell1) == morph.CELL1_SHA256
    assert "139653" in (cell1.parent / "SOURCES.md").read_text(encoding="utf-8")


def test_packaged_data_is_declared_for_non_editable_installs():
    import tomllib

    repo = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    for package in ("biophys", "elmnet"):
        root = repo / package / "data"
        data_files = {p for p in root.rglob("*") if p.is_file()}
        declared = {p for pattern in globs[package] for p in (repo / package).glob(pattern)}
        assert data_files <= declared, sorted(map(str, data_files - declared))


def test_demo_runs_the_released_model_offline(cli, tmp_path):
    out = tmp_path / "demo.png"
    result = cli(
        "elmnet.demo", "--out", out, "--duration-ms", 200, cwd=tmp_path, env=_env(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert "released model num_memory_20" in result.stdout
    assert "randomly initialised" not in result.stdout
    assert out.is_file()


def test_evaluate_by_name_and_benchmark_run_offline(cli, tmp_path, offline, capsys):
    store_path = tmp_path / "wide.zarr"
    make_toy_store(store_path, n_sims=1, n_segments=639, n_time=900)
    done = cli(
        "surrogate.evaluate", "--model", "num_memory_20", "--data", store_path,
        "--out", tmp_path / "rep", cwd=tmp_path, env=_env(tmp_path), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert report["model"]["name"] == "num_memory_20" and report["model"]["kind"] == "released"

    from benchmarks import released_on_store

    released_on_store.main(
        ["--data", str(store_path), "--models", "num_memory_1", "--out", str(tmp_path / "b")]
    )
    assert "0.9437" in capsys.readouterr().out  # the published AUC, read from the package
    assert offline == []
