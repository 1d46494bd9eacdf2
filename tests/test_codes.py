"""The discrete code update and the label-pattern algebra, against direct dense float64 computations."""

import itertools

import numpy as np
import pytest
import torch

from dsah.methods.code_update import SoftTargets, block_targets, code_objective, target_products, update_codes
from dsah.codes import pack_bits, unpack_bits
from dsah.training.distributed import World
from dsah.methods.dsah import IterationContext, dsah_code_update
from dsah.settings import AsymmetricConfig
from dsah.similarity import LabelPatterns


def problem(n=12, m=5, c=4, classes=3, multi=False, seed=0, graded=False):
    g = torch.Generator().manual_seed(seed)
    if multi:
        labels = (torch.rand(n, classes, generator=g) < 0.4).float()
        labels[labels.sum(1) == 0, 0] = 1
    else:
        labels = torch.nn.functional.one_hot(torch.randint(0, classes, (n,), generator=g), classes).float()
    omega = torch.randperm(n, generator=g)[:m]
    U = torch.tanh(torch.randn(m, c, generator=g) * 2)
    B = torch.where(torch.randn(n, c, generator=g) >= 0, 1.0, -1.0)
    H = torch.where(torch.randn(n, c, generator=g) >= 0, 1.0, -1.0)
    patterns = LabelPatterns.from_labels(labels)
    similar = patterns.similarity(labels[omega], graded)
    return labels, omega, U, B, H, patterns, similar


def dense_similarity(a, b, graded=False):
    """Sharing a label (1 or 0), or the cosine of the label vectors (graded), in float64."""
    inner = a.double() @ b.double().T
    if not graded:
        return (inner > 0).double()
    return inner / torch.outer(a.double().norm(dim=1), b.double().norm(dim=1))


def dense_targets(labels, omega, c, graded=False):
    """The soft targets written out on the dense similarity matrix: ADSH's (c on similar pairs, -c r on
    dissimilar ones, r = #similar / #dissimilar) where dissimilar pairs are the majority, else c / r and -c;
    graded, the same line through the cosine S: c ((s + d) S - d)."""
    S = dense_similarity(labels[omega], labels, graded)
    similar, dissimilar = float(S.sum()), float((1 - S).sum())
    if dissimilar == 0:
        return c * S
    r = similar / dissimilar
    return c * S - c * r * (1 - S) if r <= 1 else c / r * S - c * (1 - S)


@pytest.mark.parametrize("multi, graded", [(False, False), (True, False), (True, True)])
def test_block_targets_and_target_products_match_dense_targets(multi, graded):
    labels, omega, U, B, H, patterns, similar = problem(n=30, m=7, c=5, multi=multi, graded=graded)
    targets = block_targets(similar, patterns)
    T = dense_targets(labels, omega, 5, graded)
    assert float(T.sum()) == pytest.approx(0, abs=1e-4)  # rebalanced: the block's targets sum to zero
    if not graded:
        assert (targets.similar < 1) == multi  # this multi-label block has more similar pairs than dissimilar
    assert torch.allclose(target_products(similar, patterns, U, 5, targets).double(), T.T @ U.double(), atol=1e-4)


@pytest.mark.parametrize("similar, dissimilar", [(1, 9), (5, 5), (8, 2), (99, 1)])
def test_soft_targets_sum_to_zero_and_stay_reachable(similar, dissimilar):
    """ADSH's soft targets sum to zero over a block; kept so where similar pairs are the majority, where
    METHOD.md's clamp (r <= 1) would leave c (#similar - #dissimilar) pulling every image one way."""
    targets = SoftTargets.balanced(similar, dissimilar)
    assert similar * targets.similar - dissimilar * targets.dissimilar == pytest.approx(0)
    assert 0 < targets.similar <= 1 and 0 < targets.dissimilar <= 1
    assert targets.similar_share == pytest.approx(similar / (similar + dissimilar))
    if similar <= dissimilar:  # single-label data: exactly ADSH's targets, c and -c r
        assert (targets.similar, targets.dissimilar) == (1.0, pytest.approx(similar / dissimilar))


