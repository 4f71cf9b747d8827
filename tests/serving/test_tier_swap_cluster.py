"""`pymk publish` swapping a Ray ranking tier whose shard servers are spread over a 3-node Ray cluster
(`ray.cluster_utils.Cluster`): the same checks as on one node (`test_tier_swap.swap_and_check`), with N's and
N+1's servers on several nodes."""

import pytest

from tests.helpers import build_synth_model
from tests.serving.test_tier_swap import SHARDS, USERS, swap_and_check

ray = pytest.importorskip("ray")

from tests.ray_cluster import local_cluster  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    with local_cluster() as (c, _):
        yield c


def test_publish_swaps_a_tier_whose_servers_span_nodes(cluster, tmp_path):
    n0 = build_synth_model(tmp_path / "n0", users=USERS, degree=8, seed=6, shards=SHARDS)
    assert len(swap_and_check(n0, tmp_path)) == SHARDS  # N+1's servers on as many nodes as there are shards
