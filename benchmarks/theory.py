"""Closed-form models of the (N, k_e, k_c) trade-off of an ELM Network at a fixed budget.

Three models of a task's loss ℓ (bits per character, or the error 1 − accuracy) as a
function of the number of neurons N, the per-neuron complexity k_e and the connectivity
k_c; the equations, with every symbol, are in docs/theory.md:

- `InformationModel`: each neuron is a Gaussian channel whose SNR saturates with k_e and
  k_c; neurons share a fraction ρ of their features, so the population has
  N_eff = N / (1 + (N − 1) ρ) independent channels; ℓ falls linearly (BPC) or
  exponentially (error) with the population information I = N_eff · ½ log2(1 + s).
- `PowerLawModel`: the additive power law ℓ = E + A N^−α + B k_e^−β (+ C k_c^−γ).
- `NullModel`: information-limiting correlations, ℓ = E + A (N h_e h_c)^−γ; its optimal
  allocation at a fixed budget does not depend on the budget.

Fits minimise a Huber loss of log-residuals with multi-start L-BFGS-B (exact gradients by
complex-step differentiation) and check convergence explicitly; `bootstrap` resamples
runs within each budget. `frontier` and `fit_scaling_law` give the metric along the
Pareto frontier, L(P) = E + A P^−α, and the optimal allocation as power laws of P.
"""

import contextlib
import ctypes
import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize

from elmbridge.errors import UserError

LN2 = math.log(2.0)
# Metric names: a loss is fitted as it is; an accuracy as its error 1 − accuracy.
LOSS_METRICS = ("bpc", "loss", "nll", "cross_entropy", "perplexity_log", "mse")
ERROR_METRICS = ("error",)
ACCURACY_METRICS = ("accuracy", "acc")
# Huber's constant for 95 % efficiency under Gaussian noise, and the MAD-to-σ factor.
HUBER_K = 1.345
MAD_TO_SIGMA = 1.4826
# Convergence: the largest projected gradient of the dimensionless objective.
GRAD_TOL = 1e-6
# Smallest Huber δ: a log-residual of 1e-6 (a relative error of 10⁻⁴ %) is below any
# measurement's precision; it keeps the objective's scale finite for noise-free data.
DELTA_FLOOR = 1e-6
STEP_TOL = 1e-6


class ConvergenceError(RuntimeError):
    """No start of a fit reached a point where the projected gradient vanishes."""


# ---------------------------------------------------------------------------------------
# BLAS threads: L-BFGS-B calls BLAS on vectors of a few elements; on a busy machine a
# multi-threaded OpenBLAS spends ~10× more time synchronising threads than computing.


@functools.cache
def _openblas_thread_controls() -> tuple:
    """(get, set) pairs for every OpenBLAS loaded in this process (Linux; else none)."""
    controls = []
    try:
        with open("/proc/self/maps") as fh:
            libs = {line.split()[-1] for line in fh if "openblas" in line.lower()}
    except OSError:
        return ()
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in (
            ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
            ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
            ("openblas_get_num_threads", "openblas_set_num_threads"),
        ):
            if hasattr(lib, get_name) and hasattr(lib, set_name):
                controls.append((getattr(lib, get_name), getattr(lib, set_name)))
                break
    return tuple(controls)


@contextlib.contextmanager
def one_blas_thread():
    """Run the block with OpenBLAS single-threaded; restore the thread counts after."""
    controls = _openblas_thread_controls()
    before = [get() for get, _ in controls]
    for _, set_ in controls:
        set_(1)
    try:
        yield
    finally:
        for (_, set_), n in zip(controls, before, strict=True):
            set_(n)


