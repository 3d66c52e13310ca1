"""The hardware fingerprint, and the peaks measured beside it, as readable text for the terminal (`bench.py hw`)."""

from __future__ import annotations

from hwctl.cores import parse_cpu_list
from hwctl.fingerprint import fingerprint_id


def _size(kb: int | None) -> str:
    return "?" if kb is None else f"{kb // 1024} MiB" if kb >= 1024 and kb % 1024 == 0 else f"{kb} KiB"


def _ghz(khz: int | None) -> str:
    return f"{khz / 1e6:.2f} GHz" if khz else "?"


def _state(section: dict, text: str) -> str:
    return text if section["available"] else f"unavailable: {section.get('reason', 'unknown reason')}"


def _cpu_line(cpu: dict) -> str:
    extra = cpu.get("py_cpuinfo") or {}
    parts = [cpu["vendor"], cpu["arch"]]
    if extra.get("family") is not None:
        parts.append(f"family {extra['family']} model {extra['model_number']} stepping {extra['stepping']}")
    if extra.get("advertised_hz"):
        parts.append(f"{extra['advertised_hz'] / 1e9:.2f} GHz advertised")
    return f"{cpu.get('display') or cpu['model']} ({', '.join(str(p) for p in parts)})"


def _cache_line(name: str, cache: dict) -> str:
    groups = [i["cpus"] for i in cache["instances"]]
    if all(len(parse_cpu_list(g)) == 1 for g in groups):
        where = "one per CPU"
    else:
        where = "shared by cpus " + " | ".join(groups[:8]) + (" | ..." if len(groups) > 8 else "")
    sizes = {i["size_kb"] for i in cache["instances"]}
    return f"{name:<3} {'up to ' if len(sizes) > 1 else ''}{_size(cache['size_kb'])} x{cache['count']}, {where}"


def _sections(fp: dict):
    """(label, [lines]) pairs in the order a reader wants them."""
    cpu, topo, sw, numa, turbo, rapl = (fp[k] for k in ("cpu", "topology", "software", "numa", "turbo", "rapl"))
    yield "host", [f"{fp['host']}  fingerprint {fp.get('fingerprint_id') or fingerprint_id(fp)}"]
    yield "cpu", [_cpu_line(cpu)]
    smt = f"SMT {topo['threads_per_core']} thread(s)/core" + (", SMT off" if topo["smt_active"] is False else "")
    yield (
        "topology",
        [
            f"{topo['sockets']} socket(s), {topo['physical_cores']} physical cores, "
            f"{topo['logical_cores']} logical CPUs ({topo['cpus']}), {smt}"
        ],
    )
    nodes = [
        f"node{n['node']}: cpus {n['cpus']}, " + (f"{n['memory_kb'] / 2**20:.1f} GiB" if n["memory_kb"] else "memory ?")
        for n in numa["nodes"]
    ]
    yield "numa", nodes or [_state(numa, "")]
    yield (
        "caches",
        [_cache_line(name, c) for name, c in fp["caches"].items()] or ["unavailable: no cache/index* in sysfs"],
    )
    yield "isa", [" ".join(cpu["isa"]) or "none of the listed", "missing: " + (" ".join(cpu["isa_missing"]) or "none")]
    yield "memory", [f"{fp['memory']['total_gib']} GiB total"]
    yield "kernel", [fp["kernel"]]
    f = fp["cpufreq"]
    yield (
        "cpufreq",
        [
            _state(
                f,
                f"driver {f.get('driver')}, governor {f.get('governor')}, {_ghz(f.get('min_khz'))} .. "
                f"{_ghz(f.get('max_khz'))} (base {_ghz(f.get('base_khz'))}), scaling limits "
                f"{_ghz(f.get('scaling_min_khz'))} .. {_ghz(f.get('scaling_max_khz'))}, "
                f"{len(f.get('policies', []))} policies",
            )
        ],
    )
    peak = fp["theoretical_peak"]
    per_core = [
        f"{label} {peak[f'{label}_gflops_per_core']:.1f} GFLOP/s per core"
        for label in ("fp32", "bf16")
        if peak[f"{label}_gflops_per_core"] is not None
    ]
    yield "theoretical", [", ".join(per_core) or "unknown", peak["method"]]
    yield "turbo", [_state(turbo, f"{'on' if turbo['enabled'] else 'off'} ({turbo.get('control')})")]
    domains = ", ".join(d["name"] or d["zone"] for d in rapl["domains"] if d["readable"])
    yield "rapl", [_state(rapl, f"readable: {domains}")]
    torch_line = "not installed"
    if sw["torch"]:
        torch_line = f"{sw['torch']}, cpu capability {sw.get('torch_cpu_capability')}, BLAS {sw.get('torch_blas')}"
    yield "torch", [torch_line]
    for package in ("numpy", "jax", "ray"):
        yield package, [sw[package] or "not installed"]
    yield "python", [sw["python"]]
    pools = []
    for pool in sw.get("threadpools", []):
        detail = "".join(f", {pool[k]}" for k in ("threading_layer", "architecture") if pool.get(k))
        version = f" {pool['version']}" if pool["version"] else ""
        threads = f"{pool['user_api']}, {pool['num_threads']} threads{detail}"
        pools.append(f"{pool['internal_api']}{version} ({threads}) {pool['prefix']}")
    yield "threadpools", pools or ["none loaded"]


def format_fingerprint(fp: dict) -> str:
    """full_fingerprint(...) as aligned text for a terminal (`bench.py hw`), with fp["peaks"] when
    the caller added measure_host_peaks(...) there."""
    sections = list(_sections(fp))
    width = max(len(label) for label, _ in sections)
    text = "\n".join(
        f"{label if i == 0 else '':<{width}}  {line}" for label, lines in sections for i, line in enumerate(lines)
    )
    if fp.get("peaks"):
        text += "\n\n" + format_host_peaks(fp["peaks"])
    return text


def format_host_peaks(peaks: dict) -> str:
    """measure_host_peaks(...) (microbench.py) as a small table for a terminal."""

    def cell(value, cached):
        return "-" if value is None else f"{value:.1f}" + (" (cached)" if cached else "")

    lines = [
        f"peaks on {peaks['host']} (fingerprint {peaks['fingerprint_id']}, torch {peaks['torch_cpu_capability']}, "
        f"{peaks['allowed_cpus']} CPUs allowed)",
        f"{'threads':>7}  {'fp32 GFLOP/s':>18}  {'bf16 GFLOP/s':>18}  {'triad GB/s':>18}  {'machine fp32 (best)':>28}",
    ]
    for row in peaks["peaks"]:
        machine = cell(row.get("machine_fp32_gflops"), row.get("machine_fp32_cached"))
        if row.get("machine_fp32_library"):
            machine += f" {row['machine_fp32_library']}"
        lines.append(
            f"{row['threads']:>7}  {cell(row['fp32_gflops'], row['fp32_cached']):>18}  "
            f"{cell(row['bf16_gflops'], row['bf16_cached']):>18}  {cell(row['triad_gbs'], row['triad_cached']):>18}"
            f"  {machine:>28}"
        )
    first = peaks["peaks"][0] if peaks["peaks"] else {}
    for key in ("fp32_method", "bf16_method", "triad_method"):
        if key in first:
            lines.append(f"{key.split('_')[0]}: {first[key]}")
    return "\n".join(lines)
