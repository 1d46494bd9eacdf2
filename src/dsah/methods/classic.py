"""Classic hashing methods on fixed features (the paper's ITQ, SDH, KSH), in numpy.

Each learns a projection from training features (and labels, for the supervised ones) and encodes any
feature vector; none has a training loop of its own beyond its closed-form or alternating steps.
References: Gong & Lazebnik, "Iterative Quantization" (CVPR 2011); Shen et al., "Supervised Discrete
Hashing" (CVPR 2015); Liu et al., "Supervised Hashing with Kernels" (CVPR 2012).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dsah.similarity import share_a_label


def sign(x: np.ndarray) -> np.ndarray:
    """sign with sign(0) = +1, as everywhere in this project."""
    return np.where(x >= 0, 1.0, -1.0)


# ITQ ------------------------------------------------------------------------------------------------
@dataclass
class ITQ:
    """PCA to c dimensions, then the orthogonal rotation R minimizing ||B - V R||^2, B = sign(V R)."""

    bits: int
    iterations: int
    seed: int
    mean: np.ndarray | None = None
    projection: np.ndarray | None = None  # (d, c) PCA directions
    rotation: np.ndarray | None = None    # (c, c) orthogonal
    losses: list[float] = field(default_factory=list)

    def fit(self, features: np.ndarray) -> ITQ:
        x = np.asarray(features, dtype=np.float64)
        self.mean = x.mean(axis=0)
        x = x - self.mean
        _, vectors = np.linalg.eigh(x.T @ x)
        self.projection = vectors[:, ::-1][:, :self.bits]
        v = x @ self.projection
        rng = np.random.default_rng(self.seed)
        self.rotation, _ = np.linalg.qr(rng.standard_normal((self.bits, self.bits)))
        self.losses = []
        for _ in range(self.iterations):
            b = sign(v @ self.rotation)
            self.losses.append(float(((b - v @ self.rotation) ** 2).sum()))
            # Orthogonal Procrustes: R = argmax tr(R^T V^T B) over orthogonal R.
            u, _, wt = np.linalg.svd(v.T @ b)
            self.rotation = u @ wt
        self.losses.append(float(((sign(v @ self.rotation) - v @ self.rotation) ** 2).sum()))
        return self

    def encode(self, features: np.ndarray) -> np.ndarray:
        return sign((np.asarray(features, dtype=np.float64) - self.mean) @ self.projection @ self.rotation)


# Kernel features shared by SDH and KSH ----------------------------------------------------------------
def squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum((x**2).sum(1)[:, None] + (y**2).sum(1)[None, :] - 2 * x @ y.T, 0)


@dataclass
class KernelMap:
    """Centred RBF features exp(-||x - a||^2 / (2 sigma^2)) over anchors sampled from the training set;
    sigma is the anchors' mean distance to the data."""

    anchors: np.ndarray
    sigma: float
    mean: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, count: int, seed: int) -> tuple[KernelMap, np.ndarray]:
        """The map, and the training set's features under it."""
        rng = np.random.default_rng(seed)
        anchors = x[rng.choice(len(x), size=min(count, len(x)), replace=False)]
        sample = x[rng.choice(len(x), size=min(len(x), 2000), replace=False)]
        sigma = float(np.sqrt(squared_distances(sample, anchors)).mean())
        raw = np.exp(-squared_distances(x, anchors) / (2 * sigma**2))
        mean = raw.mean(axis=0)
        return cls(anchors, sigma, mean), raw - mean

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.exp(-squared_distances(x, self.anchors) / (2 * self.sigma**2)) - self.mean


