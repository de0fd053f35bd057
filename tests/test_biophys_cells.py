"""The L5PC cells: morphology numbers of the document, input order, parameter layout."""

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from biophys import cells
from biophys import morphology as morph
from elmbridge.errors import MissingDataError, UserError

SYNTHETIC = Path(__file__).parent / "data" / "synthetic_l5.asc"


@pytest.fixture(scope="module")
def l5pc():
    return cells.get_model("L5PC")


def test_description_matches_the_document():
    d = cells.describe_cell("L5PC")
    seg = {k: np.asarray(v) for k, v in d.segments.items()}
    basal, apical = seg["tree"] == "basal", seg["tree"] == "apical"
    assert (basal.sum(), apical.sum()) == (262, 377)
    assert seg["length_um"][basal].sum() == pytest.approx(5133.5, abs=0.05)
    assert seg["length_um"][apical].sum() == pytest.approx(7440.9, abs=0.05)
    assert d.morphology_name == "cell1.asc"
    assert d.morphology_sha256 == morph.CELL1_SHA256
    assert d.name == "L5PC"
    assert (d.synapse_model, d.input_protocol) == ("ampa_nmda", "nmda")


def test_input_rows_in_neuronio_order():
    d = cells.describe_cell("L5PC")
    assert d.n_inputs == 1278
    kinds, segs = np.asarray(d.input_kind), np.asarray(d.input_segment)
    trees = np.asarray(d.segments["tree"])[segs]
    # 0-261 basal exc, 262-638 apical exc, 639-1277 the same segments inhibitory
    assert set(kinds[:639]) == {"exc"} and set(kinds[639:]) == {"inh"}
    assert set(trees[:262]) == {"basal"} and set(trees[262:639]) == {"apical"}
    assert np.array_equal(segs[:639], np.arange(639))
    assert np.array_equal(segs[639:], segs[:639])
    # sections in index order (dend[0..83] then apic[0..108]), x increasing inside each
    names = d.segments["section"]
    order = [(n.split("[")[0] == "apic", int(n.split("[")[1][:-1])) for n in names]
    assert order == sorted(order)
    assert order[0] == (False, 0) and order[-1] == (True, 108)
    xs = np.asarray(d.segments["x"])
    for a, b in zip(range(len(names) - 1), range(1, len(names)), strict=True):
        if names[a] == names[b]:
            assert xs[b] > xs[a]


def test_built_cell_geometry(l5pc):
    from neuron import h

    c = l5pc.cell
    assert len(c.all) == 196
    assert (len(c.soma), len(c.dend), len(c.apic), len(c.axon)) == (1, 84, 109, 2)
    assert c.longest_apical_um == pytest.approx(1300.53, abs=0.01)
    for sec in c.dend + c.apic + c.soma:
        assert sec.nseg == 1 + 2 * int(sec.L / 40)
    a0, a1 = c.axon
    assert (a0.L, a0.diam, a1.L, a1.diam) == (30.0, 1.0, 30.0, 1.0)
    assert a0.parentseg().sec == c.soma[0] and a0.parentseg().x == 0.5
    assert a1.parentseg().sec == a0 and a1.parentseg().x == 1.0
    assert len(l5pc.synapses) == len(l5pc.netcons) == 1278
    # the nexus: NeuronIO recorded apic[50](0.9), the trunk segment centred at 678.4 µm
    sec, x = l5pc.nexus
    assert c.section_name(sec) == "apic[50]"
    assert sec.nseg == 3 and 2 / 3 < x <= 1  # the last of three segments
    assert h.distance(c.origin, sec(x)) == pytest.approx(678.39, abs=0.01)


def _expected_apical(d, quirk, value_of):
    """Per apical segment: the value at its centre, or at its section's distal end for
    the last segment of each section when `quirk` (independent of the builder)."""
    names = np.asarray(d.segments["section"])
    dist = np.asarray(d.segments["path_distance_um"])
    length = np.asarray(d.segments["length_um"])
    tree = np.asarray(d.segments["tree"])
    out = np.full(len(names), np.nan)
    for i in np.flatnonzero(tree == "apical"):
        last = i + 1 == len(names) or names[i + 1] != names[i]
        out[i] = value_of(dist[i] + (length[i] / 2 if quirk and last else 0.0))
    return out


def ih_neuronio(d_um):
    return 1e-4 * (-0.8696 + 2.087 * math.exp(3.6161 * min(d_um / 1300.53, 0.65)))


def test_ih_gradient_and_calcium_hot_zone(l5pc):
    d = l5pc.description
    apical = np.asarray(d.segments["tree"]) == "apical"
    got_ih = cells.segment_values(l5pc, "gIhbar_Ih")
    want_ih = _expected_apical(d, True, ih_neuronio)
    np.testing.assert_allclose(got_ih[apical], want_ih[apical], rtol=1e-4)
    np.testing.assert_allclose(got_ih[~apical], 0.00005)
    lva = cells.segment_values(l5pc, "gCa_LVAstbar_Ca_LVAst")
    want_lva = _expected_apical(d, True, lambda x: 0.2271264 if 685.0 < x < 885.0 else 0.002271264)
    np.testing.assert_allclose(lva[apical], want_lva[apical])
    assert (lva[apical] == 0.2271264).sum() > 10
    # the document's example: a segment centred at 401 µm gets 5.74e-4, not 5.50e-4
    dist = np.asarray(d.segments["path_distance_um"])
    i = np.argmin(np.abs(dist - 401.0))
    assert got_ih[i] == pytest.approx(5.74e-4, abs=5e-7)
    assert ih_neuronio(dist[i]) == pytest.approx(5.50e-4, abs=5e-7)


