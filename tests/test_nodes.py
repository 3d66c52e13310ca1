"""Choosing nodes and validating a plan per node, without a cluster: each node's expansion is what
expand_plan gives with that node's CPUs (on a real cluster the expansion runs on the node itself)."""

import pytest

from sweep.nodes import Node, NodePlan, NodeSelectionError, expand_here, nowhere_runnable, select_nodes
from sweep.plan import PlanError, expand_plan
from tests.bench_process import TINY_BASELINE

# this machine's two cores stand in for a two-core node and for one-core nodes
NODES = [
    Node("10.0.0.1", "a" * 8, "big", 2),
    Node("10.0.0.2", "b" * 8, "small", 1),
    Node("10.0.0.3", "c" * 8, "small", 1),
]


def test_select_by_ip_or_hostname():
    assert select_nodes(NODES, "all") == NODES
    assert [n.ip for n in select_nodes(NODES, "10.0.0.2")] == ["10.0.0.2"]
    assert [n.ip for n in select_nodes(NODES, "small")] == ["10.0.0.2", "10.0.0.3"]  # a hostname may name several
    assert [n.ip for n in select_nodes(NODES, "big, 10.0.0.3")] == ["10.0.0.1", "10.0.0.3"]


def test_unknown_node_and_shared_ips_are_clear_errors():
    with pytest.raises(NodeSelectionError, match=r"no node laptop in the cluster \(nodes: big \(10.0.0.1\), small"):
        select_nodes(NODES, "big,laptop")
    twins = [Node("127.0.0.1", "x", "a", 1), Node("127.0.0.1", "y", "b", 1)]
    with pytest.raises(NodeSelectionError, match="same IP 127.0.0.1.*--node-ip-address"):
        select_nodes(twins, "all")
    with pytest.raises(NodeSelectionError, match="no alive node"):
        select_nodes([], "all")


def node_plan(node: Node, studies: list[dict]) -> NodePlan:
    document = {"name": "p", "baseline": TINY_BASELINE, "studies": studies}
    plan = expand_plan(document, "p.yaml", record_unsupported=True, allowed_cpus=set(range(node.cpus)))
    return NodePlan(node, plan)


def test_a_point_one_node_cannot_run_is_unsupported_there_only():
    studies = [{"name": "threads", "axis": "threads", "values": [1, 2]}]
    plans = [node_plan(NODES[0], studies), node_plan(NODES[1], studies)]
    assert [t.unsupported for t in plans[0].plan.trials] == [None, None]
    assert [t.unsupported for t in plans[1].plan.trials] == [
        None,
        "threads=2 exceeds the 1 cores available to this trial",
    ]
    assert nowhere_runnable(plans) == []  # the two-core node runs threads=2


def test_a_point_no_node_can_run_is_a_plan_problem_naming_each_node():
    studies = [{"name": "threads", "axis": "threads", "values": [1, 4]}]
    problems = nowhere_runnable([node_plan(NODES[0], studies), node_plan(NODES[1], studies)])
    assert problems == [
        "study 'threads': point threads=4: no selected node can run it: "
        "big (10.0.0.1): threads=4 exceeds the 2 cores available to this trial; "
        "small (10.0.0.2): threads=4 exceeds the 1 cores available to this trial "
        "(--record-unsupported records it instead)"
    ]


def test_machine_ranges_expand_per_node_and_a_study_a_node_cannot_have_is_dropped_there():
    document = {
        "name": "p",
        "baseline": TINY_BASELINE,
        "studies": [
            {"name": "cores", "axis": "cores", "values": "1..all"},
            {"name": "freq", "axis": "freq_ghz", "values": "min..max"},  # this machine has no cpufreq
        ],
    }
    plan, skipped = expand_here(document, "p.yaml")
    assert {t.study for t in plan.trials} == {"cores"}
    assert len(skipped) == 1 and skipped[0].startswith("study 'freq': ")
    with pytest.raises(PlanError, match="unknown key"):  # a problem of the plan itself is never dropped
        expand_here(document | {"baseline": TINY_BASELINE | {"widht": 3}}, "p.yaml")
