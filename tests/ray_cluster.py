"""A real multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`), this process connected to it."""

from contextlib import contextmanager


@contextmanager
def local_cluster(*, head_cpus: int = 1, nodes: int = 2):
    """A head with `head_cpus` CPUs and `nodes` nodes of one CPU each; yields (cluster, the added nodes), and
    disconnects and shuts it down after."""
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus})
    workers = [c.add_node(num_cpus=1) for _ in range(nodes)]
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    try:
        yield c, workers
    finally:
        ray.shutdown()
        c.shutdown()
