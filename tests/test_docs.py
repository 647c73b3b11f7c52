"""The docs, tested like code: README.md, CHANGELOG.md and docs/*.md.

- every command (`python X.py ...`, `accelerate launch X.py ...`, `python -m kface...`, `make ...`) parses with
  the script's own argument parser, or with `make -n` and the Makefile's variables;
- every relative link and image, and every repository path quoted as code (`kface/eval/rca.py`), exists;
- every Python snippet's imports resolve (`from kface.x import y`: the module and the name);
- no absolute path of one machine appears;
- every test a page cites (`test_x.py::test_name`) exists;
- a Makefile default quoted in a table (`| `DEMO_X` | value |`) is the Makefile's;
- the result tables equal what `python -m kface.docs_tables` renders from the committed JSON.

Each check is a function from text to a list of problems; the planted-error tests at the end feed each one a
small wrong text and see it complain.
"""

import argparse
import contextlib
import importlib
import importlib.util
import io
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from kface.docs_tables import render_text

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


# ---- commands ------------------------------------------------------------------------------------------------

def fenced(text: str):
    """(language, body) of every fenced code block."""
    return [(m.group(1).lower(), m.group(2)) for m in FENCE.finditer(text)]


INLINE = "inline"  # the last word of an argv taken from inline code: a mention, whose required flags may be left out


def commands(text: str) -> list[list[str]]:
    """Every python/accelerate/torchrun/make command in shell blocks and inline code, as argv lists (comments,
    continuations, env assignments and `&&`/`;`/`|` chains handled). A command from inline code ends with the
    marker INLINE. Commands with shell variables (`$res`) or placeholders (`<script>.py`) are templates: left out."""
    lines = []
    for lang, body in fenced(text):
        if lang in SHELL_LANGS:
            lines += [(line, False) for line in body.replace("\\\n", " ").splitlines()]
    prose = FENCE.sub("", text)
    lines += [(span, True) for span in re.findall(r"`([^`\n]+)`", prose)]
    found = []
    for line, inline in lines:
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        command = []
        for word in words + [";"]:
            if word in ("&&", ";", "|", "||", "&"):
                while command and re.match(r"^[A-Z_][A-Z0-9_]*=", command[0]):
                    command.pop(0)
                template = any("$" in w or "<" in w for w in command)
                if command and command[0] in ("python", "python3", "accelerate", "torchrun", "make") and not template:
                    found.append(command + ([INLINE] if inline else []))
                command = []
            else:
                command.append(word)
    return found


class _Parsed(Exception):
    pass


