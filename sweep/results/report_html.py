"""The report as one self-contained HTML page beside its Markdown: index.md rendered by Python-Markdown (tables, a
contents list from the headings) into a Jinja2 template (templates/report.html.j2), every plot embedded as a data:
URI so the file opens anywhere, offline, with nothing fetched and no JavaScript.

Two tree processors run on the rendered tree, not on the HTML text: one embeds the images, one right-aligns the
table columns that hold numbers (so digits line up; the template sets tabular figures).
"""

from __future__ import annotations

import base64
import mimetypes
import re
from pathlib import Path
from xml.etree.ElementTree import Element

import jinja2
import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

TEMPLATES = Path(__file__).parent / "templates"
NUMBER = re.compile(r"^[±+−\-~≈]?\s*\d")  # '12.3', '0.66x (0.55–0.79)', '±9.3%', '−34%'
NUMERIC_SHARE = 0.7  # a column is numeric when this share of its non-empty cells start like a number


class EmbedImages(Treeprocessor):
    """<img src="plot.png"> -> <img src="data:image/png;base64,...">, read from the report's folder."""

    def __init__(self, md, folder: Path):
        super().__init__(md)
        self.folder = folder

    def run(self, root: Element) -> None:
        for img in root.iter("img"):
            src = img.get("src", "")
            if ":" in src:
                continue  # already a URI
            path = self.folder / src
            if not path.is_file():
                raise FileNotFoundError(f"the report links {src}, which is not in {self.folder}")
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            img.set("src", f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}")
            img.set("loading", "eager")


class AlignNumbers(Treeprocessor):
    """Right-align each table column whose cells are mostly numbers."""

    def run(self, root: Element) -> None:
        for table in root.iter("table"):
            rows = [list(tr) for tr in table.iter("tr")]
            body = [r for r in rows if r and r[0].tag == "td"]
            for col in range(max((len(r) for r in rows), default=0)):
                texts = ["".join(r[col].itertext()).strip() for r in body if col < len(r)]
                texts = [t for t in texts if t]
                if texts and sum(bool(NUMBER.match(t)) for t in texts) >= NUMERIC_SHARE * len(texts):
                    for r in rows:
                        if col < len(r):
                            r[col].set("style", "text-align: right")


class ReportPage(Extension):
    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def extendMarkdown(self, md) -> None:  # noqa: N802 (Python-Markdown's name)
        md.treeprocessors.register(EmbedImages(md, self.folder), "embed_images", 5)
        md.treeprocessors.register(AlignNumbers(md), "align_numbers", 4)


def render_html(markdown_text: str, folder: Path, source: str) -> str:
    """The page for a report's Markdown whose images lie in `folder`."""
    md = markdown.Markdown(
        extensions=["tables", "fenced_code", "toc", ReportPage(folder)],
        extension_configs={"toc": {"toc_depth": "2-3"}},
    )
    body = md.convert(markdown_text)
    heading = next((line[2:] for line in markdown_text.splitlines() if line.startswith("# ")), "Report")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    return env.get_template("report.html.j2").render(
        title=heading.replace("`", ""), body=body, contents=md.toc, source=source
    )


def write_html(index_md: Path) -> Path:
    """index.html beside index.md (the same sections, plots embedded); returns its path."""
    index_md = Path(index_md)
    page = index_md.with_suffix(".html")
    page.write_text(render_html(index_md.read_text(), index_md.parent, index_md.name))
    return page
