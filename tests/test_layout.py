"""The shape of the code, as the README's Layout promises it: every module is named there,
imports between the packages run one way, and the turn engine is used through its facade."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Layers from the top of the README's picture down; a module may import its own layer
# and those below it, never one above.
LAYERS: list[set[str]] = [
    {"chatsite"},
    {
        "chat.views",
        "chat.middleware",
        "chat.admin",
        "chat.management",
        "chat.urls",
        "chat.apps",
        "chat.conversations",
    },
    {"chat.turns"},
    {"chat.tools", "chat.files"},
    {"chat.access"},
    {"chat.spend", "chat.ops"},
    {"chat.llm"},
    {
        "chat.models",
        "chat.errors",
        "chat.streams",
        "chat.payloads",
        "chat.search",
        "chat.text",
        "chat.money",
        "chat.runtime",
        "chat.seams",
        "chat.migrations",
    },
]


def _modules() -> list[Path]:
    found = []
    for top in ("chat", "chatsite"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            found.append(path)
    return found


def _dotted(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _in_package(dotted: str, package: str) -> bool:
    return dotted == package or dotted.startswith(package + ".")


def _layer(dotted: str) -> int:
    if dotted in ("chat", "chatsite"):  # the packages' own __init__: nothing in them
        return len(LAYERS) - 1
    for index, layer in enumerate(LAYERS):
        if any(_in_package(dotted, name) for name in layer):
            return index
    raise AssertionError(f"{dotted} is in no layer of tests/test_layout.py")


def _imports(path: Path) -> set[str]:
    """Every chat/chatsite module `path` imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    # `from chat import llm` names `chat.llm`; the bare package adds nothing.
    return {n for n in names if n.split(".")[0] in ("chat", "chatsite") and "." in n}


def _known(name: str) -> str | None:
    """`name` as a module of ours (`from chat.x import func` names `chat.x.func`)."""
    while name:
        path = ROOT / name.replace(".", "/")
        if path.with_suffix(".py").exists() or (path / "__init__.py").exists():
            return name
        name = name.rpartition(".")[0]
    return None


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_down_the_layers(path):
    here = _dotted(path)
    upward = sorted(
        f"{here} imports {target}"
        for name in _imports(path)
        if (target := _known(name)) and _layer(target) < _layer(here)
    )
    assert not upward, "imports against the README's picture: " + "; ".join(upward)


def test_the_turn_engine_is_used_through_its_facade():
    """Outside chat/turns/, the engine is imported as `chat.turns` (its __init__), never
    one of the modules behind it."""
    reaching_in = sorted(
        {
            f"{here} imports {target}"
            for path in _modules()
            if not _in_package(here := _dotted(path), "chat.turns")
            for name in _imports(path)
            if (target := _known(name)) and target.startswith("chat.turns.")
        }
    )
    assert not reaching_in, "import chat.turns instead: " + "; ".join(reaching_in)


def test_only_llm_imports_openai():
    importers = sorted(
        _dotted(path)
        for path in _modules()
        if re.search(r"^\s*(import openai|from openai)", path.read_text(), re.M)
    )
    assert importers and all(name.startswith("chat.llm") for name in importers), importers


def _layout_tree() -> set[str]:
    """The paths the README's Layout tree names: `dir/` headers nest by indentation, and
    each `name.py` on a line belongs to the innermost directory open there."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## Layout") :].split("```")[1]
    named: set[str] = set()
    open_dirs: list[tuple[int, str]] = []
    for line in block.splitlines()[1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        first = line.split()[0]
        if first.endswith("/") or re.fullmatch(r"[\w./]+\.py", first):
            while open_dirs and open_dirs[-1][0] >= indent:
                open_dirs.pop()
        if first.endswith("/"):
            parent = open_dirs[-1][1] if open_dirs else ""
            open_dirs.append((indent, f"{parent}{first}"))
            # `management/commands/` names both folders.
            parts = first.rstrip("/").split("/")
            named.update(f"{parent}{'/'.join(parts[:n])}/" for n in range(1, len(parts) + 1))
        here = open_dirs[-1][1] if open_dirs else ""
        named.update(f"{here}{name}" for name in re.findall(r"\b\w+\.py\b", line))
    return named


def test_every_module_is_named_in_its_folder_of_the_readme_layout():
    named = _layout_tree()
    missing = [
        relative
        for path in _modules()
        if (relative := str(path.relative_to(ROOT))) not in named
        and not (path.name == "__init__.py" and f"{path.parent.relative_to(ROOT)}/" in named)
    ]
    assert not missing, f"not in their folder of the README's Layout: {missing}"
