"""The report's findings come first: the settings whose ratio excludes 1.0 ranked by size, model-size axes apart, the
axes with no measurable effect and how large an effect they leave room for, the fastest setting with its command,
the drift verdict; and index.html, self-contained, checked in headless Chromium."""

import re

from sweep.results.findings import trial_command
from sweep.results.report import write_report
from sweep.results.store import Store
from tests.browser import chromium_page
from tests.test_report import SWEEP, TIGHT, bad_row, control_rows, repeat_rows, section


def findings_store(tmp_path) -> Store:
    store = Store(tmp_path)
    rows = repeat_rows("precision", {"precision": "fp32"}, [0.200, 0.204, 0.198], start=0, shape=TIGHT)
    rows += repeat_rows("precision", {"precision": "bf16"}, [0.108, 0.111, 0.106], start=3, shape=TIGHT)
    rows += repeat_rows("allocator", {"allocator": "default"}, [0.100, 0.102, 0.099], start=6, shape=TIGHT)
    rows += repeat_rows("allocator", {"allocator": "jemalloc"}, [0.130, 0.133, 0.128], start=9, shape=TIGHT)
    rows += repeat_rows("omp_wait", {"omp_wait": "active"}, [0.100, 0.103, 0.098], start=12, shape=TIGHT)
    rows += repeat_rows("omp_wait", {"omp_wait": "passive"}, [0.101, 0.100, 0.102], start=15, shape=TIGHT)
    rows += repeat_rows("width", {"width": 128}, [0.100, 0.101, 0.099], start=18, shape=TIGHT)
    rows += repeat_rows("width", {"width": 256}, [0.210, 0.207, 0.212], start=21, shape=TIGHT)
    # measured once each: its steps-only interval excludes 1.0, but one repeat cannot show trial-to-trial shifts
    rows += repeat_rows("pinning", {"pinning": "compact"}, [0.100], start=24, shape=TIGHT)
    rows += repeat_rows("pinning", {"pinning": "spread"}, [0.150], start=25, shape=TIGHT)
    rows.append(bad_row("pinning", 26, {"pinning": "none"}, "failed", "worker killed"))
    rows += control_rows([1.0, 1.01, 0.99, 1.0])
    for row in rows:
        store.append(row | {"measure_steps": 20, "dataset": "offline"})
    return store


def test_findings_lead_the_report_ranked_by_size(tmp_path):
    text = write_report(findings_store(tmp_path), SWEEP).read_text()
    findings = section(text, "## Findings")
    assert text.index("## Findings") < text.index("How to read") < text.index("## Study")
    assert "**2 setting(s) changed the step time**" in findings and "1 more ratios are model-size axes" in findings
    table = findings[: findings.index("![forest plot: settings]")]
    ranked = [line.split("|")[3].strip() for line in table.splitlines() if re.match(r"\| \d+ \|", line)]
    assert ranked == ["precision=bf16", "allocator=jemalloc"]  # 0.54x before 1.30x: |log| ranks them
    assert "step time −46%" in findings and "step time +30%" in findings
    model_size = findings[findings.index("### Model-size axes") :]
    assert "width=256" in model_size and "width=256" not in table
    assert "omp_wait=passive" in findings[findings.index("### No measurable effect") :]
    assert "1 more ratio(s) have an interval that excludes 1.0 but a side measured once" in findings
    assert "pinning=spread" not in table
    fastest = next(line for line in findings.splitlines() if line.startswith("**Fastest setting**"))
    assert "`precision=bf16` (precision) at 0.54x" in fastest and "a measured speed-up" in fastest
    assert "python bench.py trial precision=bf16 dataset=offline measure_steps=20" in findings
    assert "**Drift within the noise**" in findings
    out = tmp_path / "report" / SWEEP
    assert (out / "findings.png").stat().st_size > 5_000 and (out / "findings-model-size.png").is_file()


def test_no_effect_rows_say_how_large_an_effect_they_leave_room_for(tmp_path):
    findings = section(write_report(findings_store(tmp_path), SWEEP).read_text(), "## Findings")
    row = next(line for line in findings.splitlines() if line.startswith("| omp_wait |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # ratios 1.01, 0.97, 1.04 (passive over active, per round): the interval's far side is a few percent from 1.0
    assert cells[1] == "omp_wait=passive" and re.fullmatch(r"±\d+%", cells[2]) and 2 <= int(cells[2][1:-1]) <= 15
    assert re.fullmatch(r"±\d+\.\d%", cells[3])


def test_trial_command_names_the_point_and_what_the_plan_set():
    row = {"_point": {"blas": "onednn-fp32"}, "width": 512.0, "depth": 4, "measure_seconds": 3.0, "threads": 2}
    assert trial_command(row) == "python bench.py trial blas=onednn-fp32 width=512 measure_seconds=3"


def test_html_page_is_self_contained_and_opens_on_the_findings_in_chromium(tmp_path):
    write_report(findings_store(tmp_path), SWEEP)
    page_path = tmp_path / "report" / SWEEP / "index.html"
    html = page_path.read_text()
    assert "<script" not in html and not re.search(r"(src|href)=\"https?://", html)
    assert re.findall(r"<img [^>]*src=\"([^\"]{0,22})", html) and all(
        s.startswith("data:image/png;base64,") for s in re.findall(r"<img [^>]*src=\"([^\"]{0,22})", html)
    )
    assert 'href="#findings"' in html  # the contents list
    assert re.search(r'<td style="text-align: right">0\.54x', html)  # numbers right-aligned
    with chromium_page(1280, 900) as page:
        page.goto(page_path.as_uri())
        page.screenshot(path=str(tmp_path / "report.png"))
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        assert widths and all(w > 0 for w in widths)
        body = page.inner_text("main")
        assert "Findings" in body and "precision=bf16" in body and "step time −46%" in body
        # the first screen: the findings table and the forest plot start above the fold
        table_top = page.eval_on_selector("h2#findings ~ table", "e => e.getBoundingClientRect().top")
        plot_top = page.eval_on_selector("img[alt^='forest plot']", "e => e.getBoundingClientRect().top")
        assert 0 < table_top < plot_top < 900
    assert (tmp_path / "report.png").stat().st_size > 20_000


def test_one_repeat_sweep_names_no_finding_and_no_fastest_setting(tmp_path):
    store = Store(tmp_path)
    rows = repeat_rows("allocator", {"allocator": "default"}, [0.100], start=0, shape=TIGHT)
    rows += repeat_rows("allocator", {"allocator": "jemalloc"}, [0.060], start=1, shape=TIGHT)
    for row in rows:
        store.append(row)
    findings = section(write_report(store, SWEEP).read_text(), "## Findings")
    assert "**0 setting(s) changed the step time**" in findings and "0 ratios had repeats on both sides" in findings
    assert "**Fastest setting**: not named: every setting's ratio has a side measured once" in findings
    assert "No ratio has repeats on both sides" in findings and "every measured axis had an effect" not in findings
    assert "1 more ratio(s) have an interval that excludes 1.0 but a side measured once" in findings
