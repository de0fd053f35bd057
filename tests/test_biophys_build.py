"""Mechanism compilation: cached by content, safe under concurrency, idempotent to load."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from biophys import mechanisms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from biophys.mechanisms import load_mechanisms
    from neuron import h
    lib = load_mechanisms()
    load_mechanisms()
    sec = h.Section(name="s")
    syn = h.AmpaNmdaSyn(sec(0.5))
    sec.insert("NaTa_t")
    print(lib)
    """
)


def test_concurrent_first_use_builds_once(tmp_path):
    """Three processes start at once on an empty cache: one build, all load it.

    When the session cache has no build yet (this file sorts first), the children build
    into it and the rest of the session reuses their build; otherwise a fresh cache.
    """
    session_cache = os.environ["ELMBRIDGE_CACHE"]
    built = (Path(session_cache) / "mechanisms" / mechanisms.mechanisms_hash()).is_dir()
    cache = tmp_path / "cache" if built else Path(session_cache)
    env = dict(os.environ, ELMBRIDGE_CACHE=str(cache))
    code = _CHILD.format(repo=REPO)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    libs = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(libs) == 1
    builds = [p.name for p in (cache / "mechanisms").iterdir() if p.is_dir()]
    assert builds == [mechanisms.mechanisms_hash()]  # no leftover temporary build folders


def test_hash_covers_sources_and_neuron_version(tmp_path, monkeypatch):
    base = mechanisms.mechanisms_hash()
    copy = tmp_path / "mods"
    shutil.copytree(mechanisms.MOD_DIR, copy)
    monkeypatch.setattr(mechanisms, "MOD_DIR", copy)
    assert mechanisms.mechanisms_hash() == base  # content, not location
    target = copy / "Im.mod"
    target.write_text(target.read_text() + "\n: edited\n")
    edited = mechanisms.mechanisms_hash()
    assert edited != base
    monkeypatch.setattr(mechanisms, "_neuron_version", lambda: "0.0-other")
    assert mechanisms.mechanisms_hash() not in (base, edited)


def test_load_is_idempotent_and_defines_every_mechanism():
    first = mechanisms.load_mechanisms()
    assert mechanisms.load_mechanisms() == first
    names = mechanisms.loaded_mechanism_names()
    assert set(mechanisms.CHANNELS + mechanisms.SYNAPSES + mechanisms.STIMULI) <= names
    assert {p.stem for p in mechanisms.mod_files()} == set(
        mechanisms.CHANNELS + mechanisms.SYNAPSES + mechanisms.STIMULI
    )
    assert first.parent.parent.name == mechanisms.mechanisms_hash()


def test_clash_with_foreign_mechanisms_is_a_user_error(monkeypatch):
    from elmbridge.errors import UserError

    monkeypatch.setattr(mechanisms, "_loaded_library", None)
    monkeypatch.setattr(mechanisms, "loaded_mechanism_names", lambda: {"NaTa_t", "pas"})
    with pytest.raises(UserError, match="x86_64"):
        mechanisms.load_mechanisms()