def test_graded_targets_on_one_hot_labels_are_the_binary_ones_to_the_last_bit():
    labels, omega, U, B, H, patterns, similar = problem(n=40, m=9, c=6, classes=4)
    graded = patterns.similarity(labels[omega], graded=True)
    assert torch.equal(graded, similar)
    binary_codes = update_codes(B, U, omega, similar, patterns, block_targets(similar, patterns), 200.0)
    graded_codes = update_codes(B, U, omega, graded, patterns, block_targets(graded, patterns), 200.0)
    assert torch.equal(binary_codes, graded_codes)
    # On multi-label data they differ: a pair sharing one of two labels is similar, but only 1/sqrt(2) so.
    labels = torch.tensor([[1.0, 1, 0], [1, 0, 0], [0, 0, 1]])
    patterns = LabelPatterns.from_labels(labels)
    assert patterns.similarity(labels[:1], graded=True)[0, patterns.index].tolist() == \
        pytest.approx([1.0, 2 ** -0.5, 0.0])


def test_soft_target_edge_cases():
    labels = torch.ones(4, 2)  # every pair similar: no dissimilar pair, targets c only
    patterns = LabelPatterns.from_labels(labels)
    assert block_targets(patterns.similarity(labels[:2]), patterns) == SoftTargets(1.0, 0.0, 1.0)
    labels = torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1]])  # 3 similar : 1 dissimilar
    patterns = LabelPatterns.from_labels(labels)
    assert block_targets(patterns.similarity(labels[:1]), patterns) == SoftTargets(1 / 3, 1.0, 0.75)


def brute_force_sweep(B, U, omega, T, gamma, lam, H):
    """Each bit (column) in turn: the best of all 2^n assignments of that column, others fixed."""
    B = B.double().clone()
    n, c = B.shape
    for k in range(c):
        best, best_value = None, None
        for column in itertools.product((-1.0, 1.0), repeat=n):
            candidate = B.clone()
            candidate[:, k] = torch.tensor(column, dtype=torch.float64)
            value = code_objective(candidate, U.double(), omega, T, gamma, lam, H.double())
            if best_value is None or value < best_value - 1e-9:
                best, best_value = candidate, value
        B = best
    return B


@pytest.mark.parametrize("seed, lam", [(0, 0.0), (1, 0.7), (2, 3.0)])
def test_bitwise_update_equals_exhaustive_minimization_of_each_bit(seed, lam):
    labels, omega, U, B, H, patterns, similar = problem(n=10, m=4, c=3, seed=seed)
    targets = block_targets(similar, patterns)
    T = dense_targets(labels, omega, 3)
    updated = update_codes(B, U, omega, similar, patterns, targets, gamma=2.0, lam=lam, label_codes=H)
    assert torch.equal(updated.double(), brute_force_sweep(B, U, omega, T, 2.0, lam, H))


@pytest.mark.parametrize("seed", range(6))
def test_updates_never_increase_the_objective(seed):
    graded = seed == 5  # graded targets on multi-label data
    labels, omega, U, B, H, patterns, similar = problem(n=64, m=16, c=8, classes=5, multi=seed % 2 == 1,
                                                        seed=seed, graded=graded)
    targets = block_targets(similar, patterns)
    T = dense_targets(labels, omega, 8, graded)
    values = [code_objective(B.double(), U.double(), omega, T, 200.0, 5.0, H.double())]
    for _ in range(4):
        B = update_codes(B, U, omega, similar, patterns, targets, gamma=200.0, lam=5.0, label_codes=H)
        values.append(code_objective(B.double(), U.double(), omega, T, 200.0, 5.0, H.double()))
    assert all(b <= a + 1e-6 for a, b in zip(values, values[1:]))
    assert values[-1] < values[0]
    assert set(B.unique().tolist()) <= {-1.0, 1.0}


def adsh_textbook_update(B, U, omega, T, gamma, c):
    """ADSH's published update, written out with dense targets T (the naive version)."""
    U_bar = torch.zeros_like(B)
    U_bar[omega] = U
    Q = -2 * T.T @ U - 2 * gamma * U_bar
    B = B.clone()
    for k in range(c):
        rest = [j for j in range(c) if j != k]
        field = 2 * B[:, rest] @ U[:, rest].T @ U[:, k] + Q[:, k]
        B[:, k] = torch.where(field > 0, -1.0, torch.where(field < 0, 1.0, B[:, k]))
    return B


def test_without_the_label_term_the_update_is_adshs():
    labels, omega, U, B, H, patterns, similar = problem(n=40, m=10, c=6, classes=4, multi=True)
    expected = adsh_textbook_update(B.double(), U.double(), omega, dense_targets(labels, omega, 6), 200.0, 6)
    targets = block_targets(similar, patterns)
    assert torch.equal(update_codes(B, U, omega, similar, patterns, targets, gamma=200.0, lam=0.0).double(), expected)


