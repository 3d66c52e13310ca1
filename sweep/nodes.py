"""The nodes a sweep runs on: which Ray nodes take part, and what each of them can run, asked on the node.

A node is known by its IP address (Ray's NodeManagerAddress: unique in a cluster, unlike hostnames) and
is targeted through the `node:<IP>` resource Ray gives every node. Before any trial runs, a small task on
each node expands the plan there (its cores, its cpufreq, its allocators decide what is unsupported),
reads the node's fingerprint and measures (or reads cached) its all-core matmul peak and memory bandwidth.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from sweep.plan import Plan, PlanError, expand_plan
from trainables.config import format_assignments


class NodeSelectionError(LookupError):
    """--nodes names a node the cluster does not have, or the selected nodes cannot be told apart."""


@dataclass(frozen=True)
class Node:
    ip: str
    node_id: str
    hostname: str
    cpus: int

    @property
    def label(self) -> str:
        return f"{self.hostname} ({self.ip})"


@dataclass
class NodePlan:
    """What one node will run: its expansion of the plan, the studies it cannot run, its fingerprint columns."""

    node: Node
    plan: Plan
    skipped_studies: list[str] = field(default_factory=list)
    columns: dict = field(default_factory=dict)  # host, hw_*, sw_*, hw_peak_gflops_fp32, hw_mem_bw_gbs


def alive_nodes() -> list[Node]:
    """Every alive node with at least one CPU, in a stable order (by IP)."""
    import ray

    nodes = [
        Node(n["NodeManagerAddress"], n["NodeID"], n.get("NodeManagerHostname") or "", int(n["Resources"]["CPU"]))
        for n in ray.nodes()
        if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1
    ]
    return sorted(nodes, key=lambda n: tuple(int(p) if p.isdigit() else p for p in n.ip.split(".")))


def alive_ips() -> set[str]:
    import ray

    if not ray.is_initialized():  # no cluster to ask (the driver has shut Ray down): no node is alive
        return set()
    return {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}


def local_node() -> Node:
    """The node this driver runs on (autotune measures here)."""
    from ray.util import get_node_ip_address

    here = get_node_ip_address()
    return next(n for n in alive_nodes() if n.ip == here)


def node_gone(ip: str, wait_s: float = 20.0) -> bool:
    """Whether the node left the cluster. Its trial's actor dies before Ray marks the node dead: wait a little."""
    deadline = time.monotonic() + wait_s
    while ip in alive_ips():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def select_nodes(nodes: list[Node], selection: str) -> list[Node]:
    """`all`, or a comma list of IPs and hostnames (a hostname selects every node that has it)."""
    if not nodes:
        raise NodeSelectionError("the Ray cluster has no alive node with a CPU")
    if selection.strip() in ("", "all"):
        chosen = nodes
    else:
        names = [s.strip() for s in selection.split(",") if s.strip()]
        unknown = [s for s in names if not any(s in (n.ip, n.hostname) for n in nodes)]
        if unknown:
            known = ", ".join(n.label for n in nodes)
            raise NodeSelectionError(
                f"--nodes {selection}: no node {', '.join(unknown)} in the cluster (nodes: {known})"
            )
        chosen = [n for n in nodes if n.ip in names or n.hostname in names]
    ips = [n.ip for n in chosen]
    shared = sorted({ip for ip in ips if ips.count(ip) > 1})
    if shared:
        raise NodeSelectionError(
            f"several nodes registered with the same IP {', '.join(shared)}: rows could not say which node measured "
            "them. Start each node with `ray start --node-ip-address=<its own address>` (cluster.yaml does)."
        )
    return chosen


# ---- on the node ----------------------------------------------------------------------------------
def expand_here(document: dict, source: str) -> tuple[Plan, list[str]]:
    """This node's expansion with every point kept (unsupported ones carry their reason); a study whose
    values cannot be had here (e.g. 'min..max' frequencies without cpufreq) is dropped with its problems."""
    try:
        return expand_plan(document, source, record_unsupported=True), []
    except PlanError as whole:
        studies = document.get("studies") if isinstance(document, dict) else None
        if not isinstance(studies, list) or len(studies) < 2:
            raise
        keep, skipped = [], []
        for study in studies:
            try:
                expand_plan(document | {"studies": [study]}, source, record_unsupported=True)
                keep.append(study)
            except PlanError as exc:
                skipped += exc.problems
        if not keep or len(skipped) != len(whole.problems):  # a problem of the plan itself, not of a study
            raise whole from None
        return expand_plan(document | {"studies": keep}, source, record_unsupported=True), skipped


