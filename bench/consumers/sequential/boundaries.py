"""Group-sequential boundaries from an alpha-spending function (Lan and DeMets 1983).

A design looks at the data after n_1 < n_2 < ... < n_K seeds; the information at look k is taken as its fraction of
the budget, t_k = n_k / n_K. The spending function alpha(t) says how much of the two-sided level is spent by
information t; the boundary c_k is the |z| whose crossing at look k (and not before) has probability
alpha(t_k) - alpha(t_{k-1}) under no effect, for the canonical joint distribution of the statistics (a Brownian
motion observed at t_1..t_K: corr(Z_j, Z_k) = sqrt(t_j / t_k)). The crossing probabilities are computed by the
recursive numerical integration of Armitage, McPherson and Rowe (1969), as Jennison and Turnbull (2000, ch. 19)
describe it, with Simpson's rule on the continuation region.

Statistics with few seeds are t, not z: a look's test is made at the boundary's *nominal* level
2(1 - Phi(c_k)) (Jennison and Turnbull's significance-level approach, section 3.8), on the report's own p-values and
intervals. That it holds the error rates is shown by simulation (bench.consumers.calibration), not assumed.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize, stats

SPENDING = ("obrien-fleming", "pocock", "linear")
_POINTS = 1201  # Simpson's rule on the continuation region (odd): crossing probabilities to about 1e-9


def spent(design: str, t: float, alpha: float) -> float:
    """The two-sided level spent by information fraction ``t`` (0 < t <= 1), alpha/2 on each side: Lan-DeMets'
    O'Brien-Fleming-type 2 (2 - 2 Phi(z_{1-alpha/4} / sqrt t)) (each side's one-sided function at alpha/2, as their
    tables and Jennison and Turnbull's use it), their Pocock-type alpha ln(1 + (e - 1) t), or linear alpha t."""
    if design == "obrien-fleming":
        return float(4 * stats.norm.sf(stats.norm.isf(alpha / 4) / math.sqrt(t)))
    if design == "pocock":
        return float(alpha * math.log(1 + (math.e - 1) * t))
    if design == "linear":
        return float(alpha * t)
    raise ValueError(f"design {design!r}: one of {', '.join(SPENDING)}")


def _simpson(low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    z = np.linspace(low, high, _POINTS)
    weights = np.ones(_POINTS)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    return z, weights * (high - low) / (3 * (_POINTS - 1))


def _crossing(density: np.ndarray, z: np.ndarray, weights: np.ndarray, before: float, now: float, c: float) -> float:
    """P(continuing to the last look, then |Z| >= c now), from the continuation sub-density at information
    ``before``."""
    step = math.sqrt(now - before)
    mass = stats.norm.cdf((-c * math.sqrt(now) - z * math.sqrt(before)) / step)
    mass += stats.norm.cdf((-c * math.sqrt(now) + z * math.sqrt(before)) / step)
    return float(np.sum(weights * density * mass))


@functools.lru_cache(maxsize=256)
def boundaries(looks: tuple[int, ...], design: str, alpha: float) -> tuple[float, ...]:
    """|z| boundaries of the two-sided design at each look (``looks``: cumulative seeds)."""
    fractions = [n / looks[-1] for n in looks]
    levels = [spent(design, t, alpha) for t in fractions]
    c = float(stats.norm.isf(levels[0] / 2))
    out = [c]
    z, weights = _simpson(-c, c)
    density = stats.norm.pdf(z)  # the sub-density of Z_1 on the continuation region
    for k in range(1, len(looks)):
        before, now = fractions[k - 1], fractions[k]
        increment = levels[k] - levels[k - 1]
        if increment <= 0:
            c = math.inf
        else:
            c = optimize.brentq(lambda b: _crossing(density, z, weights, before, now, b) - increment, 1e-6, 40.0,
                                xtol=1e-10)
        out.append(c)
        if k + 1 < len(looks):  # the sub-density continuing past look k
            new_z, new_weights = _simpson(-c, c) if math.isfinite(c) else _simpson(-40.0, 40.0)
            step = math.sqrt(now - before)
            kernel = stats.norm.pdf((new_z[:, None] * math.sqrt(now) - z[None, :] * math.sqrt(before)) / step)
            density = (kernel * (weights * density)[None, :]).sum(axis=1) * math.sqrt(now) / step
            z, weights = new_z, new_weights
    return tuple(out)


def nominal(looks: tuple[int, ...], design: str, alpha: float) -> tuple[float, ...]:
    """Each look's nominal two-sided level 2(1 - Phi(c_k)): the level a look's test is made at."""
    return tuple(float(2 * stats.norm.sf(c)) for c in boundaries(looks, design, alpha))