@contextlib.contextmanager
def parse_only():
    """ArgumentParser.parse_args parses, then stops the script (benchmarks build their parser inside main)."""
    original = argparse.ArgumentParser.parse_args

    def parse(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    argparse.ArgumentParser.parse_args = parse
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original


@lru_cache(maxsize=None)
def load_script(path: str):
    spec = importlib.util.spec_from_file_location(f"_doc_script_{Path(path).stem}", REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def module_entry(name: str):
    """The module whose parse_args/main a `python -m NAME` runs (a package: its cli module)."""
    module = importlib.import_module(name)
    if hasattr(module, "__path__"):  # a package: python -m runs its __main__, which calls cli.parse_args
        module = importlib.import_module(name + ".cli")
    return module


def check_python(argv: list[str]) -> list[str]:
    """argv after `python` / `accelerate launch` / `torchrun`: the script's parser must accept it."""
    if argv[:1] == ["-m"]:
        if not argv[1:] or not argv[1].startswith("kface"):
            return []  # pytest, pip, ...: not ours
        where, args = f"python -m {argv[1]}", argv[2:]
        try:
            module = module_entry(argv[1])
        except ImportError as err:
            return [f"{where}: no such module ({err})"]
    else:
        script = next((i for i, w in enumerate(argv) if w.endswith(".py")), None)
        if script is None:
            return []  # python -c, python --version, an accelerate subcommand
        where, args = argv[script], argv[script + 1:]
        if not (REPO / where).is_file():
            return [f"{where}: no such script in the repository"]
        module = load_script(where)
    args = [a for a in args if a != "..."]
    entry = getattr(module, "parse_args", None) or module.main
    stderr, old_argv = io.StringIO(), sys.argv
    sys.argv = [where, *args]
    try:
        with parse_only(), contextlib.redirect_stderr(stderr):
            try:
                entry(args)
            except TypeError:  # parse_args() / main() that read sys.argv
                entry()
    except _Parsed:
        return []
    except SystemExit:
        return [f"{where} {shlex.join(args)}: {stderr.getvalue().strip().splitlines()[-1]}"]
    finally:
        sys.argv = old_argv
    return [f"{where}: its parser was never reached"]


@lru_cache(maxsize=None)
def makefile_variables(makefile: str) -> dict:
    return {m.group(1): m.group(2).strip() for m in
            re.finditer(r"^([A-Z][A-Z0-9_]*)\s*[?:]?=[ \t]*(.*)$", makefile, re.M)}


def check_make(argv: list[str], makefile_path: Path = REPO / "Makefile") -> list[str]:
    variables = makefile_variables(makefile_path.read_text())
    problems = [f"make: {w.split('=')[0]} is not a Makefile variable" for w in argv[1:]
                if re.match(r"^[A-Z][A-Z0-9_]*=", w) and w.split("=")[0] not in variables]
    # DEMO_PRECISION's default asks torch (a $(shell ...) per recipe line): a fixed value keeps make -n fast
    extra = [] if any(w.startswith("DEMO_PRECISION=") for w in argv) else ["DEMO_PRECISION=no"]
    proc = subprocess.run(["make", "-n", "-f", str(makefile_path), *argv[1:], *extra], cwd=makefile_path.parent,
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        problems.append(f"{shlex.join(argv)}: make -n failed: {proc.stderr.strip().splitlines()[-1:]}")
    return problems


def check_command(argv: list[str]) -> list[str]:
    inline = argv[-1] == INLINE
    argv = argv[:-1] if inline else argv
    if argv[0] == "make":
        problems = check_make(argv)
    elif argv[0] == "accelerate":
        problems = check_python(argv[2:]) if argv[1:2] == ["launch"] else []
    else:
        problems = check_python(argv[1:])
    if inline:  # `python -m kface.demo summary` in a sentence names the command; it need not spell every flag
        problems = [p for p in problems if "arguments are required" not in p]
    return problems


# ---- links, paths, snippets, defaults, tables -------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# a relative file path quoted as code that climbs out of the page's folder (`../../ESCAPED`, a hostile class name
# quoted as an example, has no extension and is not a file)
OUTSIDE = re.compile(r"`(\.\./[^`\s]+\.\w+)`")
REPO_PATH = re.compile(r"`((?:kface|benchmarks|tests|docs|metrics)/[\w./-]*\.(?:py|md|json|png|txt|yaml))`")


def check_links(text: str, doc: Path) -> list[str]:
    """Links, images and quoted repository paths (rendered results blocks left to check_rendered_tables)."""
    text = re.sub(r"<!-- results:[\w.-]+ -->.*?<!-- /results -->", "", text, flags=re.S)
    problems = []
    prose = FENCE.sub("", text)
    for target in LINK.findall(prose) + OUTSIDE.findall(prose):
        if re.match(r"^(https?|mailto):", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        if not path.is_relative_to(doc.parent.resolve()) and not path.is_relative_to(REPO):
            problems.append(f"{target}: outside the repository (a clone does not have it)")
        elif not path.exists():
            problems.append(f"link {target}: no such file")
    for path in REPO_PATH.findall(FENCE.sub("", text)):
        if not (REPO / path).exists():
            problems.append(f"`{path}`: no such file in the repository")
    return problems


ABSOLUTE = re.compile(r"(?<![\w.~$/])(/(?:work|home|Users|root|mnt|scratch|tmp|private|srv|opt)/[^\s`)'\"]*"
                      r"|[A-Z]:\\[^\s`]+)")


def check_absolute_paths(text: str) -> list[str]:
    return [f"absolute machine path {p}" for p in ABSOLUTE.findall(text)]


def check_python_snippets(text: str) -> list[str]:
    import ast

    problems = []
    for lang, body in fenced(text):
        if lang != "python":
            continue
        try:
            tree = ast.parse(body)
        except SyntaxError as err:
            problems.append(f"python snippet does not parse: {err}")
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [(node.module, a.name) for a in node.names]
            else:
                continue
            for module, name in names:
                try:
                    loaded = importlib.import_module(module)
                except ImportError as err:
                    problems.append(f"import {module}: {err}")
                    continue
                if name and name != "*" and not hasattr(loaded, name):
                    try:
                        importlib.import_module(f"{module}.{name}")
                    except ImportError:
                        problems.append(f"from {module} import {name}: no such name")
    return problems


TABLE_ROW = re.compile(r"^\|\s*((?:`[A-Z][A-Z0-9_]*`(?:,\s*)?)+)\s*\|\s*([^|]+?)\s*\|", re.M)


def check_makefile_defaults(text: str, makefile: str) -> list[str]:
    """Table rows `| `VAR`, `VAR2` | value, value2 | ...` against the Makefile's `VAR ?= value`."""
    variables, problems = makefile_variables(makefile), []
    for names_cell, values_cell in TABLE_ROW.findall(text):
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", names_cell)
        values = [v.strip().strip("`") for v in values_cell.split(",")]
        if len(names) != len(values):
            continue
        for name, value in zip(names, values):
            actual = variables.get(name)
            if actual is None:
                problems.append(f"`{name}`: not a Makefile variable")
            elif "$(" not in actual and value != actual:
                problems.append(f"`{name}`: the docs say {value}, the Makefile {actual}")
    return problems


TEST_REF = re.compile(r"(?:tests/)?(test_\w+\.py)?::(test_\w+)")


def check_cited_tests(text: str, tests_dir: Path = REPO / "tests") -> list[str]:
    """`test_x.py::test_name` (and `, ::test_other` after it) names a test function that exists."""
    problems, current = [], None
    for file, name in TEST_REF.findall(text):
        current = file or current
        if current is None:
            continue
        path = tests_dir / current
        if not path.is_file():
            problems.append(f"{current}: no such test file")
        elif not re.search(rf"^\s*(?:async )?def {name}\(", path.read_text(), re.M):
            problems.append(f"{current}::{name}: no such test")
    return problems


def check_rendered_tables(text: str) -> list[str]:
    return [] if render_text(text) == text else ["a results table differs from its JSON: run make docs"]


# ---- the docs as they are ------------------------------------------------------------------------------------

def doc_id(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_commands_parse(doc):
    problems = []
    for argv in {tuple(c) for c in commands(doc.read_text())}:
        problems += check_command(list(argv))
    assert not problems, "\n".join(sorted(set(problems)))


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_links_and_paths_exist(doc):
    assert not check_links(doc.read_text(), doc)


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_no_absolute_machine_path(doc):
    assert not check_absolute_paths(doc.read_text())


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_python_snippets_import(doc):
    assert not check_python_snippets(doc.read_text())


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_makefile_defaults_match(doc):
    assert not check_makefile_defaults(doc.read_text(), (REPO / "Makefile").read_text())


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_cited_tests_exist(doc):
    assert not check_cited_tests(doc.read_text())


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_rendered_tables_match_their_json(doc):
    assert not check_rendered_tables(doc.read_text())


def test_every_doc_is_checked():
    """The pages the checks read are the pages there are (a new page is checked without editing this file)."""
    assert {p.name for p in DOCS} >= {"README.md", "CHANGELOG.md", "demo.md", "evaluate.md"}
    assert all(commands(p.read_text()) or p.name in ("CHANGELOG.md", "architecture.md") for p in DOCS)


def test_version_follows_the_changelog():
    import kface

    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (REPO / "CHANGELOG.md").read_text(), re.M)
    latest = tuple(map(int, releases[0].split(".")))
    version = kface.__version__
    if "## [Unreleased]" in (REPO / "CHANGELOG.md").read_text():  # work after the latest release: a .dev of the next
        assert ".dev" in version and tuple(map(int, version.split(".dev")[0].split("."))) > latest
    else:
        assert version == releases[0]


# ---- planted errors: each check complains --------------------------------------------------------------------

def test_planted_removed_flag_is_caught():
    text = ("```bash\npython -m kface.data.synthetic --output_dir raw --push_to_hub\n```\n"
            "and `python sample.py --pipeline p --output_dir s --no_such_flag`, `python benchmarks/gone.py`")
    problems = [p for argv in commands(text) for p in check_command(argv)]
    assert any("kface.data.synthetic" in p and "--push_to_hub" in p for p in problems)
    assert any("sample.py" in p and "--no_such_flag" in p for p in problems)
    assert any("gone.py: no such script" in p for p in problems)
    good = "```bash\naccelerate launch --mixed_precision bf16 sample.py --pipeline p --output_dir s \\\n" \
           "    --output_format dataset --push_to_hub --hub_dataset_id u/s  # a comment\n```"
    assert commands(good) and not [p for argv in commands(good) for p in check_command(argv)]


def test_planted_make_errors_are_caught():
    assert check_make(["make", "demo", "DEMO_NO_SUCH_VAR=1"])
    assert check_make(["make", "no-such-target"])
    assert not check_make(["make", "demo", "DEMO_DIR=elsewhere"])


def test_planted_broken_links_are_caught(tmp_path):
    doc = tmp_path / "page.md"
    problems = check_links("see [the module](kface/diffusion.py), ![grid](img/none.png) and "
                           "`kface/diversity.py`; fine: [web](https://example.org), [top](#top)", doc)
    assert len(problems) == 3
    assert not check_links("[readme](README.md) and `kface/eval/diversity.py`", REPO / "README.md")
    outside = check_links("It follows `../shared/paper/rca-paper.txt` and [x](../../elsewhere.md)", REPO / "README.md")
    assert len(outside) == 2 and all("outside the repository" in p for p in outside)
    assert not check_links("see [the demo](demo.md) and `../README.md`", REPO / "docs" / "page.md")


def test_planted_absolute_path_is_caught():
    assert check_absolute_paths("the run in /work/main/demo_output/oracle")
    assert check_absolute_paths("copy it from /tmp/inception-2015-12-05.pt")
    assert not check_absolute_paths("`demo_output/oracle`, $TORCH_HOME/hub/checkpoints/, ~/.cache/torch, a/b")


def test_planted_bad_import_is_caught():
    assert check_python_snippets("```python\nfrom kface.diversity import feature_diversity\n```")
    assert check_python_snippets("```python\nfrom kface.oracle import no_such_name\n```")
    assert not check_python_snippets("```python\nfrom kface.oracle import load_oracle\nimport kface.eval.rca\n```")


def test_planted_wrong_makefile_default_is_caught():
    makefile = (REPO / "Makefile").read_text()
    batch = makefile_variables(makefile)["DEMO_DDPM_BATCH"]
    wrong = f"| variable | default |\n|---|---|\n| `DEMO_DDPM_BATCH`, `DEMO_IDS` | {batch}0, 10 |\n"
    assert check_makefile_defaults(wrong, makefile) == [
        f"`DEMO_DDPM_BATCH`: the docs say {batch}0, the Makefile {batch}"]
    right = f"| `DEMO_DDPM_BATCH`, `DEMO_IDS` | {batch}, {makefile_variables(makefile)['DEMO_IDS']} |\n"
    assert not check_makefile_defaults(right, makefile)


def test_planted_stale_table_is_caught():
    stale = "<!-- results:demo -->\n| a hand-typed | table |\n<!-- /results -->\n"
    assert check_rendered_tables(stale)
    assert not check_rendered_tables(render_text(stale))


def test_planted_renamed_test_is_caught():
    text = ("| 44 | ... | test_reliability_inputs.py::test_trainers_dataset_without_train_split[train_oracle] |\n"
            "| 45 | ... | test_oracle.py::test_checkpoint_cadence, ::test_no_such_test |")
    assert check_cited_tests(text) == [
        "test_reliability_inputs.py::test_trainers_dataset_without_train_split: no such test",
        "test_oracle.py::test_no_such_test: no such test"]
