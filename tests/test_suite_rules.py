"""tests/conftest.py's rule, checked on a throw-away suite: a skip for a missing package fails, others skip."""
import os
import shutil
import subprocess
import sys


def test_skip_for_a_missing_package_is_a_failure(tmp_path):
  shutil.copy(os.path.join(os.path.dirname(__file__), "conftest.py"), tmp_path / "conftest.py")
  (tmp_path / "test_fake.py").write_text(
      "import pytest\n"
      "def test_needs_a_package():\n"
      "  pytest.importorskip('surely_not_installed_package_xyz')\n"
      "def test_needs_data():\n"
      "  pytest.skip('shared data folder not present')\n")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                        capture_output=True, text=True, cwd=tmp_path, check=False, env=env)
  assert proc.returncode == 1, proc.stdout
  assert "1 failed, 1 skipped" in proc.stdout
  assert "skipped for a missing package" in proc.stdout and "[test] extra" in proc.stdout
