"""Independent numpy/scipy reference for FID, KID and precision/recall (seed §2, contribution 4; test oracle).

These are written from the papers, not from torch-fidelity's code, and exist to check that the numbers the
benchmark reports through torch-fidelity are the published metrics on our features:

- FID (Heusel et al. 2017): ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}); the matrix square root is
  scipy's Schur-based ``sqrtm`` (torch-fidelity instead sums the square roots of the eigenvalues of S_a S_b).
- KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,
  averaged over random subsets. ``subset_size=None`` gives the single full-set estimate (sets may differ in
  size).
- Precision/recall (Kynkaanniemi et al. 2019): a sample is inside a manifold if it lies within the k-NN radius
  of some sample of the other set.

Exact agreement with torch-fidelity (1e-6 relative, see tests/test_fidelity.py) holds because
(1) our feature extractor hands torch-fidelity float64 features, so its covariance, kernel and MMD sums run in
    float64 like the code here (with float32 features KID, a difference of O(1) kernel means, would lose ~1e-4
    relative to cancellation and no tolerance of 1e-6 could be justified);
(2) for KID with subsets we draw the subsets the way torch-fidelity 0.4.0 does (metric_kid.py): one
    ``np.random.RandomState(seed)``, and per subset ``choice(n_a, m, replace=False)`` for the first input then
    ``choice(n_b, m, replace=False)`` for the second, the first input being the generated set. With one subset
    of size m = n_a = n_b the draw is a permutation and the unbiased estimate is permutation invariant, so it
    equals the full-set estimate here without any shared RNG;
(3) what remains is summation order and sqrtm vs eigenvalues, both ~1e-12 relative in float64 on
    well-conditioned 64x64 covariances.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.spatial.distance import cdist

__all__ = ["frechet_distance", "polynomial_mmd2_unbiased", "kid", "precision_recall"]


def _as_2d_float64(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {x.shape}")
    return x


def frechet_distance(feat_a_ND, feat_b_ND) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (unbiased covariance, ddof=1)."""
    a, b = _as_2d_float64(feat_a_ND, "feat_a"), _as_2d_float64(feat_b_ND, "feat_b")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    ca, cb = a - mu_a, b - mu_b
    sigma_a = ca.T @ ca / (len(a) - 1)  # (D, D)
    sigma_b = cb.T @ cb / (len(b) - 1)
    covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    covmean = np.real(covmean)  # imaginary parts are round-off for PSD inputs
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * np.trace(covmean))


def _poly_kernel(x: np.ndarray, y: np.ndarray, degree: int, gamma: float | None, coef0: float) -> np.ndarray:
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def polynomial_mmd2_unbiased(
    x_MD, y_ND, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> float:
    """Unbiased MMD^2: mean_{i!=j} k(x_i, x_j) + mean_{i!=j} k(y_i, y_j) - 2 mean_{i,j} k(x_i, y_j)."""
    x, y = _as_2d_float64(x_MD, "x"), _as_2d_float64(y_ND, "y")
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError("the unbiased MMD needs at least 2 samples per set")
    k_xx = _poly_kernel(x, x, degree, gamma, coef0)
    k_yy = _poly_kernel(y, y, degree, gamma, coef0)
    k_xy = _poly_kernel(x, y, degree, gamma, coef0)
    off_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    off_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(off_xx + off_yy - 2.0 * k_xy.mean())


def kid(
    feat_fake_ND,
    feat_real_ND,
    subsets: int = 100,
    subset_size: int | None = 1000,
    seed: int = 2020,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> tuple[float, float]:
    """(mean, std over subsets, ddof=0) of the unbiased polynomial MMD^2; ``subset_size=None``: full sets, std
    0.

    The first argument is the generated set: the subset draws are taken from it first (see the module note).
    """
    fake, real = _as_2d_float64(feat_fake_ND, "feat_fake"), _as_2d_float64(feat_real_ND, "feat_real")
    if subset_size is None:
        return polynomial_mmd2_unbiased(fake, real, degree, gamma, coef0), 0.0
    if subset_size > min(len(fake), len(real)):
        raise ValueError(f"subset_size {subset_size} exceeds the set sizes {len(fake)}, {len(real)}")
    rng = np.random.RandomState(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        idx_fake = rng.choice(len(fake), subset_size, replace=False)
        idx_real = rng.choice(len(real), subset_size, replace=False)
        values[i] = polynomial_mmd2_unbiased(fake[idx_fake], real[idx_real], degree, gamma, coef0)
    return float(values.mean()), float(values.std())


def precision_recall(feat_fake_ND, feat_real_ND, k: int = 3) -> tuple[float, float]:
    """Improved precision (fakes inside the real manifold) and recall (reals inside the fake manifold).

    A set's manifold is the union of balls around its samples with radius the distance to the k-th nearest
    other sample of the same set; boundary points count as inside.
    """
    fake, real = _as_2d_float64(feat_fake_ND, "feat_fake"), _as_2d_float64(feat_real_ND, "feat_real")

    def knn_radius(x: np.ndarray) -> np.ndarray:
        d = cdist(x, x)
        return np.sort(d, axis=1)[:, k]  # column 0 is the sample itself

    r_fake, r_real = knn_radius(fake), knn_radius(real)
    d_fake_real = cdist(fake, real)  # (N_fake, N_real)
    precision = np.mean((d_fake_real <= r_real[None, :]).any(axis=1))
    recall = np.mean((d_fake_real.T <= r_fake[None, :]).any(axis=1))
    return float(precision), float(recall)
