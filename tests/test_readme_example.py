"""The README's "Use the losses in your own JAX code" example runs as written."""
import os
import re

from tests.helpers import REPO

HEADING = "## Use the losses in your own JAX code"


def readme_example():
  """The first ```python block after HEADING in README.md."""
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    text = f.read()
  assert HEADING in text, f"README.md has no section {HEADING!r}"
  section = text.split(HEADING, 1)[1]
  match = re.search(r"```python\n(.*?)```", section, flags=re.S)
  assert match, f"no ```python block under {HEADING!r}"
  return match.group(1)


def test_readme_losses_example_runs(capsys):
  code = readme_example()
  namespace = {"__name__": "readme_example"}
  exec(compile(code, "README.md:losses-example", "exec"), namespace)  # pylint: disable=exec-used
  printed = capsys.readouterr().out
  assert "invariance" in printed and "sigreg" in printed
