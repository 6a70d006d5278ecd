"""Build the chapter website into ``_site/`` and serve it locally.

    python tools/site.py build                 # _site/index.html and one page per section
    python tools/site.py serve [--port 8000]   # http://127.0.0.1:8000/

Pages: a landing page (the chapter's map, how to run it, the homework table), one page per section
notebook, the homework pages with their figures, and the benchmark tables. A section page shows the
executed copy's outputs (``notebooks/executed/NN_name.ipynb``, written by ``tools/execute_notebooks.py``)
when one exists, merged into the student notebook's current cells; the code cells of both must be
identical, otherwise the build stops. Without an executed copy the page shows the student notebook
(no outputs) and says so. On the page a cell's consecutive stream outputs (a training cell's epoch lines)
form one block, the setup cell's source is folded away, and the download button gives the student
notebook. Nothing is executed during a build, and the build needs no network.

Generator: Sphinx + MyST-NB (+ sphinx-book-theme), because it is the one of the three candidates that
builds this site with no network:
- Jupyter Book 2 runs on the MyST engine (Node.js), whose HTML themes are template bundles that mystmd
  downloads on first use;
- mkdocs-jupyter converts notebooks through nbconvert's HTML template, which takes MathJax from a CDN
  unless the template is patched;
- MyST-NB renders the stored outputs natively (``nb_execution_mode = "off"``), ``sphinx-mathjax-offline``
  (PyPI) ships MathJax 3 and its web fonts into ``_static/``, and the book theme bundles its own fonts and
  icons. After each build ``check_offline`` fails when any page loads a script, style sheet or font from
  an http(s) address, and the browser test runs on a machine without internet.
"""
from __future__ import annotations

import argparse
import copy
import functools
import http.server
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
EXECUTED = NOTEBOOKS / "executed"
SITE_SOURCES = REPO / "site"
OUT = REPO / "_site"
HOW_TO_RUN = ("### 安装", "### 笔记本与 AI Studio")  # sections of README.md (Chinese half) on the landing page


# Under an exercise cell that the executed copy ran with the course's sample answer (answer_key.py).
ANSWER_NOTE = ("> 上面的输出来自课程执行本页时的运行：那时练习单元里填的是课程的示例解答，页面上只显示空白的练习。"
               "所以检查通过了，后面也用这个块训练并记录了一次学生运行。在你自己的笔记本里，这些输出来自你写的代码。")


class SiteError(Exception):
    """A problem in the inputs that stops the build; printed as one line."""


# ---------------------------------------------------------------- notebooks

