import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep every test's data cache out of the user's home."""
    monkeypatch.setenv("FERLAB_CACHE_DIR", str(tmp_path_factory.mktemp("ferlab-cache")))
