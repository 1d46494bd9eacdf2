"""Each loss term against a direct float64 computation of METHOD.md's formulas."""

import pytest
import torch
import torch.nn.functional as F
from fixtures import lae_config, method_config

from dsah.similarity import LabelPatterns
from dsah.training.lae import frequency_weighted_targets, lae_terms, train_lae
from dsah.methods.dsah import IterationContext, dsah_terms
from dsah.nets.lae import LabelAutoEncoder


def setup(multi, n=50, m=12, c=6, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    if multi:
        labels = (torch.rand(n, classes, generator=g) < 0.35).float()
        labels[labels.sum(1) == 0, 1] = 1
    else:
        labels = F.one_hot(torch.randint(0, classes, (n,), generator=g), classes).float()
    B = torch.where(torch.randn(n, c, generator=g) >= 0, 1.0, -1.0)
    H = torch.where(torch.randn(n, c, generator=g) >= 0, 1.0, -1.0)
    omega = torch.randperm(n, generator=g)[:m]
    positions = torch.tensor([0, 3, 4, 7, 11])
    u = torch.tanh(torch.randn(len(positions), c, generator=g, dtype=torch.float64))
    return labels, B, H, omega, positions, u


@pytest.mark.parametrize("multi, graded", [(False, False), (True, False), (True, True)])
def test_dsah_terms_match_direct_float64(multi, graded):
    labels, B, H, omega, positions, u = setup(multi)
    n, c = B.shape
    torch.manual_seed(0)
    decoder = torch.nn.Linear(c, labels.shape[1]).double()
    patterns = LabelPatterns.from_labels(labels)
    ctx = IterationContext.build(B, patterns, patterns.similarity(labels[omega], graded))
    config = method_config("dsah", gamma=200.0, eta=0.7, mu=0.3, targets="graded" if graded else "binary")
    rows = omega[positions]
    terms = dsah_terms(u, positions, B[rows], labels[rows], H[rows], lambda x: decoder(x.double()), ctx,
                             config)
    # Direct: the dense m x n targets of the sampled block, float64, per METHOD.md §2.
    inner = labels[omega].double() @ labels.double().T
    S = inner / torch.outer(labels[omega].double().norm(dim=1), labels.double().norm(dim=1)) if graded else \
        (inner > 0).double()  # graded: the label cosine
    r = float(S.sum() / (1 - S).sum())  # soft targets summing to zero (dsah.methods.code_update.SoftTargets)
    T = c * S - c * r * (1 - S) if r <= 1 else c / r * S - c * (1 - S)
    Bd, Hd = B.double(), H.double()
    b = len(positions)
    expected = {
        "pairwise": ((u @ Bd.T - T[positions]) ** 2).sum() / (b * n),
        "quantization": 200.0 * ((Bd[rows] - u) ** 2).sum() / (b * n),
        "semantic": 0.7 * ((u - Hd[rows]) ** 2).sum() / (b * c),
        "decoder": 0.3 * F.binary_cross_entropy_with_logits(decoder(u), labels[rows].double()),
    }
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value.item(), rel=1e-5), name


def test_adsh_is_dsah_without_semantic_terms():
    adsh = method_config("adsh", gamma=123.0, sweeps=2).asymmetric()
    assert (adsh.eta, adsh.mu, adsh.lam, adsh.init, adsh.gamma, adsh.sweeps) == (0.0, 0.0, 0.0, "zeros", 123.0, 2)
    assert method_config("adsh", init="random").asymmetric().init == "random"  # the former start, an option
    labels, B, H, omega, positions, u = setup(True)
    patterns = LabelPatterns.from_labels(labels)
    ctx = IterationContext.build(B, patterns, patterns.similarity(labels[omega]))
    rows = omega[positions]
    terms = dsah_terms(u, positions, B[rows], labels[rows], None, None, ctx, adsh)
    assert set(terms) == {"pairwise", "quantization"}  # exactly ADSH's objective


@pytest.mark.parametrize("graded", [False, True])
def test_lae_terms_match_direct_float64(graded):
    torch.manual_seed(0)
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    counts = torch.tensor([5.0, 3.0, 1.0, 1.0])
    weights = counts / counts.sum()
    model = LabelAutoEncoder(3, 4, hidden=8).double()
    patterns = LabelPatterns(labels, torch.arange(4), counts)
    targets = frequency_weighted_targets(patterns, graded)
    # Expand to one row per database item: the weighted terms must equal plain per-sample averages.
    items = labels.repeat_interleave(counts.long(), dim=0).double()
    n, c = len(items), 4
    S = (items @ items.T > 0).double()
    if graded:  # the cosine: the pair {0, 1} and {0} shares one of two labels
        S = items @ items.T / torch.outer(items.norm(dim=1), items.norm(dim=1))
    r = float(S.sum() / (1 - S).sum())  # binary: 52 similar pairs to 48, the similar target lowered to c / r
    if r > 1:
        assert (targets.similar, targets.dissimilar) == (pytest.approx(1 / r), 1.0)
    else:
        assert (targets.similar, targets.dissimilar) == (1.0, pytest.approx(r))
    terms = lae_terms(model, labels.double(), weights.double(), targets, graded)
    h, logits = model(items)
    T = c / r * S - c * (1 - S) if r > 1 else c * S - c * r * (1 - S)
    x = h - h.mean(0)
    cov = x.T @ x / n
    corr = cov / torch.outer(cov.diagonal().sqrt(), cov.diagonal().sqrt())
    expected = {
        "reconstruction": F.binary_cross_entropy_with_logits(logits, items),
        "pairwise": ((h @ h.T - T) ** 2).mean() / c**2,
        "quantization": ((h - torch.sign(h)) ** 2).sum(1).mean() / c,
        "balance": (h.mean(0) ** 2).sum() / c,
        "decorrelation": ((corr - torch.diag(corr.diagonal())) ** 2).sum() / (c * (c - 1)),
    }
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value.item(), rel=1e-6), name


