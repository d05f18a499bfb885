"""Suite-wide rule: a test may not pass as skipped because a package is missing.

`pip install -e ".[test]"` installs everything the tests use (PyAV, torch's CPU build); a skip that says a
package could not be imported means that install step is broken, so it is reported as a failure (CI would
otherwise stay green on a machine that happens to have the package, and skip the check everywhere else).
Skips for other reasons (e.g. ../shared/data absent on a user's machine) stay skips.

Also: XLA's backend optimisation level 0 for the whole suite (tests/helpers.py TEST_XLA_FLAGS says why), and
one JAX compilation cache per suite run, shared by the pytest-xdist workers and every process a test starts:
many tests compile the same tiny programs (the CLI tests each start `jepa.main` on a tiny config), and a cache
that starts empty every run still compiles each program once in that run and carries nothing over.
"""
import atexit
import os
import re
import shutil
import tempfile

import pytest

from tests.helpers import TEST_XLA_FLAGS

# Before any test imports JAX (conftest is imported first); a user's own XLA_FLAGS win.
os.environ.setdefault("XLA_FLAGS", TEST_XLA_FLAGS)

# Tests run on the CPU; with libtpu installed (the [test] extra, for tests/test_aot.py) JAX would otherwise
# probe for a TPU in every process. TPU topologies for ahead-of-time compilation work with this set.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The first process to import this file (pytest itself; its xdist workers inherit the variables) makes the
# cache and deletes it at exit. A user's own JAX_COMPILATION_CACHE_DIR is used as it is and kept.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="jepa-tests-jax-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # tiny programs compile fast
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")  # cache every size

MISSING_PACKAGE = re.compile(r"could not import|No module named|is not installed|pip install", re.IGNORECASE)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # pylint: disable=unused-argument
  outcome = yield
  report = outcome.get_result()
  if report.skipped and isinstance(report.longrepr, tuple):
    reason = str(report.longrepr[2])
    if MISSING_PACKAGE.search(reason):
      report.outcome = "failed"
      report.longrepr = (f'skipped for a missing package ({reason}); `pip install -e ".[test]"` must install '
                         "it: add it to the [test] extra in setup.py")
