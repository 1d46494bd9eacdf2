"""params.yaml checking: every bad value fails early with a message that names the key."""

import pytest
import yaml

from dataclasses import dataclass

from dsah.config import Params, load_params
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
                           "prepare.cifar10.archive"}


@pytest.mark.parametrize("changes, message", [
    ({"bits": 4}, "bits: 4 is out of range; use an integer from 8 to 128"),
    ({"bits": 129}, "bits: 129 is out of range"),
    ({"bits": "24"}, "bits: '24' is out of range"),
    ({"dataset": "imagenet"}, "unknown dataset 'imagenet'; choose one of cifar10, coco, nuswide21, cifar10-mosaic, folder"),
    ({"method": "magic"}, "unknown method 'magic'"),
    ({"split_seed": -1}, "split_seed: -1 must be a non-negative integer"),
    ({"seed": True}, "seed: True must be a non-negative integer"),
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
    ({"method": "fath"}, {}, "unknown method 'fath'"),
    ({"method": "ksh"}, {"methods__ksh__anchor": 3}, "methods.ksh: unknown key(s) anchor"),
    ({"method": "dnnh"}, {"methods__dnnh__margin": "wide"}, "methods.dnnh.margin: expected float"),
    ({"method": "dsah"}, {"methods__dsah__init": "zeros"}, "methods.dsah.init: 'zeros'; choose label_codes or random"),
    ({"method": "itq"}, {"features__extractor": "sift"}, "features.extractor: unknown extractor 'sift'"),
    ({"method": "itq"}, {"features__extractor": "resnet50"}, "features.weights: the resnet50 extractor needs"),
    ({"method": "adsh"}, {"train_imgnet__widht": 8}, "train_imgnet: unknown key(s) widht"),
    ({"method": "dsah"}, {"train_imgnet__processes": 0}, "train_imgnet.processes: 0; at least 1"),
])
def test_plan_refuses_bad_method_params_before_any_work(tmp_path, params_changes, nested, message):
    status, stderr, _ = plan(tmp_path, params_changes, **nested)
    assert status == 2 and message in stderr, stderr
