"""The classic methods on tiny data: the properties their papers prove or claim."""

import numpy as np
import pytest

from dsah.methods.classic import ITQ, KSH, SDH, sign


# The algorithms' own knobs, stated here (params.yaml sets them for the pipeline).
def make_itq(**knobs):
    return ITQ(**{"bits": 8, "iterations": 50, "seed": 0, **knobs})


def make_sdh(**knobs):
    return SDH(**{"bits": 8, "anchors": 300, "lam": 1.0, "nu": 1e-5, "outer": 5, "bit_sweeps": 3, "seed": 0, **knobs})


def make_ksh(**knobs):
    return KSH(**{"bits": 8, "anchors": 300, "sample": 2000, "steps": 100, "lr": 0.1, "seed": 0, **knobs})


def clusters(n=300, d=20, classes=4, seed=0, spread=0.6):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d)) * 2
    y = rng.integers(0, classes, n)
    return centres[y] + spread * rng.standard_normal((n, d)), np.eye(classes)[y]


def test_itq_rotation_stays_orthogonal_and_its_loss_never_increases():
    x, _ = clusters()
    itq = make_itq(iterations=30).fit(x)
    assert np.allclose(itq.rotation @ itq.rotation.T, np.eye(8), atol=1e-10)
    assert all(b <= a + 1e-9 for a, b in zip(itq.losses, itq.losses[1:]))
    assert itq.losses[-1] < itq.losses[0]
    codes = itq.encode(x)
    assert codes.shape == (300, 8) and set(np.unique(codes)) == {-1.0, 1.0}


def test_sdh_discrete_step_never_increases_its_objective():
    x, y = clusters()
    sdh = make_sdh(anchors=50, outer=4).fit(x, y)
    assert sdh.objectives and all(after <= before + 1e-9 for before, after in sdh.objectives)
    codes = sdh.encode(x)
    # Supervised codes: same-class points agree on far more bits than different-class points.
    same = (y @ y.T) > 0
    agreement = codes @ codes.T / 8
    assert agreement[same].mean() > agreement[~same].mean() + 0.5


def test_ksh_fits_the_target_similarity_far_better_than_random_codes():
    x, y = clusters(n=200, seed=1)
    ksh = make_ksh(anchors=40, sample=200, steps=50).fit(x, y)
    S = np.where(y @ y.T > 0, 1.0, -1.0)
    fitted = ksh.encode(x)
    random = sign(np.random.default_rng(0).standard_normal(fitted.shape))
    error = ((fitted @ fitted.T - 8 * S) ** 2).mean()
    baseline = ((random @ random.T - 8 * S) ** 2).mean()
    assert error < 0.5 * baseline


@pytest.mark.parametrize("method", [make_itq(bits=6), make_sdh(bits=6, anchors=30),
                                    make_ksh(bits=6, anchors=30, sample=150)])
def test_codes_of_unseen_points_follow_their_cluster(method):
    x, y = clusters(n=240, seed=2, spread=0.3)
    train, test = slice(0, 200), slice(200, 240)
    fitted = method.fit(x[train]) if isinstance(method, ITQ) else method.fit(x[train], y[train])
    db, q = fitted.encode(x[train]), fitted.encode(x[test])
    nearest = np.argmax(q @ db.T, axis=1)
    accuracy = (y[train][nearest].argmax(1) == y[test].argmax(1)).mean()
    assert accuracy > 0.8


@pytest.mark.parametrize("seed", range(4))
def test_sdh_discrete_step_from_random_codes_strictly_improves(seed):
    rng = np.random.default_rng(seed)
    sdh = make_sdh(bits=6, nu=0.5)
    Y = np.eye(3)[rng.integers(0, 3, 80)]
    phi, P = rng.standard_normal((80, 10)), rng.standard_normal((10, 6))
    B = sign(rng.standard_normal((80, 6)))
    W = rng.standard_normal((6, 3))
    after = sdh.discrete_step(B, W, phi @ P, Y)
    assert sdh.objective(after, W, phi, P, Y) < sdh.objective(B, W, phi, P, Y)
    # Each bit is optimal given the others: flipping any single entry cannot lower the objective.
    best = sdh.objective(after, W, phi, P, Y)
    for i, k in [(0, 0), (5, 3), (79, 5)]:
        flipped = after.copy()
        flipped[i, k] *= -1
        assert sdh.objective(flipped, W, phi, P, Y) >= best - 1e-9


def test_a_train_size_over_the_pool_fits_on_the_whole_pool(capsys):
    """methods.<classic>.train_size is an upper bound, as train_imgnet.samples is: a small collection fits
    on all its trainable images instead of failing after the features were extracted."""
    from fixtures import method_config

    from dsah.methods.classic import train_classic

    x, y = clusters(n=200)
    pool, validation = np.arange(20, 200), np.arange(20)
    result = train_classic("ksh", method_config("ksh", train_size=2000, anchors=50, steps=5), 8, x, y.astype(np.uint8),
                           pool, validation, seed=0, features_name="test features")
    assert result.metrics["train_size"] == 180 and result.codes.shape == (200, 8)
    assert "methods.ksh.train_size: 2000 > 180 trainable database images: fitting on all 180" in capsys.readouterr().out
