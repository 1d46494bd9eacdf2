"""Feature extractors for the classic methods: shapes, determinism, and that pretrained weights load."""

import numpy as np
import pytest
import torch
from efficientnet_lite_pytorch import EfficientNet
from fixtures import class_image

from dsah.errors import ConfigError
from dsah.nets.features import extract
from dsah.nets.backbones import LITE_MEAN, LITE_STD


def images(n=4):
    rng = np.random.default_rng(0)
    return torch.from_numpy(np.stack([class_image(rng, k % 2 * 5) for k in range(n)]).transpose(0, 3, 1, 2).copy())


def test_pixels_are_downsampled_and_flattened():
    x = images()
    features = extract("pixels", x, size=8)
    assert features.shape == (4, 3 * 8 * 8) and features.dtype == np.float32
    assert np.allclose(features.reshape(4, 3, 64).mean(-1), x.float().mean((2, 3)).numpy() / 255, atol=1e-5)


def test_efficientnet_lite0_uses_the_shipped_imagenet_weights():
    x = images()
    features = extract("efficientnet_lite0", x, size=64, progress=False)
    assert features.shape == (4, 1280) and np.isfinite(features).all()
    assert np.allclose(features, extract("efficientnet_lite0", x, size=64, progress=False))
    torch.manual_seed(0)
    untrained = EfficientNet.from_name("efficientnet-lite0").eval()
    with torch.no_grad():
        z = torch.nn.functional.interpolate(x.float() / 255, size=(64, 64), mode="bilinear", align_corners=False)
        mean, std = torch.tensor(LITE_MEAN).view(1, 3, 1, 1), torch.tensor(LITE_STD).view(1, 3, 1, 1)
        random_features = untrained.extract_features((z - mean) / std).mean((2, 3)).numpy()
    assert not np.allclose(features, random_features, atol=1e-3)
    # The two colour classes of the fixture are closer within than across.
    same = np.linalg.norm(features[0] - features[2])
    across = np.linalg.norm(features[0] - features[1])
    assert same < across


def test_unknown_extractor_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown extractor 'sift'"):
        extract("sift", images(), size=8)
