"""Train an ELM Network whose hidden neurons are a fitted surrogate:
`python -m surrogate.compose --task shd --neuron runs/L5PC_dm20_laptop_seed0 ...`.

The same command as `python -m elmnet.train` (every option, the same run folder), with
`--neuron` reading what `surrogate.evaluate.load_model` reads: a fit's run folder (its
best.pt), a model file, or a released model (name or folder). `elmnet` reads released
models only, since it never imports `surrogate`; how a fitted neuron maps onto a
network neuron is `elmnet.transfer`'s docstring.
"""

from typing import Any

from elmbridge.cli import run_cli
from elmbridge.errors import UserError
from elmnet import train
from elmnet.neuron import ELMNeuron
from surrogate.evaluate import load_model


def load_fitted_neuron(source: str) -> tuple[ELMNeuron, dict[str, Any]]:
    """The ELM neuron of a run folder, model file or released model, and where it is from."""
    model, desc = load_model(source)
    if not isinstance(model, ELMNeuron):
        raise UserError(
            f"{source} holds a {desc['model_kind']} point neuron; only an ELM surrogate can "
            "become a network's hidden neuron"
        )
    keep = ("kind", "source", "name", "epoch", "n_parameters")
    return model, {k: desc[k] for k in keep if desc.get(k) is not None}


def main(argv: list[str] | None = None) -> int:
    return train.main(argv, load_neuron=load_fitted_neuron, prog="python -m surrogate.compose")


if __name__ == "__main__":
    run_cli(main)
