"""dvc.lock tells the truth: every stage lists exactly the code and the params it reads, both ways.

The code a stage runs is its script and the modules of src/dsah the script imports, directly or through
others, at module level or inside functions (dsah.provenance walks them). The params a stage reads are
what its `read_params` takes from a recording `Params`, for every dataset and method.
"""

import ast
import copy
import itertools
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, load_script

from dsah.config import DATASETS, METHODS, Params, leaves, load_params
from dsah.errors import ConfigError
from dsah.provenance import code_digests, import_closure

PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PROJECT = yaml.safe_load((ROOT / "params.yaml").read_text())
CONFIGS = list(itertools.product(DATASETS, METHODS))
DVC_DEPS = load_script(ROOT / "tools" / "dvc_deps.py", "dvc_deps")  # `make deps`


def script_of(stage: str, spec: dict) -> str:
    words = spec["cmd"].split()
    assert words[:2] == ["python", f"stages/{stage}.py"], f"{stage}: its command must run stages/{stage}.py"
    return words[1]


def code_of(root: Path, script: str) -> set[str]:
    """The script and every package file it runs, as dvc.yaml paths (what `make deps` lists)."""
    return {script, *DVC_DEPS.modules_of(script, root)}


def listed_code(root: Path, deps: list[str]) -> set[str]:
    """The code files among a stage's deps (a folder stands for the .py files under it)."""
    listed = set()
    for dep in deps:
        if not dep.startswith(("src/", "stages/")):
            continue
        path = root / dep
        listed |= {p.relative_to(root).as_posix() for p in path.rglob("*.py")} if path.is_dir() else {dep}
    return listed


def dependency_problems(stages: dict, root: Path = ROOT) -> list[str]:
    problems = []
    for stage, spec in stages.items():
        closure, listed = code_of(root, script_of(stage, spec)), listed_code(root, spec.get("deps", []))
        problems += [f"{stage}: dvc.yaml lacks {path}" for path in sorted(closure - listed)]
        problems += [f"{stage}: dvc.yaml lists {path}, which the stage never imports"
                     for path in sorted(listed - closure)]
    return problems


def test_every_stage_depends_on_exactly_the_code_it_runs():
    assert dependency_problems(PIPELINE) == []


def test_make_deps_would_change_nothing():
    """dvc.yaml's module lists are what `make deps` writes: run it after changing imports."""
    text = (ROOT / "dvc.yaml").read_text()
    assert DVC_DEPS.rewrite(text) == text, "dvc.yaml's module deps are stale: run `make deps`"


def test_make_deps_rewrites_only_module_lines():
    """A stale list (a module missing, one extra, out of order) comes back whole; every other line, comments
    included, is kept byte for byte; a stage that listed no module gets its list after its script."""
    text = (ROOT / "dvc.yaml").read_text()
    stale = text.replace("      - src/dsah/evaluation/metrics.py\n", "", 1)
    stale = stale.replace("      - stages/index.py\n", "      - stages/index.py\n      - src/dsah/training/loop.py\n", 1)
    assert stale != text and DVC_DEPS.rewrite(stale) == text
    lines = text.splitlines(keepends=True)
    bare = "".join(line for line in lines if not DVC_DEPS.MODULE.match(line))
    rewritten = DVC_DEPS.rewrite(bare)
    assert rewritten.count("- src/dsah/") == text.count("- src/dsah/")
    assert [line for line in rewritten.splitlines() if "src/dsah/" not in line] == bare.splitlines()
    def deps(dvc_yaml: str) -> dict:
        return {name: sorted(map(str, spec.get("deps", []))) for name, spec in yaml.safe_load(dvc_yaml)["stages"].items()}
    assert deps(rewritten) == deps(text)


def test_the_dependency_check_names_a_missing_and_an_extra_module():
    stages = copy.deepcopy(PIPELINE)
    stages["evaluate"]["deps"].remove("src/dsah/evaluation/metrics.py")
    stages["index"]["deps"].append("src/dsah/training/loop.py")
    assert dependency_problems(stages) == ["index: dvc.yaml lists src/dsah/training/loop.py, which the stage never imports",
                                           "evaluate: dvc.yaml lacks src/dsah/evaluation/metrics.py"]


def test_the_import_walk_counts_function_level_relative_and_package_imports(tmp_path):
    package = tmp_path / "src" / "dsah"
    (package / "sub").mkdir(parents=True)
    files = {"__init__.py": "", "a.py": "def f():\n    from dsah.sub import b\n", "sub/__init__.py": "X = 1\n",
             "sub/b.py": "from . import c\nfrom .c import y\n", "sub/c.py": "y = 1\n", "unused.py": ""}
    for name, text in files.items():
        (package / name).write_text(text)
    script = tmp_path / "stage.py"
    script.write_text("import dsah.a\n")
    assert {p.relative_to(package).as_posix() for p in import_closure(script, package)} == {
        "__init__.py", "a.py", "sub/__init__.py", "sub/b.py", "sub/c.py"}


