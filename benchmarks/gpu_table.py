"""The prepared GPU run of the speed benchmarks (issue 18, goal 4): one command for the
table of the closing note.

    python -m benchmarks.gpu_table [--out reports/gpu_table] [--batch 8 32 128 512]
        [--configs shd-adding enwik8 small] [--repeats 3] [--device cuda]

(On the lent device machine, `--out $OUT/gpu_table`: only what is written under $OUT
comes back.)

It runs `benchmarks.elm_neuron_speed` (NeuronIO neuron, T 500) and
`benchmarks.elm_network_speed` (SHD-Adding, Enwik8 and the small sweep point), forward
and training, at every batch, in float32 and under bfloat16 autocast. On CUDA their rows
are the eager loop, the fused Triton kernels and the eager loop captured in CUDA graphs
(`benchmarks.cuda_graph`), with the FLOP/s each reaches against torch.matmul's.

Written to `--out`, each file whole or not at all: `table.md` (every run's printed table
under its command) and `rows.json` (the rows, the provenance: commit, command, software
versions, the GPU's name, and, for a run that failed, its error). A run that fails is
reported and the next one goes on, so one broken path costs its own rows, not the table.
It sizes for a device session of minutes: about five on an H100 at the defaults
(unmeasured; `--batch 8 128` halves it).
"""

import argparse
import contextlib
import io
import time
from pathlib import Path

import torch

from benchmarks import elm_network_speed, elm_neuron_speed
from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.files import write_json, write_text
from elmbridge.provenance import git_commit, run_record
from elmbridge.training import resolve_device


def runs(args) -> list[tuple[str, object, list[str]]]:
    """(name, benchmark module, its arguments) of every run, in order."""
    batch = [str(b) for b in args.batch]
    common = ["--device", str(args.device), "--repeats", str(args.repeats), "--no-baseline"]
    out = []
    for autocast in ("none", "bf16"):
        neuron = [*common, "--batch", *batch, "--steps", str(args.neuron_steps)]
        network = [*common, "--batch", *batch, "--configs", *args.configs]
        network += ["--shd-steps", str(args.shd_steps), "--enwik8-steps", str(args.enwik8_steps)]
        out.append((f"neuron, autocast {autocast}", elm_neuron_speed,
                    [*neuron, "--autocast", autocast]))  # fmt: skip
        out.append((f"network, autocast {autocast}", elm_network_speed,
                    [*network, "--autocast", autocast]))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("reports/gpu_table"))
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1 … (cpu: a dry run)")
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32, 128, 512])
    parser.add_argument("--configs", nargs="+", default=["shd-adding", "enwik8", "small"],
                        choices=list(elm_network_speed.CONFIGS))  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--neuron-steps", type=int, default=500)
    parser.add_argument("--shd-steps", type=int, default=1000)
    parser.add_argument("--enwik8-steps", type=int, default=100)
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    if args.device.type != "cuda":
        print(f"gpu_table: no GPU; a dry run on {args.device} (its numbers are not the table)")

    record = run_record(vars(args) | {"out": str(args.out), "device": str(args.device)}, 0)
    record["commit"] = git_commit()
    if args.device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(args.device)
    results, sections = [], []
    for name, module, run_args in runs(args):
        command = f"python -m {module.__name__} {' '.join(run_args)}"
        print(f"\n## {name}\n$ {command}", flush=True)
        printed, start = io.StringIO(), time.perf_counter()
        entry = {"name": name, "command": command}
        try:
            with contextlib.redirect_stdout(printed):
                entry["rows"] = module.main(run_args)
        except UserError:
            raise  # bad arguments: the same for every run
        except Exception as error:  # one broken path costs its rows, not the table
            entry["error"] = f"{type(error).__name__}: {error}"
        entry["seconds"] = round(time.perf_counter() - start, 1)
        text = printed.getvalue() + (f"failed: {entry['error']}\n" if "error" in entry else "")
        print(text, end="", flush=True)
        sections.append(f"## {name} ({entry['seconds']} s)\n\n```\n$ {command}\n{text}```\n")
        results.append(entry)
    header = f"# Speed benchmarks on {record.get('gpu', args.device)}\n\n"
    header += f"commit {record['commit']}, torch {torch.__version__}\n\n"
    write_text(args.out / "table.md", header + "\n".join(sections))
    write_json(args.out / "rows.json", {"provenance": record, "runs": results})
    print(f"\nwritten: {args.out / 'table.md'}, {args.out / 'rows.json'}")
    return {"provenance": record, "runs": results}


def cli(argv: list[str] | None = None) -> int:
    main(argv)
    return 0


if __name__ == "__main__":
    run_cli(cli)