def _single_threaded(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with one_blas_thread():
            return func(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------------------------
# Data


@dataclass
class SweepData:
    """The rows of one task, as arrays. ℓ > 0 is the loss or error that the models predict.

    `H` is each row's hidden-layer parameter count N (k_e + k_c); `budget` the budget P of
    the sweep the row belongs to; `group` the index of that budget in `budgets`.
    """

    task: str
    metric: str
    kind: str  # "loss" (additive link) or "error" (multiplicative link)
    N: np.ndarray
    k_e: np.ndarray
    k_c: np.ndarray
    y: np.ndarray
    budget: np.ndarray
    seed: np.ndarray
    d_m: np.ndarray | None = None
    d_tree: int | None = None

    def __post_init__(self):
        for name in ("N", "k_e", "k_c", "y", "budget"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=float))
        self.seed = np.asarray(self.seed)
        self.budgets = np.unique(self.budget)
        self.group = np.searchsorted(self.budgets, self.budget)

    @property
    def H(self) -> np.ndarray:
        return self.N * (self.k_e + self.k_c)

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def kc_varies(self) -> bool:
        return bool(np.ptp(self.k_c) > 0)

    def X(self) -> dict[str, np.ndarray]:
        return {"N": self.N, "k_e": self.k_e, "k_c": self.k_c}

    def subset(self, index: np.ndarray) -> "SweepData":
        return SweepData(
            self.task,
            self.metric,
            self.kind,
            self.N[index],
            self.k_e[index],
            self.k_c[index],
            self.y[index],
            self.budget[index],
            self.seed[index],
            None if self.d_m is None else self.d_m[index],
            self.d_tree,
        )

    def hidden_budget(self, budget: float) -> float:
        """The hidden-layer budget of a sweep: the largest N (k_e + k_c) among its rows."""
        rows = self.budget == budget
        if rows.any():
            return float(self.H[rows].max())
        return float(budget) - self.readout()

    def readout(self) -> float:
        """Parameters outside the hidden layer: P − (hidden budget), median over budgets."""
        return float(np.median([b - self.H[self.budget == b].max() for b in self.budgets]))

    def to_metric(self, loss: np.ndarray) -> np.ndarray:
        """ℓ back in the table's metric (accuracy = 1 − error)."""
        return 1.0 - loss if self.metric in ACCURACY_METRICS else loss


def metric_kind(metric: str) -> str:
    metric = metric.lower()
    if metric in LOSS_METRICS:
        return "loss"
    if metric in ERROR_METRICS or metric in ACCURACY_METRICS:
        return "error"
    known = ", ".join(LOSS_METRICS + ERROR_METRICS + ACCURACY_METRICS)
    raise UserError(f"unknown metric {metric!r}; known: {known}")


def loss_from_metric(metric: str, value: np.ndarray) -> np.ndarray:
    value = np.asarray(value, dtype=float)
    return 1.0 - value if metric.lower() in ACCURACY_METRICS else value


# ---------------------------------------------------------------------------------------
# Models


def _logit(p):
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class Param:
    name: str
    transform: str  # "log" (positive) or "logit" (in (0, 1))
    meaning: str


EXPONENTS = ("alpha", "beta", "gamma")


class Model:
    """ℓ(θ; N, k_e, k_c). Parameters are optimised as z = log θ (or logit θ)."""

    name = "model"
    label = "model"

    def __init__(self, kind: str, kc_varies: bool = False):
        self.kind = kind
        self.kc_varies = kc_varies
        self._params = self.params()
        self._log = [p.transform == "log" for p in self._params]

    # subclasses: params(), predict(theta, X), grid(data) -> list of theta dicts
    def params(self) -> list[Param]:
        raise NotImplementedError

    def predict(self, theta: dict[str, Any], X: dict[str, np.ndarray]):
        raise NotImplementedError

    def grid(self, data: SweepData) -> list[dict[str, float]]:
        raise NotImplementedError

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._params]

    def to_z(self, theta: dict[str, float]) -> np.ndarray:
        out = []
        for p, is_log in zip(self._params, self._log, strict=True):
            v = float(theta[p.name])
            out.append(math.log(v) if is_log else _logit(v))
        return np.array(out)

    def from_z(self, z) -> dict[str, Any]:
        return {
            p.name: np.exp(v) if is_log else 1.0 / (1.0 + np.exp(-v))
            for p, is_log, v in zip(self._params, self._log, z, strict=True)
        }

    def z_bounds(self, data) -> list[tuple[float, float]]:
        """A box wide enough not to bind in a fit that identifies the parameter.

        Amplitudes and floors: e^±60; exponents: [1e-3, 10]; half-saturation constants:
        10⁻⁴ × the smallest to 10⁴ × the largest value swept; S: [1e-6, 1e6]; ρ: logit
        ±20. A fit that ends on a face of the box is flagged `at_bound`: the data drive the
        parameter to a limit of the model (e.g. S → 0: a linear SNR-to-information regime).
        """
        out = []
        for p in self._params:
            if p.name in EXPONENTS:
                out.append((math.log(1e-3), math.log(10.0)))
            elif p.name == "kappa_e":
                out.append((math.log(data.k_e.min() * 1e-4), math.log(data.k_e.max() * 1e4)))
            elif p.name == "kappa_c":
                out.append((math.log(data.k_c.min() * 1e-4), math.log(data.k_c.max() * 1e4)))
            elif p.name == "S":
                out.append((math.log(1e-6), math.log(1e6)))
            elif p.transform == "logit":
                out.append((-20.0, 20.0))
            else:
                out.append((-60.0, 60.0))
        return out

    def optimum(self, theta, hidden: float, k_c: float, data: SweepData | None = None):
        """Numerical optimum (k_e*, k_c*, N*, ℓ*) at a hidden budget; see `numeric_optimum`."""
        kc_range = None
        if self.kc_varies and data is not None:
            kc_range = (float(data.k_c.min()) / 10, float(data.k_c.max()) * 10)
        return numeric_optimum(self, theta, hidden, k_c, kc_range)


