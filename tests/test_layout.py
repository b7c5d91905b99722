"""The import rule of DESIGN.md, checked on the source with `ast` (it replaces checking by hand).

Rooms and what each may import (besides itself and the standard library / third parties):

- stage packages (ingest, filters, annotate, actions): ``catalog.tables``, ``media``,
  ``storage`` and ``stage_base`` (the typed Resources and hook defaults every stage declares);
- ``catalog``: ``storage``; ``media``: ``storage``; ``storage``, ``stage_base`` and
  ``lerobot_layout`` (the LeRobot dataset layout its reader, writer and test writer share): nothing;
- ``shards``: ``catalog``, ``media``, ``storage`` and ``actions.align`` (stored actions matched to
  rendered frames); ``export``: those and ``lerobot_layout``;
- ``testing``: anything but ``jobs`` and ``cli``, and only tests, benchmarks and the demo import it;
- ``integrations`` (adapters for trainers such as DreamDojo): ``shards``, ``export``, ``catalog``,
  ``media``, ``storage``;
- ``jobs``: anything but ``cli``; ``cli``: anything. Nothing else imports ``jobs`` or ``cli``;
- no import circles between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "egocurate"
STAGE_PACKAGES = ("ingest", "filters", "annotate", "actions")
BASE = ("egocurate.storage", "egocurate.stage_base", "egocurate.lerobot_layout")
ALLOWED: dict[str, tuple[str, ...]] = {
    **{room: ("egocurate.catalog.tables", "egocurate.media", *BASE) for room in STAGE_PACKAGES},
    "catalog": ("egocurate.storage",),
    "media": ("egocurate.storage",),
    "storage": (),
    "stage_base": (),
    "lerobot_layout": (),
    "shards": ("egocurate.catalog", "egocurate.media", "egocurate.storage", "egocurate.actions.align"),
    "export": (
        "egocurate.catalog",
        "egocurate.media",
        "egocurate.storage",
        "egocurate.lerobot_layout",
        "egocurate.actions.align",
    ),  # fmt: skip
    "configs": (),
    "integrations": (
        "egocurate.shards",
        "egocurate.export",
        "egocurate.catalog",
        "egocurate.media",
        "egocurate.storage",
    ),
}
TESTING_IMPORTERS = ("egocurate.cli.demo",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(egocurate module imported, line) for every import in the file, module-level or not."""
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from egocurate.catalog import tables` imports a module
                candidate = f"{base}.{alias.name}"
                found.append((candidate if candidate in modules else base, node.lineno))
    return [(name, line) for name, line in found if name == "egocurate" or name.startswith("egocurate.")]


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violation(importer: str, imported: str) -> str | None:
    src, dst = room_of(importer), room_of(imported)
    if src == dst or imported == "egocurate":  # the root package holds only the version and lazy_exports
        return None
    if dst == "cli":
        return "nothing outside egocurate.cli imports the CLI"
    if dst == "jobs" and src != "cli":
        return "only egocurate.cli imports egocurate.jobs"
    if dst == "testing" and importer not in TESTING_IMPORTERS:
        return "egocurate.testing is for tests, benchmarks and the demo only"
    if src in ("jobs", "cli", "testing"):
        return None
    allowed = ALLOWED.get(src)
    if allowed is None:
        return f"room {src!r} has no import rule: add it to tests/test_layout.py"
    if any(imported == a or imported.startswith(a + ".") for a in allowed):
        return None
    return f"{src} may import only {', '.join(allowed) or 'nothing of egocurate'}"


def test_every_import_follows_the_rule():
    modules = all_modules()
    problems = []
    for name, path in modules.items():
        for imported, line in imports_of(path, modules):
            why = violation(name, imported)
            if why:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports {imported}: {why}")
    assert not problems, "import rule broken:\n" + "\n".join(problems)


def test_no_import_circles():
    modules = all_modules()
    graph = {
        name: {i for i, _ in imports_of(path, modules) if i in modules and i != name}
        for name, path in modules.items()
    }
    # A package's __init__ that re-exports names imports its children; that is not a circle.
    for name in graph:
        if modules[name].name == "__init__.py":
            graph[name] = {d for d in graph[name] if not d.startswith(name)}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, f"import circles: {cycles}"


def test_the_rule_catches_a_bad_import(tmp_path):
    """The checker itself: an upward import from catalog, and a stage importing jobs, are caught."""
    assert violation("egocurate.catalog.store", "egocurate.media.decode")
    assert violation("egocurate.filters.quality", "egocurate.jobs.stage")
    assert violation("egocurate.export.lerobot", "egocurate.testing.videos")
    assert violation("egocurate.filters.quality", "egocurate.catalog.tables") is None
    assert violation("egocurate.shards.write", "egocurate.catalog.store") is None
    assert violation("egocurate.integrations.dreamdojo", "egocurate.shards.stream") is None
    assert violation("egocurate.integrations.dreamdojo", "egocurate.jobs.stage")


def test_top_level_rooms_tell_the_architecture():
    rooms = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert rooms == sorted(
        ["actions", "annotate", "catalog", "cli", "configs", "export", "filters", "ingest", "integrations",
         "jobs", "media", "shards", "testing"]
    )  # fmt: skip
    base_modules = ["__init__.py", "lerobot_layout.py", "stage_base.py", "storage.py"]
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == base_modules
