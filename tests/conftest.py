from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def lastfm_path() -> Path:
    return DATA / "lastfm-asia.csv.gz"


@pytest.fixture(scope="session")
def facebook_path() -> Path:
    return DATA / "ego-facebook.txt.gz"


from tests.redis_server import redis_server  # noqa: E402,F401  (fixture)