class InformationModel(Model):
    """ℓ from the population information I = N_eff(N; ρ) · ½ log2(1 + s(k_e, k_c)).

    s = S h, h = k_e/(k_e + κ_e) · k_c/(k_c + κ_c); N_eff = N / (1 + (N − 1) ρ);
    I_max = ½ log2(1 + S) / ρ (N, k_e, k_c → ∞); with c the loss per bit,
    loss: ℓ = L_inf + c (I_max − I); error: ℓ = L_inf · exp(c (I_max − I)).
    Fitted with a = c S / (2 ln 2) in place of c: c I = a N_eff h g(S h) and
    c I_max = a g(S) / ρ with g(x) = ln(1 + x)/x, so the model has a finite limit S → 0
    (information linear in the SNR) instead of a ridge c → ∞.
    With k_c fixed, k_c/(k_c + κ_c) is absorbed into S (S is then S at that k_c).
    """

    name = "information"
    label = "information (SNR saturation + redundancy)"

    def params(self):
        ps = [
            Param(
                "L_inf", "log", "loss (or error) with infinitely many, infinitely complex neurons"
            ),
            Param(
                "a",
                "log",
                "c·S/(2 ln 2), c the loss (BPC) or log-error per bit of information",
            ),
            Param("S", "log", "SNR of one neuron of unbounded complexity"),
            Param("kappa_e", "log", "k_e at which a neuron reaches half its maximal SNR"),
            Param(
                "rho", "logit", "feature overlap of two neurons; 1/ρ independent channels at most"
            ),
        ]
        if self.kc_varies:
            ps.append(Param("kappa_c", "log", "k_c at which a neuron reaches half its SNR"))
        return ps

    @staticmethod
    def c_per_bit(theta) -> float:
        return 2 * LN2 * theta["a"] / theta["S"]

    def h(self, theta, k_e, k_c):
        out = k_e / (k_e + theta["kappa_e"])
        if self.kc_varies:
            out = out * k_c / (k_c + theta["kappa_c"])
        return out

    def snr(self, theta, k_e, k_c):
        return theta["S"] * self.h(theta, k_e, k_c)

    @staticmethod
    def _g(x):
        return np.log1p(x) / x

    def n_eff(self, theta, N):
        return N / (1.0 + (N - 1.0) * theta["rho"])

    def information(self, theta, X):
        """I in bits."""
        s = self.snr(theta, X["k_e"], X["k_c"])
        return self.n_eff(theta, X["N"]) * np.log1p(s) / (2 * LN2)

    def i_max(self, theta):
        return np.log1p(theta["S"]) / (2 * LN2) / theta["rho"]

    def _deficit(self, theta, X):
        """(I_max − I) · 2 ln 2 / S: the information deficit in units of a."""
        h = self.h(theta, X["k_e"], X["k_c"])
        u = self.n_eff(theta, X["N"]) * h * self._g(theta["S"] * h)
        return self._g(theta["S"]) / theta["rho"] - u

    def predict(self, theta, X):
        deficit = self._deficit(theta, X)
        if self.kind == "loss":
            return theta["L_inf"] + theta["a"] * deficit
        return theta["L_inf"] * np.exp(theta["a"] * deficit)

    def grid(self, data):
        kmin, kmax = data.k_e.min(), data.k_e.max()
        kappas = np.geomspace(kmin / 10, kmax * 10, 5)
        kcs = np.geomspace(data.k_c.min() / 10, data.k_c.max() * 10, 3) if self.kc_varies else [1]
        out = []
        for S in (0.01, 0.3, 10.0, 300.0):
            for kappa in kappas:
                for rho in (1e-4, 1e-3, 1e-2, 1e-1, 0.5):
                    for kc in kcs:
                        theta = {"S": S, "kappa_e": kappa, "rho": rho, "L_inf": 1.0, "a": 1.0}
                        if self.kc_varies:
                            theta["kappa_c"] = kc
                        th = self._link_by_least_squares(theta, data)
                        if th is not None:
                            out.append(th)
        return out

    def _link_by_least_squares(self, theta, data):
        """L_inf and a by linear least squares at fixed S, κ_e, ρ (κ_c)."""
        d = self._deficit(theta, data.X())
        if self.kind == "loss":  # y ≈ L_inf + a d, relative residuals
            A = np.column_stack([np.ones_like(d), d]) / data.y[:, None]
            coef, _ = optimize.nnls(A, np.ones_like(d))
            l_inf, a = coef
            if l_inf <= 0:
                return None
            a = max(a, 1e-8)
        else:  # log y ≈ log L_inf + a d
            A = np.column_stack([np.ones_like(d), d])
            (b, a), *_ = np.linalg.lstsq(A, np.log(data.y), rcond=None)
            a = max(a, 1e-8)
            l_inf = math.exp(min(b, 50.0))
            if not l_inf > 0:
                return None
        return {**theta, "L_inf": l_inf, "a": a}

    # Closed form (continuous relaxation, k_c fixed): see docs/theory.md §3.
    def elasticity_i(self, theta, k_e, k_c):
        """ε_i = d log i / d log k_e of i = ½ log2(1 + s)."""
        s = self.snr(theta, k_e, k_c)
        return s * theta["kappa_e"] / ((k_e + theta["kappa_e"]) * (1 + s) * np.log1p(s))

    def budget_for_optimum(self, theta, k_e, k_c):
        """The hidden budget H at which k_e is the optimal complexity (Lagrange condition).

        (1 − ρ) / (1 + (N − 1) ρ) = ε_i(k_e) (k_e + k_c) / k_e  →  N*(k_e), H = N* (k_e + k_c).
        Returns NaN where no N ≥ 1 satisfies it.
        """
        rho = theta["rho"]
        q = self.elasticity_i(theta, k_e, k_c) * (k_e + k_c) / k_e
        n_star = 1.0 + ((1.0 - rho) / q - 1.0) / rho
        return np.where(n_star >= 1.0, n_star * (k_e + k_c), np.nan)

    def closed_form_optimum(self, theta, hidden, k_c):
        """k_e* at hidden budget H: the root of budget_for_optimum(k_e) = H."""

        def f(log_k):
            return math.log(float(self.budget_for_optimum(theta, math.exp(log_k), k_c))) - math.log(
                hidden
            )

        lo, hi = math.log(1e-6), math.log(hidden)
        # budget_for_optimum is NaN below the k_e where N* = 1; bracket from the valid side
        ks = np.geomspace(1e-6, hidden, 400)
        h = self.budget_for_optimum(theta, ks, k_c)
        valid = np.isfinite(h)
        if not valid.any():
            raise ValueError("no interior optimum")
        sign = np.sign(np.log(h[valid]) - math.log(hidden))
        change = np.nonzero(np.diff(sign))[0]
        if not len(change):
            raise ValueError("no interior optimum in range")
        kv = np.log(ks[valid])
        lo, hi = kv[change[0]], kv[change[0] + 1]
        k = math.exp(optimize.brentq(f, lo, hi, xtol=1e-14, rtol=1e-14))
        return k


class PowerLawModel(Model):
    """ℓ = E + A N^−α + B k_e^−β (+ C k_c^−γ when k_c varies)."""

    name = "power_law"
    label = "additive power law"

    def params(self):
        ps = [
            Param("E", "log", "irreducible loss (error)"),
            Param("A", "log", "amplitude of the too-few-neurons term"),
            Param("alpha", "log", "exponent in N"),
            Param("B", "log", "amplitude of the too-simple-neurons term"),
            Param("beta", "log", "exponent in k_e"),
        ]
        if self.kc_varies:
            ps += [
                Param("C", "log", "amplitude of the too-few-synapses term"),
                Param("gamma", "log", "exponent in k_c"),
            ]
        return ps

    def predict(self, theta, X):
        out = (
            theta["E"]
            + theta["A"] * np.exp(-theta["alpha"] * np.log(X["N"]))
            + theta["B"] * np.exp(-theta["beta"] * np.log(X["k_e"]))
        )
        if self.kc_varies:
            out = out + theta["C"] * np.exp(-theta["gamma"] * np.log(X["k_c"]))
        return out

    def grid(self, data):
        exps = (0.1, 0.3, 1.0, 3.0)
        gammas = exps if self.kc_varies else (None,)
        out = []
        for a in exps:
            for b in exps:
                for g in gammas:
                    cols = [np.ones(data.n), data.N**-a, data.k_e**-b]
                    if g is not None:
                        cols.append(data.k_c**-g)
                    A = np.column_stack(cols) / data.y[:, None]
                    coef, _ = optimize.nnls(A, np.ones(data.n))
                    coef = np.maximum(coef, 1e-8 * data.y.min())
                    th = {"E": coef[0], "A": coef[1], "alpha": a, "B": coef[2], "beta": b}
                    if g is not None:
                        th.update(C=coef[3], gamma=g)
                    out.append(th)
        return out

    def lagrange_optimum(self, theta, hidden, k_c):
        """k_e* from α A N^−α / (k_e + k_c) = β B k_e^−β−1 with N = H / (k_e + k_c)."""

        def g(log_k):
            k = math.exp(log_k)
            n = hidden / (k + k_c)
            return math.log(theta["alpha"] * theta["A"] * n ** -theta["alpha"] / (k + k_c)) - (
                math.log(theta["beta"] * theta["B"]) - (theta["beta"] + 1) * log_k
            )

        return math.exp(optimize.brentq(g, math.log(1e-9), math.log(hidden - k_c), xtol=1e-14))