def test_a_training_checkpoint_digests_exactly_the_train_stage_code():
    digests = code_digests(ROOT / "stages" / "train.py")
    assert {f"src/{name}" if name.startswith("dsah/") else name for name in digests} == \
        listed_code(ROOT, PIPELINE["train"]["deps"])


def test_no_stage_imports_the_command_line():
    for stage, spec in PIPELINE.items():
        assert "src/dsah/cli.py" not in code_of(ROOT, script_of(stage, spec)), stage


# Params --------------------------------------------------------------------------------------------
MODULES = {stage: load_script(ROOT / "stages" / f"{stage}.py", f"stage_{stage}") for stage in PIPELINE}


def project_params(dataset: str, method: str, drop: str | None = None) -> dict:
    data = copy.deepcopy(PROJECT)
    data.update(dataset=dataset, method=method)
    if drop:
        *parents, leaf = drop.split(".")
        node = data
        for key in parents:
            node = node[key]
        del node[leaf]
    return data


def listed_params(stage: str, dataset: str, method: str) -> set[str]:
    """The keys a stage's `params:` lists; a stage with params.yaml among its file deps reads all of it."""
    if "params.yaml" in PIPELINE[stage].get("deps", []):
        return set(PROJECT)
    return {key.replace("${dataset}", dataset).replace("${method}", method)
            for key in PIPELINE[stage].get("params", [])}


def keys_read(stage: str, dataset: str, method: str) -> set[str]:
    params = Params(project_params(dataset, method))
    MODULES[stage].read_params(params)
    return params.read


def covered(key: str, listed: set[str]) -> bool:
    return any(key == item or key.startswith(item + ".") for item in listed)


def node(data: dict, dotted: str):
    for part in dotted.split("."):
        data = data[part]
    return data


READ = {(stage, dataset, method): keys_read(stage, dataset, method)
        for stage in PIPELINE for dataset, method in CONFIGS}


def params_problems(stage: str) -> list[str]:
    problems = []
    ever_read = set().union(*(READ[stage, d, m] for d, m in CONFIGS))
    for dataset, method in CONFIGS:
        listed = listed_params(stage, dataset, method)
        problems += [f"{stage} ({dataset}, {method}) reads {key}, which dvc.yaml does not list"
                     for key in sorted(READ[stage, dataset, method]) if not covered(key, listed)]
        for item in listed:
            in_file = leaves(node(project_params(dataset, method), item), item)
            unread = [leaf for leaf in in_file if leaf not in ever_read]
            problems += [f"{stage}: dvc.yaml lists {item}, but the stage never reads {leaf}" for leaf in unread]
    return sorted(set(problems))


@pytest.mark.parametrize("stage", list(PIPELINE))
def test_every_stage_lists_exactly_the_params_it_reads(stage):
    assert params_problems(stage) == []


def test_stages_read_params_only_through_read_params():
    """main() never holds the params: `read_params(load_params(...))` is the only use, so what the
    recording sees is everything the stage reads."""
    for stage in PIPELINE:
        tree = ast.parse((ROOT / "stages" / f"{stage}.py").read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "load_params"]
        wrapped = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "read_params"
                   and n.args and n.args[0] in calls]
        assert len(calls) == 1 and len(wrapped) == 1, stage


def test_the_params_check_names_an_unlisted_and_an_unread_key(monkeypatch):
    monkeypatch.setitem(PIPELINE["train_lae"], "params", ["bits", "train_lae", "evaluate"])
    problems = params_problems("train_lae")
    assert "train_lae (cifar10, dsah) reads seed, which dvc.yaml does not list" in problems
    assert "train_lae: dvc.yaml lists evaluate, but the stage never reads evaluate.map_topk" in problems


# One source of defaults: every key must be in params.yaml ------------------------------------------
ALL_KEYS = sorted(set().union(*READ.values()))


def test_every_key_in_params_yaml_is_read_by_some_stage():
    in_file = {leaf for key, value in PROJECT.items() for leaf in leaves(value, key)}
    assert sorted(in_file - set(ALL_KEYS)) == []


@pytest.mark.parametrize("key", ALL_KEYS)
def test_a_key_missing_from_params_yaml_is_an_error_naming_it(key, tmp_path):
    stage, dataset, method = next(k for k, read in READ.items() if key in read)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(project_params(dataset, method, drop=key)))
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', '[.]')}: missing from params.yaml"):
        MODULES[stage].read_params(load_params(path))