def read_notebook(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SiteError(f"{path}: not a readable notebook ({e})") from None


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def code_sources(nb: dict) -> list[str]:
    """The code cells' sources, in order: what must agree between a student notebook and its executed copy."""
    return [_source(c) for c in nb.get("cells", []) if c.get("cell_type") == "code"]


def code_mismatch(student: dict, executed: dict) -> str | None:
    """None when the code cells agree, else a one-line description of the first difference.

    An exercise cell agrees when the executed copy ran it with the course's sample answer in place of the
    scaffold (``answer_key.py``): the page shows the student's cell, the scaffold, with that run's output.
    """
    if str(Path(__file__).resolve().parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    import answer_key

    a, b = code_sources(student), code_sources(executed)
    for i, (x, y) in enumerate(zip(a, b)):
        if not answer_key.same_code(x, y):
            first = next((line for line in x.splitlines() if line.strip()), "")
            return f"code cell {i + 1} differs (student notebook: {first[:60]!r})"
    if len(a) != len(b):
        return f"{len(a)} code cells in the student notebook, {len(b)} in the executed copy"
    return None


def executed_profile(nb: dict) -> str | None:
    """The profile an executed copy was run with (written by tools/execute_notebooks.py), or None."""
    return nb.get("metadata", {}).get("paddle_cnn", {}).get("profile")


def merge_outputs(student: dict, executed: dict, name: str = "notebook") -> dict:
    """The student notebook's cells with the executed copy's outputs; SiteError when their code differs."""
    problem = code_mismatch(student, executed)
    if problem:
        raise SiteError(f"{name}: the executed copy is out of date: {problem}; "
                        f"re-run `python tools/execute_notebooks.py {name}`")
    merged = copy.deepcopy(student)
    runs = iter([c for c in executed["cells"] if c.get("cell_type") == "code"])
    cells = []
    for cell in merged["cells"]:
        cells.append(cell)
        if cell.get("cell_type") == "code":
            done = next(runs)
            cell["outputs"] = done.get("outputs", [])
            cell["execution_count"] = done.get("execution_count")
            if _source(done) != _source(cell):      # an exercise cell run with the sample answer
                cells.append({"cell_type": "markdown", "metadata": {}, "source": ANSWER_NOTE})
    merged["cells"] = cells
    merged.setdefault("metadata", {})["paddle_cnn"] = executed.get("metadata", {}).get("paddle_cnn", {})
    return merged


def title_and_summary(nb: dict, name: str) -> tuple[str, str]:
    """The section title (the first ``# `` heading) and its first sentence (the paragraph under it)."""
    first = next((_source(c) for c in nb.get("cells", []) if c.get("cell_type") == "markdown"), "")
    lines = first.splitlines()
    title = next((line[2:].strip() for line in lines if line.startswith("# ")), None)
    if title is None:
        raise SiteError(f"{name}: the first markdown cell has no '# title' line")
    after = lines[lines.index(f"# {title}") + 1:] if f"# {title}" in lines else lines
    para = next((line.strip() for line in after if line.strip() and not line.startswith(("#", "**"))), "")
    sentence = para.split("。")[0] + "。" if "。" in para else para
    return title, sentence


def page_note(nb: dict, executed: bool) -> dict:
    """A markdown cell saying where the page's outputs come from."""
    if executed:
        profile = executed_profile(nb) or "?"
        text = (f"本页的输出来自 `tools/execute_notebooks.py` 以 `{profile}` 配置档从头到尾运行一次的结果"
                f"（Run All 用时见上）。")
    else:
        text = ("本节还没有默认配置档的执行副本，本页只有代码、没有输出；"
                "在本地或 AI Studio 上运行笔记本即可看到结果。")
    return {"cell_type": "markdown", "id": "site-note", "metadata": {}, "source": f":::{{note}}\n{text}\n:::"}


def section_notebook(path: Path) -> tuple[dict, bool]:
    """The notebook a section page renders, and whether it carries executed outputs."""
    student = read_notebook(path)
    done = EXECUTED / path.name
    if done.exists():
        nb, executed = merge_outputs(student, read_notebook(done), path.name), True
    else:
        nb, executed = copy.deepcopy(student), False
    cells = nb["cells"]
    for cell in cells:
        if cell.get("cell_type") == "code":
            cell["outputs"] = merge_streams(cell.get("outputs", []))
    fold_setup_cell(nb)
    first_md = next(i for i, c in enumerate(cells) if c.get("cell_type") == "markdown")
    cells.insert(first_md + 1, page_note(nb, executed))
    return nb, executed


def merge_streams(outputs: list) -> list:
    """Consecutive stream outputs of the same name (stdout, stderr) joined into one, so that a training cell's
    epoch lines, written one flush at a time, show as one output block on the page; other outputs unchanged."""
    merged = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if (out.get("output_type") == "stream" and prev is not None and prev.get("output_type") == "stream"
                and prev.get("name") == out.get("name")):
            prev["text"] = _text(prev.get("text", "")) + _text(out.get("text", ""))
        else:
            merged.append(copy.deepcopy(out))
    return merged


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


SETUP_TAG = "hide-input"  # MyST-NB folds a cell's source behind a toggle; its output stays visible


def fold_setup_cell(nb: dict) -> None:
    """Tag the first code cell (the setup cell: sys.path, imports, the environment line) so the page shows
    its one-line output with the 20 lines of source folded away."""
    setup = next((c for c in nb.get("cells", []) if c.get("cell_type") == "code"), None)
    if setup is not None:
        tags = setup.setdefault("metadata", {}).setdefault("tags", [])
        if SETUP_TAG not in tags:
            tags.append(SETUP_TAG)


# ---------------------------------------------------------------- landing page

def readme_section(text: str, heading: str) -> str:
    """The block of README.md under ``heading`` up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        raise SiteError(f"README.md has no line {heading!r}: update HOW_TO_RUN in tools/site.py") from None
    out = [lines[start]]
    for line in lines[start + 1:]:
        m = re.match(r"^(#+) ", line)
        if m and len(m.group(1)) <= level:
            break
        out.append(line)
    return "\n".join(out).strip()


# Columns the landing page leaves out so that its table fits the text column (each homework page keeps them).
LANDING_DROPS = ("profile", "device")


def homework_table(text: str, prefix: str = "homework/", drop=LANDING_DROPS) -> str:
    """The markdown table of homework/README.md without the ``drop`` columns, its relative links re-rooted at
    ``prefix``, its headings in Chinese."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    if len(rows) < 3:
        raise SiteError("homework/README.md has no results table: run `paddle-cnn homework summary`")
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    keep = [i for i, name in enumerate(cells[0]) if name not in drop]
    table = localize_tables("\n".join("| " + " | ".join(row[i] for i in keep if i < len(row)) + " |"
                                      for row in cells))
    return re.sub(r"\]\((?!https?://|#)([^)]+)\)", lambda m: f"]({prefix}{m.group(1)})", table)


# The homework tables' column headings (paddle_cnn/homework/render.py writes them in English) as the
# Chinese site shows them; a heading not listed stays as it is.
HEADINGS = {"section": "节", "model": "模型", "profile": "配置档", "test metric": "测试指标",
            "d2l-zh test acc": "d2l-zh 测试精度", "examples/sec": "每秒训练样本", "params": "参数量",
            "MFLOPs/example": "每样本 MFLOPs", "epochs": "轮数", "wall time": "用时", "device": "设备",
            "date": "日期"}
GENERATED = re.compile(r"^Generated by `paddle-cnn homework summary` from the `results.json` files; do not edit\.$",
                       re.M)


def localize_tables(text: str) -> str:
    """Markdown text with each table's heading row in Chinese (the row above a ``| --- |`` line) and the
    summary's "Generated by ..." line in Chinese; everything else unchanged."""
    lines = text.splitlines()
    for i in range(len(lines) - 1):
        if lines[i].startswith("|") and re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", lines[i + 1]):
            cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            lines[i] = "| " + " | ".join(HEADINGS.get(c, c) for c in cells) + " |"
    out = "\n".join(lines) + ("\n" if text.endswith("\n") else "")
    return GENERATED.sub("下表由 `paddle-cnn homework summary` 从各节的 `results.json` 生成，请勿手工修改。", out)


def landing_page(sections: list[tuple[str, str, str, bool]]) -> str:
    template = (SITE_SOURCES / "index.md").read_text(encoding="utf-8")
    listing = "\n".join(f"{i}. [{title}](notebooks/{name}){'' if executed else '（尚无输出）'}：{summary}"
                        for i, (name, title, summary, executed) in enumerate(sections, 1))
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    run = "\n\n".join(readme_section(readme, h) for h in HOW_TO_RUN)
    table = homework_table((REPO / "homework" / "README.md").read_text(encoding="utf-8"))
    toctree = "\n".join(f"notebooks/{Path(name).stem}" for name, *_ in sections)
    return (template.replace("{{sections}}", listing).replace("{{run}}", run)
            .replace("{{homework}}", table).replace("{{toctree}}", toctree))


# ---------------------------------------------------------------- staging and build

def stage(dest: Path) -> list[tuple[str, str, str, bool]]:
    """Assemble the Sphinx sources in ``dest``; return (file, title, summary, executed) per section."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(SITE_SOURCES, dest)
    (dest / "notebooks").mkdir()
    if (NOTEBOOKS / "figures").is_dir():
        shutil.copytree(NOTEBOOKS / "figures", dest / "notebooks" / "figures")
    sections = []
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if not paths:
        raise SiteError(f"no notebooks in {NOTEBOOKS}")
    for path in paths:
        nb, executed = section_notebook(path)
        (dest / "notebooks" / path.name).write_text(json.dumps(nb, ensure_ascii=False, indent=1), encoding="utf-8")
        sections.append((path.name, *title_and_summary(nb, path.name), executed))
    for orphan in sorted(EXECUTED.glob("*.ipynb")) if EXECUTED.is_dir() else []:
        if not (NOTEBOOKS / orphan.name).exists():
            raise SiteError(f"{orphan}: executed copy of a notebook that no longer exists; delete it")

    hw_src, hw = REPO / "homework", dest / "homework"
    hw.mkdir()
    sub = []
    for d in sorted(p for p in hw_src.iterdir() if p.is_dir() and (p / "README.md").exists()):
        (hw / d.name).mkdir()
        for f in d.iterdir():
            if f.suffix.lower() == ".md":
                (hw / d.name / f.name).write_text(localize_tables(f.read_text(encoding="utf-8")), encoding="utf-8")
            elif f.suffix.lower() in (".png", ".svg", ".jpg"):
                shutil.copy2(f, hw / d.name / f.name)
        sub.append(f"{d.name}/README")
    for f in hw_src.iterdir():
        if f.is_file() and f.suffix.lower() in (".png", ".svg", ".jpg"):
            shutil.copy2(f, hw / f.name)
    text = localize_tables((hw_src / "README.md").read_text(encoding="utf-8"))
    (hw / "README.md").write_text(text + "\n\n```{toctree}\n:hidden:\n\n" + "\n".join(sub) + "\n```\n",
                                  encoding="utf-8")
    (dest / "benchmarks").mkdir()
    shutil.copy2(REPO / "benchmarks" / "README.md", dest / "benchmarks" / "README.md")
    (dest / "index.md").write_text(landing_page(sections), encoding="utf-8")
    return sections


EXTERNAL = [
    re.compile(r"<script\b[^>]*\bsrc=[\"']?(?:https?:)?//", re.I),
    re.compile(r"<link\b[^>]*\bhref=[\"']?(?:https?:)?//[^>]*>", re.I),
    re.compile(r"@import\s+(?:url\()?[\"']?(?:https?:)?//", re.I),
    re.compile(r"url\(\s*[\"']?(?:https?:)?//", re.I),
]


def check_offline(site: Path) -> list[str]:
    """Pages or style sheets that load a script, style sheet or font from the network (should be none)."""
    found = []
    for f in sorted(site.rglob("*")):
        if f.suffix not in (".html", ".css") or not f.is_file():
            continue
        text = f.read_text(encoding="utf-8", errors="replace")
        for pattern in EXTERNAL:
            for m in pattern.finditer(text):
                tag = m.group(0)
                if tag.startswith("<link") and not re.search(r"rel=[\"']?(stylesheet|preload|modulepreload|icon)",
                                                             tag, re.I):
                    continue  # rel="canonical" and the like load nothing
                found.append(f"{f.relative_to(site)}: {tag[:120]}")
    return found


def build(out: Path = OUT, quiet: bool = True) -> list[tuple[str, str, str, bool]]:
    """Stage the sources and run Sphinx; the new site replaces ``out`` only when the build succeeded."""
    try:
        from sphinx.cmd.build import build_main
    except ImportError:
        raise SiteError("Sphinx is not installed: pip install -r requirements-site.txt") from None
    # Everything Sphinx writes (MyST-NB also writes a jupyter_execute/ beside the output) stays in a
    # temporary folder until the build has passed; only then does the new site replace ``out``.
    with tempfile.TemporaryDirectory(prefix="site-build-") as work:
        src, html = Path(work) / "src", Path(work) / "html"
        sections = stage(src)
        args = ["-b", "html", "-E", "-d", str(Path(work) / "doctrees"), str(src), str(html)]
        if build_main(args + (["-q"] if quiet else [])) != 0:
            raise SiteError("sphinx-build failed (messages above)")
        remote = check_offline(html)
        if remote:
            raise SiteError(f"the site would load {len(remote)} resource(s) from the network, e.g. {remote[0]}")
        ship_downloads(html, sections)
        (html / ".nojekyll").write_text("")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(html), str(out))
    return sections


def ship_downloads(html: Path, sections) -> None:
    """Behind each section page's download button (``_sources/notebooks/NN_x.ipynb``, copied by Sphinx from
    the staged page: outputs merged, a site note added) put the student notebook itself, the file a student
    opens on AI Studio; the other pages' sources stay as Sphinx copied them."""
    for name, *_ in sections:
        target = html / "_sources" / "notebooks" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(NOTEBOOKS / name, target)


def serve(site: Path = OUT, port: int = 8000, host: str = "127.0.0.1") -> None:
    if not (site / "index.html").exists():
        raise SiteError(f"{site}/index.html does not exist: run `python tools/site.py build` first")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    with http.server.ThreadingHTTPServer((host, port), handler) as httpd:
        print(f"serving {site} at http://{host}:{httpd.server_address[1]}/ (Ctrl-C stops)", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the site into _site/")
    b.add_argument("--out", type=Path, default=OUT, help="output folder (default: _site/)")
    b.add_argument("--verbose", action="store_true", help="show Sphinx's progress")
    s = sub.add_parser("serve", help="serve _site/ on localhost")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    s.add_argument("--dir", type=Path, default=OUT, help="site folder (default: _site/)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            sections = build(args.out.resolve(), quiet=not args.verbose)
            done = sum(1 for *_, executed in sections if executed)
            print(f"site written to {args.out}/index.html: {len(sections)} sections "
                  f"({done} with executed outputs, {len(sections) - done} without)")
        else:
            if not 0 <= args.port <= 65535:
                raise SiteError(f"--port {args.port}: a port is a number from 0 to 65535")
            serve(args.dir, args.port)
    except (SiteError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
