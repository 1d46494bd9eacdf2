"""README.md and docs/*.md say only what exists. Fast: no pipeline, no subprocess.

For every page:
- links: every relative Markdown link (and image) resolves to a file or folder inside the repository, and
  a `#anchor` names a heading of the target page by GitHub's slug rule;
- commands: every `dsah`, `dvc` and `make` command shown, in a fenced block or in inline code, is real: its
  subcommands exist in the real parser (dsah: `dsah.cli.build_parser`; dvc: its own argparse parser, at
  every level: `dvc exp run`), its options exist on that subcommand, and make's targets are the Makefile's;
- params keys: every key named exists in params.yaml. A key is named (1) by `-S KEY=VALUE` or
  `--set-param KEY=VALUE` in any code, or (2) by an inline code span that is a whole dotted name, optionally
  followed by `: value` or `=value`, whose first segment is a top-level key of params.yaml
  (`train_imgnet.trunk_lr`, `images.max_skipped: K`). A segment `<name>`, `${name}` or `*` stands for any
  key at that level (`images.size.<dataset>`). A dotted name ending in a file extension is a file
  (`images.npy`, `features.py`), and one whose first segment is not a params section is code
  (`dsah.training.loop`, `meta.check`): neither is a key.
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
# A code span: a run of backticks, content without a blank line, the same run (CommonMark, simplified).
CODE_SPAN = re.compile(r"(`+)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
SEGMENT = r"(?:[A-Za-z0-9_-]+|<[^<>\s]+>|\$\{[^}\s]+\}|\*)"
DOTTED_SPAN = re.compile(rf"^([A-Za-z_][A-Za-z0-9_-]*(?:\.{SEGMENT})+)\s*(?:[:=].*)?$", re.S)
FILE_SUFFIXES = {"py", "npy", "npz", "json", "csv", "tsv", "md", "yaml", "yml", "html", "png", "svg", "pt",
                 "pth", "txt", "gz", "xz", "zip", "tar", "lock", "sqlite", "toml", "cfg", "part"}
CHECKED_PROGRAMS = {"dsah", "dvc", "make"}
SHELL_OPERATORS = set("();<>|&")


# --- Markdown ------------------------------------------------------------------------------------------

def split_markdown(text: str) -> tuple[str, list[str]]:
    """(prose with fenced blocks blanked out, the fenced blocks' contents)."""
    prose, blocks, block, fence = [], [], [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence, block = match.group(1), []
            prose.append("")
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip(fence[0]).strip():
            blocks.append("\n".join(block))
            fence = None
            prose.append("")
        elif fence is not None:
            block.append(line)
        else:
            prose.append(line)
    if fence is not None:  # an unclosed fence runs to the end of the page, as GitHub renders it
        blocks.append("\n".join(block))
    return "\n".join(prose), blocks


def code_spans(prose: str) -> list[str]:
    return [" ".join(match.group(2).split()) for match in CODE_SPAN.finditer(prose)]


def slug(title: str) -> str:
    """GitHub's heading anchor: the rendered text, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link in a heading renders as its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def heading_anchors(text: str) -> frozenset[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    prose, _ = split_markdown(text)
    seen: dict[str, int] = {}
    found = set()
    for line in prose.splitlines():
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


@functools.lru_cache(maxsize=None)
def anchors(page: Path) -> frozenset[str]:
    return heading_anchors(page.read_text(encoding="utf-8"))


def check_links(page: Path, prose: str, own_anchors: frozenset[str]) -> list[str]:
    without_code = CODE_SPAN.sub(" ", prose)  # a link shown as code is no link
    targets = LINK.findall(without_code) + LINK_DEFINITION.findall(without_code)
    problems = []
    for target in targets:
        if not target or SCHEME.match(target):  # web links are not this test's business
            continue
        path_part, _, anchor = target.partition("#")
        if not path_part:  # an anchor on this page
            if anchor not in own_anchors:
                problems.append(f"no heading #{anchor} on this page: {target}")
            continue
        resolved = (page.parent / unquote(path_part)).resolve()
        if not resolved.is_relative_to(ROOT):
            problems.append(f"link leaves the repository: {target}")
        elif not resolved.exists():
            problems.append(f"dead link: {target}")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            problems.append(f"no heading #{anchor} in {resolved.relative_to(ROOT)}: {target}")
    return problems


# --- Commands ------------------------------------------------------------------------------------------

def command_lines(prose: str, blocks: list[str]) -> list[str]:
    """Each fenced block's lines (backslash continuations joined, `$ ` prompts dropped) and each code span."""
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            lines.append(re.sub(r"^\s*\$ ", "", line))
    return lines + code_spans(prose)


def tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line.replace("\\|", "|"), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote (prose, a layout line): plain words are enough here
        return re.sub(r"([();<>|&])", r" \1 ", line.split(" #")[0]).split()


def commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line: split at operators, leading VAR=value assignments dropped."""
    found, current = [], []
    for token in tokens(line) + [";"]:
        if set(token) <= SHELL_OPERATORS:
            while current and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", current[0]):
                current.pop(0)
            if current:
                found.append(current)
            current = []
        else:
            current.append(token)
    return found


def program(word: str) -> str | None:
    """`dvc`, or `.venv/bin/dvc`: the program a command runs, when it is one this test checks."""
    name = word.rsplit("/", 1)[-1] if "/bin/" in word or "/" not in word else ""
    return name if name in CHECKED_PROGRAMS else None


def is_option(token: str) -> bool:
    return re.match(r"^--?[A-Za-z]", token) is not None


def known_option(parser: argparse.ArgumentParser, token: str) -> bool:
    option = token.split("=", 1)[0]
    if option in parser._option_string_actions:
        return True
    # -k10, or -qv: a short option with its value or more short flags attached
    return not option.startswith("--") and token[:2] in parser._option_string_actions


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def check_argv(name: str, parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Walk the subcommands argv names down the parser; each option must exist where it is given."""
    path, rest = [name], list(argv)
    if "--" in rest:  # after `--` every word is an argument
        rest = rest[:rest.index("--")]
    while True:
        choices = subcommands(parser)
        # Options belong to this level up to the subcommand's word, or, at the last level, all of them.
        end = next((i for i, token in enumerate(rest) if not is_option(token)), len(rest)) if choices else len(rest)
        unknown = [token for token in rest[:end] if is_option(token) and not known_option(parser, token)]
        if unknown:
            return [f"unknown option of `{' '.join(path)}`: {', '.join(unknown)}"]
        if not choices or end == len(rest):  # `dvc exp` alone names the group
            return []
        word = rest[end]
        if word not in choices:
            return [f"unknown command: `{' '.join(path)} {word}`"]
        parser, rest = choices[word], rest[end + 1:]
        path.append(word)


@functools.lru_cache(maxsize=None)
def dsah_parser() -> argparse.ArgumentParser:
    from dsah.cli import build_parser
    return build_parser()


@functools.lru_cache(maxsize=None)
def dvc_parser() -> argparse.ArgumentParser:
    from dvc.cli.parser import get_main_parser
    return get_main_parser()


@functools.lru_cache(maxsize=None)
def make_targets() -> frozenset[str]:
    rule = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_./-]*(?:[ \t]+[A-Za-z0-9_][A-Za-z0-9_./-]*)*)[ \t]*:(?![:=])")
    found = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = rule.match(line)
        if match:
            found.update(match.group(1).split())
    return frozenset(found)


