"""Morphology routing: each ELM branch is one real dendritic subtree of the cell.

Built from a store's segment table alone (`biophys.store`: each dendritic segment's
section, position x along it, tree, path distance from the soma and length), so it works
for every store, simulated or imported, and `elmnet` receives only the resulting lists of
input channels (its "explicit" routing).

Definitions (µm throughout):

- **Topology.** A section spans the path distances [d0, d1] with
  d0 = d(first segment) − x_first · L and d1 = d(last segment) + (1 − x_last) · L,
  L the sum of its segments' lengths (NEURON attaches a child's 0 end to its parent).
  A segment's parent is the previous segment of its section; the first segment's parent
  is the last segment of the section of the same tree whose d1 equals this section's d0
  (within `ATTACH_TOL_UM`); with none, the section is a root of its tree, attached to
  the soma. Two candidate parents are refused as ambiguous.
- **Branches.** The d_tree branches are shared among the trees ("basal", "apical", …) in
  proportion to their segment counts, at least one each. Within a tree, segments are
  visited children-first (decreasing path distance); each keeps a count of itself plus
  its children's not-yet-assigned segments, and when that count reaches a target size
  the segment and those descendants become one branch; so does what is left at each root
  section. The target is the largest (found by bisection) that gives at least as many
  branches as wanted; then the smallest branch is merged into its smallest neighbour
  (the branch holding its parent, a branch hanging from it, or for a branch at the soma
  another branch at the soma) until the count is exact.
- **Contiguity.** Every branch is a connected piece of its tree: it has one entry
  segment whose parent lies outside it, except branches made of several stems that are
  joined only through the soma (all their entry segments are then roots of the tree).
- **Inputs.** Every input goes to the branch of its segment, so the excitatory and the
  inhibitory synapse of one segment share a branch and every input is read exactly once.
  A branch's inputs are ordered by path distance, excitatory first.

The ELM neuron then has d_brch = the largest branch's input count; shorter branches get
invalid (zero-weight) slots. `python -m surrogate.fit --routing morphology --d-tree K`.
"""

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from elmbridge.errors import UserError

# Path distances of a section end and a child's start agree to rounding error (they are
# sums of the same float64 lengths); sections of a real cell end ≥ 0.01 µm apart.
ATTACH_TOL_UM = 1e-3


@dataclass(frozen=True)
class Morphology:
    """The segment tree of a store, as the morphology routing sees it.

    Attributes:
        parent: (n_segments,) index of each segment's parent segment, −1 at the soma.
        tree: (n_segments,) tree label per segment ("basal", "apical", …).
        path_distance_um: (n_segments,) path distance of each segment centre from the
            soma, µm.
    """

    parent: np.ndarray
    tree: np.ndarray
    path_distance_um: np.ndarray

    @property
    def n_segments(self) -> int:
        return len(self.parent)


def segment_tree(segments: Mapping[str, Sequence[Any]]) -> Morphology:
    """The parent of every segment, inferred from a store's segment table (module docstring).

    Args:
        segments: columns "section", "x", "tree", "path_distance_um", "length_um" (µm).

    Raises:
        UserError: a column is missing, or a section's attachment is ambiguous.
    """
    missing = [k for k in ("section", "x", "tree", "path_distance_um", "length_um")
               if k not in segments]  # fmt: skip
    if missing:
        raise UserError(
            f"the morphology routing needs the store's segment table; it lacks {missing}"
        )
    section = [str(s) for s in segments["section"]]
    x = np.asarray(segments["x"], dtype=float)
    tree = np.asarray([str(t) for t in segments["tree"]])
    dist = np.asarray(segments["path_distance_um"], dtype=float)
    length = np.asarray(segments["length_um"], dtype=float)
    n = len(section)
    if not n:
        raise UserError("the store's segment table is empty; the morphology routing needs segments")
    by_section: dict[str, list[int]] = {}
    for i, name in enumerate(section):
        by_section.setdefault(name, []).append(i)
    span = {}
    for name, members in by_section.items():
        members.sort(key=lambda i: x[i])
        total = float(length[members].sum())
        first, last = members[0], members[-1]
        span[name] = (dist[first] - x[first] * total, dist[last] + (1 - x[last]) * total)
    parent = np.full(n, -1, dtype=np.int64)
    names = list(by_section)
    ends = np.array([span[s][1] for s in names])
    trees = np.array([tree[by_section[s][0]] for s in names])
    for name, members in by_section.items():
        for previous, segment in itertools.pairwise(members):
            parent[segment] = previous
        start = span[name][0]
        candidates = [
            names[j]
            for j in np.flatnonzero(np.abs(ends - start) <= ATTACH_TOL_UM)
            if trees[j] == tree[members[0]] and names[j] != name
        ]
        if len(candidates) > 1:
            raise UserError(
                f"section {name} starts {start:.4f} µm from the soma, where sections "
                f"{candidates} all end: the store's segment table does not say which one it "
                "hangs on, so the morphology routing cannot be built"
            )
        if candidates:
            parent[members[0]] = by_section[candidates[0]][-1]
    return Morphology(parent=parent, tree=tree, path_distance_um=dist)


