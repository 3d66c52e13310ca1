"""compare's page opens on what differs between hosts: each host's overall speed-up, the configs that differ beyond
the interval ranked with a forest plot, how many are inside the noise; and compare.html beside compare.md."""

import json

from sweep.results.compare import build_comparison, load_rows, write_compare
from sweep.results.store import Store

SHAPE = [0.98, 0.99, 1.0, 1.01, 1.02]


def row(host: str, width: int, median: float, i: int) -> dict:
    return {
        "sweep": "s-two", "recorded_at": f"2025-02-01T00:00:{i:02d}+00:00", "plan": "quick", "study": "width",
        "config_key": f"width-{width}", "point": json.dumps({"width": width}), "phase": "grid", "status": "ok",
        "host": host, "node": host, "hw_cpu_model": f"{host} CPU", "step_time_median_s": median,
        "tokens_per_s": 256 / median, "step_times_s": [median * f for f in SHAPE],
    }  # fmt: skip


def test_compare_page_opens_on_its_findings(tmp_path):
    store = Store(tmp_path / "result")
    times = {  # beta: the same at width 128, twice as fast at 256, 1.25x slower at 512
        "alpha": {128: [0.100, 0.102, 0.099], 256: [0.200, 0.204, 0.198], 512: [0.400, 0.404, 0.396]},
        "beta": {128: [0.101, 0.099, 0.100], 256: [0.100, 0.101, 0.099], 512: [0.500, 0.505, 0.495]},
    }
    for host, widths in times.items():
        for width, medians in widths.items():
            for i, median in enumerate(medians):
                store.append(row(host, width, median, i))
    path = write_compare(build_comparison(load_rows(store), ref="alpha"), tmp_path / "out")
    text = path.read_text()
    assert text.startswith("# Across hosts\n\n## Findings\n")
    findings = text[: text.index("## How to read")]
    # geometric mean of 128: ~1.0, 256: ~2.0, 512: 0.8 -> (1 * 2 * 0.8) ** (1/3) = 1.17
    assert "- **beta** is 1.17x faster than alpha (geometric mean over 3 configs)." in findings
    assert "2 config(s) differ from alpha beyond the 95% interval; 1 differ by less than the noise" in findings
    ranked = [line for line in findings.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert "width=256" in ranked[0] and "faster" in ranked[0] and "width=512" in ranked[1] and "slower" in ranked[1]
    assert (path.parent / "compare-findings.png").stat().st_size > 5_000
    html = (path.parent / "compare.html").read_text()
    assert '<h2 id="findings">Findings</h2>' in html and "data:image/png;base64," in html and "<script" not in html