def test_graded_lae_on_one_hot_labels_is_the_binary_one_to_the_last_bit():
    labels = F.one_hot(torch.arange(10).repeat(30), 10).numpy()
    binary = train_lae(labels, 12, lae_config(steps=60), seed=0, progress=False)
    graded = train_lae(labels, 12, lae_config(steps=60), seed=0, progress=False, targets="graded")
    assert (binary.label_codes == graded.label_codes).all() and binary.history == graded.history


def test_lae_gives_each_class_its_own_code():
    labels = F.one_hot(torch.arange(10).repeat(30), 10).numpy()
    result = train_lae(labels, 12, lae_config(steps=400), seed=0, progress=False)
    assert result.metrics["distinct_codes"] == 10 and result.metrics["reconstruction_exact"] == 1.0
    assert result.label_codes.shape == (300, 12)
    # Codes of different classes are far apart in Hamming distance.
    per_class = result.label_codes[:10].astype(int)
    distances = (12 - per_class @ per_class.T) / 2
    assert distances[~torch.eye(10, dtype=bool).numpy()].min() >= 3


def shares_at_initialisation(multi: bool, bits: int, eta: float = 0.5, mu: float = 0.25, n: int = 3000,
                             classes: int = 10, seed: int = 0) -> dict[str, float]:
    """||grad_u weighted term|| / ||grad_u pairwise|| / its weight on a batch of a freshly built network
    (not the batch the scales were measured on), DSAH started from the label codes of an LAE trained on
    the labels, with its decoder."""
    from dsah.methods import build_network, deep_method
    from dsah.nets.spec import NetworkSpec
    from dsah.methods.base import Batch, Resources

    g = torch.Generator().manual_seed(seed)
    if multi:  # about 3 labels an image, as on the mosaic stand-in and COCO
        labels = (torch.rand(n, classes, generator=g) < 0.3).float()
        labels[labels.sum(1) == 0, 0] = 1
    else:
        labels = F.one_hot(torch.randint(0, classes, (n,), generator=g), classes).float()
    patterns = LabelPatterns.from_labels(labels)
    lae = train_lae(labels.numpy(), bits, lae_config(steps=300), seed, progress=False)
    method = deep_method("dsah", method_config("dsah", eta=eta, mu=mu, init="label_codes"), bits)
    method.bind(Resources(labels, patterns, torch.as_tensor(lae.label_codes, dtype=torch.float32),
                          lae.model.decoder.eval().requires_grad_(False)))
    B = method.initial_codes(n, g)
    omega = torch.randperm(n, generator=g)[:1000]
    state = method.begin_iteration(B, omega)
    network = build_network(method, NetworkSpec("cifar_resnet", 8, "", 0, False), bits)

    def batch(positions):
        rows = omega[positions]
        return network(torch.rand(64, 3, 32, 32, generator=g)), Batch(rows, positions, labels[rows], B[rows])

    method.terms(*batch(torch.arange(64)), state)  # the first batch trained: the scales are measured on it
    u, other = batch(torch.arange(64, 128))  # shares measured on another batch
    terms = method.terms(u, other, state)
    norm = {k: torch.autograd.grad(v, u, retain_graph=True)[0].norm().item() for k, v in terms.items()}
    return {"semantic": norm["semantic"] / norm["pairwise"] / eta, "decoder": norm["decoder"] / norm["pairwise"] / mu,
            **method.summary()}


@pytest.mark.parametrize("multi", [False, True], ids=["one-hot", "multi-hot"])
@pytest.mark.parametrize("bits", [12, 48])
def test_eta_and_mu_are_shares_of_the_pairwise_gradient_at_every_length(multi, bits):
    """At initialisation, eta (mu) is the semantic (decoder) term's share of the pairwise term's gradient
    with respect to the network outputs, within 10% (the scales are measured on the first batch; the shares
    here on another), whatever the code length and the labels."""
    shares = shares_at_initialisation(multi, bits)
    assert shares["semantic"] == pytest.approx(1.0, rel=0.1), shares
    assert shares["decoder"] == pytest.approx(1.0, rel=0.1), shares


def test_without_the_scales_the_semantic_weights_would_fade_at_long_codes_and_on_multi_label_data():
    one_hot_12, one_hot_48 = shares_at_initialisation(False, 12), shares_at_initialisation(False, 48)
    multi_12 = shares_at_initialisation(True, 12)
    # The scale is what an unscaled eta is divided by: it grows with the code length and the similar pairs
    # (on multi-hot labels by less than it would without soft targets that sum to zero: dsah.methods.code_update.SoftTargets).
    assert one_hot_48["semantic_scale"] > 3 * one_hot_12["semantic_scale"]
    assert multi_12["semantic_scale"] > 1.3 * one_hot_12["semantic_scale"]
    assert one_hot_48["decoder_scale"] > 3 * one_hot_12["decoder_scale"]
