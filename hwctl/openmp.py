"""OpenMP's binding and wait policy for a worker: the variables to set, and what the runtime says it took.

libgomp reads OMP_PROC_BIND, OMP_PLACES, OMP_WAIT_POLICY and GOMP_SPINCOUNT once, when it loads, so they are set in
the worker's environment before it starts. With OMP_DISPLAY_ENV=verbose (true leaves out GOMP_SPINCOUNT) it prints
the settings it really runs with to stderr at that moment, between `OPENMP DISPLAY ENVIRONMENT BEGIN` and `... END`:
that block, not what was set, is the read-back (e.g. OMP_WAIT_POLICY unset reads 'PASSIVE' with GOMP_SPINCOUNT
'300000', libgomp's spin before it sleeps). Newer libgomp (GCC 12+) prefixes each line with `[host]`, `[device]` or
`[all]`; the host's value is kept.
"""

from __future__ import annotations

import re

DISPLAY_BEGIN = "OPENMP DISPLAY ENVIRONMENT BEGIN"
DISPLAY_END = "OPENMP DISPLAY ENVIRONMENT END"
_BLOCK = re.compile(rf"^[^\n]*{DISPLAY_BEGIN}[^\n]*\n(.*?)^[^\n]*{DISPLAY_END}[^\n]*(?:\n|$)", re.M | re.S)
# "  OMP_PLACES = '{0},{1}'", "  [host] OMP_WAIT_POLICY = 'PASSIVE'", "  _OPENMP = '201511'"
_SETTING = re.compile(r"^\s*(?:\[(\w+)\]\s+)?([A-Z_][A-Z0-9_]*)\s*=\s*'(.*)'\s*$")


def openmp_environment(
    cpus: list[int] | None,
    pinning: str,
    proc_bind: str | None = None,
    places: str | None = None,
    wait: str | None = None,
    spincount: int | None = None,
) -> dict[str, str]:
    """The OpenMP variables for a worker confined to `cpus` (in the order their places should run; None: not
    confined). Autos: pinned, one explicit place per CPU and threads bound close (spread under pinning=spread);
    unpinned, no binding; wait policy and spin count left to the runtime."""
    env = {}
    pinned = cpus is not None and pinning != "none"
    if places is not None:
        env["OMP_PLACES"] = places  # cores, threads, sockets: libgomp builds them inside the worker's CPU mask
    elif pinned:
        env["OMP_PLACES"] = ",".join(f"{{{c}}}" for c in cpus)
    if proc_bind is not None:
        env["OMP_PROC_BIND"] = proc_bind
    elif pinned:
        env["OMP_PROC_BIND"] = "spread" if pinning == "spread" else "close"
    elif places is not None:
        env["OMP_PROC_BIND"] = "false"  # unpinned: places asked for are listed, threads stay unbound
    if wait is not None:
        env["OMP_WAIT_POLICY"] = wait
    if spincount is not None:
        env["GOMP_SPINCOUNT"] = str(spincount)
    return env


def parse_display_env(text: str) -> dict[str, str] | None:
    """The settings of the first OMP_DISPLAY_ENV block in `text` ({'OMP_PROC_BIND': 'CLOSE', ...}), or None when the
    runtime printed none (no libgomp loaded, or a runtime that ignores OMP_DISPLAY_ENV)."""
    block = _BLOCK.search(text)
    if block is None:
        return None
    settings: dict[str, str] = {}
    for line in block.group(1).splitlines():
        match = _SETTING.match(line)
        if match is None:
            continue
        scope, name, value = match.groups()
        if scope in (None, "host", "all"):
            settings.setdefault(name, value)
    return settings


def strip_display_env(text: str) -> str:
    """`text` without its OMP_DISPLAY_ENV blocks: a failed row's stderr tail keeps the worker's own last words."""
    return _BLOCK.sub("", text)
