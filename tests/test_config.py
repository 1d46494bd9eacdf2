"""params.yaml checking: every bad value fails early with a message that names the key."""

import pytest
import yaml

from dsah.config import load_params, section
from dsah.data.prepare import prepare_params
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
    common, own = prepare_params(params)
    assert params["dataset"] == "cifar10" and 8 <= params["bits"] <= 128
    assert common["validation_size"] == 1000 and own == {"archive": ""}


@pytest.mark.parametrize("changes, message", [
    ({"bits": 4}, "bits: 4 is out of range; use an integer from 8 to 128"),
    ({"bits": 129}, "bits: 129 is out of range"),
    ({"bits": "24"}, "bits: '24' is out of range"),
    ({"dataset": "imagenet"}, "unknown dataset 'imagenet'; choose one of cifar10, coco, nuswide21, cifar10-mosaic"),
    ({"method": "magic"}, "unknown method 'magic'"),
    ({"split_seed": -1}, "split_seed: -1 must be a non-negative integer"),
    ({"seed": True}, "seed: True must be a non-negative integer"),
])
def test_bad_top_level_values(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_params(write(tmp_path, **changes))


def test_section_refuses_unknown_keys_and_type_changes():
    params = {"prepare": {"cifar10": {"archve": "/x"}}}
    with pytest.raises(ConfigError, match="prepare.cifar10: unknown key.s. archve; known: archive"):
        section(params, "prepare.cifar10", {"archive": ""})
    with pytest.raises(ConfigError, match=r"prepare.x.queries: expected int, got '10' \(str\)"):
        section({"prepare": {"x": {"queries": "10"}}}, "prepare.x", {"queries": 1})
    with pytest.raises(ConfigError, match="expected int, got True"):
        section({"s": {"queries": True}}, "s", {"queries": 1})
    assert section({"s": {"rate": 1}}, "s", {"rate": 0.5, "n": 3}) == {"rate": 1.0, "n": 3}


def test_yaml_tags_are_not_executed(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("dataset: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def plan(tmp_path, params_changes=None, **nested):
    """Run `dsah plan` on the project's params with changes; -> (exit status, stderr, plan files)."""
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
    done = subprocess.run([sys.executable, "-m", "dsah.cli", "plan", "--params", str(tmp_path / "params.yaml"),
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