def check_command(words: list[str]) -> list[str]:
    name, argv = program(words[0]), words[1:]
    if name is None or not argv:  # another program, or the program's name alone (a mention)
        return []
    if name == "dsah":
        return check_argv("dsah", dsah_parser(), argv)
    if name == "dvc":
        return check_argv("dvc", dvc_parser(), argv)
    # make: its own options are not checked; VAR=value sets a variable; every other word is a target
    targets = [w for w in argv if not w.startswith("-") and "=" not in w]
    return [f"unknown make target: `make {t}`" for t in targets if t not in make_targets()]


# --- Params --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def key_segments(key: str) -> list[str]:
    return re.findall(SEGMENT, key)


def key_exists(tree, segments: list[str]) -> bool:
    if not segments:
        return True
    if not isinstance(tree, dict):
        return False
    head, rest = segments[0], segments[1:]
    if head == "*" or head.startswith(("<", "${")):  # a placeholder: any key at this level
        return any(key_exists(value, rest) for value in tree.values())
    return head in tree and key_exists(tree[head], rest)


def named_keys(lines: list[str], spans: list[str]) -> list[str]:
    keys = []
    for line in lines:
        words = tokens(line)
        keys += [value.split("=", 1)[0] for option, value in zip(words, words[1:])
                 if option in ("-S", "--set-param") and "=" in value]
    for span in spans:
        match = DOTTED_SPAN.match(span)
        if match:
            key = match.group(1)
            if key.split(".")[0] in params() and key.rsplit(".", 1)[-1] not in FILE_SUFFIXES:
                keys.append(key)
    return keys


