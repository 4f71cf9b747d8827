import os
from pathlib import Path

import pytest
from hypothesis import settings

# one fixed hypothesis profile: the same examples on every run (CI and here), no deadline on a shared machine;
# HYPOTHESIS_PROFILE=explore draws new examples locally
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def lastfm_path() -> Path:
    return DATA / "lastfm-asia.csv.gz"


@pytest.fixture(scope="session")
def facebook_path() -> Path:
    return DATA / "ego-facebook.txt.gz"


from tests.redis_server import redis_server  # noqa: E402,F401  (fixture)
