"""Which names of the tests' namespace come from the program, and which not.

The tests run in their own module namespace, in their own process. Their
globals start as the builtins plus:

- the program's objects for the entry points the task names (HumanEval's
  `entry_point`, for instance), and nothing else of the program's;
- when the task names none, the program's objects for the tests' free
  names: used, never bound at the top level of the tests, not builtins;
- for a free name that is a standard-library module (`math` in
  `assert math.isclose(area(2), 12.57)`, which MBPP's tests use without
  importing it), this process's own import of that module, never the
  program's: a program that patches `math.isclose`, or binds `math` to an
  object of its own, changes nothing the tests see. Without named entry
  points, a module name the tests call directly (`copy(x)`) is the
  program's function, since no module is callable.

Standard library only: this module runs inside the sandbox's tests process.
"""

import ast
import builtins
import importlib
import sys

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda,
           ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _top_level_bindings(tree: ast.Module) -> set:
  """Names the tests bind in their own global scope (anywhere outside a
  function, class, lambda or comprehension body, or declared `global`)."""
  bound, stack = set(), list(tree.body)
  while stack:
    node = stack.pop()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      bound.add(node.name)
      stack.extend(node.decorator_list)
    if isinstance(node, ast.Global):
      bound.update(node.names)
    if isinstance(node, _SCOPES):
      # Their bodies bind locals; only `global` statements inside count.
      stack.extend(n for n in ast.walk(node) if isinstance(n, ast.Global))
      continue
    if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
      bound.add(node.id)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      bound.update((a.asname or a.name).split(".")[0] for a in node.names
                   if a.name != "*")
    elif isinstance(node, ast.ExceptHandler) and node.name:
      bound.add(node.name)
    elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
      bound.add(node.name)
    elif isinstance(node, ast.MatchMapping) and node.rest:
      bound.add(node.rest)
    stack.extend(ast.iter_child_nodes(node))
  return bound


def free_names(tree: ast.Module) -> list:
  """Names the tests read but never bind globally, builtins excluded."""
  used = {n.id for n in ast.walk(tree)
          if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
  return sorted(n for n in used - _top_level_bindings(tree)
                if n not in vars(builtins) and not n.startswith("__"))


def _called(tree: ast.Module) -> set:
  return {n.func.id for n in ast.walk(tree)
          if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def plan(tree: ast.Module, entry_points) -> tuple:
  """(names to take from the program, standard modules to import here)."""
  free = free_names(tree)
  if entry_points:
    modules = [n for n in free if n in sys.stdlib_module_names
               and n not in entry_points]
    return sorted(set(entry_points)), modules
  called = _called(tree)
  modules = [n for n in free
             if n in sys.stdlib_module_names and n not in called]
  return [n for n in free if n not in modules], modules


def trusted_modules(names) -> dict:
  """This process's own imports of the named standard modules (those that
  import here; a name that does not stays unbound, a NameError if used)."""
  found = {}
  for name in names:
    try:
      found[name] = importlib.import_module(name)
    except Exception:  # pylint: disable=broad-except
      continue
  return found
