"""The package's imports point down its layers, at module level, with no cycles.

The layer order is WORKSPACE.md's code map; a module may import its own
layer and the ones below it. Sandbox child code (tasks/sandbox/child) runs
in the jailed process and imports nothing from the package but its own files.
"""

from __future__ import annotations

import ast
import functools
import json
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "marl_jax"
LAYERS = ("models", "parallel", "generate", "policies", "tasks", "workflows", "rl", "tiny",
          "trainer", "study", "bench")


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def _parse(path: pathlib.Path) -> ast.Module:
  return ast.parse(path.read_text(), str(path))


def _imports(path: pathlib.Path, module: str) -> list[tuple[str, int, bool]]:
  """(imported marl_jax module, line, inside a function) for every package import:
  `from p import m` imports module p.m when there is one, else p (m is a name of p)."""
  modules = _modules()
  tree = _parse(path)
  inside = set()
  for fn in ast.walk(tree):
    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      inside.update(id(n) for n in ast.walk(fn))
  found = []
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
               else node.module for a in node.names]
    elif isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    for name in names:
      if name.split(".")[0] == "marl_jax":
        found.append((name, node.lineno, id(node) in inside))
  return found


@functools.lru_cache(maxsize=None)
def _scan() -> dict[str, list[tuple[str, int, bool]]]:
  """Every module's package imports, read in a fresh interpreter: in a test
  worker whose recursion tracking an earlier test upset (a RecursionError
  caught and survived), CPython 3.11's ast.parse can raise SystemError."""
  out = subprocess.run([sys.executable, __file__], capture_output=True, text=True, check=True)
  return {module: [tuple(x) for x in found] for module, found in json.loads(out.stdout).items()}


def _layer(module: str) -> int | None:
  parts = module.split(".")
  return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  graph = {}
  for module, path in modules.items():
    targets = set()
    for name, _, _ in _scan()[module]:
      while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]  # an attribute (a function, a class) of a module
      if name in modules and name != module:
        targets.add(name)
    graph[module] = targets
  return graph


def test_every_module_sits_in_a_layer():
  stray = [m for m in _modules() if m.count(".") >= 1 and _layer(m) is None]
  assert not stray, f"modules outside the layers {LAYERS}: {stray}"


def test_imports_point_down_and_sit_at_module_level():
  wrong = []
  for module, path in _modules().items():
    for name, line, in_function in _scan()[module]:
      where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
      if in_function:
        wrong.append(f"{where} inside a function")
      own, other = _layer(module), _layer(name)
      if own is not None and other is not None and other > own:
        wrong.append(f"{where}, a higher layer ({LAYERS[other]} above {LAYERS[own]})")
  assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
  graph = _graph()
  state: dict[str, int] = {}
  cycles = []

  def visit(node, stack):
    state[node] = 1
    for target in sorted(graph[node]):
      if state.get(target) == 1:
        cycles.append(stack[stack.index(target):] + [target])
      elif target not in state:
        visit(target, stack + [target])
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])
  assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("child", sorted(p.name for p in (PACKAGE / "tasks/sandbox/child").glob("*.py")))
def test_sandbox_child_imports_nothing_of_the_package(child):
  module = "marl_jax.tasks.sandbox.child" + ("" if child == "__init__.py" else "." + child[:-3])
  assert not _scan()[module], f"{module} imports the package; it runs inside the jail"


if __name__ == "__main__":  # the child of _scan
  print(json.dumps({m: _imports(p, m) for m, p in _modules().items()}))
