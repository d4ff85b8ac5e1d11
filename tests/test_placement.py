"""GPU placement on a multi-node cluster: Ray places by declared resources, so two nodes that each declare
one GPU stand in for a two-machine GPU cluster on a CPU host (torch then runs on CPU)."""

from __future__ import annotations

import pytest

from imagineid.parallel import PlacementError, cluster_gpus, node_gpus


@pytest.fixture(scope="module")
def two_gpu_nodes():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1})
    cluster.add_node(num_cpus=1, num_gpus=1)
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_a_request_one_node_can_hold_is_placed_one_task_per_node(two_gpu_nodes) -> None:
    import ray

    assert sorted(node_gpus()) == [1.0, 1.0]
    gpus = cluster_gpus(1.0)
    assert gpus == 1.0

    @ray.remote(num_gpus=gpus, num_cpus=1)
    def where() -> tuple[str, list]:
        return ray.get_runtime_context().get_node_id(), ray.get_gpu_ids()

    placed = ray.get([where.remote(), where.remote()], timeout=120)
    assert len({node for node, _ in placed}) == 2  # one 1-GPU task on each node
    assert all(len(ids) == 1 for _, ids in placed)


def test_more_gpus_per_task_than_any_node_has_is_refused_at_once(two_gpu_nodes) -> None:
    # the cluster has 2 GPUs in all, but a task's GPUs must sit on one node: Ray would queue it forever
    with pytest.raises(PlacementError, match="2 GPUs per task, but the largest node has 1"):
        cluster_gpus(2.0)
    assert cluster_gpus(0.0) == 0.0
