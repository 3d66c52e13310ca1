"""Hardware settings with guaranteed restore: the original values are journaled before any write.

    with HardwareSettings(sysfs_root, journal_path) as hw:
        hw.apply(freq_ghz=2.0, governor="performance", turbo=False)
        ...  # the trial
    # restored here: on normal exit, on an exception, and on SIGTERM/SIGINT (turned into an exception
    # while the settings are active in the main thread)

After a kill -9 nothing in the process runs, so the journal (a small JSON file, flushed to disk
before the first write) is what restores: `restore_pending()` at the next start of bench.py, or
`bench.py hw restore`. A journal whose owner process is still alive is left alone.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

from hwctl.control import knobs, read_sysfs, write_sysfs
from hwctl.cores import SYSFS_ROOT
from hwctl.files import atomic_write_text

# machine-wide, like the settings it protects; BENCH_HW_JOURNAL moves it (tests, unprivileged runs)
DEFAULT_JOURNAL = Path(os.environ.get("BENCH_HW_JOURNAL", "/var/tmp/cpu-pretrain-bench/hwctl-journal.json"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_json_durably(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1), durable=True)


def restore_values(sysfs_root: Path, originals: dict[str, str]) -> list[str]:
    """Write the original values back; returns the files that could not be restored.

    Two passes, because the kernel refuses scaling_min_freq > scaling_max_freq: a write that fails in
    the first pass usually succeeds once its partner is back."""
    pending = dict(originals)
    for _ in range(2):
        failed = {}
        for relative, value in pending.items():
            if read_sysfs(sysfs_root, relative) == value:
                continue
            try:
                write_sysfs(sysfs_root, relative, value)
            except OSError:
                failed[relative] = value
        pending = failed
        if not pending:
            break
    return sorted(pending)


def restore_pending(journal_path: Path = DEFAULT_JOURNAL) -> str | None:
    """Restore what a dead process left changed; returns a message when something was restored."""
    if not journal_path.exists():
        return None
    try:
        journal = json.loads(journal_path.read_text())
    except (OSError, json.JSONDecodeError):
        return f"hardware journal {journal_path} is unreadable; check cpufreq settings by hand"
    if journal.get("pid") != os.getpid() and _pid_alive(journal.get("pid", -1)):
        return None  # its owner is running and will restore
    failed = restore_values(Path(journal["sysfs_root"]), journal["originals"])
    if failed:
        return f"hardware journal {journal_path}: could not restore {', '.join(failed)}"
    journal_path.unlink(missing_ok=True)
    return f"restored {len(journal['originals'])} hardware settings left changed by process {journal.get('pid')}"


class HardwareSettings:
    def __init__(self, sysfs_root: Path = SYSFS_ROOT, journal_path: Path = DEFAULT_JOURNAL):
        self.sysfs_root, self.journal_path = Path(sysfs_root), Path(journal_path)
        self.originals: dict[str, str] = {}
        self._previous_handlers: dict[int, object] = {}

    def apply(self, **settings) -> dict[str, str]:
        """Set freq_ghz / governor / turbo (None = leave alone); returns {file: new value}."""
        all_knobs = knobs(self.sysfs_root)
        writes = []
        for name, value in settings.items():
            if value is not None:
                writes += all_knobs[name].writes_for(value)  # raises ControlUnavailable before any write
        new_originals = {f: read_sysfs(self.sysfs_root, f) for f, _ in writes if f not in self.originals}
        if new_originals:
            self.originals |= new_originals
            _write_json_durably(
                self.journal_path,
                {"pid": os.getpid(), "sysfs_root": str(self.sysfs_root), "originals": self.originals},
            )
        for relative, value in writes:
            write_sysfs(self.sysfs_root, relative, value)
        return dict(writes)

    def restore(self) -> None:
        if not self.originals:
            return
        failed = restore_values(self.sysfs_root, self.originals)
        if failed:
            raise OSError(f"could not restore {', '.join(failed)}; the journal {self.journal_path} keeps them")
        self.originals = {}
        self.journal_path.unlink(missing_ok=True)

    def __enter__(self) -> HardwareSettings:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous_handlers[sig] = signal.signal(sig, self._interrupt)
        return self

    @staticmethod
    def _interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    def __exit__(self, *exc) -> None:
        try:
            self.restore()
        finally:
            for sig, handler in self._previous_handlers.items():
                signal.signal(sig, handler)
            self._previous_handlers = {}
