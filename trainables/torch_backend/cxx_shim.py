"""The C++ compiler Inductor runs for a trial, wrapped: a shell script that logs each command line and runs the real
compiler, so the row records the exact compile commands (and cxx_opt can replace Inductor's hard-coded -O3).

Inductor takes its compiler from $CXX (torch/_inductor/config.py `cpp.cxx`, read when Inductor loads) and tells gcc
from clang by the compiler's path (cpp_builder.py `_is_gcc`, `_is_clang`: regexes on the path): the shim is named
after the real compiler (g++, clang++), so Inductor treats it as that compiler. It passes every invocation through
(the `--version` and `-v` probes too), changing nothing but -O3. Inductor may compile in pools of worker processes;
they inherit the environment, so an environment-named shim sees them all. Each invocation appends its line
to a file of its own (named by its process id) in the log folder: parallel compiles never interleave their lines.
A shell script, not Python: it runs once per compile, and sh starts in about a millisecond.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

LOG_DIR_VARIABLE = "BENCH_CXX_LOG_DIR"  # where the shim logs, one file per invocation
REAL_CXX_VARIABLE = "BENCH_CXX_REAL"  # the compiler the shim runs (the worker asks it for its version)
INDUCTOR_OPT = "-O3"  # what Inductor passes (cpp_builder.py `_get_optimization_cflags`, not configurable)
SOURCE = re.compile(r"\.(?:cpp|cc|cxx|c)$")


def write_shim(real_cxx: str, folder: Path, opt: str | None = None) -> Path:
    """An executable `folder/<name of real_cxx>` that logs and runs real_cxx, with -O3 replaced by `-{opt}` if given."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / Path(real_cxx).name
    real = shlex.quote(real_cxx)
    replace = f'    [ "$arg" = {INDUCTOR_OPT} ] && arg=-{opt}\n' if opt else ""
    shim.write_text(
        "#!/bin/sh\n"
        f"# Inductor's C++ compiler for one trial, written by torch_backend/cxx_shim.py: logs, then runs {real_cxx}\n"
        "for arg do\n"
        "    shift\n"
        f"{replace}"
        '    set -- "$@" "$arg"\n'
        "done\n"
        f'[ -n "${LOG_DIR_VARIABLE}" ] && printf \'%s\\n\' "{real} $*" >> "${LOG_DIR_VARIABLE}/$$.log"\n'
        f'exec {real} "$@"\n'
    )
    shim.chmod(0o755)
    return shim


def logged_commands(log_dir: Path) -> list[str]:
    """Every command line the shim logged in `log_dir`, oldest file first."""
    if not log_dir.is_dir():
        return []
    files = sorted(log_dir.glob("*.log"), key=lambda path: (path.stat().st_mtime_ns, path.name))
    return [line for path in files for line in path.read_text(errors="replace").splitlines() if line.strip()]


def compile_commands(commands: list[str]) -> list[str]:
    """The lines that built something (an `-o` output: kernels, Inductor's vector-ISA test builds, its precompiled
    header), not the `--version` and `-v` probes of the compiler."""
    return [line for line in commands if "-o" in line.split()[1:]]


def kernel_command(commands: list[str]) -> str | None:
    """One compile line, preferably of a generated kernel (a source that defines a `kernel` or `cpp_fused_*`
    function) rather than one of Inductor's vector-ISA test builds; None when nothing was compiled (a warm cache)."""
    compiles = compile_commands(commands)
    for line in compiles:
        sources = [Path(arg) for arg in line.split()[1:] if SOURCE.search(arg)]
        if any(_is_kernel_source(source) for source in sources):
            return line
    return compiles[-1] if compiles else None


def _is_kernel_source(source: Path) -> bool:
    try:
        text = source.read_text(errors="replace")
    except OSError:
        return False
    return "cpp_fused" in text or ('extern "C"' in text and " kernel(" in text)
