"""The stable command path of the synthetic SHD generator.

    python -m biophys.shd_synth --out data/shd_synth --n-speakers 24 --repeats 4

The generator lives in `biophys.auditory.shd_synth` with the rest of the auditory wing;
this module stays so that the documented command (and scripts that call it) keep
working. It only forwards to that module's `main`.
"""

from biophys.auditory.shd_synth import main
from elmbridge.cli import run_cli

__all__ = ["main"]

if __name__ == "__main__":
    run_cli(main)
