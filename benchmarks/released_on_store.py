"""The published NeuronIO-trained Branch-ELMs evaluated on one of our stores.

    python -m benchmarks.released_on_store --data STORE [--models num_memory_1 num_memory_20 …]
        [--models-dir FOLDER] [--device cuda] [--out reports/released_on_store]

How close is our simulator's input–output behaviour to the published NeuronIO data? A
model trained on that data and evaluated (published protocol, `surrogate.evaluate`) on
all simulations of our store should score near its own published test results if the
two cells behave alike. The table lists, per released model, its published test AUC and
soma RMSE next to the values on the store. Models are looked up by name in
`--models-dir` when given (e.g. a checkout's copy of the released models), then in the
copy packaged with `elmnet` (so no network is needed), then the user cache. Each model's
report (metrics.json, report.png) goes to `--out/<model>/`.
"""

import argparse
import time
from pathlib import Path

from elmbridge.cli import run_cli
from elmbridge.files import check_output_dir, write_json
from elmbridge.training import resolve_device
from elmnet.released import RELEASED_MODEL_NAMES, find_released
from surrogate.data import inspect_store
from surrogate.evaluate import EvalProtocol, evaluate, load_model

DEFAULT_MODELS = ("num_memory_1", "num_memory_5", "num_memory_10", "num_memory_20",
                  "num_memory_50", "num_memory_100", "best_elm_neuron")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.released_on_store", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", type=Path, required=True, help="the store to evaluate on")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                        choices=RELEASED_MODEL_NAMES, metavar="NAME")  # fmt: skip
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="folder of released models to look in first (default: the packaged copy)",
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/released_on_store"))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    check_output_dir(args.out)

    info = inspect_store(args.data, min_time_ms=EvalProtocol().skip_ms + 1)
    rows = []
    for name in args.models:
        model, desc = load_model(find_released(name, args.models_dir))
        start = time.perf_counter()
        metrics = evaluate(
            model, info, list(info.simulations), args.out / name,
            device=device, title=f"{name} on {args.data.name}",
            context={"model": desc, "split": "all"}, progress=False,
        )  # fmt: skip
        published = desc.get("published_results", {}).get("test_results", {})
        rows.append({
            "model": name, "d_m": model.config.d_m, "parameters": desc["n_parameters"],
            "published_AUC": published.get("AUC"), "AUC": metrics.get("AUC"),
            "published_soma_RMSE": published.get("soma_RMSE"),
            "soma_RMSE": metrics.get("soma_RMSE"),
            "TP @ 0.0100 FP": metrics.get("TP @ 0.0100 FP"),
            "soma_explained_variance_percent": metrics.get("soma_explained_variance_percent"),
            "eval_s": time.perf_counter() - start,
        })  # fmt: skip
    kept = metrics["n_simulations_kept"]
    print(
        f"\n{args.data}: {len(info.simulations)} simulations of {info.n_time} ms, {kept} with "
        f"0–24 spikes scored ({metrics['n_spike_bins']} spike bins)"
    )
    header = f"{'model':<16} {'d_m':>4} {'params':>7} {'AUC pub':>8} {'AUC ours':>8} "
    print(header + f"{'RMSE pub':>9} {'RMSE ours':>9} {'TP@1%':>6} {'EV %':>6}")

    def fmt(value, spec):
        return format(value, spec) if isinstance(value, float) else format("–", ">" + spec[0])

    for r in rows:
        print(
            f"{r['model']:<16} {r['d_m']:>4} {r['parameters']:>7} "
            f"{fmt(r['published_AUC'], '8.4f')} {fmt(r['AUC'], '8.4f')} "
            f"{fmt(r['published_soma_RMSE'], '9.3f')} {fmt(r['soma_RMSE'], '9.3f')} "
            f"{fmt(r['TP @ 0.0100 FP'], '6.3f')} "
            f"{fmt(r['soma_explained_variance_percent'], '6.1f')}"
        )
    write_json(args.out / "released_on_store.json", {"data": info.provenance(), "rows": rows})
    print(f"reports: {args.out}/<model>/; table: {args.out / 'released_on_store.json'}")


if __name__ == "__main__":
    run_cli(main)
