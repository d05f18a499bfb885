"""Suite-wide rule: a test may not pass as skipped because a package is missing.

`pip install -e ".[test]"` installs everything the tests use (PyAV, torch's CPU build); a skip that says a
package could not be imported means that install step is broken, so it is reported as a failure (CI would
otherwise stay green on a machine that happens to have the package, and skip the check everywhere else).
Skips for other reasons (e.g. ../shared/data absent on a user's machine) stay skips.

Also: XLA's backend optimisation level 0 for the whole suite (tests/helpers.py TEST_XLA_FLAGS says why).
"""
import os
import re

import pytest

from tests.helpers import TEST_XLA_FLAGS

# Before any test imports JAX (conftest is imported first); a user's own XLA_FLAGS win.
os.environ.setdefault("XLA_FLAGS", TEST_XLA_FLAGS)

# Tests run on the CPU; with libtpu installed (the [test] extra, for tests/test_aot.py) JAX would otherwise
# probe for a TPU in every process. TPU topologies for ahead-of-time compilation work with this set.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