class NullModel(Model):
    """ℓ = E + A · (N h_e h_c)^−γ, h_e = k_e/(k_e + κ_e), h_c = k_c/(k_c + κ_c).

    The loss depends on the allocation only through N h_e: at a fixed budget the optimal
    k_e = √(κ_e k_c) whatever the budget.
    """

    name = "null"
    label = "null (allocation independent of P)"

    def params(self):
        ps = [
            Param("E", "log", "error floor set by information-limiting correlations"),
            Param("A", "log", "amplitude"),
            Param("gamma", "log", "exponent of the effective population size"),
            Param("kappa_e", "log", "k_e at which one neuron's information is half its maximum"),
        ]
        if self.kc_varies:
            ps.append(Param("kappa_c", "log", "k_c at which it is half its maximum"))
        return ps

    def _x(self, theta, X):
        x = X["N"] * X["k_e"] / (X["k_e"] + theta["kappa_e"])
        if self.kc_varies:
            x = x * X["k_c"] / (X["k_c"] + theta["kappa_c"])
        return x

    def predict(self, theta, X):
        return theta["E"] + theta["A"] * np.exp(-theta["gamma"] * np.log(self._x(theta, X)))

    def grid(self, data):
        kappas = np.geomspace(data.k_e.min() / 10, data.k_e.max() * 10, 7)
        kcs = np.geomspace(data.k_c.min() / 10, data.k_c.max() * 10, 3) if self.kc_varies else [1]
        out = []
        for g in (0.1, 0.3, 1.0, 3.0):
            for kappa in kappas:
                for kc in kcs:
                    th = {"gamma": g, "kappa_e": kappa, "E": 1.0, "A": 1.0}
                    if self.kc_varies:
                        th["kappa_c"] = kc
                    x = self._x(th, data.X())
                    A = np.column_stack([np.ones(data.n), x**-g]) / data.y[:, None]
                    coef, _ = optimize.nnls(A, np.ones(data.n))
                    coef = np.maximum(coef, 1e-8 * data.y.min())
                    out.append({**th, "E": coef[0], "A": coef[1]})
        return out

    def closed_form_optimum(self, theta, hidden, k_c):
        return math.sqrt(theta["kappa_e"] * k_c)


MODELS = (InformationModel, PowerLawModel, NullModel)


def make_models(data: SweepData) -> list[Model]:
    return [cls(data.kind, data.kc_varies) for cls in MODELS]


# ---------------------------------------------------------------------------------------
# Optimum at a fixed budget


def numeric_optimum(model, theta, hidden, k_c, kc_range=None, n_grid=400) -> dict[str, float]:
    """argmin ℓ over k_e (and k_c in kc_range) at N = H / (k_e + k_c), continuous N ≥ 1.

    A log-spaced grid finds the basin, a bounded Brent (or L-BFGS-B in 2-D) search refines
    it. `at_edge` is True when the optimum lies on the edge of the feasible range.
    """
    if kc_range is None:
        k_hi = hidden - k_c
        if k_hi <= 1:
            raise UserError(f"a hidden budget of {hidden:g} leaves no room for one neuron")
        ks = np.geomspace(1.0, k_hi, n_grid)
        loss = np.real(model.predict(theta, {"N": hidden / (ks + k_c), "k_e": ks, "k_c": k_c}))
        loss = np.where(np.isfinite(loss), loss, np.inf)
        j = int(np.argmin(loss))
        lo, hi = math.log(ks[max(j - 1, 0)]), math.log(ks[min(j + 1, n_grid - 1)])

        def f(lk):
            k = math.exp(lk)
            return float(
                np.real(model.predict(theta, {"N": hidden / (k + k_c), "k_e": k, "k_c": k_c}))
            )

        res = optimize.minimize_scalar(
            f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12}
        )
        k = math.exp(res.x)
        return {
            "k_e": k,
            "k_c": float(k_c),
            "N": hidden / (k + k_c),
            "loss": float(res.fun),
            "at_edge": j in (0, n_grid - 1),
        }
    # 2-D: k_e and k_c
    lke = np.linspace(0.0, math.log(hidden), 120)
    lkc = np.linspace(math.log(kc_range[0]), math.log(kc_range[1]), 80)
    KE, KC = np.meshgrid(np.exp(lke), np.exp(lkc), indexing="ij")
    N = hidden / (KE + KC)
    loss = np.real(model.predict(theta, {"N": N, "k_e": KE, "k_c": KC}))
    loss = np.where((N >= 1) & np.isfinite(loss), loss, np.inf)
    i, j = np.unravel_index(int(np.argmin(loss)), loss.shape)

    def f2(v):
        ke, kc = np.exp(v)
        n = hidden / (ke + kc)
        return float(np.real(model.predict(theta, {"N": n, "k_e": ke, "k_c": kc})))

    res = optimize.minimize(
        f2,
        [lke[i], lkc[j]],
        method="L-BFGS-B",
        bounds=[(lke[0], lke[-1]), (lkc[0], lkc[-1])],
        options={"ftol": 1e-15, "gtol": 1e-12},
    )
    ke, kc = np.exp(res.x)
    return {
        "k_e": float(ke),
        "k_c": float(kc),
        "N": hidden / (ke + kc),
        "loss": float(res.fun),
        "at_edge": bool(i in (0, len(lke) - 1) or j in (0, len(lkc) - 1)),
    }


# ---------------------------------------------------------------------------------------
# Fitting


