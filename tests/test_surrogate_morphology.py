"""Morphology routing: topology from the segment table, subtrees as ELM branches, a fit."""

import numpy as np
import pytest
import torch
from morph_cell import branched_spec, n_segments, segment_table
from toy_cell import toy_simulation

from biophys import store
from elmbridge.errors import UserError
from surrogate.data import inspect_store
from surrogate.fit import fit, preset_config
from surrogate.model_file import load_model_file
from surrogate.morphology import morphology_branches, segment_groups, segment_tree


def check_partition(branches, kinds, segs, parents, d_tree):
    """Every input once; a segment's inputs on one branch; each branch a connected piece."""
    assert len(branches) == d_tree
    flat = sorted(c for b in branches for c in b)
    assert flat == list(range(len(kinds)))
    branch_of_segment = {}
    for k, branch in enumerate(branches):
        for c in branch:
            assert branch_of_segment.setdefault(segs[c], k) == k
    for k in range(d_tree):
        members = {s for s, b in branch_of_segment.items() if b == k}
        entries = [s for s in members if parents[s] not in members]
        # One entry segment, or several stems that meet only at the soma.
        assert len(entries) == 1 or all(parents[s] == -1 for s in entries), (k, entries)


def test_parents_are_inferred_from_the_segment_table():
    table, parents = segment_table()
    assert segment_tree(table).parent.tolist() == parents


@pytest.mark.parametrize("d_tree", [2, 3, 5, 8, 13, 20, n_segments()])
def test_branches_are_subtrees_that_cover_every_input_once(d_tree):
    table, parents = segment_table()
    n = n_segments()
    kinds, segs = ["exc"] * n + ["inh"] * n, list(range(n)) * 2
    branches = morphology_branches(table, kinds, segs, d_tree)
    check_partition(branches, kinds, segs, parents, d_tree)
    trees = {table["tree"][segs[b[0]]] for b in branches}
    assert trees == {"basal", "apical"}
    for branch in branches:  # never both trees on one branch
        assert len({table["tree"][segs[c]] for c in branch}) == 1


def test_two_branches_are_the_two_trees():
    table, _ = segment_table()
    groups = segment_groups(segment_tree(table), 2)
    trees = [{table["tree"][s] for s in g} for g in groups]
    assert sorted(map(sorted, trees)) == [["apical"], ["basal"]]
    assert sum(len(g) for g in groups) == n_segments()


def test_a_chain_splits_into_contiguous_distance_bands():
    # One unbranched section of 12 segments: branches must be runs of adjacent segments.
    table = {"section": ["dend[0]"] * 12, "x": [(i + 0.5) / 12 for i in range(12)],
             "tree": ["basal"] * 12, "path_distance_um": [5 + 10 * (i + 0.5) for i in range(12)],
             "length_um": [10.0] * 12}  # fmt: skip
    groups = segment_groups(segment_tree(table), 4)
    assert len(groups) == 4
    for g in groups:
        assert g == list(range(g[0], g[-1] + 1))
    assert sorted(s for g in groups for s in g) == list(range(12))


def test_real_cell_topology_matches_neuron():
    """The parents inferred from L5PC's segment table are NEURON's own."""
    pytest.importorskip("neuron")
    from biophys import cells
    from biophys import morphology as morph

    description = cells.describe_cell("L5PC")
    geometry = cells._Cell("topology-check", morph.find_morphology())
    index = {(seg.sec, seg.x): i for i, seg in enumerate(geometry.segments)}
    dendrites = set(geometry.dend) | set(geometry.apic)
    truth = []
    for seg in geometry.segments:
        own = list(seg.sec)
        k = own.index(seg) if seg in own else [s.x for s in own].index(seg.x)
        if k:
            truth.append(index[(seg.sec, own[k - 1].x)])
            continue
        attach = seg.sec.parentseg()
        if attach is None or attach.sec not in dendrites:
            truth.append(-1)
            continue
        nseg = attach.sec.nseg
        holder = list(attach.sec)[min(int(attach.x * nseg), nseg - 1)]
        truth.append(index[(attach.sec, holder.x)])
    assert segment_tree(description.segments).parent.tolist() == truth
    branches = morphology_branches(
        description.segments, description.input_kind, description.input_segment, 45
    )
    check_partition(branches, description.input_kind, description.input_segment, truth, 45)