def node_peaks(data_dir: str) -> dict:
    """All-core fp32 matmul peak and triad bandwidth of this node, measured afresh: this runs once per new sweep, before
    its trials, and makes the node's cached peaks stale, so each trial's conditions are measured again in this sweep
    (hwctl/microbench.py)."""
    import os
    from pathlib import Path

    from hwctl.fingerprint import host_fingerprint
    from hwctl.housekeeping import process_on_cpus, trial_cpus
    from hwctl.microbench import matmul_peak_gflops, memory_bandwidth_gbs, refresh_peaks

    cache = Path(data_dir) / "hw"
    refresh_peaks(cache, host_fingerprint()["hw_fingerprint_id"])
    # on the trials' CPUs: this task's worker may have inherited the housekeeping pin of Ray's processes
    with process_on_cpus(trial_cpus()):
        cores = len(os.sched_getaffinity(0))
        return {
            "hw_peak_gflops_fp32": matmul_peak_gflops(cores, cache)["peak_gflops"],
            "hw_mem_bw_gbs": memory_bandwidth_gbs(cores, cache)["bandwidth_gbs"],
        }


def _probe(document: dict, source: str) -> dict:
    from ray.util import get_node_ip_address

    from hwctl.cores import format_cpu_list
    from hwctl.fingerprint import host_fingerprint
    from hwctl.housekeeping import split_node_cpus

    here = {"ip": get_node_ip_address(), "host": socket.gethostname(), "columns": host_fingerprint()}
    try:  # the same N on every node, of its own CPUs: one with too few CPUs for it is left out
        housekeeping = split_node_cpus()[0]
    except ValueError as exc:
        return here | {"problems": [str(exc)]}
    here["columns"] |= {"housekeeping_cpus": format_cpu_list(housekeeping)}
    try:
        plan, skipped = expand_here(document, source)
    except PlanError as exc:
        return here | {"problems": exc.problems}
    return here | {"plan": plan, "skipped": skipped}


# ---- on the driver --------------------------------------------------------------------------------
def _on(node: Node, function, num_cpus: float = 0):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    strategy = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
    return ray.remote(function).options(num_cpus=num_cpus, scheduling_strategy=strategy, max_retries=0)


def probe_nodes(nodes: list[Node], document: dict, source: str, data_dir: str) -> list[NodePlan]:
    """Expand the plan on every node (in parallel), then read each node's peaks (one node at a time:
    nodes may share a machine, and a measurement must not run beside another). Raises PlanError when
    the plan is invalid on every node."""

    futures = [_on(n, _probe).remote(document, source) for n in nodes]
    plans, problems = [], []
    for node, future in zip(nodes, futures, strict=True):
        answer = _answer_unless_gone(node, future)
        if answer is None:
            continue
        if answer["ip"] != node.ip:
            raise RuntimeError(f"the probe for node {node.label} ran on {answer['ip']}")
        if "problems" in answer:
            problems.append((node, answer["problems"]))
            continue
        host = answer["host"] or node.hostname
        columns = answer["columns"] | {"host": host, "node": node.ip, "node_cpus": node.cpus}
        plans.append(NodePlan(Node(node.ip, node.node_id, host, node.cpus), answer["plan"], answer["skipped"], columns))
    if not plans:
        raise PlanError(source, sorted({p for _, node_problems in problems for p in node_problems}))
    for node, node_problems in problems:
        print(f"node {node.label} cannot run this plan and is left out: {'; '.join(node_problems)}")
    measured = []
    for node_plan in plans:
        peaks = _answer_unless_gone(
            node_plan.node, _on(node_plan.node, node_peaks, node_plan.node.cpus).remote(data_dir)
        )
        if peaks is not None:
            node_plan.columns |= peaks
            measured.append(node_plan)
    if not measured:
        raise PlanError(source, ["every node left the cluster while the sweep was set up"])
    return measured


def _answer_unless_gone(node: Node, future):
    """ray.get(future); None, with a line, when the node left the cluster before answering (it is left out of the
    sweep: the chaos soak, benchmarks/chaos_soak.py, kills nodes at any time)."""
    import ray

    try:
        return ray.get(future)
    except ray.exceptions.RayError as exc:
        if not node_gone(node.ip):
            raise
        print(f"node {node.label} left the cluster while the sweep was set up and is left out: {type(exc).__name__}")
        return None


def nowhere_runnable(node_plans: list[NodePlan]) -> list[str]:
    """Problems for points that no node can run (each node's reason), the multi-node form of plan validation."""
    reasons: dict[tuple[str, str], list[str]] = {}  # (study, config_key) -> why each node cannot run it
    present: dict[tuple[str, str], int] = {}  # -> how many nodes have the point at all
    labels: dict[tuple[str, str], str] = {}
    for node_plan in node_plans:
        for trial in node_plan.plan.trials:
            key = (trial.study, trial.config_key)
            labels[key] = format_assignments(trial.point)
            present[key] = present.get(key, 0) + 1
            if trial.unsupported:
                reasons.setdefault(key, []).append(f"{node_plan.node.label}: {trial.unsupported}")
    where = "this machine cannot" if len(node_plans) == 1 else "no selected node can"
    return [
        f"study '{study}': point {labels[study, key]}: {where} run it: {'; '.join(why)} "
        "(--record-unsupported records it instead)"
        for (study, key), why in reasons.items()
        if len(why) == present[study, key]
    ]