def huber(r, delta):
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def huber_psi(r, delta):
    return np.clip(r, -delta, delta)


@dataclass
class Fit:
    model: Model
    theta: dict[str, float]
    z: np.ndarray
    objective: float
    delta: float
    converged: bool
    grad_norm: float
    at_bound: list[str]
    n_starts: int
    n_agree: int
    message: str
    residuals: np.ndarray = field(repr=False)

    def predict(self, X):
        return np.real(self.model.predict(self.theta, X))

    @property
    def rms_log_residual(self) -> float:
        return float(np.sqrt(np.mean(self.residuals**2)))


def _residual_factory(model, X, log_y):
    """r(z) = log ℓ̂ − log ℓ and its Jacobian ∂r/∂z, exact to rounding (complex steps)."""
    n = len(log_y)
    h = 1e-30

    def resid(z, jacobian=True):
        p = len(z)
        with np.errstate(all="ignore"):
            pred = model.predict(model.from_z(z), X)
            r = np.log(pred) - log_y
        if not np.all(np.isfinite(r)) or np.any(np.real(pred) <= 0):
            return None, None
        if not jacobian:
            return r, None
        # all p complex steps at once: parameter j of variant k is z_j + i h δ_jk
        zc = z[:, None] + 1j * h * np.eye(p)
        with np.errstate(all="ignore"):
            rc = np.log(model.predict(model.from_z(zc[:, :, None]), X))  # (p, n)
        J = np.imag(np.broadcast_to(rc, (p, n))).T / h
        if not np.all(np.isfinite(J)):
            return None, None
        return r, J

    return resid


def _objective_factory(model, X, log_y, delta, scale):
    """Dimensionless objective (1/n) Σ huber(r_i, δ)/s² and its exact gradient."""
    n = len(log_y)
    resid = _residual_factory(model, X, log_y)

    def fun(z):
        r, J = resid(z)
        if r is None:
            return 1e30, np.zeros(len(z))
        value = float(np.sum(huber(r, delta))) / (n * scale**2)
        return value, J.T @ huber_psi(r, delta) / (n * scale**2)

    return fun, resid


def _projected_gradient(z, g, bounds):
    pg = g.copy()
    for j, (lo, hi) in enumerate(bounds):
        if z[j] <= lo + 1e-9 and g[j] > 0:
            pg[j] = 0.0
        if z[j] >= hi - 1e-9 and g[j] < 0:
            pg[j] = 0.0
    return pg


def _polish(fun, resid, z, bounds, delta, scale, n, max_iter=100):
    """Damped Gauss-Newton (Levenberg-Marquardt) steps on the Huber objective, from the
    L-BFGS-B solution: Hessian ≈ Jᵀ W J / (n s²), W = 1 where |r| ≤ δ."""
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    norm = n * scale**2

    def value_of(r):
        return float(np.sum(huber(r, delta))) / norm

    r, J = resid(z)
    if r is None:
        return z
    value, grad = value_of(r), J.T @ huber_psi(r, delta) / norm
    lam = 1e-6
    for _ in range(max_iter):
        if np.max(np.abs(_projected_gradient(z, grad, bounds))) <= GRAD_TOL * 1e-2:
            break
        w = (np.abs(r) <= delta).astype(float)
        # active set: coordinates on a face of the box whose gradient points outward
        free = ~(((z <= lo + 1e-9) & (grad > 0)) | ((z >= hi - 1e-9) & (grad < 0)))
        Jf = J[:, free]
        Hm = (Jf * w[:, None]).T @ Jf / norm
        D = np.diag(np.diag(Hm) + 1e-9 * np.max(np.diag(Hm), initial=1e-300))
        improved = False
        for _ in range(16):
            try:
                step_f = np.linalg.solve(Hm + lam * D, -grad[free])
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            step = np.zeros_like(z)
            step[free] = step_f
            z_new = np.clip(z + step, lo, hi)
            r_new, _ = resid(z_new, jacobian=False)
            if r_new is None:
                lam *= 10
                continue
            v_new = value_of(r_new)
            accept = v_new < value
            if not accept and v_new <= value + 1e-13 * abs(value):
                # near the optimum the objective changes below its rounding: accept a step
                # that does not raise it beyond rounding and shrinks the gradient
                r_new, J_new = resid(z_new)
                g_new = J_new.T @ huber_psi(r_new, delta) / norm
                accept = np.max(np.abs(g_new)) < np.max(np.abs(grad))
            if accept:
                r, J = resid(z_new)
                z, value, grad = z_new, value_of(r), J.T @ huber_psi(r, delta) / norm
                lam = max(lam / 10, 1e-12)
                improved = True
                break
            lam *= 10
        if not improved:
            break
    return z


def _minimise(model, data, delta, starts, bounds, maxiter=2000):
    log_y = np.log(data.y)
    scale = delta if np.isfinite(delta) else max(float(np.std(log_y)), 1e-3)
    fun, resid = _objective_factory(model, data.X(), log_y, delta, scale)
    results = []
    for z0 in starts:
        z0 = np.clip(z0, [b[0] for b in bounds], [b[1] for b in bounds])
        res = optimize.minimize(
            fun,
            z0,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-9},
        )
        z = _polish(fun, resid, res.x, bounds, delta, scale, len(log_y))
        value, grad = fun(z)
        pg = float(np.max(np.abs(_projected_gradient(z, grad, bounds))))
        results.append((value, pg, z, res))
    results.sort(key=lambda t: t[0])
    return results, fun


