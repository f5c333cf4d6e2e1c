"""pytest setup for qkit's Python tests: import the package from this checkout's python/
(so the freshly built python/qkit/_C.so is used, whatever .pth file is installed), and give
every test a replayable seed (QKIT_TEST_SEED, printed on failure)."""
import os
import sys

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(_REPO, "python"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import qkit  # noqa: E402,F401  (fails loudly here if the extension is not built)

BASE_SEED = int(os.environ.get("QKIT_TEST_SEED", "20261122"))


@pytest.fixture
def gen(request):
    """A torch.Generator seeded from QKIT_TEST_SEED and the test's name."""
    seed = (BASE_SEED * 1000003 + sum(map(ord, request.node.nodeid))) % (2 ** 63)
    g = torch.Generator().manual_seed(seed)
    yield g


def pytest_report_header(config):
    return [f"qkit: {qkit.library_path} (seed QKIT_TEST_SEED={BASE_SEED}, targets "
            f"{qkit.ops.available_targets()})"]


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
    qkit.ops.force_target("")
