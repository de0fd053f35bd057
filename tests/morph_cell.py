"""A small branched 'morphology' as a store segment table, with its true topology.

The sections, their parents and lengths are written out here; path distances follow
from them by summing lengths (child attached at its parent's far end), so the tests know
every segment's parent independently of `surrogate.morphology`.
"""

from biophys import store

# (name, tree, parent section or None for the soma, length µm, segments)
SECTIONS = [
    ("dend[0]", "basal", None, 60.0, 3),
    ("dend[1]", "basal", "dend[0]", 45.0, 1),
    ("dend[2]", "basal", "dend[0]", 80.0, 3),
    ("dend[3]", "basal", None, 35.0, 1),
    ("dend[4]", "basal", "dend[3]", 50.0, 3),
    ("apic[0]", "apical", None, 200.0, 5),
    ("apic[1]", "apical", "apic[0]", 70.0, 3),
    ("apic[2]", "apical", "apic[0]", 120.0, 3),
    ("apic[3]", "apical", "apic[2]", 40.0, 1),
    ("apic[4]", "apical", "apic[2]", 55.0, 3),
    ("apic[5]", "apical", "apic[4]", 30.0, 1),
]
SOMA_RADIUS_UM = 9.0


def segment_table() -> tuple[dict[str, list], list[int]]:
    """(segment table in `biophys.store.SEGMENT_FIELDS` columns, true parent per segment)."""
    start, last_segment = {}, {}
    table = {k: [] for k in store.SEGMENT_FIELDS}
    parents = []
    for name, tree, parent, length, nseg in SECTIONS:
        start[name] = SOMA_RADIUS_UM if parent is None else start[parent] + _length(parent)
        for i in range(nseg):
            x = (i + 0.5) / nseg
            table["section"].append(name)
            table["x"].append(x)
            table["tree"].append(tree)
            table["path_distance_um"].append(start[name] + x * length)
            table["length_um"].append(length / nseg)
            if i:
                parents.append(len(parents) - 1)
            else:
                parents.append(last_segment[parent] if parent else -1)
        last_segment[name] = len(parents) - 1
    return table, parents


def _length(name: str) -> float:
    return next(s[3] for s in SECTIONS if s[0] == name)


def n_segments() -> int:
    return sum(s[4] for s in SECTIONS)


def branched_spec(n_time: int, cell: str = "toy") -> store.StoreSpec:
    """A store spec with the branched segment table and NeuronIO input order."""
    table, _ = segment_table()
    n = n_segments()
    return store.StoreSpec(
        n_time=n_time,
        input_kind=["exc"] * n + ["inh"] * n,
        input_segment=list(range(n)) * 2,
        segments=table,
        protocol={"cell": cell, "n_time": n_time},
    )


def make_branched_store(path, cell: str = "toy", n_sims: int = 4, n_time: int = 1200, seed=0):
    """A complete store of the toy cell (`toy_cell`) on the branched segment table."""
    from toy_cell import toy_simulation

    store.prepare_store(path, branched_spec(n_time, cell), n_sims)
    for i in range(n_sims):
        store.write_simulation(path, i, toy_simulation(seed * 1000 + i, n_segments(), n_time))
