"""params.yaml's training, method, feature, encoding and evaluation sections as types: each field, its type
and the values it allows (the values themselves live in params.yaml only; the prepare section's types are
in dsah.data.params).

Declarations only, without torch: the sources stage checks the whole file (dsah.schema) on every
`dvc repro` in a fraction of a second. The modules that use a section import its type from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from dsah.config import (METHODS, Count, Device, FilePath, Fraction, Matches, OneOf, Params, Range, Rate, Section,
                         Size, Text, Weight)
from dsah.errors import ConfigError

# Names the code registers (dsah.nets.backbones refuses to register another; a test holds the two equal).
BACKBONES = ("cifar_resnet", "cifar_whitened", "efficientnet_lite0", "alexnet", "vgg16", "resnet18", "resnet50")
OPTIMIZERS = ("adam", "sgd")
# Initial database codes B: zeros (ADSH's reference code; the first update decides every bit), the label
# codes H_Y (DSAH's), or random +-1 (an option; the project's ADSH before 2026-12-06). METHOD.md §3.
INITIAL_CODES = ("zeros", "label_codes", "random")
UNLABELLED_INITIAL_CODES = ("zeros", "random")  # methods without a label auto-encoder (ADSH, DAPH)
# Pairwise targets: binary (S = 1 where two images share a label, METHOD.md) or graded (S = the cosine of
# their label vectors); either way t = c ((s + d) S - d), rebalanced as ADSH's soft targets (code_update).
TARGETS = ("binary", "graded")
Targets = Annotated[str, OneOf(TARGETS)]
# DSAH's targets, one setting for both its networks: the LAE's pairwise term reads it too (train_lae).
DSAH_TARGETS = "methods.dsah.targets"
TORCHVISION = ("resnet18", "resnet50", "alexnet", "vgg16")  # ImageNet models whose weights the user supplies
EXTRACTORS = ("efficientnet_lite0", *TORCHVISION, "pixels")
DATABASE_CODES = ("learned", "network")
# The from-scratch network: the CIFAR ResNet at the images' own size (32 px), trunk and head at one rate.
# params.yaml's default before 2026-12-06; the quick, tiny and gpu profiles, the tests and the from-scratch
# benchmarks train it whatever the default is.
FROM_SCRATCH: dict[str, Any] = {"backbone": "cifar_resnet", "input_size": 0, "trunk_lr": 1.0}


@dataclass
class TrainConfig(Section):
    """params.yaml's train_imgnet section: the loop's knobs, shared by every deep method (values and
    their reasons live in params.yaml only)."""

    section = "train_imgnet"

    backbone: Annotated[str, OneOf(BACKBONES)]  # cifar_resnet | cifar_whitened (from scratch) | efficientnet_lite0 | ...
    width: Count        # cifar_resnet/cifar_whitened width (cost grows with its square)
    weights: Annotated[str, FilePath("ImageNet weights are needed only by torchvision backbones")]  # never downloaded
    input_size: Annotated[int, Range(16, 1024, also=(0,))]  # px the backbone sees, images resized on the fly; 0: its own
    trunk_lr: Fraction  # the backbone's learning rate as a fraction of the hash layer's
    device: Device
    outer_iters: Count  # T: outer iterations (sample, train, update codes)
    samples: Count      # m: at most this many database points sampled per outer iteration (all the trainable
                        # images where there are fewer: dsah.training.loop.within_data)
    epochs: Count       # E: epochs over the sample per outer iteration
    batch: Count
    optimizer: Annotated[str, OneOf(OPTIMIZERS)]  # adam | sgd (Nesterov momentum 0.9)
    lr: Rate            # peak learning rate (linear warm-up, cosine decay)
    weight_decay: Weight
    warmup: Fraction    # fraction of all steps spent warming up
    augment: bool       # random crop (pad 4) + horizontal flip
    test_flips: bool    # codes from the mean outputs of an image and its mirror image (dsah.training.encode)
    channels_last: bool
    eval_every: Size    # validation-slice mAP every k outer iterations, and always after the last (0: only then)
    processes: Count    # the train stage starts this many data-parallel processes (torchrun)


@dataclass
class LAEConfig(Section):
    """params.yaml's train_lae section (values and their reasons live there only)."""

    section = "train_lae"

    hidden: Count     # MLP width of encoder and decoder
    alpha: Weight     # pairwise term: code inner products follow label similarity
    beta: Weight      # quantization: h close to sign(h)
    delta_bal: Weight  # bit balance: each bit's mean near 0
    delta_dec: Weight  # decorrelation: bits' pairwise correlations near 0
    steps: Count      # Adam steps
    batch: Count      # label vectors per step, sampled by frequency
    lr: Rate          # Adam learning rate


# params.yaml's methods.<name> sections (values and their reasons live there only).
@dataclass
class AsymmetricConfig(Section):
    """methods.dsah: DSAH's terms around ADSH's (dsah.methods.dsah)."""

    section = "methods.dsah"

    gamma: Weight   # ||b_i - u_i||^2 for sampled points (ADSH's weight, same normalization)
    eta: Weight     # semantic constraint: u follows the LAE label code H_y
    mu: Weight      # decoder constraint: the frozen LAE decoder recovers the labels from u
    lam: Weight     # code update pulls B towards H_Y; applied as lam * m * c (METHOD.md §3)
    init: Annotated[str, OneOf(INITIAL_CODES)]  # initial B: "zeros" (ADSH), "label_codes" (H_Y) or "random"
    sweeps: Count   # bit-wise sweeps per code update
    targets: Targets  # the LAE's and ImgNet's pairwise terms' and the code update's: binary | graded