def _share_branches(counts: dict[str, int], d_tree: int) -> dict[str, int]:
    """Branches per tree, proportional to its segments (largest remainder), ≥ 1 each."""
    total = sum(counts.values())
    names = sorted(counts)
    share = {t: max(1, int(d_tree * counts[t] / total)) for t in names}
    share = {t: min(share[t], counts[t]) for t in names}
    while sum(share.values()) < d_tree:
        # Give the next branch to the tree whose segments per branch is largest.
        roomy = [t for t in names if share[t] < counts[t]]
        share[max(roomy, key=lambda t: counts[t] / share[t])] += 1
    while sum(share.values()) > d_tree:
        crowded = [t for t in names if share[t] > 1]
        share[min(crowded, key=lambda t: counts[t] / share[t])] -= 1
    return share


def _cut(
    members: np.ndarray, parent: np.ndarray, dist: np.ndarray, target: float
) -> list[list[int]]:
    """Greedy children-first cut of one tree into groups of about `target` segments."""
    inside = set(members.tolist())
    pending: dict[int, list[int]] = {int(i): [int(i)] for i in members}
    groups = []
    # Children lie farther from the soma than their parents, so decreasing path distance
    # visits every child before its parent.
    for i in sorted(pending, key=lambda i: (-dist[i], i)):
        mine = pending[i]
        p = int(parent[i])
        if len(mine) >= target or p < 0 or p not in inside:
            # A root's leftover is a group of its own: stems meet only at the soma.
            groups.append(sorted(mine))
        else:
            pending[p].extend(mine)
    return groups


def _merge_to(groups: list[list[int]], parent: np.ndarray, k: int) -> list[list[int]]:
    """Merge the smallest group into its smallest neighbour until k groups remain.

    Neighbours: the group holding its entry segment's parent, the groups hanging from it
    and, for a group at the soma, the other groups at the soma. Any merge of neighbours
    is again a connected piece (or stems joined at the soma).
    """
    groups = [list(g) for g in groups]
    while len(groups) > k:
        owner = {s: gi for gi, g in enumerate(groups) for s in g}
        above = {}
        for gi, g in enumerate(groups):
            entries = [
                owner[int(parent[s])] for s in g if parent[s] >= 0 and owner[int(parent[s])] != gi
            ]
            above[gi] = entries[0] if entries else None
        small = min(range(len(groups)), key=lambda gi: (len(groups[gi]), min(groups[gi])))
        near = [gi for gi in above if above[gi] == small]
        if above[small] is not None:
            near.append(above[small])
        else:
            near += [gi for gi in above if above[gi] is None and gi != small]
        into = min(near, key=lambda gi: (len(groups[gi]), min(groups[gi])))
        groups[into] = sorted(groups[into] + groups[small])
        del groups[small]
    return groups


