"""params.yaml checking: every bad value fails early with a message that names the key."""

import copy
import math
import typing
from dataclasses import dataclass
from typing import Annotated

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsah.config import Allowed, Params, leaves, load_params
from dsah.data.params import prepare_params
from dsah.errors import ConfigError

from conftest import ROOT


def write(tmp_path, **changes):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_the_project_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    prepared = prepare_params(params)
    assert prepared.dataset == "cifar10" and 8 <= params.value("bits", int) <= 128
    assert prepared.common.validation_size == 1000 and prepared.own.archive == ""
    assert params.read == {"dataset", "bits", "split_seed", "prepare.download", "prepare.validation_size",
                           "prepare.cifar10.archive", "prepare.cifar10.subset"}


@pytest.mark.parametrize("changes, message", [
    ({"bits": 4}, "bits: 4 is out of range; allowed: an integer from 8 to 128"),
    ({"bits": 129}, "bits: 129 is out of range"),
    ({"bits": "24"}, "bits: expected int, got '24' (str); write 24, without quotes"),
    ({"dataset": "imagenet"},
     "dataset: 'imagenet' is unknown; allowed: one of cifar10, coco, nuswide21, cifar10-mosaic, cifar10-scenes, folder"),
    ({"method": "magic"}, "method: 'magic' is unknown"),
    ({"split_seed": -1}, "split_seed: -1 is out of range; allowed: an integer >= 0"),
    ({"seed": True}, "seed: expected int, got True (bool)"),
    ({"bitz": 12}, "params.yaml: unknown top-level key(s) bitz"),
])
def test_bad_top_level_values(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_params(write(tmp_path, **changes))


@dataclass
class Source:
    archive: str


@dataclass
class Sizes:
    queries: int
    rate: float


def test_section_refuses_unknown_keys_missing_keys_and_type_changes():
    with pytest.raises(ConfigError, match="prepare.cifar10: unknown key.s. archve; known: archive"):
        Params({"prepare": {"cifar10": {"archve": "/x"}}}).section("prepare.cifar10", Source)
    with pytest.raises(ConfigError, match="prepare.cifar10.archive: missing from params.yaml"):
        Params({"prepare": {"cifar10": {}}}).section("prepare.cifar10", Source)
    with pytest.raises(ConfigError, match="prepare.coco: missing from params.yaml"):
        Params({"prepare": {"cifar10": {}}}).section("prepare.coco", Source)
    with pytest.raises(ConfigError, match=r"prepare.x.queries: expected int, got '10' \(str\)"):
        Params({"prepare": {"x": {"queries": "10", "rate": 1.0}}}).section("prepare.x", Sizes)
    with pytest.raises(ConfigError, match="expected int, got True"):
        Params({"s": {"queries": True, "rate": 1.0}}).section("s", Sizes)
    params = Params({"s": {"rate": 1, "queries": 3}, "t": {"u": 1}})
    assert params.section("s", Sizes) == Sizes(queries=3, rate=1.0)  # an int is a float too
    assert params.read == {"s.queries", "s.rate"}
    assert params.tree("t") == {"u": 1} and params.read == {"s.queries", "s.rate", "t.u"}


def test_list_params_hold_items_of_their_type():
    from dsah.data.params import FolderSource

    own = {"root": "", "labels": "", "separator": "|", "queries": 5}
    assert Params({"f": {**own, "classes": ["cat", "dog"]}}).section("f", FolderSource).classes == ["cat", "dog"]
    with pytest.raises(ConfigError, match=r"f.classes\[1\]: expected str, got 3 \(int\)"):
        Params({"f": {**own, "classes": ["cat", 3]}}).section("f", FolderSource)
    with pytest.raises(ConfigError, match="f.classes: expected a list, got 'cat'"):
        Params({"f": {**own, "classes": "cat"}}).section("f", FolderSource)
    with pytest.raises(ConfigError, match="prepare.folder.separator: ','; one that is neither a comma nor a tab"):
        Params({"f": {**own, "classes": [], "separator": ","}}).section("f", FolderSource)


def test_yaml_tags_are_not_executed(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("dataset: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def plan(tmp_path, params_changes=None, **nested):
    """Run the plan stage on the project's params with changes; -> (exit status, stderr, plan files)."""
    import subprocess
    import sys

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(params_changes or {})
    for dotted, value in nested.items():
        *parents, leaf = dotted.split("__")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run([sys.executable, str(ROOT / "stages" / "plan.py"), "--params", str(tmp_path / "params.yaml"),
                           "--out", str(tmp_path / "plan")], capture_output=True, text=True, check=False)
    files = {p.name: p.read_text() for p in (tmp_path / "plan").glob("*.json")} if done.returncode == 0 else {}
    return done.returncode, done.stderr, files


@pytest.mark.parametrize("method, features, lae", [("dsah", False, True), ("hashnet", False, False),
                                                   ("sdh", True, False)])
def test_plan_says_which_optional_stages_a_method_uses(tmp_path, method, features, lae):
    status, _, files = plan(tmp_path, {"method": method})
    assert status == 0
    assert yaml.safe_load(files["features.json"]) == {"used": features}
    assert yaml.safe_load(files["lae.json"]) == {"used": lae}


@pytest.mark.parametrize("params_changes, nested, message", [
    ({"method": "fath"}, {}, "method: 'fath' is unknown"),
    ({"method": "ksh"}, {"methods__ksh__anchor": 3}, "methods.ksh: unknown key(s) anchor"),
    ({"method": "dnnh"}, {"methods__dnnh__margin": "wide"}, "methods.dnnh.margin: expected float"),
    ({"method": "dsah"}, {"methods__dsah__init": "ones"}, "methods.dsah.init: 'ones' is unknown; allowed: one of "
                                                          "zeros, label_codes, random"),
    ({"method": "adsh"}, {"methods__adsh__init": "label_codes"}, "methods.adsh.init: 'label_codes' is unknown; "
                                                                 "allowed: one of zeros, random"),
    ({"method": "itq"}, {"features__extractor": "sift"}, "features.extractor: 'sift' is unknown"),
    ({"method": "itq"}, {"features__extractor": "resnet50"}, "features.weights: the resnet50 extractor needs"),
    ({"method": "adsh"}, {"train_imgnet__widht": 8}, "train_imgnet: unknown key(s) widht"),
    ({"method": "dsah"}, {"train_imgnet__processes": 0}, "train_imgnet.processes: 0 is out of range; allowed: an "
                                                         "integer >= 1"),
])
def test_plan_refuses_bad_method_params_before_any_work(tmp_path, params_changes, nested, message):
    status, stderr, _ = plan(tmp_path, params_changes, **nested)
    assert status == 2 and message in stderr, stderr


# --- Every key declared, and known-bad values refused in one line -------------------------------------

def project_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def with_value(data: dict, dotted: str, value) -> dict:
    """A copy of params data with one dotted key set (created where missing)."""
    data = copy.deepcopy(data)
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return data


def rule_of(kind):
    """(base type, its Allowed rule) of a declared `Annotated[...]` type."""
    base, *rules = typing.get_args(kind)
    (rule,) = [r for r in rules if isinstance(r, Allowed)]
    return base, rule


def test_every_leaf_of_params_yaml_has_a_declared_type_and_allowed_values():
    from dsah.schema import declared

    types = declared()
    keys = {key.lstrip(".") for key in leaves(project_params(), "")}
    assert keys == set(types), (keys ^ set(types))  # no undeclared key, no declaration without its key
    for key, kind in types.items():
        if kind is bool:
            continue  # true or false is all a bool can be
        if typing.get_origin(kind) is list:
            (kind,) = typing.get_args(kind)
        assert typing.get_origin(kind) is Annotated, f"{key}: declared {kind}, without allowed values"
        rule_of(kind)


KNOWN_BAD = [
    ("train_imgnet.epochs", -1, "train_imgnet.epochs: -1 is out of range; allowed: an integer >= 1"),
    ("train_imgnet.lr", -1, "train_imgnet.lr: -1.0 is out of range; allowed: a number > 0"),
    ("train_imgnet.batch", 0, "train_imgnet.batch: 0 is out of range; allowed: an integer >= 1"),
    ("train_imgnet.outer_iters", 0, "train_imgnet.outer_iters: 0 is out of range; allowed: an integer >= 1"),
    ("bits", 7, "bits: 7 is out of range; allowed: an integer from 8 to 128"),
    ("prepare.validation_size", -5, "prepare.validation_size: -5 is out of range; allowed: an integer >= 1"),
    ("train_imgnet.backbone", "vit_b16", "train_imgnet.backbone: 'vit_b16' is unknown; allowed: one of cifar_resnet, "
                                         "cifar_whitened, efficientnet_lite0, alexnet, vgg16, resnet18, resnet50"),
    ("train_imgnet.warmup", 1.5, "train_imgnet.warmup: 1.5 is out of range; allowed: a number from 0 to 1"),
    ("train_imgnet.input_size", 8, "train_imgnet.input_size: 8 is out of range; allowed: 0 or an integer from 16 "
                                   "to 1024"),
    ("train_imgnet.device", "gpu", "train_imgnet.device: 'gpu' is unknown; allowed: one of auto, cpu, cuda"),
    ("train_imgnet.epochs", 1.5, "train_imgnet.epochs: expected int, got 1.5 (float)"),
    ("train_imgnet.epochs", 2.0, "train_imgnet.epochs: expected int, got 2.0 (float); write 2"),
    ("train_imgnet.lr", "fast", "train_imgnet.lr: expected float, got 'fast' (str); write a number"),
    ("train_imgnet.augment", "yes please", "train_imgnet.augment: expected bool, got 'yes please' (str); write true "
                                           "or false"),
    ("train_lae.steps", 0, "train_lae.steps: 0 is out of range; allowed: an integer >= 1"),
    ("methods.dsah.lam", -0.1, "methods.dsah.lam: -0.1 is out of range; allowed: a number >= 0"),
    ("methods.dnnh.epsilon", 0.7, "methods.dnnh.epsilon: 0.7 is out of range; allowed: a number from 0 to 0.5"),
    ("features.size", 2, "features.size: 2 is out of range; allowed: an integer from 4 to 512"),
    ("evaluate.map_topk", 0, "evaluate.map_topk: 0 is out of range; allowed: an integer >= 1"),
    ("images.size.cifar10", 8, "images.size.cifar10: 8 is out of range; allowed: an integer from 16 to 1024"),
    ("images.max_skipped", -1, "images.max_skipped: -1 is out of range; allowed: an integer >= 0"),
    ("prepare.cifar10.archive", "data/cifar.tar.gz", "prepare.cifar10.archive: 'data/cifar.tar.gz' is not an "
     "absolute path; allowed: an absolute path, or \"\" (searches $DSAH_DATA_HOME, then the download cache)"),
    ("prepare.coco.subset", -10, "prepare.coco.subset: -10 is out of range; allowed: an integer >= 0"),
    ("prepare.folder.classes", ["cat", ""], "prepare.folder.classes[1]: '' is empty; allowed: any non-empty text"),
    ("prepare.cifar10-mosaic.grid", 0, "prepare.cifar10-mosaic.grid: 0 is out of range; allowed: an integer from 1 "
                                       "to 8"),
    ("methods.fath.alpha", 1.0, "methods.fath.alpha: unknown key in params.yaml; no stage reads it (a typo, or a "
                                "section that was renamed?)"),
    ("images.size.imagenet", 64, "images.size.imagenet: unknown key in params.yaml; no stage reads it (a typo, or a "
                                 "section that was renamed?)"),
]


@pytest.mark.parametrize("key, value, message", KNOWN_BAD, ids=[f"{k}={v!r}" for k, v, _ in KNOWN_BAD])
def test_known_bad_values_are_one_line_naming_the_key_value_and_what_is_allowed(key, value, message):
    from dsah.schema import check_params

    with pytest.raises(ConfigError) as refused:
        check_params(Params(with_value(project_params(), key, value)))
    assert str(refused.value) == message


def test_numbers_yaml_reads_as_strings_are_numbers(tmp_path):
    """YAML 1.1 reads 3e-4 (no dot) as a string; a float param takes it as the number it means."""
    from dsah.schema import check_params
    from dsah.settings import TrainConfig

    text = (ROOT / "params.yaml").read_text().replace("  lr: 0.003             # peak", "  lr: 3e-4              # peak")
    assert "lr: 3e-4" in text
    (tmp_path / "params.yaml").write_text(text)
    params = load_params(tmp_path / "params.yaml")
    assert params.data["train_imgnet"]["lr"] == "3e-4"  # as PyYAML reads it
    check_params(params)
    assert params.section("train_imgnet", TrainConfig).lr == 3e-4


def test_section_types_check_values_made_in_code_too():
    """A benchmark's dataclasses.replace, or settings saved with a model, are checked like params.yaml."""
    from fixtures import lae_config, method_config, train_config

    with pytest.raises(ConfigError, match=r"^train_imgnet.epochs: -1 is out of range"):
        train_config(epochs=-1)
    with pytest.raises(ConfigError, match=r"^train_lae.lr: 0.0 is out of range; allowed: a number > 0$"):
        lae_config(lr=0)
    with pytest.raises(ConfigError, match=r"^methods.daph.sweeps: 0 is out of range"):
        method_config("daph", sweeps=0)
    assert train_config(lr=1).lr == 1.0 and isinstance(train_config(lr=1).lr, float)


NUMERIC = None


def numeric_keys() -> dict[str, tuple[type, Allowed]]:
    from dsah.schema import declared

    global NUMERIC
    if NUMERIC is None:
        NUMERIC = {key: rule_of(kind) for key, kind in declared().items()
                   if typing.get_origin(kind) is Annotated and typing.get_args(kind)[0] in (int, float)}
    return NUMERIC


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_numeric_params_hold_exactly_their_declared_range(data):
    """Any number set on any numeric key is either read back unchanged, or refused with one line that names
    the key; never negative, never NaN or infinite (no numeric param means anything below 0)."""
    from dsah.schema import check_params

    keys = numeric_keys()
    key = data.draw(st.sampled_from(sorted(keys)), label="key")
    base, rule = keys[key]
    numbers = st.integers(-10**9, 10**9) | st.sampled_from([-1, 0, 1, 7, 8, 128, 129, 1024, 1025])
    if base is float:
        numbers = numbers | st.floats(allow_nan=True, allow_infinity=True)
    value = data.draw(numbers, label="value")
    params = Params(with_value(project_params(), key, value))
    try:
        check_params(params)
    except ConfigError as refused:
        message = str(refused)
        assert message.startswith(f"{key}: ") and "\n" not in message
        assert not rule.allows(value)
    else:
        assert rule.allows(value)
        assert value >= 0 and math.isfinite(value)
        read = params.value(key, base)
        assert read == value and type(read) is base


def test_dvc_exp_run_set_params_rewrites_every_key_of_params_yaml_readably(tmp_path):
    """`dvc exp run -S key=value` rewrites params.yaml through DVC's own override code: every key, set to
    another value and back (a list to items, to empty, to one item, to its own), leaves a file that still reads as
    the same params. (A comment after a list's key made DVC write corrupt YAML for `[]`.)"""
    from dvc.utils.hydra import apply_overrides

    from dsah.schema import check_params, declared

    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    original = project_params()
    steps: list[list[str]] = [[], [], [], []]  # all keys at once, in four rewrites
    for key in sorted(k.lstrip(".") for k in leaves(original, "")):
        value = node_of(original, key)
        if isinstance(value, list):
            changes = ["[cat,dog]", "[]", "[cat]", "[" + ",".join(map(str, value)) + "]"]
        elif isinstance(value, bool):
            changes = [str(not value).lower()] + [str(value).lower()] * 3
        elif isinstance(value, (int, float)):
            changes = [str(value + 1)] + [str(value)] * 3
        else:
            changes = ["other"] + [f"'{value}'"] * 3
        for step, change in zip(steps, changes):
            step.append(f"{key}={change}")
    for overrides in steps:
        apply_overrides(str(path), overrides)
        yaml.safe_load(path.read_text())  # raises on corrupt YAML
    # DVC writes 0.00001 back as 1e-05, which YAML 1.1 reads as a string: read as the number it is.
    rewritten, before = load_params(path), Params(original)
    check_params(rewritten)
    assert {key: rewritten.value(key, kind) for key, kind in declared().items()} == \
        {key: before.value(key, kind) for key, kind in declared().items()}


def node_of(data: dict, dotted: str):
    for part in dotted.split("."):
        data = data[part]
    return data


def output_digests(root) -> dict[str, str]:
    """md5 of every file of the pipeline's outputs (data/, models/, reports/; not work folders) and dvc.lock."""
    import hashlib

    files = [root / "dvc.lock", *(p for folder in ("data", "models", "reports") for p in (root / folder).rglob("*")
                                   if p.is_file() and not any(part.startswith(".") for part in
                                                              p.relative_to(root).parts))]
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.integration
def test_a_bad_param_stops_dvc_exp_run_before_any_stage_output_changes(pipeline):
    """`dvc exp run -S` with a bad value ends non-zero with the key named in one line, no traceback, and
    every output as it was: the sources stage, first, checks the whole file before DVC deletes any
    stage's outputs. A dataset not in the list gets the list, not DVC's missing prepare.<dataset>."""
    before = output_digests(pipeline.path)
    datasets = "one of cifar10, coco, nuswide21, cifar10-mosaic, cifar10-scenes, folder"
    try:
        for change, message in (
                ("train_imgnet.epochs=-1", "sources: error: train_imgnet.epochs: -1 is out of range; allowed: an "
                                           "integer >= 1"),
                ("dataset=nosuch", f"sources: error: dataset: 'nosuch' is unknown; allowed: {datasets}")):
            done = pipeline.dvc("exp", "run", "-S", change, check=False)
            said = done.stdout + done.stderr
            assert done.returncode != 0, said
            assert message in said.splitlines(), said
            assert "Traceback" not in said and "missing from 'params.yaml'" not in said
            assert output_digests(pipeline.path) == before, change
            pipeline.run("git", "checkout", "params.yaml")
    finally:
        pipeline.run("git", "checkout", "params.yaml")
