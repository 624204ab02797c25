"""A Bayesian pairwise surrogate of a measured removal loss: the model inside surrogate search.

The measured loss increase of removing the blocks x ∈ {0,1}ᴺ is modelled as a QUBO plus noise,

    y(x) = c + Σ_i a_i x_i + Σ_{i<j} b_ij x_i x_j + ε,      ε ~ N(0, s_x²)                                 (1)

with the coefficients w = (c, a, b) under a Gaussian prior centred on a scaled prior QUBO (the ``fisher`` or
``pairs`` objective's): w ~ N(α·w₀, diag(τ²)), τ_c broad, τ_a for the linear and τ_b for the pairwise terms. The
posterior after m measurements (features Φ, m × p) is Gaussian; with far more features p = 1 + N + N(N−1)/2 than
measurements it is computed in the m × m dual form,

    K = Φ Σ₀ Φᵀ + S,   μ = μ₀ + Σ₀ Φᵀ K⁻¹ (y − Φ μ₀),   Cov = Σ₀ − Σ₀ Φᵀ K⁻¹ Φ Σ₀                         (2)

(S = diag(s²), the measurements' squared standard errors). A Thompson sample of w uses Matheron's rule: draw
w′ ~ prior and ε′ ~ N(0, S), then w = w′ + Σ₀ Φᵀ K⁻¹ (y − Φ w′ − ε′) is an exact posterior draw. α is the least-
squares scale of the prior energies to the data; τ_a and τ_b maximise the marginal likelihood log N(y; Φμ₀, K) over
a grid (empirical Bayes). This is the BOCS / factorization-machine loop of black-box binary optimization, whose
proposal step is a QUBO a binary solver (annealer, QPU, QAOA) can take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..stats import r_squared, spearman

#: grid of prior standard deviations tried for τ_a and τ_b, as multiples of the data's spread
_TAU_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def pair_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices (i < j) of the pairwise features, in order."""
    return np.triu_indices(n, k=1)