@dataclass
class ADSHConfig(Section):
    section = "methods.adsh"
    gamma: Weight
    init: Annotated[str, OneOf(UNLABELLED_INITIAL_CODES)]  # zeros (ADSH's reference code) | random
    sweeps: Count
    targets: Targets  # binary (ADSH's) | graded

    def asymmetric(self) -> AsymmetricConfig:
        """ADSH = DSAH without the label auto-encoder: no semantic terms, its own initial codes."""
        return AsymmetricConfig(gamma=self.gamma, eta=0.0, mu=0.0, lam=0.0, init=self.init, sweeps=self.sweeps,
                                targets=self.targets)


@dataclass
class DAPHConfig(ADSHConfig):
    section = "methods.daph"


@dataclass
class HashNetConfig(Section):
    section = "methods.hashnet"
    alpha: Rate       # inner products are scaled by alpha / c (above 0)
    step_rate: Weight  # continuation: tanh(beta z), beta = (1 + step_rate * step) ** power
    power: Weight


@dataclass
class DNNHConfig(Section):
    section = "methods.dnnh"
    margin: Weight    # triplet margin on squared distances of codes in [0, 1]^c
    slice_size: Count  # divide-and-encode: features per bit
    epsilon: Annotated[float, Range(0.0, 0.5)]  # piece-wise threshold: outputs beyond 1/2 +- epsilon become 0 or 1


@dataclass
class ITQSettings(Section):
    section = "methods.itq"
    train_size: Size          # training features sampled from the pool; 0 (or more than it holds): the whole pool
    iterations: Count


@dataclass
class SDHSettings(Section):
    section = "methods.sdh"
    train_size: Size          # 0 (or more than it holds): the whole pool
    anchors: Count            # RBF anchors
    lam: Weight
    nu: Weight
    outer: Count
    bit_sweeps: Count


@dataclass
class KSHSettings(Section):
    section = "methods.ksh"
    train_size: Size          # KSH's kernel is quadratic in its training set; 0 (or more than it holds): the pool
    anchors: Count
    steps: Count
    lr: Rate


# Each method of the registry (dsah.config.METHODS) and its settings type.
METHOD_SETTINGS: dict[str, type] = {"dsah": AsymmetricConfig, "adsh": ADSHConfig, "daph": DAPHConfig,
                                    "hashnet": HashNetConfig, "dnnh": DNNHConfig,
                                    "itq": ITQSettings, "sdh": SDHSettings, "ksh": KSHSettings}


def settings_type(method: str) -> type:
    if method in METHOD_SETTINGS:
        return METHOD_SETTINGS[method]
    raise ConfigError(f"method: {method!r} is unknown; allowed: one of {', '.join(METHODS)}")


def method_settings(params: Params, method: str) -> Any:
    """params.yaml's methods.<method> section, checked against the method's settings and their types."""
    return params.section(f"methods.{method}", settings_type(method))


@dataclass
class FeaturesConfig(Section):
    """params.yaml's features section (read by the plan and features stages; values live there only)."""

    section = "features"

    extractor: Annotated[str, OneOf(EXTRACTORS)]
    weights: Annotated[str, FilePath("needed only by torchvision extractors")]  # their ImageNet weights file
    size: Annotated[int, Range(4, 512)]  # input side in px, or the pixels' side
    batch: Count
    device: Device

    def __post_init__(self):
        super().__post_init__()
        if self.extractor in TORCHVISION and not self.weights:
            raise ConfigError(f"features.weights: the {self.extractor} extractor needs an ImageNet weights file "
                              "(absolute path); efficientnet_lite0's weights ship with its package")


@dataclass
class EncodeConfig(Section):
    """params.yaml's encode section (values and their reasons live there only)."""

    section = "encode"

    database: Annotated[str, OneOf(DATABASE_CODES)]  # learned: the codes B from training | network: sign(F(x))
    device: Device


INDEX_BACKENDS = ("local", "milvus")
MILVUS_INDEXES = ("BIN_FLAT", "BIN_IVF_FLAT")


@dataclass
class IndexConfig(Section):
    """params.yaml's index section (values and their reasons live there only)."""

    section = "index"

    backend: Annotated[str, OneOf(INDEX_BACKENDS)]
    milvus_uri: Annotated[str, Text()]
    collection: Annotated[str, Matches(r"[A-Za-z_][A-Za-z0-9_]{0,150}", "a Milvus name: letters, digits and _, "
                                                                          "not starting with a digit")]
    milvus_index: Annotated[str, OneOf(MILVUS_INDEXES)]
    nlist: Count


@dataclass
class EvaluateConfig(Section):
    """params.yaml's evaluate section (values and their reasons live there only)."""

    section = "evaluate"

    map_topk: Count  # K of mAP@K