def test_distal_end_quirk_can_be_switched_off():
    params = cells.parameters("L5PC")
    params["last_segment_takes_distal_end_value"] = False
    model = cells.L5PCModel("L5PC", params=params)
    d = model.description
    assert d.parameters["last_segment_takes_distal_end_value"] is False
    apical = np.asarray(d.segments["tree"]) == "apical"
    want = _expected_apical(d, False, ih_neuronio)
    got = cells.segment_values(model, "gIhbar_Ih")
    np.testing.assert_allclose(got[apical], want[apical], rtol=1e-4)


def test_variants():
    from neuron import h

    hay = cells.get_model("L5PC-hay2011")
    assert not h.ismembrane("NaTa_t", sec=hay.cell.axon[0])  # somatic initiation
    assert hay.cell.soma[0](0.5).gNaTa_tbar_NaTa_t == 2.04
    hva = cells.segment_values(hay, "gCa_HVAbar_Ca_HVA")
    assert set(np.unique(hva[np.asarray(hay.description.segments["tree"]) == "apical"])) == {
        0.000555,
        0.0000555,
    }

    ampa = cells.get_model("L5PC-ampa")
    assert (ampa.description.synapse_model, ampa.description.input_protocol) == ("ampa", "ampa")
    exc = ampa.synapses[0]
    assert exc.hname().startswith("DoubleExpSyn")
    assert (exc.tau_r, exc.tau_d, exc.gmax, exc.e) == (0.3, 3.0, 0.0004, 0.0)
    assert ampa.synapses[700].e == -80.0

    passive = cells.get_model("L5PC-passive")
    for sec in passive.cell.dend + passive.cell.apic:
        assert h.ismembrane("pas", sec=sec)
        for mech in ("Ih", "NaTs2_t", "Ca_LVAst", "Ca_HVA", "SK_E2", "Im", "SKv3_1"):
            assert not h.ismembrane(mech, sec=sec)
    assert h.ismembrane("NaTa_t", sec=passive.cell.axon[0])
    assert passive.synapses[0].hname().startswith("AmpaNmdaSyn")


def test_unknown_cell_lists_the_names():
    with pytest.raises(UserError, match="L5PC-hay2011"):
        cells.describe_cell("L5PC-typo")
    with pytest.raises(UserError, match="does not exist"):
        cells.describe_cell("L5PC", morphology_path="/nonexistent/cell.asc")


def test_fallback_morphology_is_named_and_recorded(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(morph.MORPHOLOGY_DIR_ENV, str(tmp_path))

    def offline(url, dest, sha256, what):
        raise MissingDataError(f"{what} is not available offline")

    monkeypatch.setattr(morph, "fetch", offline)
    # The install ships cell1.asc; the fallback is for an install that lacks it.
    monkeypatch.setattr(morph, "packaged_morphology_path", lambda: None)
    monkeypatch.setattr(morph, "fallback_morphology_path", lambda: SYNTHETIC)
    morph._find.cache_clear()
    with caplog.at_level(logging.WARNING):
        d = cells.describe_cell("L5PC")
    assert "NOTICE" in caplog.text and str(SYNTHETIC) in caplog.text
    assert d.name == "L5PC[synthetic_l5]"
    assert d.morphology_name == "synthetic_l5.asc"
    from elmbridge.download import sha256_file

    assert d.morphology_sha256 == sha256_file(SYNTHETIC)
    assert d.n_inputs == 2 * d.n_segments

    monkeypatch.setattr(morph, "fallback_morphology_path", lambda: None)
    morph._find.cache_clear()
    with pytest.raises(MissingDataError, match="pip install bluepyopt") as err:
        cells.describe_cell("L5PC")
    assert "cell1.asc" in str(err.value)


def test_fallback_location_is_inside_the_bluepyopt_package(tmp_path, monkeypatch):
    pkg = tmp_path / "bluepyopt"
    target = pkg / morph.FALLBACK_RELPATH
    target.parent.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    target.write_text(SYNTHETIC.read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    assert morph.fallback_morphology_path() == target


def test_segment_coordinates_lie_along_the_dendrites():
    """Centres in segment-table order: within a section, neighbouring centres are no
    farther apart (in a straight line) than the path between them, and no centre is
    farther from the soma centre than its path distance plus the soma's extent."""
    description = cells.describe_cell("L5PC")
    xyz = cells.segment_coordinates("L5PC")
    table = description.segments
    assert xyz.shape == (len(table["section"]), 3) and np.isfinite(xyz).all()
    dist = np.asarray(table["path_distance_um"])
    for i in range(1, len(xyz)):
        if table["section"][i] == table["section"][i - 1]:
            chord = np.linalg.norm(xyz[i] - xyz[i - 1])
            assert chord <= dist[i] - dist[i - 1] + 1e-6
    soma = xyz[np.argsort(dist)[:3]].mean(axis=0)  # near the soma, whatever its frame
    assert (np.linalg.norm(xyz - soma, axis=1) <= dist + 60.0).all()
    apical = np.asarray(table["tree"]) == "apical"
    assert np.ptp(xyz[apical], axis=0).max() > 800  # the apical tree spans ≈1 mm
