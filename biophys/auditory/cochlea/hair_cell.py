"""Inner hair cell: the Meddis (1986, 1988) transmitter-reservoir model.

Each cell holds a free transmitter pool ``q`` fed from a factory towards the level ``m``;
a stimulus-dependent permeability ``k(s) = g·(s + a)/(s + a + b)`` (0 when s + a <= 0)
releases transmitter into the synaptic cleft ``c``; the cleft loses it at rate ``l`` and
returns it at rate ``r`` into a reprocessing store ``w``, which refills the free pool at
rate ``x``:

    dq/dt = y·(m - q)⁺ + x·w - k(s)·q
    dc/dt = k(s)·q - (l + r)·c
    dw/dt = r·c - x·w

The afferent fibre's spike probability per time step is ``h·c·dt``. Integrated with the
forward-Euler step of the reference converter at the BM output rate. For a constant
stimulus the equilibrium is (all rates in 1/s)

    q* = y·m / (y + k·l/(l + r)),   c* = k·q*/(l + r),   w* = r·c*/x,

and the model starts there for the silent stimulus (s = 0).

References: Meddis R (1986) J Acoust Soc Am 79(3):702-711; Meddis R (1988) J Acoust Soc
Am 83(3):1056-1063.
"""

from dataclasses import dataclass

import numpy as np

from elmbridge.errors import UserError


@dataclass(frozen=True)
class HairCellParams:
    """Meddis hair-cell constants (rates in 1/s), defaults as used to make SHD.

    Attributes:
        y: replenishment rate from the factory, 1/s.
        g: maximum permeability, 1/s.
        l: loss rate from the cleft, 1/s.
        r: re-uptake rate from the cleft, 1/s.
        x: reprocessing rate back to the free pool, 1/s.
        a: permeability offset (stimulus units).
        b: permeability half-saturation (stimulus units).
        h: firing-rate gain: spike probability per second per unit cleft transmitter.
        m: maximum free transmitter.
    """

    y: float = 5.05
    g: float = 2000.0
    l: float = 2500.0  # noqa: E741 - the model's name for the loss rate
    r: float = 6580.0
    x: float = 66.3
    a: float = 5.0
    b: float = 300.0
    h: float = 50000.0
    m: float = 1.0

    def permeability(self, stimulus: np.ndarray) -> np.ndarray:
        """k(s) in 1/s for a stimulus (BM velocity) array."""
        s = np.asarray(stimulus, dtype=float) + self.a
        return np.where(s > 0, self.g * s / np.maximum(s + self.b, 1e-300), 0.0)

    def equilibrium(self, stimulus: float | np.ndarray = 0.0) -> dict[str, np.ndarray]:
        """Steady state (q, c, w) and spike rate (1/s) under a constant stimulus."""
        k = self.permeability(stimulus)
        q = self.y * self.m / (self.y + k * self.l / (self.l + self.r))
        c = k * q / (self.l + self.r)
        return {"q": q, "c": c, "w": self.r * c / self.x, "rate_hz": self.h * c}


def release_probability(
    stimulus: np.ndarray, sample_rate_hz: float, params: HairCellParams
) -> np.ndarray:
    """Per-step spike probability of the fibres of each channel.

    Args:
        stimulus: (n_channels, n_steps) BM velocity.
        sample_rate_hz: steps per second of `stimulus`.
        params: the model.

    Returns:
        (n_steps, n_channels) float64: h·c·dt after each step, time-major so that the
        spike generator reads one contiguous row per step.
    """
    dt = 1.0 / float(sample_rate_hz)
    # Forward Euler keeps every pool non-negative (the reference clamps at 0; the clamps
    # never act) only while no rate empties a pool within one step.
    fastest = max(params.l + params.r, params.g + params.y, params.x)
    if fastest * dt >= 1.0:
        raise UserError(
            f"the hair-cell model needs a step shorter than 1/{fastest:g} s, but the BM "
            f"output runs at {sample_rate_hz:g} Hz; use audio sampled at 48 kHz"
        )
    k_dt = params.permeability(np.asarray(stimulus).T) * dt  # (n_steps, n_channels)
    k_dt = np.ascontiguousarray(k_dt)
    rest = params.equilibrium(0.0)
    n_ch = k_dt.shape[1]
    q = np.full(n_ch, float(rest["q"]))
    c = np.full(n_ch, float(rest["c"]))
    w = np.full(n_ch, float(rest["w"]))
    y_dt, x_dt, r_dt = params.y * dt, params.x * dt, params.r * dt
    keep_c = 1.0 - (params.l + params.r) * dt
    keep_w = 1.0 - x_dt
    out = np.empty_like(k_dt)
    eject = np.empty(n_ch)
    refill = np.empty(n_ch)
    for step, k in enumerate(k_dt):
        np.multiply(k, q, out=eject)
        # refill = y·dt·(m - q)⁺ + x·dt·w, the inflow to the free pool
        np.subtract(params.m, q, out=refill)
        np.maximum(refill, 0.0, out=refill)
        refill *= y_dt
        refill += x_dt * w
        q += refill
        q -= eject
        w *= keep_w
        w += r_dt * c
        c *= keep_c
        c += eject
        out[step] = c
    out *= params.h * dt
    return out
