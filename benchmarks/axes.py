"""One knob at a time: vary N, k_e (through d_m) or k_c with the other two fixed.

    python -m benchmarks.axes                                   # the cpu preset
    python -m benchmarks.axes --task shd-adding --N 24 48 96 --d-m 3 5 9 --k-c 60 150 300 \\
        --base-N 96 --base-d-m 5 --base-k-c 300

The parameter count grows along each axis (there is no budget here). The paper reports
that each knob on its own improves the metric monotonically; the table and
axes.png (three panels, mean ± sd over seeds) show whether this sweep agrees. The base
point is shared by the three axes and trained once. Every point is one `elmnet.train`
run folder (`benchmarks.sweep`); rerunning skips finished points and resumes the rest.
"""

from benchmarks import sweep
from elmbridge.cli import run_cli
from elmbridge.errors import UserError

AXES = ("N", "d_m", "k_c")


def main(argv: list[str] | None = None) -> int:
    p = sweep.Parser(prog="benchmarks.axes", description=__doc__.split("\n")[0])
    sweep.add_common_options(p)
    p.add_argument("--N", type=int, nargs="+", help="the N axis (neurons)")
    p.add_argument("--d-m", type=int, nargs="+", help="the d_m axis (sets k_e)")
    p.add_argument("--k-c", type=int, nargs="+", help="the k_c axis (synapses per neuron)")
    p.add_argument("--base-N", type=int, help="N while another axis varies")
    p.add_argument("--base-d-m", type=int, help="d_m while another axis varies")
    p.add_argument("--base-k-c", type=int, help="k_c while another axis varies")
    p.add_argument("--axes", nargs="+", choices=AXES, default=list(AXES), help="axes to sweep")
    args = p.parse_args(argv)
    preset, settings, resources = sweep.resolve_common(args, "axes")
    grids = {"N": sweep.positive_grid(args.N or preset.axes["N"], "N"),
             "d_m": sweep.positive_grid(args.d_m or preset.axes["d_m"], "d-m"),
             "k_c": sweep.positive_grid(args.k_c or preset.axes["k_c"], "k-c")}  # fmt: skip
    base = {"N": args.base_N or preset.base["N"], "d_m": args.base_d_m or preset.base["d_m"],
            "k_c": args.base_k_c or preset.base["k_c"]}  # fmt: skip
    if min(base.values()) < 1:
        raise UserError(f"the base point takes positive values, got {base}")
    members: dict[tuple, list[str]] = {}
    for axis in args.axes:
        for value in grids[axis]:
            point = {**base, axis: value}
            for seed in sweep.seeds(args, preset):
                key = (point["N"], point["d_m"], point["k_c"], seed)
                members.setdefault(key, []).append(axis)
    specs = [sweep.Spec(d_m, k_c, seed, N=n, axes=tuple(axes))
             for (n, d_m, k_c, seed), axes in members.items()]  # fmt: skip
    planned = sweep.plan(specs, settings)  # bad input fails before the data are made
    with_data = sweep.ensure_data(preset, settings, resources, args.dry_run or args.report_only)
    if with_data != settings:  # the data path is part of each point's name
        settings, planned = with_data, sweep.plan(specs, with_data)
    rows = sweep.execute(planned, settings, resources, args, "axes")
    if rows is None:
        return 0
    metric = rows[0]["metric"]
    summaries = {}
    for axis in args.axes:
        summaries[axis] = sweep.summarise([r for r in rows if r["axis"] == axis], axis, ())
        print(f"\ntest {metric} along {axis} (others at {base}; mean ± sd over seeds):")
        sweep.print_summary(summaries[axis], axis, (), metric)
    sweep.plot_axes(summaries, settings.task, metric, settings.runs_dir / "axes.png")
    print(f"figure: {settings.runs_dir / 'axes.png'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
