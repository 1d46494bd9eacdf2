"""Write each dvc.yaml stage's code deps: its script's import closure in src/dsah (`make deps`).

Only the `- src/dsah/...py` lines of each stage's `deps:` change; comments, order of the other deps and
every other section stay byte-identical. tests/test_dvc_deps.py fails when this would change dvc.yaml.

    python tools/dvc_deps.py            # rewrite dvc.yaml
    python tools/dvc_deps.py --check    # exit 1 and list the stages whose module lists are stale
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # a dev tool run from a clone: the package beside it, installed or not

from dsah.provenance import import_closure, relative_name  # noqa: E402

STAGE = re.compile(r"^  (\w+):\s*$")
MODULE = re.compile(r"^(\s+)- src/dsah/\S+\s*$")  # a module, or a module's template


def modules_of(script: str, root: Path = ROOT) -> list[str]:
    """The package files running `script` executes, as dvc.yaml paths, sorted."""
    package = root / "src" / "dsah"
    return [f"src/{relative_name(p, package)}" for p in import_closure(root / script, package)]


def script_of(cmd: str) -> str:
    words = cmd.split()
    if words[:1] != ["python"] or not words[1].startswith("stages/"):
        raise SystemExit(f"a stage command must start with `python stages/<stage>.py`: {cmd!r}")
    return words[1]


def rewrite(text: str, root: Path = ROOT) -> str:
    """dvc.yaml's text with every stage's module lines replaced by its import closure, placed where the
    first module line was (or right after the stage's script when it had none)."""
    stages = yaml.safe_load(text)["stages"]
    listing = set()  # the stages that list modules already: their list is replaced where it stands
    stage = None
    for line in text.splitlines():
        found = STAGE.match(line)
        stage = found.group(1) if found else stage
        if stage and MODULE.match(line):
            listing.add(stage)
    out: list[str] = []
    stage, placed, in_stages = None, False, False
    for line in text.splitlines(keepends=True):
        if re.match(r"^\S", line):
            in_stages = line.startswith("stages:")
            stage = None
        found = STAGE.match(line) if in_stages else None
        if found:
            stage, placed = found.group(1), False
        module = MODULE.match(line) if stage else None
        if module:
            if not placed:
                indent = module.group(1)
                out += [f"{indent}- {m}\n" for m in modules_of(script_of(stages[stage]["cmd"]), root)]
                placed = True
            continue
        out.append(line)
        if stage and stage not in listing and not placed and line.strip() == f"- {script_of(stages[stage]['cmd'])}":
            indent = line[:len(line) - len(line.lstrip())]
            out += [f"{indent}- {m}\n" for m in modules_of(script_of(stages[stage]["cmd"]), root)]
            placed = True
    return "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if dvc.yaml is stale")
    parser.add_argument("--dvc-yaml", type=Path, default=ROOT / "dvc.yaml")
    args = parser.parse_args()
    text = args.dvc_yaml.read_text()
    new = rewrite(text, args.dvc_yaml.resolve().parent)
    if args.check:
        if new != text:
            print(f"{args.dvc_yaml}: module deps are stale; run `make deps`", file=sys.stderr)
            raise SystemExit(1)
        return
    if new != text:
        args.dvc_yaml.write_text(new)
        print(f"rewrote the module deps in {args.dvc_yaml}")
    else:
        print(f"{args.dvc_yaml}: module deps already match the imports")


if __name__ == "__main__":
    main()
