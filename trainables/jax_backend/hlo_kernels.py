"""How many kernels XLA made of a jax trial's step, read from its optimized HLO text (needs no jax).

The jax trainer (trainables/jax_backend/trainer.py) hands it `compiled.as_text()` after the timed region: the row's
fused_kernels and generated_kernels, which fusion=off changes.
"""

from __future__ import annotations

import re

XLA_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+ = [^=]*?\s([\w\-]+)\(")
XLA_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
XLA_CALLS = re.compile(r"calls=%?([\w.\-]+)")
XLA_APPLIES = re.compile(r"(?:to_apply|comparator)=%?([\w.\-]+)")  # a reduction's or sort's scalar function
# instructions that run no code of their own: they name, reshape the view of or group buffers
XLA_NO_CODE = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "after-all", "partition-id"}


def xla_kernel_counts(hlo_text: str) -> dict[str, int]:
    """{fused_kernels, generated_kernels} of optimized HLO text. generated: the instructions that run code of their own
    (a fusion counts once; parameters, tuples, bitcasts none) in the computations that run as such (not a fusion's
    body, nor a reduction's scalar function); fused: the fusions whose body computes more than one instruction
    (XLA:CPU wraps single ops into fusions too, its fusion-wrapper pass)."""
    computations: dict[str, list[str]] = {}
    fusion_bodies, inlined = set(), set()
    current = None
    for line in hlo_text.splitlines():
        header = XLA_COMPUTATION.match(line)
        if header and " = " not in line.split("{")[0]:
            current = computations.setdefault(header.group(1), [])
            continue
        instruction = XLA_INSTRUCTION.match(line)
        if instruction is None or current is None:
            continue
        current.append(instruction.group(1))
        inlined.update(XLA_APPLIES.findall(line))
        if instruction.group(1) == "fusion":
            fusion_bodies.update(XLA_CALLS.findall(line))
    ops = {name: sum(op not in XLA_NO_CODE for op in opcodes) for name, opcodes in computations.items()}
    return {
        "fused_kernels": sum(ops.get(body, 0) > 1 for body in fusion_bodies),
        "generated_kernels": sum(count for name, count in ops.items() if name not in fusion_bodies | inlined),
    }
