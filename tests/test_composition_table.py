"""The composition experiment's statistics (benchmarks/composition.py)."""

import math

import pytest

from benchmarks.composition import t_interval, table

# Student t quantile at 2 degrees of freedom in closed form: (2p − 1)/√(2p(1 − p)).
T_975_DF2 = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)


def test_t_interval_of_three_values():
    low, high = t_interval([0.2, 0.3, 0.4])
    half = T_975_DF2 * 0.1 / math.sqrt(3)  # sample sd of 0.2, 0.3, 0.4 is 0.1
    assert low == pytest.approx(0.3 - half) and high == pytest.approx(0.3 + half)
    assert all(math.isnan(v) for v in t_interval([0.5]))


def test_table_pairs_conditions_by_seed():
    acc = {("frozen", 0): 0.5, ("frozen", 1): 0.6, ("init", 0): 0.4, ("init", 1): 0.4,
           ("random", 0): 0.3, ("random", 1): 0.5}  # fmt: skip
    runs = [
        {"condition": c, "seed": s, "test_accuracy": a, "parameters": 10,
         "trainable_parameters": 4 if c == "frozen" else 10}
        for (c, s), a in acc.items()
    ]  # fmt: skip
    rows = {r["condition"]: r for r in table(runs)}
    assert rows["frozen"]["mean"] == pytest.approx(0.55)
    assert rows["frozen"]["trainable_parameters"] == 4
    paired = rows["frozen - random (paired)"]  # differences 0.2 and 0.1
    assert paired["mean"] == pytest.approx(0.15)
    assert paired["sd"] == pytest.approx(math.sqrt(0.005))
    assert rows["init - random (paired)"]["mean"] == pytest.approx(0.0)
