"""One style for the repository: `ruff check` with ruff.toml (2-space Google style, 120 columns, double quotes,
no unused imports or names), and no import cycles inside the jepa package."""
import ast
import os
import subprocess
import sys

from tests.helpers import REPO


def test_ruff_check_passes():
  proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO,
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def _imports(path, package_dir):
  """Modules of the jepa package that the file at `path` imports (top level or inside functions)."""
  names = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module)
      # `from jepa import losses` imports the module jepa.losses.
      names.update(f"{node.module}.{a.name}" for a in node.names)
  return {n for n in names if n.split(".")[0] == "jepa" and _module_path(n, package_dir)}


def _module_path(name, package_dir):
  base = os.path.join(os.path.dirname(package_dir), *name.split("."))
  return next((p for p in (base + ".py", os.path.join(base, "__init__.py")) if os.path.exists(p)), None)


def test_no_import_cycles_between_modules():
  """A cycle (a imports b, b imports a, even inside a function) makes the reading order of the code circular."""
  package_dir = os.path.join(REPO, "jepa")
  graph = {}
  for root, _, files in os.walk(package_dir):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(root, f)
        rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
        name = rel[:-len(".__init__")] if rel.endswith(".__init__") else rel
        # A package's __init__ re-exporting its modules is not a cycle with them.
        graph[name] = {n for n in _imports(path, package_dir) if not name.startswith(n + ".")
                       and not (f == "__init__.py" and n.startswith(name + "."))}
  cycles = set()

  def visit(node, stack):
    for nxt in graph.get(node, ()):
      if nxt in stack:
        cycles.add(" -> ".join(stack[stack.index(nxt):] + [nxt]))
      elif len(stack) < 12:
        visit(nxt, stack + [nxt])

  for start in graph:
    visit(start, [start])
  assert not cycles, sorted(cycles)[:10]
