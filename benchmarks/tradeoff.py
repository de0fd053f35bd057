"""Split a fixed parameter budget between N neurons, complexity k_e (d_m) and k_c.

    python -m benchmarks.tradeoff                                  # the cpu preset
    python -m benchmarks.tradeoff --task shd-adding --budget 77000 --k-c 300 \\
        --d-m 3 5 9 15 25 --seeds 3
    python -m benchmarks.tradeoff --task shd-adding --budget 77000 --k-c 90 300 990 --d-m 9

At each budget P, k_c and d_m the network has N = floor(P_hidden / (k_e + k_c)) neurons
(`ELMNetworkConfig.from_budget`); a point whose exact P is not within the tolerance of
the budget (1 %) is rejected with the budget that would fit it. Every point is one
`elmnet.train` run folder (`benchmarks.sweep`); rerunning the command skips finished
points and resumes the others. Prints the table of the test metric (mean ± sd over
seeds), whether an interior optimum appeared (the best d_m's mean beats both ends of
the grid by more than 2 standard errors), writes results.csv / results.nc and the
figures tradeoff_d_m.png (metric vs d_m and vs N, published points overlaid) and, with
several k_c, tradeoff_k_c.png.
"""

from benchmarks import sweep
from elmbridge.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    p = sweep.Parser(prog="benchmarks.tradeoff", description=__doc__.split("\n")[0])
    sweep.add_common_options(p)
    p.add_argument("--budget", type=int, nargs="+", help="parameter budget(s) P (parameters)")
    p.add_argument("--k-c", type=int, nargs="+", help="synapses per neuron (multiples of d_tree)")
    p.add_argument("--d-m", type=int, nargs="+", help="memory units per neuron")
    args = p.parse_args(argv)
    preset, settings, resources = sweep.resolve_common(args, "tradeoff")
    budgets = sweep.positive_grid(args.budget or preset.budgets[:1], "budget")
    k_cs = sweep.positive_grid(args.k_c or (preset.k_c,), "k-c")
    d_ms = sweep.positive_grid(args.d_m or preset.d_m, "d-m")
    specs = [sweep.Spec(d_m, k_c, seed, budget=budget) for budget in budgets for k_c in k_cs
             for d_m in d_ms for seed in sweep.seeds(args, preset)]  # fmt: skip
    planned = sweep.plan(specs, settings)  # bad input fails before the data are made
    with_data = sweep.ensure_data(preset, settings, resources, args.dry_run or args.report_only)
    if with_data != settings:  # the data path is part of each point's name
        settings, planned = with_data, sweep.plan(specs, with_data)
    rows = sweep.execute(planned, settings, resources, args, "tradeoff")
    if rows is not None:
        sweep.report_tradeoff(rows, settings, d_m_curves=len(d_ms) > 1,
                              k_c_curves=len(k_cs) > 1)  # fmt: skip
    return 0


if __name__ == "__main__":
    run_cli(main)