def features(X: np.ndarray) -> np.ndarray:
    """Φ(x) = [1, x_1..x_N, x_i x_j (i < j)] for each row of the 0/1 matrix X."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None]
    i, j = pair_index(X.shape[1])
    return np.hstack([np.ones((len(X), 1)), X, X[:, i] * X[:, j]])


def qubo_weights(linear: np.ndarray, quadratic: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """The feature weights w with Φ(x)·w = offset + linear·x + xᵀQx (lmshrink's problem energy)."""
    n = len(linear)
    i, j = pair_index(n)
    return np.concatenate([[offset], np.asarray(linear) + np.diag(quadratic), 2 * np.asarray(quadratic)[i, j]])


def weights_to_qubo(w: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Inverse of :func:`qubo_weights`: (linear, symmetric quadratic with zero diagonal, offset)."""
    i, j = pair_index(n)
    Q = np.zeros((n, n))
    Q[i, j] = Q[j, i] = w[1 + n :] / 2
    return np.asarray(w[1 : 1 + n], dtype=np.float64).copy(), Q, float(w[0])


@dataclass
class PairwiseSurrogate:
    """The model (1)-(2) for N binary variables, optionally centred on a prior QUBO ``prior`` (weights w₀)."""

    n: int
    prior: np.ndarray | None = None
    X: np.ndarray = field(init=False, repr=False)
    y: np.ndarray = field(init=False, repr=False)
    noise: np.ndarray = field(init=False, repr=False)
    alpha: float = field(init=False, default=0.0)
    tau: tuple[float, float, float] = field(init=False, default=(1.0, 1.0, 1.0))

    def __post_init__(self) -> None:
        p = 1 + self.n + self.n * (self.n - 1) // 2
        if self.prior is not None:
            self.prior = np.asarray(self.prior, dtype=np.float64)
            if self.prior.shape != (p,):
                raise ValueError(f"prior weights need shape ({p},), got {self.prior.shape}")
        self.X = np.zeros((0, self.n))
        self.y = np.zeros(0)
        self.noise = np.zeros(0)
        self._fitted = False

    @property
    def num_features(self) -> int:
        return 1 + self.n + self.n * (self.n - 1) // 2

    def observe(self, X: np.ndarray, y: np.ndarray, se: np.ndarray | float) -> None:
        """Add measurements: states (rows of X), values y and their standard errors."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        y = np.atleast_1d(np.asarray(y, dtype=np.float64))
        se = np.broadcast_to(np.asarray(se, dtype=np.float64), y.shape)
        self.X = np.vstack([self.X, X])
        self.y = np.concatenate([self.y, y])
        self.noise = np.concatenate([self.noise, np.maximum(se, 1e-12) ** 2])
        self._fitted = False

    # --- fitting ----------------------------------------------------------------------------------------------
    def _prior_mean(self, alpha: float) -> np.ndarray:
        mu = np.zeros(self.num_features) if self.prior is None else alpha * self.prior
        return mu

    def _prior_var(self, tau: tuple[float, float, float]) -> np.ndarray:
        return np.concatenate([[tau[0] ** 2], np.full(self.n, tau[1] ** 2),
                               np.full(self.num_features - 1 - self.n, tau[2] ** 2)])

    def fit(self) -> PairwiseSurrogate:
        """Empirical Bayes: α by least squares of y on the prior energies, then τ by the marginal likelihood."""
        if len(self.y) == 0:
            raise ValueError("no measurements to fit")
        Phi = features(self.X)
        spread = float(np.std(self.y)) if len(self.y) > 1 else 1.0
        spread = max(spread, float(np.sqrt(self.noise.mean())), 1e-12)
        self.alpha = 0.0
        if self.prior is not None and len(self.y) > 1:
            e0 = Phi @ self.prior
            de, dy = e0 - e0.mean(), self.y - self.y.mean()
            denom = float(de @ de)
            self.alpha = max(float(de @ dy) / denom, 0.0) if denom > 0 else 0.0
        # the intercept absorbs the level of y: a broad prior around the data's mean
        tau_c = 10.0 * max(abs(float(self.y.mean())), spread)
        best = (-math.inf, (tau_c, spread, spread))
        for ta in _TAU_GRID:
            for tb in _TAU_GRID:
                tau = (tau_c, ta * spread, tb * spread / max(math.sqrt(self.n), 1.0))
                ll = self._log_marginal(Phi, tau)
                if ll > best[0]:
                    best = (ll, tau)
        self.tau = best[1]
        self._cache(Phi)
        return self

    def _log_marginal(self, Phi: np.ndarray, tau: tuple[float, float, float]) -> float:
        K = (Phi * self._prior_var(tau)) @ Phi.T + np.diag(self.noise)
        r = self.y - Phi @ self._prior_mean(self.alpha)
        try:
            L = np.linalg.cholesky(K)
        except np.linalg.LinAlgError:
            return -math.inf
        z = np.linalg.solve(L, r)
        return float(-0.5 * z @ z - np.log(np.diag(L)).sum() - 0.5 * len(r) * math.log(2 * math.pi))

    def _cache(self, Phi: np.ndarray) -> None:
        self._Phi = Phi
        self._var0 = self._prior_var(self.tau)
        self._mu0 = self._prior_mean(self.alpha)
        K = (Phi * self._var0) @ Phi.T + np.diag(self.noise)
        self._K_chol = np.linalg.cholesky(K)
        self._mean = self._mu0 + self._var0 * (Phi.T @ self._solve(self.y - Phi @ self._mu0))
        self._fitted = True

    def _solve(self, r: np.ndarray) -> np.ndarray:
        """K⁻¹ r through the Cholesky factor."""
        L = self._K_chol
        return np.linalg.solve(L.T, np.linalg.solve(L, r))

    # --- use --------------------------------------------------------------------------------------------------
    def _check(self) -> None:
        if not self._fitted:
            self.fit()

    @property
    def mean_weights(self) -> np.ndarray:
        """Posterior mean μ of (2)."""
        self._check()
        return self._mean

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the noise-free y at each row of X."""
        self._check()
        F = features(X)
        mean = F @ self._mean
        A = (F * self._var0) @ self._Phi.T  # F Σ₀ Φᵀ
        var = (F**2) @ self._var0 - np.einsum("ij,ji->i", A, self._solve(A.T))
        return mean, np.sqrt(np.maximum(var, 0.0))

    def sample_weights(self, rng: np.random.Generator) -> np.ndarray:
        """One exact posterior draw of w by Matheron's rule (see the module docstring)."""
        self._check()
        w0 = self._mu0 + np.sqrt(self._var0) * rng.standard_normal(self.num_features)
        eps = np.sqrt(self.noise) * rng.standard_normal(len(self.y))
        return w0 + self._var0 * (self._Phi.T @ self._solve(self.y - self._Phi @ w0 - eps))


def fit_quality(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """R² and Spearman's ρ of predictions made before the measurements (out of sample); NaN where undefined."""
    return {"r2": r_squared(predicted, measured), "spearman": spearman(predicted, measured), "n": len(measured)}


__all__ = ["PairwiseSurrogate", "features", "fit_quality", "qubo_weights", "weights_to_qubo"]