@_single_threaded
def fit(
    model: Model,
    data: SweepData,
    delta: float | None = None,
    starts: list[np.ndarray] | None = None,
    n_starts: int = 8,
    require_convergence: bool = False,
    warm: bool = False,
    maxiter: int = 2000,
) -> Fit:
    """Fit `model` to `data`: Huber loss of log-residuals, multi-start L-BFGS-B.

    delta None: δ = 1.345 σ̂ with σ̂ = 1.4826 · MAD of the residuals of a least-squares fit
    (Huber's 95 %-efficiency rule), at least DELTA_FLOOR. Starts: the best `n_starts`
    points of the model's grid (nonlinear parameters on a grid, linear ones by least
    squares), plus `starts`. Converged: the projected gradient of the dimensionless
    objective is below 1e-6 at the best start, or a Gauss-Newton step from it would change
    no parameter by 1e-6. `n_agree` counts starts whose objective is within 1e-8
    (relative) of it.
    warm (with delta and starts given): first polish starts[0] alone by Levenberg-Marquardt
    steps, and run the multi-start L-BFGS-B only if that does not converge.
    """
    bounds = model.z_bounds(data)
    if warm and starts and delta is not None:
        log_y = np.log(data.y)
        scale = delta if np.isfinite(delta) else max(float(np.std(log_y)), 1e-3)
        fun, resid = _objective_factory(model, data.X(), log_y, delta, scale)
        lo, hi = [b[0] for b in bounds], [b[1] for b in bounds]
        z = _polish(fun, resid, np.clip(starts[0], lo, hi), bounds, delta, scale, data.n, 40)
        value, grad = fun(z)
        pg = float(np.max(np.abs(_projected_gradient(z, grad, bounds))))
        if value < 1e29 and (
            pg <= GRAD_TOL or _newton_step(model, data, delta, z, bounds) <= STEP_TOL
        ):
            return _make_fit(model, data, delta, [(value, pg, z, None)], bounds, False)
    grid = [model.to_z(th) for th in model.grid(data)]
    if grid:
        log_y = np.log(data.y)
        resid0 = _residual_factory(model, data.X(), log_y)
        values = []
        for z in grid:
            r, _ = resid0(z, jacobian=False)
            values.append(np.inf if r is None else float(np.sum(r**2)))
        order = np.argsort(values)
        grid = [grid[i] for i in order[:n_starts]]
    all_starts = list(starts or []) + grid
    if not all_starts:
        raise ValueError("no starting point")
    if delta is None:
        ls, _ = _minimise(model, data, np.inf, all_starts[: max(3, n_starts // 2)], bounds)
        r = np.log(np.real(model.predict(model.from_z(ls[0][2]), data.X()))) - np.log(data.y)
        sigma = MAD_TO_SIGMA * float(np.median(np.abs(r - np.median(r))))
        delta = max(HUBER_K * sigma, DELTA_FLOOR)
        all_starts = [ls[0][2], *all_starts]
    results, _ = _minimise(model, data, delta, all_starts, bounds, maxiter)
    return _make_fit(model, data, delta, results, bounds, require_convergence)


def _newton_step(model, data, delta, z, bounds) -> float:
    """Largest |Δz| of a Gauss-Newton step from z over the free coordinates (∞ if singular)."""
    log_y = np.log(data.y)
    scale = delta if np.isfinite(delta) else max(float(np.std(log_y)), 1e-3)
    fun, resid = _objective_factory(model, data.X(), log_y, delta, scale)
    _, grad = fun(z)
    r, J = resid(z)
    if r is None:
        return math.inf
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    free = ~(((z <= lo + 1e-9) & (grad > 0)) | ((z >= hi - 1e-9) & (grad < 0)))
    w = (np.abs(r) <= delta).astype(float)
    Jf = J[:, free]
    Hm = (Jf * w[:, None]).T @ Jf / (len(r) * scale**2)
    try:
        step = np.linalg.solve(Hm, -grad[free])
    except np.linalg.LinAlgError:
        return math.inf
    return float(np.max(np.abs(step), initial=0.0))


def _make_fit(model, data, delta, results, bounds, require_convergence) -> Fit:
    best_value, best_pg, best_z, best = results[0]
    n_agree = sum(
        abs(v - best_value) <= 1e-8 * max(abs(best_value), 1e-300) + 1e-14 for v, _, _, _ in results
    )
    # converged: a stationary point (projected gradient below GRAD_TOL), or a point from
    # which a Gauss-Newton step would move no parameter by more than 1e-6 (relative) — the
    # scale-free test needed when the residuals, and so the gradient's scale, vanish
    converged = bool(
        best_value < 1e29
        and (best_pg <= GRAD_TOL or _newton_step(model, data, delta, best_z, bounds) <= STEP_TOL)
    )
    theta = {k: float(v) for k, v in model.from_z(best_z).items()}
    at_bound = [
        p.name
        for p, zj, (lo, hi) in zip(model.params(), best_z, bounds, strict=True)
        if zj <= lo + 1e-6 or zj >= hi - 1e-6
    ]
    pred = np.real(model.predict(theta, data.X()))
    residuals = np.log(pred) - np.log(data.y)
    if best is None:
        message = "Levenberg-Marquardt steps from the warm start"
    else:
        message = best.message if isinstance(best.message, str) else str(best.message)
    if require_convergence and not converged:
        raise ConvergenceError(
            f"{model.name}: fit not converged (projected gradient {best_pg:.2e}, {message})"
        )
    return Fit(
        model,
        theta,
        best_z,
        best_value,
        delta,
        converged,
        best_pg,
        at_bound,
        len(results),
        n_agree,
        message,
        residuals,
    )


def refit(base: Fit, data: SweepData, n_grid_starts: int = 1) -> Fit:
    """Refit on other data (a bootstrap replicate, a leave-one-out set) with base's δ:
    Levenberg-Marquardt steps from base's optimum; if they do not converge, L-BFGS-B (at
    most 500 iterations) from it and from the best `n_grid_starts` grid points."""
    return fit(
        base.model,
        data,
        delta=base.delta,
        starts=[base.z],
        n_starts=n_grid_starts,
        warm=True,
        maxiter=500,
    )


# ---------------------------------------------------------------------------------------
# Resampling


def resample_index(data: SweepData, rng: np.random.Generator) -> np.ndarray:
    """A bootstrap replicate over runs: rows drawn with replacement within each budget."""
    parts = []
    for g in range(len(data.budgets)):
        rows = np.nonzero(data.group == g)[0]
        parts.append(rng.choice(rows, size=len(rows), replace=True))
    return np.concatenate(parts)


@_single_threaded
def bootstrap(base: Fit, data: SweepData, n_boot: int, rng, extra=None, n_grid_starts=1):
    """Refit `n_boot` resamples; returns (θ array [n_boot, p], list of extra(fit), n_not).

    Every replicate is kept, with the best point its fit found; n_not counts those whose
    fit did not pass the convergence check. Leaving them out would bias the intervals
    towards the well-determined resamples; they are (in the published tables) replicates
    on a ridge of the objective, where the fitted curve has converged and a parameter
    drifts to a limit of the model.
    """
    thetas, extras, not_converged = [], [], 0
    names = base.model.names
    for _ in range(n_boot):
        idx = resample_index(data, rng)
        f = refit(base, data.subset(idx), n_grid_starts)
        not_converged += not f.converged
        thetas.append([f.theta[k] for k in names])
        if extra is not None:
            extras.append(extra(f))
    return np.array(thetas).reshape(-1, len(names)), extras, not_converged


def percentile_interval(values, level=0.95) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return (math.nan, math.nan)
    a = (1 - level) / 2
    return float(np.quantile(values, a)), float(np.quantile(values, 1 - a))


@_single_threaded
def leave_one_out(base: Fit, data: SweepData, n_grid_starts: int = 1):
    """Predicted ℓ for each row from a fit without it, and the number of those refits that
    did not converge (their best point is used all the same)."""
    pred = np.full(data.n, np.nan)
    not_converged = 0
    for i in range(data.n):
        keep = np.arange(data.n) != i
        f = refit(base, data.subset(keep), n_grid_starts)
        not_converged += not f.converged
        pred[i] = f.predict({k: v[i : i + 1] for k, v in data.X().items()})[0]
    return pred, not_converged


@_single_threaded
def leave_one_budget_out(base: Fit, data: SweepData, n_grid_starts: int = 1):
    """Predicted ℓ for each row from a fit on the other budgets (needs ≥ 2 budgets)."""
    pred = np.full(data.n, np.nan)
    not_converged = 0
    for g in range(len(data.budgets)):
        out = data.group == g
        f = refit(base, data.subset(~out), n_grid_starts)
        not_converged += not f.converged
        pred[out] = f.predict({k: v[out] for k, v in data.X().items()})
    return pred, not_converged


# ---------------------------------------------------------------------------------------
# Frontier and scaling law


def frontier(data: SweepData) -> list[dict[str, float]]:
    """The measured optimum of each budget: seed-mean ℓ per allocation, the best one, and a
    three-point parabola in (log k_e, log ℓ) through it and its neighbours along k_e (at the
    best k_c). `at_edge` marks an optimum on the edge of the sweep (no refinement)."""
    out = []
    for b in data.budgets:
        rows = data.budget == b
        keys = np.stack([data.k_e[rows], data.k_c[rows]], axis=1)
        uniq, inv = np.unique(keys, axis=0, return_inverse=True)
        inv = inv.ravel()
        mean = np.array([np.mean(np.log(data.y[rows][inv == u])) for u in range(len(uniq))])
        best = int(np.argmin(mean))
        kc_best = uniq[best, 1]
        line = np.nonzero(uniq[:, 1] == kc_best)[0]
        line = line[np.argsort(uniq[line, 0])]
        pos = int(np.nonzero(line == best)[0][0])
        x = np.log(uniq[line, 0])
        y = mean[line]
        at_edge = pos in (0, len(line) - 1)
        x_star, y_star = x[pos], y[pos]
        if not at_edge:
            x3, y3 = x[pos - 1 : pos + 2], y[pos - 1 : pos + 2]
            a, b1, c = np.polyfit(x3, y3, 2)
            if a > 0:
                x_star = -b1 / (2 * a)
                y_star = c - b1**2 / (4 * a)
        hidden = data.hidden_budget(b)
        k_e = math.exp(x_star)
        out.append(
            {
                "P": float(b),
                "hidden": hidden,
                "loss": math.exp(y_star),
                "k_e": k_e,
                "k_c": float(kc_best),
                "N": hidden / (k_e + kc_best),
                "at_edge": bool(at_edge),
            }
        )
    return out


class ScalingLaw(Model):
    """L(P) = E + A P^−α along the frontier."""

    name = "scaling_law"

    def params(self):
        return [
            Param("E", "log", "loss at infinite budget"),
            Param("A", "log", "amplitude"),
            Param("alpha", "log", "exponent"),
        ]

    def predict(self, theta, X):
        return theta["E"] + theta["A"] * np.exp(-theta["alpha"] * np.log(X["P"]))

    def grid(self, data):
        out = []
        P = data.P_values
        for a in (0.03, 0.1, 0.3, 1.0, 3.0):
            M = np.column_stack([np.ones_like(P), P**-a]) / data.y[:, None]
            coef, _ = optimize.nnls(M, np.ones_like(P))
            coef = np.maximum(coef, 1e-8 * data.y.min())
            out.append({"E": coef[0], "A": coef[1], "alpha": a})
        return out


@dataclass
class _FrontierData:
    """The frontier points in the shape `fit` expects."""

    P_values: np.ndarray
    y: np.ndarray

    @property
    def n(self):
        return len(self.y)

    def X(self):
        return {"P": self.P_values}


def _power_law_fit(P, v):
    """log v = a + b log P by least squares: (b, exp a)."""
    b, a = np.polyfit(np.log(P), np.log(v), 1)
    return float(b), float(math.exp(a))


MIN_BUDGETS_FOR_E = 4


@_single_threaded
def fit_scaling_law(data: SweepData, n_boot: int = 200, seed: int = 0) -> dict[str, Any]:
    """The frontier and its scaling laws, with bootstrap intervals (resampling runs within
    budgets). Needs ≥ 2 budgets; E + A P^−α needs ≥ 4 (else only the plain power law)."""
    nb = len(data.budgets)
    if nb < 2:
        raise UserError(
            f"a scaling law needs sweeps at 2 or more budgets; the {data.task} table has one "
            f"(P = {data.budgets[0]:g})"
        )
    rng = np.random.default_rng(seed)

    def summarise(fr):
        P = np.array([f["P"] for f in fr])
        out = {
            "plain": dict(
                zip(("slope", "A"), _power_law_fit(P, [f["loss"] for f in fr]), strict=True)
            )
        }
        for key in ("N", "k_e") + (("k_c",) if data.kc_varies else ()):
            out[f"{key}_exponent"] = _power_law_fit(P, [f[key] for f in fr])[0]
        if nb >= MIN_BUDGETS_FOR_E:
            fd = _FrontierData(P, np.array([f["loss"] for f in fr]))
            law = ScalingLaw("loss")
            f = fit(law, fd, delta=np.inf, n_starts=5)
            out["E_form"] = {**f.theta, "converged": f.converged, "at_bound": f.at_bound}
        return out

    fr = frontier(data)
    point = summarise(fr)
    reps = []
    for _ in range(n_boot):
        reps.append(summarise(frontier(data.subset(resample_index(data, rng)))))

    def interval(get):
        vals = []
        for r in reps:
            try:
                vals.append(get(r))
            except KeyError:
                pass
        return percentile_interval(vals)

    result = {
        "frontier": fr,
        "n_budgets": nb,
        "plain": {
            "alpha": -point["plain"]["slope"],
            "A": point["plain"]["A"],
            "alpha_interval": interval(lambda r: -r["plain"]["slope"]),
        },
        "allocation": {},
        "n_boot": n_boot,
    }
    # 95 % bands of the fitted laws over a budget grid, from the replicates
    P_grid = np.geomspace(data.budgets.min() / 2, data.budgets.max() * 2, 50)

    def band(curves):
        curves = np.array(curves)
        if not len(curves):
            return None
        lo, hi = np.nanquantile(curves, [0.025, 0.975], axis=0)
        return {"P": P_grid.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}

    result["plain"]["band"] = band([r["plain"]["A"] * P_grid ** r["plain"]["slope"] for r in reps])
    if "E_form" in point:
        result["E_form_band"] = band(
            [
                r["E_form"]["E"] + r["E_form"]["A"] * P_grid ** -r["E_form"]["alpha"]
                for r in reps
                if r["E_form"]["converged"]
            ]
        )
    for key in ("N", "k_e") + (("k_c",) if data.kc_varies else ()):
        result["allocation"][key] = {
            "exponent": point[f"{key}_exponent"],
            "interval": interval(lambda r, k=key: r[f"{k}_exponent"]),
        }
    if "E_form" in point:
        ef = point["E_form"]
        conv = [r["E_form"]["converged"] for r in reps]
        result["E_form"] = {
            # E counts as identified when the lower end of its interval is above 10⁻³ of
            # the smallest frontier loss: below that it cannot be told from 0
            "E": ef["E"],
            "A": ef["A"],
            "alpha": ef["alpha"],
            "converged": ef["converged"],
            "E_interval": interval(lambda r: r["E_form"]["E"]),
            "alpha_interval": interval(lambda r: r["E_form"]["alpha"]),
            "bootstrap_converged_fraction": float(np.mean(conv)) if conv else math.nan,
            "E_identified": bool(
                not ef["at_bound"]
                and interval(lambda r: r["E_form"]["E"])[0] > 1e-3 * min(f["loss"] for f in fr)
            ),
        }
    else:
        result["E_form"] = {
            "note": f"E not identifiable from {nb} budgets (needs "
            f"{MIN_BUDGETS_FOR_E}); plain power law only"
        }
    return result


# ---------------------------------------------------------------------------------------
# Synthetic data


def synthetic_sweep(
    model: Model,
    theta: dict[str, float],
    budgets: list[float],
    k_e_grid: list[float],
    k_c: float | list[float],
    noise: float,
    n_seeds: int,
    rng: np.random.Generator,
    task: str = "synthetic",
    metric: str = "bpc",
) -> SweepData:
    """Rows of fixed-budget sweeps generated from `model`: N = floor(P / (k_e + k_c)),
    ℓ = model · exp(σ ε), ε ~ N(0, 1); rows with N < 2 are dropped."""
    kcs = np.atleast_1d(k_c).astype(float)
    rows = []
    for P in budgets:
        for ke in k_e_grid:
            for kc in kcs:
                n = math.floor(P / (ke + kc))
                if n < 2:
                    continue
                for s in range(n_seeds):
                    rows.append((P, n, ke, kc, s))
    arr = np.array(rows, dtype=float)
    X = {"N": arr[:, 1], "k_e": arr[:, 2], "k_c": arr[:, 3]}
    clean = np.real(model.predict(theta, X))
    y = clean * np.exp(noise * rng.standard_normal(len(clean)))
    return SweepData(
        task,
        metric,
        metric_kind(metric),
        arr[:, 1],
        arr[:, 2],
        arr[:, 3],
        y,
        arr[:, 0],
        arr[:, 4].astype(int),
    )


# ---------------------------------------------------------------------------------------
# d_m from k_e (ELM Network hidden neuron, d_mlp = 2 d_m)


def d_m_for_k_e(k_e: float, d_tree: int | None) -> float:
    """The (continuous) d_m whose hidden neuron has k_e, from elmnet.params' formula."""
    from elmnet.params import hidden_neuron_parameters

    if d_tree is None or not np.isfinite(k_e) or k_e <= 0:
        return math.nan

    def f(d):
        return hidden_neuron_parameters(d, 2 * d, d_tree, 1).k_e - k_e

    if f(1e-9) >= 0:
        return math.nan
    return float(optimize.brentq(f, 1e-9, 1e5, xtol=1e-12))


def infer_d_tree(d_m: np.ndarray, k_e: np.ndarray) -> int | None:
    """The d_tree that gives every row's k_e from its d_m (d_mlp = 2 d_m), or None."""
    from elmnet.params import hidden_neuron_parameters

    d_m = np.asarray(d_m, dtype=float)
    if not len(d_m) or not np.all(np.isfinite(d_m)) or np.any(d_m <= 0):
        return None
    # k_e = 4 d_m² + (2 d_tree + 4) d_m + 1
    cand = np.rint((k_e - 4 * d_m**2 - 4 * d_m - 1) / (2 * d_m))
    if np.ptp(cand) != 0 or cand[0] < 1:
        return None
    d_tree = int(cand[0])
    ok = all(
        hidden_neuron_parameters(int(d), 2 * int(d), d_tree, 1).k_e == int(k)
        for d, k in zip(d_m, k_e, strict=True)
    )
    return d_tree if ok else None