@pytest.mark.parametrize("multi", [False, True])
def test_from_zero_codes_the_first_update_is_adshs_and_decides_every_bit(multi):
    """ADSH's reference code starts B at zeros: the first update is driven by the outputs and the targets
    alone, and leaves every bit at -1 or +1 (a field of exactly 0 gives +1: METHOD.md's sign rule)."""
    labels, omega, U, B, H, patterns, similar = problem(n=40, m=10, c=6, classes=4, multi=multi)
    zeros = torch.zeros_like(B)
    targets = block_targets(similar, patterns)
    expected = adsh_textbook_update(zeros.double(), U.double(), omega, dense_targets(labels, omega, 6), 200.0, 6)
    assert (expected != 0).all()  # generic outputs: no field is exactly 0, so the textbook decides every bit
    first = update_codes(zeros, U, omega, similar, patterns, targets, gamma=200.0, lam=0.0)
    assert torch.equal(first.double(), expected)
    # Outputs of exactly 0 leave every field 0: zero bits take +1, bits already set keep their value.
    still = update_codes(zeros, torch.zeros_like(U), omega, similar, patterns, targets, gamma=200.0, lam=0.0)
    assert torch.equal(still, torch.ones_like(B))
    assert torch.equal(update_codes(B, torch.zeros_like(U), omega, similar, patterns, targets, 200.0, 0.0), B)


@pytest.mark.parametrize("shares", [1, 2, 3, 7])
def test_row_shares_of_the_update_together_are_exactly_the_whole_update(shares):
    """What each data-parallel process computes (its rows) joins into the one-process result, bit for bit."""
    labels, omega, U, B, H, patterns, similar = problem(n=200, m=40, c=10, classes=5, multi=True, seed=4)
    targets = block_targets(similar, patterns)
    V = torch.tanh(torch.randn(40, 10, generator=torch.Generator().manual_seed(9)))
    options = dict(gamma=3.0, lam=0.7, label_codes=H, sweeps=2, anchor=V)
    whole = update_codes(B, U, omega, similar, patterns, targets, **options)
    joined = B.clone()
    for rank in range(shares):
        start, stop = World(rank, shares).share(len(B))
        part = update_codes(B, U, omega, similar, patterns, targets, rows=(start, stop), **options)
        assert torch.equal(part[:start], B[:start]) and torch.equal(part[stop:], B[stop:])  # others untouched
        joined[start:stop] = part[start:stop]
    assert torch.equal(joined, whole) and not torch.equal(whole, B)


def test_pack_and_unpack_round_trip():
    codes = np.where(np.random.default_rng(0).random((5, 12)) > 0.5, 1, -1)
    packed = pack_bits(codes)
    assert packed.shape == (5, 2) and packed.dtype == np.uint8
    assert np.array_equal(unpack_bits(packed, 12), codes)


@pytest.mark.parametrize("bits", [12, 48])
def test_the_label_pull_pins_the_codes_to_the_label_codes_from_lam_0_3(bits):
    """Why the sweep's lam values lie below 0.3: from there on (as the method scales it, lam * m * c) the
    update returns H itself, whatever the network says; below it the pairwise term still moves bits."""
    g = torch.Generator().manual_seed(1)
    n, m, classes = 5000, 1000, 10
    y = torch.randint(0, classes, (n,), generator=g)
    labels = torch.nn.functional.one_hot(y, classes).float()
    patterns = LabelPatterns.from_labels(labels)
    H = torch.where(torch.randn(classes, bits, generator=g) > 0, 1.0, -1.0)[y]
    learned = torch.where(torch.randn(classes, bits, generator=g) > 0, 1.0, -1.0)  # other class codes
    omega = torch.randperm(n, generator=g)[:m]
    U = torch.tanh(2 * learned[y[omega]] + torch.randn(m, bits, generator=g))
    ctx = IterationContext.build(H, patterns, patterns.similarity(labels[omega]))

    def share_of_label_bits(lam):  # through DSAH's own code update, so its lam scaling is the one tested
        config = AsymmetricConfig(gamma=200.0, eta=0.0, mu=0.0, lam=lam, init="label_codes", sweeps=1, targets="binary")
        B = dsah_code_update(H, U, omega, patterns, ctx, H, config)
        return float((B == H).float().mean())

    assert share_of_label_bits(0.3) == share_of_label_bits(1.0) == 1.0
    assert share_of_label_bits(0.01) < 0.7 < share_of_label_bits(0.1) < 1.0