# SDH ------------------------------------------------------------------------------------------------
@dataclass
class SDH:
    """min ||Y - B W||^2 + lam ||W||^2 + nu ||B - phi(X) P||^2 over B in {-1,1}^(n x c), W, P:
    ridge steps for W and P, discrete cyclic coordinate descent (bit by bit) for B."""

    bits: int
    anchors: int
    lam: float
    nu: float
    outer: int
    bit_sweeps: int
    seed: int
    kernel: KernelMap | None = None
    P: np.ndarray | None = None
    objectives: list[float] = field(default_factory=list)

    def objective(self, B, W, phi, P, Y) -> float:
        return float(((Y - B @ W) ** 2).sum() + self.lam * (W**2).sum() + self.nu * ((B - phi @ P) ** 2).sum())

    def fit(self, features: np.ndarray, labels: np.ndarray) -> SDH:
        x, Y = np.asarray(features, dtype=np.float64), np.asarray(labels, dtype=np.float64)
        self.kernel, phi = KernelMap.fit(x, self.anchors, self.seed)
        rng = np.random.default_rng(self.seed)
        # A random code per class to start from: random codes per point trap the bit-wise steps in
        # minima that split classes over several codes.
        B = sign(Y @ rng.standard_normal((Y.shape[1], self.bits)) + 1e-3 * rng.standard_normal((len(x), self.bits)))
        ridge = np.linalg.solve(phi.T @ phi + 1e-3 * np.eye(phi.shape[1]), phi.T)
        self.objectives = []
        for _ in range(self.outer):
            P = ridge @ B
            W = np.linalg.solve(B.T @ B + self.lam * np.eye(self.bits), B.T @ Y)
            before = self.objective(B, W, phi, P, Y)
            B = self.discrete_step(B, W, phi @ P, Y)
            self.objectives.append((before, self.objective(B, W, phi, P, Y)))
        self.P = ridge @ B
        return self

    def discrete_step(self, B: np.ndarray, W: np.ndarray, F: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Minimize over B with W, F fixed: ||Y - BW||^2 + nu ||B - F||^2 = const - 2 tr(B^T Q) + ||BW||^2,
        Q = Y W^T + nu F; column k in closed form: B_k = sign(Q_k - B_rest W_rest W_k^T)."""
        B = B.copy()
        Q = Y @ W.T + self.nu * F
        for _ in range(self.bit_sweeps):
            for k in range(self.bits):
                rest = [j for j in range(self.bits) if j != k]
                field_k = Q[:, k] - B[:, rest] @ (W[rest] @ W[k])
                B[:, k] = np.where(field_k > 0, 1.0, np.where(field_k < 0, -1.0, B[:, k]))
        return B

    def encode(self, features: np.ndarray) -> np.ndarray:
        return sign(self.kernel(features) @ self.P)


# KSH ------------------------------------------------------------------------------------------------
@dataclass
class KSH:
    """Codes h_k(x) = sign(a_k^T kbar(x)) fitted bit by bit so that code inner products match c S
    (S = +1 similar, -1 dissimilar) on a labelled sample: spectral start, then gradient descent on a
    sigmoid-smoothed sign, as in the paper. Quadratic in the sample: use a few thousand points."""

    bits: int
    anchors: int
    sample: int
    steps: int
    lr: float
    seed: int
    kernel: KernelMap | None = None
    A: np.ndarray | None = None
    residuals: list[float] = field(default_factory=list)  # ||c S - H H^T||^2 after each bit

    def fit(self, features: np.ndarray, labels: np.ndarray) -> KSH:
        rng = np.random.default_rng(self.seed)
        x, y = np.asarray(features, dtype=np.float64), np.asarray(labels, dtype=np.float64)
        pick = rng.choice(len(x), size=min(self.sample, len(x)), replace=False)
        x, y = x[pick], y[pick]
        self.kernel, K = KernelMap.fit(x, self.anchors, self.seed)
        S = np.where(share_a_label(y, y), 1.0, -1.0)
        residual = self.bits * S
        self.residuals = []
        gram = K.T @ K + 1e-6 * np.eye(K.shape[1])
        columns = []
        for _ in range(self.bits):
            # Spectral start: max a^T K^T R K a subject to a^T K^T K a = 1 (generalized eigenproblem).
            L = np.linalg.cholesky(gram)
            M = np.linalg.solve(L, np.linalg.solve(L, (K.T @ residual @ K).T).T)
            _, vectors = np.linalg.eigh((M + M.T) / 2)
            a = np.linalg.solve(L.T, vectors[:, -1])
            a = self._refine(a, K, residual)
            h = sign(K @ a)
            residual = residual - np.outer(h, h)
            self.residuals.append(float((residual**2).sum()))
            columns.append(a)
        self.A = np.stack(columns, axis=1)
        return self

    def _refine(self, a: np.ndarray, K: np.ndarray, residual: np.ndarray) -> np.ndarray:
        """Gradient ascent on phi(Ka)^T R phi(Ka), phi(t) = 2 / (1 + e^-t) - 1 (a smooth sign)."""
        best, best_value = a, float(sign(K @ a) @ residual @ sign(K @ a))
        scale = 1.0 / max(np.abs(K @ a).mean(), 1e-12)
        a = a * scale
        for _ in range(self.steps):
            t = K @ a
            phi = 2 / (1 + np.exp(-t)) - 1
            grad = K.T @ ((residual @ phi) * (1 - phi**2))
            a = a + self.lr * grad / max(np.linalg.norm(grad), 1e-12) * np.linalg.norm(a)
            h = sign(K @ a)
            value = float(h @ residual @ h)
            if value > best_value:
                best, best_value = a.copy(), value
        return best

    def encode(self, features: np.ndarray) -> np.ndarray:
        return sign(self.kernel(features) @ self.A)


# What every classic method learns: sign(phi(x) W) ----------------------------------------------------
@dataclass
class HashFunction:
    """phi is centring (ITQ) or the centred kernel map (SDH, KSH); W projects to c bits."""

    W: np.ndarray
    center: np.ndarray | None = None
    kernel: KernelMap | None = None

    def encode(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        phi = self.kernel(x) if self.kernel is not None else x - self.center
        return sign(phi @ self.W).astype(np.int8)

    def state(self) -> dict[str, Any]:
        """Tensors only, so torch.load(weights_only=True) reads it back."""
        def t(a):
            return torch.from_numpy(np.asarray(a, dtype=np.float64))
        state: dict[str, Any] = {"W": t(self.W)}
        if self.center is not None:
            state["center"] = t(self.center)
        if self.kernel is not None:
            state["kernel"] = {"anchors": t(self.kernel.anchors), "sigma": self.kernel.sigma, "mean": t(self.kernel.mean)}
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> HashFunction:
        kernel = state.get("kernel")
        return cls(W=state["W"].numpy(), center=state["center"].numpy() if "center" in state else None,
                   kernel=KernelMap(kernel["anchors"].numpy(), float(kernel["sigma"]), kernel["mean"].numpy())
                   if kernel is not None else None)


# params.yaml's methods.<name> sections (values and their reasons live there only).


def fit_classic(method: str, settings: Any, bits: int, features: np.ndarray, labels: np.ndarray,
                seed: int) -> tuple[HashFunction, list[dict[str, float]]]:
    """Fit one classic method on (features, labels); -> its hash function and a per-step objective log."""
    if method == "itq":
        itq = ITQ(bits, settings.iterations, seed).fit(features)
        return (HashFunction(itq.projection @ itq.rotation, center=itq.mean),
                [{"iteration": k + 1, "loss": v} for k, v in enumerate(itq.losses)])
    if method == "sdh":
        sdh = SDH(bits, settings.anchors, settings.lam, settings.nu, settings.outer, settings.bit_sweeps,
                  seed).fit(features, labels)
        return (HashFunction(sdh.P, kernel=sdh.kernel),
                [{"iteration": k + 1, "loss": after} for k, (_, after) in enumerate(sdh.objectives)])
    if method == "ksh":
        ksh = KSH(bits, settings.anchors, len(features), settings.steps, settings.lr, seed).fit(features, labels)
        return (HashFunction(ksh.A, kernel=ksh.kernel),
                [{"iteration": k + 1, "loss": v} for k, v in enumerate(ksh.residuals)])
    raise ValueError(f"not a classic method: {method!r}")


@dataclass
class ClassicResult:
    hash_function: HashFunction
    codes: np.ndarray                   # (n, c) int8 database codes, database row order
    history: list[dict[str, float]]
    metrics: dict[str, Any]


def train_classic(method: str, settings: Any, bits: int, features: np.ndarray, labels: np.ndarray,
                  pool: np.ndarray, validation: np.ndarray, seed: int, features_name: str,
                  selection: str = "mAP") -> ClassicResult:
    """Fit on a seeded sample of the pool (the whole pool when train_size is 0, or is more than the pool
    holds: an upper bound, as train_imgnet.samples is), encode the database, and score the validation
    slice against the rest, as the deep methods are scored."""
    import time

    from dsah.evaluation.metrics import validation_scores

    size = min(settings.train_size or len(pool), len(pool))
    if size < (settings.train_size or 0):
        print(f"methods.{method}.train_size: {settings.train_size} > {len(pool)} trainable database images: "
              f"fitting on all {len(pool)}")
    rows = np.sort(np.random.default_rng(seed).choice(pool, size=size, replace=False))
    start = time.perf_counter()
    function, history = fit_classic(method, settings, bits, features[rows], labels[rows], seed)
    seconds = time.perf_counter() - start
    codes = function.encode(features)
    scores = validation_scores(codes[validation], codes[pool], labels[validation], labels[pool], selection)
    history[-1].update(scores)
    for row in history:
        row["train_seconds"] = seconds
    metrics = {**scores, "val_metric": selection, "val_score": scores[f"val_{selection}"], "train_seconds": seconds,
               "device": "cpu", "bits": bits, "method": method,
               "features": features_name, "train_size": int(size)}
    return ClassicResult(function, codes, history, metrics)