@pytest.mark.parametrize(
    "change, d_tree, message",
    [
        (None, 1, "d_tree must be between 2"),
        (None, n_segments() + 1, f"and {n_segments()} \\(one per segment\\)"),
        ("ambiguous", 2, "does not say which one it hangs on"),
        ("no-table", 3, "lacks"),
    ],
)
def test_bad_morphology_requests_are_one_line_errors(change, d_tree, message):
    table, _ = segment_table()
    n = n_segments()
    if change == "ambiguous":
        # Two basal stems of equal length both end where a third section starts.
        table = {"section": ["dend[0]", "dend[1]", "dend[2]", "apic[0]"], "x": [0.5] * 4,
                 "tree": ["basal"] * 3 + ["apical"], "path_distance_um": [34.0, 34.0, 69.0, 30.0],
                 "length_um": [50.0, 50.0, 20.0, 40.0]}  # fmt: skip
        n = 4
    if change == "no-table":
        table = {"section": table["section"]}
    with pytest.raises(UserError, match=message) as err:
        morphology_branches(table, ["exc"] * n + ["inh"] * n, list(range(n)) * 2, d_tree)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def branched_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("morph") / "branched.zarr"
    n, n_time = n_segments(), 1200
    store.prepare_store(path, branched_spec(n_time), 6)
    for i in range(6):
        store.write_simulation(path, i, toy_simulation(i, n, n_time))
    return path


def test_fit_with_morphology_routing_saves_and_reloads(branched_store, tmp_path):
    config = preset_config(
        data=str(branched_store), cell="toy", d_m=4, d_tree=5, routing="morphology",
        learn_tau_m=True, tau_max=60.0, epochs=1, batches_per_epoch=3, batch_size=2,
        val_fraction=0.2, test_fraction=0.2, max_spikes=1000,
    )  # fmt: skip
    fit(config, tmp_path / "run", progress=False)
    model, _ = load_model_file(tmp_path / "run" / "best.pt")
    info = inspect_store(branched_store)
    expected = morphology_branches(info.segments, info.input_kind, info.input_segment, 5)
    c = model.config
    assert c.routing == "explicit" and c.branch_inputs == expected
    assert c.d_brch == max(len(b) for b in expected)
    assert c.learn_tau_m and c.tau_max == 60.0
    # τ_m was trained: it moved away from its log-spaced start inside [1, 60] ms.
    start = np.logspace(0, np.log10(60.0), 4)
    tau = model.tau_m.detach().numpy()
    assert ((tau >= 1.0) & (tau <= 60.0)).all() and not np.allclose(tau, start, atol=1e-6)
    # The slots read exactly the listed channels.
    for k, branch in enumerate(expected):
        slots = slice(k * c.d_brch, (k + 1) * c.d_brch)
        assert model.syn_index[slots][model.syn_valid[slots]].tolist() == list(branch)
    assert isinstance(model.theta_m, torch.nn.Parameter)


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(tau_max=1.0), "tau_max is in ms and must exceed"),
        (dict(tau_max=float("nan")), "tau_max is in ms"),
        (dict(learn_tau_m="yes"), "learn_tau_m must be true or false"),
        (dict(routing="dendrites"), "routing must be one of"),
    ],
)
def test_bad_timescale_and_routing_options_are_one_line_errors(values, message):
    with pytest.raises(UserError, match=message) as err:
        preset_config(**values)
    assert "\n" not in str(err.value)


def test_runs_recorded_before_the_new_options_still_resume():
    from dataclasses import asdict

    from surrogate.config import recorded_config

    old = asdict(preset_config())
    for name in ("learn_tau_m", "tau_max"):
        old.pop(name)
    assert recorded_config(old) == asdict(preset_config())
    assert recorded_config({**old, "tau_max": 20.0})["tau_max"] == 20.0


def test_fit_command_line_takes_the_new_options(branched_store, tmp_path, cli):
    sizes = ["--epochs", "1", "--batches-per-epoch", "1", "--batch-size", "1", "--val-fraction",
             "0.2", "--test-fraction", "0.2", "--max-spikes", "1000"]  # fmt: skip
    done = cli("surrogate.fit", "--data", branched_store, "--routing", "morphology",
               "--d-tree", "3", "--d-m", "2", "--tau-max", "40", "--learn-tau-m", *sizes,
               "--out", tmp_path / "run")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    model, _ = load_model_file(tmp_path / "run" / "best.pt")
    assert model.config.routing == "explicit" and model.config.d_tree == 3
    assert model.config.tau_max == 40.0 and model.config.learn_tau_m
    bad = cli("surrogate.fit", "--data", branched_store, "--routing", "morphology",
              "--d-tree", "1", "--out", tmp_path / "bad")  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert not (tmp_path / "bad").exists()
