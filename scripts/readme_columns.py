#!/usr/bin/env python3
"""Rewrite the README's column tables from the registry (trainables/columns.py); tests/test_columns.py checks them.

venv/bin/python scripts/readme_columns.py
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from trainables.columns import columns_markdown  # noqa: E402

BEGIN, END = "<!-- columns:begin (scripts/readme_columns.py writes this block) -->", "<!-- columns:end -->"


def readme_block(text: str) -> str:
    """The generated block of the README: what lies between the markers."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n")


def main() -> int:
    readme = REPO_ROOT / "README.md"
    text = readme.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    readme.write_text(text[:start] + "\n" + columns_markdown() + "\n" + text[end:])
    print(f"{readme}: column tables written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
