"""The library's layers import one way (docs/architecture.md § Layers): a module may import its own
package and the layers below it, never one above. Function-level (lazy) imports count too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "imagineid"

# Bottom to top. Within one rank nothing imports sideways either.
LAYERS = [
    ["imagineid", "errors"],  # the package root, the error type
    ["gpu_claims"],  # host-wide GPU locks, under the Ray start-up in parallel
    ["safe_loading", "parallel", "precision", "settings"],  # utilities with no project dependencies
    ["media", "models"],  # ffmpeg I/O; nn.Modules (diffusers style)
    ["audio", "pipelines"],  # audio features; the diffusers pipeline
    ["face"],  # detection, tracking, morphable models, masks
    ["data"],  # DATA/
    ["synth"],  # the synthetic corpus and its ground-truth checks
    ["preprocessing"],  # videos → DATA
    ["runs"],  # RUN/
    ["listening"],  # the trained disentangler, at inference
    ["training"],  # DATA → RUN
    ["generation"],  # RUN + audio → GEN
    ["evaluation"],  # GEN → metrics
    ["demo"],
    ["cli"],
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = (
                [node.module]
                if node.module != "imagineid"
                else [  # `from imagineid import x`: x a module?
                    f"imagineid.{a.name}"
                    if (PACKAGE / a.name).is_dir() or (PACKAGE / f"{a.name}.py").exists()
                    else "imagineid"
                    for a in node.names
                ]
            )
            found += [(node.lineno, n) for n in names if n.split(".")[0] == "imagineid"]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "imagineid"]
    return found


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        out.append((".".join(rel.parts).removesuffix(".__init__"), path))
    return out


def test_every_part_of_the_library_has_a_layer() -> None:
    units = {unit_of(name) for name, _ in modules()}
    assert units == set(RANK), f"not in LAYERS: {sorted(units - set(RANK))}; gone: {sorted(set(RANK) - units)}"


def test_nothing_imports_upward_or_sideways() -> None:
    wrong = []
    for name, path in modules():
        here = unit_of(name)
        for line, target in imports(path):
            there = unit_of(target)
            if there != here and RANK.get(there, 99) >= RANK[here]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({here}) imports {target} ({there})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_generation_has_no_import_cycle() -> None:
    graph = {
        name: {t for _, t in imports(path) if t.startswith("imagineid.generation.")}
        for name, path in modules()
        if name.startswith("imagineid.generation.")
    }
    seen, stack = set(), []

    def visit(node: str) -> None:
        assert node not in stack, " → ".join([*stack[stack.index(node) :], node])
        if node in seen:
            return
        stack.append(node)
        for nxt in graph.get(node, ()):
            visit(nxt)
        stack.pop()
        seen.add(node)

    for node in graph:
        visit(node)
