"""How the best allocation moves with the budget: a trade-off sweep at each budget.

    python -m benchmarks.scaling                                   # the cpu preset
    python -m benchmarks.scaling --task shd-adding --budgets 15125 152950 --d-m 2 3 5 9 15

At every budget the d_m grid (and k_c grid) is swept as `benchmarks.tradeoff` does.
Prints the trade-off table per budget with its interior-optimum verdict, the best
allocation per budget (N, d_m, k_e, k_c, metric), the Pareto frontier (metric against
the exact P) and the exponents a of best N ∝ P^a and best k_e ∝ P^a; figures
scaling.png (frontier, best N and best k_e against P) and tradeoff_d_m.png.
"""

import math

from benchmarks import sweep
from elmbridge.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    p = sweep.Parser(prog="benchmarks.scaling", description=__doc__.split("\n")[0])
    sweep.add_common_options(p)
    p.add_argument("--budgets", type=int, nargs="+", help="parameter budgets P (parameters)")
    p.add_argument("--k-c", type=int, nargs="+", help="synapses per neuron (multiples of d_tree)")
    p.add_argument("--d-m", type=int, nargs="+", help="memory units per neuron")
    args = p.parse_args(argv)
    preset, settings, resources = sweep.resolve_common(args, "scaling")
    budgets = sweep.positive_grid(args.budgets or sorted(preset.budgets), "budgets")
    k_cs = sweep.positive_grid(args.k_c or (preset.k_c,), "k-c")
    d_ms = sweep.positive_grid(args.d_m or preset.d_m, "d-m")
    specs = [sweep.Spec(d_m, k_c, seed, budget=budget) for budget in budgets for k_c in k_cs
             for d_m in d_ms for seed in sweep.seeds(args, preset)]  # fmt: skip
    planned = sweep.plan(specs, settings)  # bad input fails before the data are made
    with_data = sweep.ensure_data(preset, settings, resources, args.dry_run or args.report_only)
    if with_data != settings:  # the data path is part of each point's name
        settings, planned = with_data, sweep.plan(specs, with_data)
    rows = sweep.execute(planned, settings, resources, args, "scaling")
    if rows is None:
        return 0
    summary = sweep.report_tradeoff(rows, settings, d_m_curves=True, k_c_curves=len(k_cs) > 1)
    better = sweep.higher_is_better(settings.task)
    # Over k_c too: the best of every allocation at a budget.
    every = sweep.summarise(rows, "d_m", ("budget", "k_c"))
    best = sweep.best_per_budget(every, better)
    metric = rows[0]["metric"]
    print(f"\nbest allocation per budget (test {metric}, mean over seeds):")
    sweep.print_summary(best, "d_m", ("budget",), metric)
    frontier = sweep.pareto(every, better)
    print("Pareto frontier (no cheaper allocation is better): "
          + ", ".join(f"P {r['P']:,} → {r['mean']:.4f}" for r in frontier))  # fmt: skip
    for key, what in (("N", "best N"), ("k_e", "best k_e")):
        slope = sweep.log_slope(best, key)
        text = f"{slope:+.2f}" if math.isfinite(slope) else "n/a (needs two budgets)"
        print(f"{what} ∝ P^a: a = {text}")
    if summary:
        sweep.plot_scaling(every, best, settings.task, metric, settings.runs_dir / "scaling.png")
        print(f"figure: {settings.runs_dir / 'scaling.png'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
