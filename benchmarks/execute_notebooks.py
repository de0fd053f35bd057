"""Execute the biology notebooks on a results folder into .ipynb files with a provenance
record: `python -m benchmarks.execute_notebooks --results runs/biology_cpu --out docs/notebooks`.

Each jupytext percent-format notebook under notebooks/ is run top to bottom in a fresh
Jupyter kernel (nbclient) with ``$BIOLOGY_RESULTS`` set to `--results`, its figures and
tables saved to ``<out>/figures``; the executed notebook, outputs included, is written
to ``<out>/<name>.ipynb``, so that a reader sees the answers without running anything.
``<out>/provenance.json`` records the toolkit's commit, this command, the software
versions, the results folder's own record (`benchmarks.biology`'s biology.json: preset,
seed, stores, point outcomes), a hash of its results.csv and each notebook's wall time.

Needs the optional extra ``notebooks`` (``pip install -e ".[notebooks]"``: jupytext,
nbclient, ipykernel). The tests run the notebooks as plain scripts instead.
"""

import argparse
import hashlib
import os
import time
from pathlib import Path

from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmbridge.files import atomic_path, check_output_dir, read_json, user_writes, write_json
from elmbridge.provenance import git_commit, run_record

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
# Seconds one notebook may run in the kernel before it counts as hung.
CELL_TIMEOUT_S = 600


def notebook_paths(names: list[str] | None) -> list[Path]:
    """The notebooks to run: all of notebooks/NN_*.py, or those named (stem or file name)."""
    every = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
    if not names:
        return every
    chosen = []
    for name in names:
        match = [p for p in every if name in (p.name, p.stem)]
        if not match:
            raise UserError(f"no notebook {name!r}; choose from {[p.stem for p in every]}")
        chosen += match
    return chosen


def execute(path: Path, out: Path, env: dict[str, str]) -> float:
    """Run one notebook in a fresh kernel, write ``<out>/<stem>.ipynb``; returns seconds."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    notebook = jupytext.read(path)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}  # fmt: skip
    start = time.perf_counter()
    saved = dict(os.environ)
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                       resources={"metadata": {"path": str(out)}}).execute()  # fmt: skip
    finally:
        os.environ.clear()
        os.environ.update(saved)
    target = out / f"{path.stem}.ipynb"
    with user_writes(target), atomic_path(target) as tmp:
        nbformat.write(notebook, str(tmp))
    return time.perf_counter() - start


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.execute_notebooks",
        description=__doc__.split("\n")[0],
    )
    parser.add_argument("--results", type=Path, required=True,
                        help="the --out folder of python -m benchmarks.biology")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("docs/notebooks"),
                        help="output folder (default docs/notebooks)")  # fmt: skip
    parser.add_argument(
        "--network",
        type=Path,
        help="a network sweep's results.csv for notebook 4 (default: published)",
    )
    parser.add_argument("--only", nargs="+", help="only these notebooks (e.g. 02_timescales)")
    args = parser.parse_args(argv)
    if not (args.results / "results.csv").is_file():
        raise UserError(f"{args.results} holds no results.csv of `python -m benchmarks.biology`")
    if args.network is not None and not args.network.is_file():
        raise UserError(f"--network {args.network} is not a file")
    paths = notebook_paths(args.only)
    check_output_dir(args.out)
    try:
        import jupytext  # noqa: F401
        import nbclient  # noqa: F401
    except ImportError as err:
        raise UserError(
            f"executing notebooks needs jupytext and nbclient ({err.name} is missing): "
            'pip install -e ".[notebooks]"'
        ) from None
    args.out.mkdir(parents=True, exist_ok=True)
    env = {
        "BIOLOGY_RESULTS": str(args.results.resolve()),
        "BIOLOGY_FIGURES": str((args.out / "figures").resolve()),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    if args.network is not None:
        env["NETWORK_RESULTS"] = str(args.network.resolve())
    seconds = {}
    for path in paths:
        print(f"executing {path.name} …", flush=True)
        seconds[path.name] = round(execute(path, args.out, env), 1)
    biology = args.results / "biology.json"
    record = run_record({"results": str(args.results.resolve()), "notebooks": seconds,
                         "network": env.get("NETWORK_RESULTS")}, seed=0)  # fmt: skip
    record["commit"] = git_commit()
    record["results_csv_sha256"] = file_hash(args.results / "results.csv")
    record["biology"] = read_json(biology) if biology.is_file() else None
    record["seed"] = (record["biology"] or {}).get("seed")
    write_json(args.out / "provenance.json", record)
    print(f"executed {len(paths)} notebooks into {args.out}; provenance: provenance.json")


if __name__ == "__main__":
    run_cli(main)