def check_params(lines: list[str], spans: list[str]) -> list[str]:
    return [f"no params key {key} in params.yaml" for key in dict.fromkeys(named_keys(lines, spans))
            if not key_exists(params(), key_segments(key))]


# --- A page --------------------------------------------------------------------------------------------

def check_page(page: Path, text: str | None = None) -> list[str]:
    """Every problem of one page (its text read from `page` unless given), each naming what is wrong."""
    text = page.read_text(encoding="utf-8") if text is None else text
    prose, blocks = split_markdown(text)
    lines = command_lines(prose, blocks)
    problems = check_links(page, prose, heading_anchors(text))
    for line in lines:
        for words in commands(line):
            problems += check_command(words)
    problems += check_params(lines, code_spans(prose))
    return list(dict.fromkeys(problems))


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_links_commands_and_params_exist(page):
    assert check_page(page) == []


def test_readme_is_a_five_minute_read():
    """At most about 8 KB, and it opens with the two quickstart commands (.ci/run runs `make test`)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) <= 8192
    first_section = text.split("\n## ", 2)[1]
    assert first_section.startswith("Quickstart")
    first_block = split_markdown(first_section)[1][0]
    assert [words[:2] for line in first_block.splitlines() for words in commands(line)] == \
        [["make", "pipeline"], ["make", "test"]]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


BROKEN = """# A broken page

[dead](nowhere.md), [no such heading](data.md#no-such-heading), [fine](data.md#downloads),
[this page](#a-broken-page), [not here](#nope), [outside](../../elsewhere.md), [web](https://example.org/x.md).

```bash
dsah frobnicate photo.jpg
dsah search photo.jpg --no-such-option
dvc exp frob
dvc repro --no-such-flag
make no-such-target
make test                                   # a real target
DSAH_DATA_HOME=/data make pipeline          # an assignment, then a real target
dvc exp run -S train_imgnet.no_such_knob=1 -S bits=24
```

Inline: `dvc exp run --queue`, `methods.dsah.no_such_weight`, `images.size.<dataset>`, `images.npy`,
`dsah.training.loop`, `train_imgnet.trunk_lr: 0.1`, `-S 'prepare.<dataset>.nope=1'`.
"""


def test_checker_reports_each_defect_by_name():
    problems = check_page(ROOT / "docs" / "broken.md", BROKEN)
    assert problems == [
        "dead link: nowhere.md",
        "no heading #no-such-heading in docs/data.md: data.md#no-such-heading",
        "no heading #nope on this page: #nope",
        "link leaves the repository: ../../elsewhere.md",
        "unknown command: `dsah frobnicate`",
        "unknown option of `dsah search`: --no-such-option",
        "unknown command: `dvc exp frob`",
        "unknown option of `dvc repro`: --no-such-flag",
        "unknown make target: `make no-such-target`",
        "no params key train_imgnet.no_such_knob in params.yaml",
        "no params key prepare.<dataset>.nope in params.yaml",
        "no params key methods.dsah.no_such_weight in params.yaml",
    ]


def test_github_heading_slugs():
    assert slug("Your own photos: `dataset: folder`") == "your-own-photos-dataset-folder"
    assert slug("Evaluation: `bench/evaluate.py`") == "evaluation-benchevaluatepy"
    assert slug("The paper's comparison table, with one command") == "the-papers-comparison-table-with-one-command"
    page = "# Title\n\n## Part\n\n```\n## not a heading\n```\n\n## Part ##\n"
    assert heading_anchors(page) == {"title", "part", "part-1"}