def segment_groups(morphology: Morphology, d_tree: int) -> list[list[int]]:
    """The d_tree groups of segments (module docstring), each sorted, ordered by tree then
    by the path distance of their nearest segment.

    Raises:
        UserError: d_tree is not between the number of trees and the number of segments.
    """
    trees = sorted(set(morphology.tree.tolist()))
    counts = {t: int((morphology.tree == t).sum()) for t in trees}
    if not isinstance(d_tree, int) or not len(trees) <= d_tree <= morphology.n_segments:
        raise UserError(
            f"the morphology routing makes one branch per subtree: d_tree must be between "
            f"{len(trees)} (one per tree: {', '.join(trees)}) and {morphology.n_segments} "
            f"(one per segment), got {d_tree}"
        )
    share = _share_branches(counts, d_tree)
    dist = morphology.path_distance_um
    out = []
    for t in trees:
        members = np.flatnonzero(morphology.tree == t)
        k = share[t]
        # The largest target that still yields at least k groups (a target of one segment
        # yields one group per segment), found by bisection; then merge down to k.
        low, high = 1.0, float(len(members)) + 1
        for _ in range(40):
            mid = (low + high) / 2
            if len(_cut(members, morphology.parent, dist, mid)) >= k:
                low = mid
            else:
                high = mid
        groups = _merge_to(_cut(members, morphology.parent, dist, low), morphology.parent, k)
        out += sorted(groups, key=lambda g: (min(dist[g]), g[0]))
    return out


def morphology_branches(
    segments: Mapping[str, Sequence[Any]],
    input_kind: Sequence[str],
    input_segment: Sequence[int],
    d_tree: int,
) -> tuple[tuple[int, ...], ...]:
    """For each of d_tree branches, the input channels of its dendritic subtree.

    Args:
        segments: the store's segment table (`biophys.store.SEGMENT_FIELDS`).
        input_kind: "exc"/"inh" per input channel.
        input_segment: the segment index of each input channel.
        d_tree: the number of branches.

    Returns:
        the `branch_inputs` of an `elmnet.ELMConfig` with routing "explicit"; every
        input channel appears exactly once.
    """
    morphology = segment_tree(segments)
    segs = np.asarray(input_segment, dtype=np.int64)
    if len(segs) and (segs.min() < 0 or segs.max() >= morphology.n_segments):
        raise UserError("the store's inputs name segments outside its segment table")
    groups = segment_groups(morphology, d_tree)
    branch_of = np.empty(morphology.n_segments, dtype=np.int64)
    for k, group in enumerate(groups):
        branch_of[group] = k
    kind_rank = np.array([0 if k == "exc" else 1 for k in input_kind])
    order = np.lexsort((kind_rank, morphology.path_distance_um[segs]))
    branches: list[list[int]] = [[] for _ in groups]
    for channel in order:
        branches[branch_of[segs[channel]]].append(int(channel))
    empty = [k for k, b in enumerate(branches) if not b]
    if empty:
        raise UserError(
            f"the morphology routing's branch {empty[0]} holds segments without inputs; "
            "use fewer branches (--d-tree)"
        )
    return tuple(tuple(b) for b in branches)


def dendrogram_layout(morphology: Morphology) -> np.ndarray:
    """(n_segments, 2) drawing positions, µm, for stores without a reconstruction.

    The vertical axis is the path distance from the soma, upwards for the apical tree and
    downwards for the others; the horizontal one spreads the tips evenly (tip spacing
    = 1/20 of the largest path distance) and puts every segment above the mean of its tips.
    """
    n = morphology.n_segments
    dist = morphology.path_distance_um
    children: list[list[int]] = [[] for _ in range(n)]
    for i, p in enumerate(morphology.parent):
        if p >= 0:
            children[p].append(i)
    x = np.zeros(n)
    spacing = max(float(dist.max()), 1.0) / 20
    next_tip = 0
    roots = sorted(np.flatnonzero(morphology.parent < 0), key=lambda i: (morphology.tree[i], i))
    for root in roots:
        # Depth-first, iteratively: a tip takes the next slot, a parent the mean of its children.
        stack = [(int(root), False)]
        while stack:
            i, expanded = stack.pop()
            if children[i] and not expanded:
                stack.append((i, True))
                stack += [(c, False) for c in sorted(children[i], key=lambda c: -dist[c])]
            elif not children[i]:
                x[i] = next_tip * spacing
                next_tip += 1
            else:
                x[i] = float(np.mean(x[children[i]]))
    sign = np.where(morphology.tree == "apical", 1.0, -1.0)
    return np.stack([x - x.mean(), sign * dist], axis=1)
