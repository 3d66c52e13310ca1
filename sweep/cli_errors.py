"""How bench.py ends on an error it can name: one line on stderr and an exit status, never a traceback.

2: bad input (a config, a plan, a store or sweep that is not there, a query DuckDB refuses); 1: the machine could not
write what the run produced (a full disk, a read-only or forbidden folder: the path and the errno are named, and the
sweep is resumable: every row written so far is whole, and no half-written file is left); 130: interrupted (Ctrl-C,
SIGTERM).
"""

from __future__ import annotations

import errno
import sys

import duckdb

from sweep.plan import PlanError
from trainables.config import ConfigError

# what a write meets on a machine: no space or quota, a read-only filesystem, no permission, a failing disk, too big
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}
RESUME = "python bench.py run --resume continues"


def run_reporting_errors(args) -> int:
    """args.func(args), with the errors bench.py names turned into one line and an exit status."""
    try:
        return args.func(args)
    except (ConfigError, PlanError, LookupError) as exc:
        print(f"bench.py: error: {exc}", file=sys.stderr)
        return 2
    except duckdb.Error as exc:
        print(f"bench.py: query error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        where = f"cannot write {exc.filename}" if exc.filename else "cannot write"
        after = f"; once it can, {RESUME}" if args.command == "run" else ""
        print(f"bench.py: error: {where}: {exc.strerror} (errno {exc.errno}){after}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = f" (rows written so far are kept: {RESUME})" if args.command == "run" else ""
        print(f"bench.py: interrupted{hint}", file=sys.stderr)
        return 130
