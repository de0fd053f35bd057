"""Which memory timescales a fitted ELM surrogate uses: freeze the slow ones and re-score.

A memory unit is *frozen* by holding it at its initial state (zero) for the whole
evaluation: its decay κ_m is set to 1 and its update gain to 0, so m_t = m_0 = 0 and the
MLP and the readout see nothing from it. Freezing every unit with τ_m above a cut-off
and scoring the model again on the same simulations measures how much of the fit rests
on memories slower than the cut-off; the drop in AUC is that unit group's share.
Time constants are in ms (the NeuronIO step is 1 ms).
"""

from collections.abc import Sequence
from typing import Any

import torch

from elmbridge.errors import UserError
from elmnet.neuron import ELMNeuron
from surrogate.data import StoreInfo
from surrogate.evaluate import EvalProtocol, predict, score


class FrozenMemoryNeuron(ELMNeuron):
    """A copy of an ELM neuron whose memory units with τ_m > `tau_cut_ms` never move."""

    def __init__(self, model: ELMNeuron, tau_cut_ms: float):
        super().__init__(model.config)
        self.load_state_dict(model.state_dict())
        self.tau_cut_ms = float(tau_cut_ms)
        self.register_buffer("frozen", (self.tau_m > self.tau_cut_ms).detach())

    @property
    def n_frozen(self) -> int:
        return int(self.frozen.sum())

    def memory_coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        kappa, gain = super().memory_coefficients()
        return kappa.masked_fill(self.frozen, 1.0), gain.masked_fill(self.frozen, 0.0)


def freeze_ablation(
    model: ELMNeuron,
    info: StoreInfo,
    simulations: Sequence[int],
    cuts_ms: Sequence[float],
    protocol: EvalProtocol | None = None,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Score `model` with the units above each cut-off frozen, and unfrozen.

    Args:
        model: a fitted ELM neuron (point neurons have no memory units to freeze).
        info, simulations: the store and the simulations to score on (a test split).
        cuts_ms: τ cut-offs in ms; units with τ_m above one are frozen.
        protocol: the evaluation protocol (default: the published one).

    Returns:
        one row per cut-off, first the model as fitted (tau_cut_ms = inf): tau_cut_ms,
        n_frozen, n_units, AUC, soma_RMSE (mV), AUC_lost (fitted AUC − this AUC).
    """
    if not isinstance(model, ELMNeuron):
        raise UserError("freezing memory units needs an ELM neuron; point neurons have none")
    if any(not cut > 0 for cut in cuts_ms):
        raise UserError(f"τ cut-offs are positive times in ms, got {list(cuts_ms)}")
    protocol = protocol or EvalProtocol()
    rows = []
    for cut in (float("inf"), *sorted(cuts_ms)):
        frozen = FrozenMemoryNeuron(model, cut).eval()
        pred = predict(frozen, info, list(simulations), protocol, device=device, progress=False)
        metrics, _ = score(pred, protocol)
        rows.append({
            "tau_cut_ms": cut, "n_frozen": frozen.n_frozen, "n_units": model.config.d_m,
            "AUC": metrics.get("AUC", float("nan")),
            "soma_RMSE": metrics.get("soma_RMSE", float("nan")),
        })  # fmt: skip
    for row in rows:
        row["AUC_lost"] = rows[0]["AUC"] - row["AUC"]
    return rows
