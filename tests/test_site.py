"""The chapter website (tools/site.py), the executed notebook copies and the browser test.

The browser test builds the site (or takes the one named by ``PADDLE_CNN_SITE_DIR``), serves it on
localhost and opens every page in headless Chromium (Debian's ``/usr/bin/chromium``, driven by
playwright): it fails on a console error, an image that did not load, a formula left unrendered or a
broken internal link, and saves a screenshot of each page in ``_site_screens/``. It is skipped, with the
reason, when Chromium, playwright or Sphinx is missing (``.ci/site`` installs them).
"""
import copy
import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# tools/site.py by path: the name ``site`` belongs to the standard library.
_spec = importlib.util.spec_from_file_location("paddle_cnn_site", REPO / "tools" / "site.py")
site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(site)

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENS = Path(os.environ.get("PADDLE_CNN_SCREENS", REPO / "_site_screens"))
EXECUTED = sorted((REPO / "notebooks" / "executed").glob("*.ipynb"))


def _nb(*cells):
    return {"cells": [dict(c) for c in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _code(src, outputs=()):
    return {"cell_type": "code", "source": src, "outputs": list(outputs), "execution_count": None, "metadata": {}}


def _md(src):
    return {"cell_type": "markdown", "source": src, "metadata": {}}


# ---------------------------------------------------------------- executed copies

@pytest.mark.parametrize("path", EXECUTED, ids=[p.name for p in EXECUTED])
def test_executed_copy_matches_student_notebook(path):
    """A committed executed copy has the same code cells as its student notebook, and a default profile."""
    student = REPO / "notebooks" / path.name
    assert student.exists(), f"{path} has no student notebook notebooks/{path.name}"
    executed = site.read_notebook(path)
    problem = site.code_mismatch(site.read_notebook(student), executed)
    assert problem is None, f"{path.name}: {problem}; re-run `python tools/execute_notebooks.py {path.name}`"
    profile = site.executed_profile(executed)
    assert profile in ("cpu", "course"), f"{path.name} was executed with profile {profile!r}, not a default one"
    assert any(c.get("outputs") for c in executed["cells"] if c["cell_type"] == "code"), "no outputs stored"
    widget = _load_tool("execute_notebooks").WIDGET
    stale = [i for i, c in enumerate(executed["cells"]) for o in c.get("outputs", []) if widget in o.get("data", {})]
    assert not stale, f"{path.name}: cells {sorted(set(stale))} keep progress-bar widgets (a stale 0% frame)"


def test_student_notebooks_carry_no_outputs():
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = site.read_notebook(path)
        with_outputs = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and c.get("outputs")]
        assert not with_outputs, f"{path.name}: code cells {with_outputs} have outputs; executed copies go to " \
                                 f"notebooks/executed/"


def test_code_mismatch_finds_changed_added_and_removed_cells():
    student = _nb(_md("# t"), _code("a = 1"), _md("text"), _code("print(a)"))
    same_code_other_prose = _nb(_md("# other"), _code("a = 1"), _code("print(a)"))
    assert site.code_mismatch(student, same_code_other_prose) is None
    changed = _nb(_code("a = 2"), _code("print(a)"))
    assert "code cell 1 differs" in site.code_mismatch(student, changed)
    assert "2 code cells in the student notebook, 3" in site.code_mismatch(
        student, _nb(_code("a = 1"), _code("print(a)"), _code("b")))
    assert "2 code cells in the student notebook, 1" in site.code_mismatch(student, _nb(_code("a = 1")))


def test_an_exercise_cell_run_with_the_sample_answer_agrees_and_the_page_shows_the_scaffold():
    """The executed chapter runs exercise cells with tools/answers/; the page shows the empty scaffold."""
    answer_key = _load_tool("answer_key")
    scaffold, answer = answer_key.scaffold("residual_preact"), answer_key.answer("residual_preact")
    cell = scaffold + '\n\npassed = exercises.check("residual_preact", MyPreActResidual)\n'
    filled = answer_key.fill(cell)
    assert filled == answer + '\n\npassed = exercises.check("residual_preact", MyPreActResidual)\n'
    out = {"output_type": "stream", "name": "stdout", "text": "✓ 练习 residual_preact：通过（3 组参数）\n"}
    student = _nb(_md("# t"), _code(cell), _code("print(passed)"))
    executed = _nb(_md("# t"), _code(filled, [out]), _code("print(passed)"))
    assert site.code_mismatch(student, executed) is None
    merged = site.merge_outputs(student, executed)
    text = json.dumps(merged, ensure_ascii=False)
    assert "raise NotImplementedError" in text and "self.bn1 = nn.BatchNorm2D" not in text
    assert merged["cells"][1]["outputs"] == [out] and merged["cells"][2]["source"] == site.ANSWER_NOTE
    # Any other change to an exercise cell is an out-of-date copy, as for every cell.
    other = _nb(_md("# t"), _code(filled.replace("nn.ReLU()", "nn.Sigmoid()"), [out]), _code("print(passed)"))
    assert "code cell 1 differs" in site.code_mismatch(student, other)


def test_merge_takes_prose_from_student_and_outputs_from_executed_copy():
    out = {"output_type": "stream", "name": "stdout", "text": "1\n"}
    student = _nb(_md("# new title"), _code("a = 1"), _code("print(a)"))
    executed = _nb(_md("# old title"), _code("a = 1"), _code("print(a)", [out]))
    executed["cells"][2]["execution_count"] = 2
    executed["metadata"]["paddle_cnn"] = {"profile": "cpu"}
    before = copy.deepcopy(student)
    merged = site.merge_outputs(student, executed)
    assert student == before, "the student notebook must not be modified"
    assert merged["cells"][0]["source"] == "# new title"
    assert merged["cells"][2]["outputs"] == [out] and merged["cells"][2]["execution_count"] == 2
    assert merged["cells"][1]["outputs"] == []
    assert site.executed_profile(merged) == "cpu"
    executed["cells"][1]["source"] = "a = 3"
    with pytest.raises(site.SiteError, match="out of date: code cell 1 differs"):
        site.merge_outputs(student, executed, "00_x.ipynb")


def test_consecutive_stream_outputs_become_one_block():
    line = {"output_type": "stream", "name": "stdout"}
    outputs = [dict(line, text="accel: ...\n"), dict(line, text=["epoch 1/2: ...\n"]),
               dict(line, name="stderr", text="warning\n"), dict(line, text="epoch 2/2: ...\n"),
               dict(line, text="summary\n"), {"output_type": "execute_result", "data": {"text/plain": "1"}},
               dict(line, text="after\n")]
    before = copy.deepcopy(outputs)
    merged = site.merge_streams(outputs)
    assert outputs == before, "the executed copy's outputs must not be modified"
    assert [(o["output_type"], o.get("name")) for o in merged] == [
        ("stream", "stdout"), ("stream", "stderr"), ("stream", "stdout"), ("execute_result", None),
        ("stream", "stdout")]
    assert merged[0]["text"] == "accel: ...\nepoch 1/2: ...\n"
    assert merged[2]["text"] == "epoch 2/2: ...\nsummary\n"


def test_section_page_folds_the_setup_cell_and_merges_streams():
    nb, executed = site.section_notebook(REPO / "notebooks" / "00_lenet.ipynb")
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code[0]["metadata"]["tags"] == [site.SETUP_TAG]
    assert all(site.SETUP_TAG not in c.get("metadata", {}).get("tags", []) for c in code[1:])
    for c in code:
        kinds = [(o["output_type"], o.get("name")) for o in c["outputs"]]
        assert all(a != b or a[0] != "stream" for a, b in zip(kinds, kinds[1:])), kinds
    student = site.read_notebook(REPO / "notebooks" / "00_lenet.ipynb")
    assert "tags" not in next(c for c in student["cells"] if c["cell_type"] == "code").get("metadata", {})


def test_tables_get_chinese_headings():
    text = ("# H\n\nGenerated by `paddle-cnn homework summary` from the `results.json` files; do not edit.\n\n"
            "| section | model | epochs | new column |\n| --- | --- | ---: | --- |\n| lenet | `lenet` | 20 | x |\n"
            "\n| not | a table |\n")
    out = site.localize_tables(text)
    assert "| 节 | 模型 | 轮数 | new column |" in out
    assert "| lenet | `lenet` | 20 | x |" in out and "| not | a table |" in out
    assert "Generated by" not in out and "请勿手工修改" in out
    assert site.homework_table(text).startswith("| 节 | 模型 |")
    assert site.homework_table(text.split("\n\n| not")[0], drop=("model", "epochs")).splitlines() == [
        "| 节 | new column |", "| --- | --- |", "| lenet | x |"]
    assert "配置档" not in site.homework_table("| section | profile | device |\n| --- | --- | --- |\n| a | b | c |\n")


# ---------------------------------------------------------------- landing page pieces

def test_readme_section_stops_at_next_heading_of_same_level():
    text = "## A\nx\n### 安装\n\n| a | b |\n#### sub\nkept\n### 使用\ngone\n"
    assert site.readme_section(text, "### 安装") == "### 安装\n\n| a | b |\n#### sub\nkept"
    with pytest.raises(site.SiteError, match="no line '### 数据'"):
        site.readme_section(text, "### 数据")


def test_homework_table_reroots_relative_links_only():
    text = ("# H\n\n| section | acc |\n| --- | --- |\n| [lenet](lenet/README.md) | [0.88](https://zh.d2l.ai/x.html) |\n"
            "\n![s](summary.png)\n")
    table = site.homework_table(text)
    assert "[lenet](homework/lenet/README.md)" in table and "(https://zh.d2l.ai/x.html)" in table
    assert "summary.png" not in table
    with pytest.raises(site.SiteError, match="no results table"):
        site.homework_table("# nothing\n")


def test_title_and_summary_of_every_section_notebook():
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        title, summary = site.title_and_summary(site.read_notebook(path), path.name)
        assert title and not title.startswith("#")
        assert summary[-1] in "。？！" and len(summary) > 10, (path.name, summary)


def test_check_offline_flags_network_scripts_styles_and_fonts(tmp_path):
    (tmp_path / "a.html").write_text('<link rel="canonical" href="https://x.org/"><script src="_static/x.js"></script>')
    assert site.check_offline(tmp_path) == []
    (tmp_path / "b.html").write_text('<script src="https://cdn.example/mathjax.js"></script>')
    (tmp_path / "c.css").write_text("@font-face { src: url('//fonts.example/f.woff2') }")
    (tmp_path / "d.html").write_text('<link rel="stylesheet" href="https://cdn.example/k.css">')
    assert [f.split(":")[0] for f in site.check_offline(tmp_path)] == ["b.html", "c.css", "d.html"]


def test_build_refuses_an_out_of_date_executed_copy(tmp_path, monkeypatch):
    """The build stops with a one-line error, before Sphinx runs, when an executed copy's code differs."""
    nbdir = tmp_path / "notebooks"
    (nbdir / "executed").mkdir(parents=True)
    student = site.read_notebook(REPO / "notebooks" / "00_lenet.ipynb")
    (nbdir / "00_lenet.ipynb").write_text(json.dumps(student))
    stale = copy.deepcopy(student)
    next(c for c in stale["cells"] if c["cell_type"] == "code")["source"] += "\nx = 1"
    (nbdir / "executed" / "00_lenet.ipynb").write_text(json.dumps(stale))
    monkeypatch.setattr(site, "NOTEBOOKS", nbdir)
    monkeypatch.setattr(site, "EXECUTED", nbdir / "executed")
    with pytest.raises(site.SiteError, match="00_lenet.ipynb: the executed copy is out of date: code cell 1"):
        site.stage(tmp_path / "src")


def test_site_command_reports_bad_input_in_one_line(capsys, tmp_path):
    assert site.main(["serve", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run `python tools/site.py build` first" in err


# ---------------------------------------------------------------- the built site in a browser

@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    given = os.environ.get("PADDLE_CNN_SITE_DIR")
    if given:
        if not (Path(given) / "index.html").exists():
            pytest.fail(f"PADDLE_CNN_SITE_DIR={given} has no index.html")
        return Path(given)
    pytest.importorskip("sphinx", reason="Sphinx not installed (pip install -r requirements-site.txt)")
    pytest.importorskip("myst_nb", reason="myst-nb not installed (pip install -r requirements-site.txt)")
    out = tmp_path_factory.mktemp("site") / "_site"
    site.build(out)
    return out


def _images(page: Path) -> list:
    """File names of the page's <img> elements, each checked to exist in the built site."""
    names = []
    for src in re.findall(r'<img\b[^>]*\bsrc="([^"]+)"', page.read_text(encoding="utf-8")):
        target = (page.parent / urllib.parse.unquote(src)).resolve()
        assert target.is_file(), f"{page.name}: <img src={src!r}> has no file"
        names.append(target.name)
    return names


def test_build_writes_every_page_with_no_network_resources(built_site):
    names = [p.stem for p in sorted((REPO / "notebooks").glob("*.ipynb"))]
    for name in names:
        assert (built_site / "notebooks" / f"{name}.html").exists()
    index = (built_site / "index.html").read_text(encoding="utf-8")
    for name in names:
        assert f'href="notebooks/{name}.html"' in index
    assert "AI Studio" in index and "requirements-aistudio.txt" in index
    assert "homework/lenet/README.html" in index
    assert _images(built_site / "homework" / "README.html") == ["summary.png"]
    for d in (REPO / "homework").iterdir():
        if (d / "curves.png").exists():  # Sphinx renames the eleven curves.png to curves1.png, ...
            shown = _images(built_site / "homework" / d.name / "README.html")
            assert len(shown) == 1 and shown[0].startswith("curves"), (d.name, shown)
    assert (built_site / "benchmarks" / "README.html").exists()
    for svg in (REPO / "notebooks" / "figures").glob("*.svg"):
        used = [n for n in names if f"figures/{svg.name}" in (REPO / "notebooks" / f"{n}.ipynb").read_text()]
        for n in used:
            page = (built_site / "notebooks" / f"{n}.html").read_text(encoding="utf-8")
            assert svg.name in page, f"{n}.html does not show {svg.name}"
    assert (built_site / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert site.check_offline(built_site) == []
    for name in names:   # the download button of a section page gives the student notebook
        page = (built_site / "notebooks" / f"{name}.html").read_text(encoding="utf-8")
        links = re.findall(r'href="([^"]*_sources/[^"]*)"', page)
        assert links == [f"../_sources/notebooks/{name}.ipynb"], (name, links)
        shipped = built_site / "_sources" / "notebooks" / f"{name}.ipynb"
        assert shipped.read_bytes() == (REPO / "notebooks" / f"{name}.ipynb").read_bytes(), name
    for page in built_site.rglob("*.html"):
        for href in re.findall(r'href="([^"#?]*_sources/[^"#?]*)"', page.read_text(encoding="utf-8")):
            target = (page.parent / urllib.parse.unquote(href)).resolve()
            assert target.is_file(), f"{page.relative_to(built_site)}: download link {href} has no file"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(built_site):
    httpd, base = _serve(built_site)
    yield base
    httpd.shutdown()
    httpd.server_close()


# Runs in the page once MathJax has finished: what did not render, what did not load, what links where.
PAGE_CHECK = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src'));
  const maths = Array.from(document.querySelectorAll('.math'));
  const unrendered = maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 60));
  const raw = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const skip = 'PRE,CODE,SCRIPT,STYLE,TEXTAREA,MJX-CONTAINER,MJX-ASSISTIVE-MML';
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement && n.parentElement.closest(skip.toLowerCase())) continue;
    const t = n.textContent;
    if (/\\\(|\\\[|\$\$|\$[^$\s][^$]*[\\^_{}][^$]*\$/.test(t)) raw.push(t.trim().slice(0, 80));
  }
  // One output block per stream: two stream outputs side by side in a cell are lines that were not merged.
  const split = Array.from(document.querySelectorAll('div.cell_output')).filter(o => {
    const kids = Array.from(o.children);
    return kids.some((k, i) => i && k.matches('.output.stream') && kids[i - 1].matches('.output.stream'));
  }).length;
  const cut = Array.from(document.querySelectorAll('div.cell_output pre'))
      .filter(p => p.scrollWidth > p.clientWidth + 1).map(p => p.textContent.split('\n')[0].slice(0, 60));
  const wide = Array.from(document.querySelectorAll('article table')).filter(t => {
    const box = t.parentElement;
    return t.getBoundingClientRect().width > box.clientWidth + 1 || box.scrollWidth > box.clientWidth + 1;
  }).map(t => (t.querySelector('th') || t).textContent.trim().slice(0, 40));
  const first = document.querySelector('div.cell');
  const setupInput = first && first.querySelector('.cell_input');
  const setupShown = !!(setupInput && !setupInput.closest('details:not([open])'));
  const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.href);
  const ids = Array.from(document.querySelectorAll('[id]')).map(e => e.id)
      .concat(Array.from(document.querySelectorAll('a[name]')).map(e => e.name));
  return {broken, mathCount: maths.length, rendered: document.querySelectorAll('mjx-container').length,
          unrendered, raw, links, ids, split, cut, wide, setupShown};
}
"""

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _pages(root: Path):
    skip = ("_static", "_sources", "_images", "_downloads")
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html")
                  if not p.relative_to(root).parts[0] in skip)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _serve(root: Path):
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


def _browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set CHROMIUM=path)")
    return pytest.importorskip("playwright.sync_api", reason="playwright not installed "
                               "(pip install -r requirements-site.txt)")


def check_pages(sync_api, root: Path, base: str, screens: Path):
    """Open every page of the site served at ``base``; return (problems, number of formulas rendered)."""
    pages = _pages(root)
    problems, links, ids, formulas = [], {}, {}, 0
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            for rel in pages:
                page = context.new_page()
                errors = []
                page.on("console", lambda m, e=errors: e.append(f"console {m.type}: {m.text}")
                        if m.type == "error" else None)
                page.on("pageerror", lambda exc, e=errors: e.append(f"page error: {exc}"))
                page.on("requestfailed", lambda r, e=errors: e.append(f"request failed: {r.url} ({r.failure})"))
                page.on("response", lambda r, e=errors: e.append(f"HTTP {r.status}: {r.url}")
                        if r.status >= 400 else None)
                response = page.goto(base + rel, wait_until="load")
                if response is None or response.status != 200:
                    problems.append(f"{rel}: HTTP {response and response.status}")
                result = page.evaluate(PAGE_CHECK)
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(screens / (rel.replace("/", "__").removesuffix(".html") + ".png")),
                                full_page=True)
                page.close()
                problems += [f"{rel}: {e}" for e in errors]
                problems += [f"{rel}: image did not load: {src}" for src in result["broken"]]
                problems += [f"{rel}: formula not rendered: {t!r}" for t in result["unrendered"]]
                problems += [f"{rel}: raw TeX left in the text: {t!r}" for t in result["raw"]]
                if result["split"]:
                    problems.append(f"{rel}: {result['split']} cell(s) show their stream output in several blocks")
                problems += [f"{rel}: output line cut off at the right edge: {t!r}" for t in result["cut"]]
                problems += [f"{rel}: table wider than the page at 1280 px: {t!r}" for t in result["wide"]]
                if rel.startswith("notebooks/") and result["setupShown"]:
                    problems.append(f"{rel}: the setup cell's source is not folded away")
                if result["mathCount"] and not result["rendered"]:
                    problems.append(f"{rel}: {result['mathCount']} formulas and no MathJax output")
                formulas += result["rendered"]
                links[rel] = result["links"]
                ids[rel] = set(result["ids"])
        finally:
            context.close()

    checked = {}
    for rel, hrefs in links.items():
        for href in hrefs:
            if not href.startswith(base):
                continue
            url, _, fragment = href.partition("#")
            target = urllib.parse.unquote(url[len(base):]) or "index.html"
            if target.endswith("/"):
                target += "index.html"
            if target in ids:
                if fragment and urllib.parse.unquote(fragment) not in ids[target]:
                    problems.append(f"{rel}: link to a missing anchor {target}#{fragment}")
                continue
            if url not in checked:
                checked[url] = _status(url)
            if checked[url] != 200:
                problems.append(f"{rel}: broken link {target} (HTTP {checked[url]})")
    return problems, formulas


def test_every_page_renders_in_chromium(built_site, served):
    sync_api = _browser()
    pages = _pages(built_site)
    assert "index.html" in pages and len(pages) >= 14, pages
    if SCREENS.exists():
        shutil.rmtree(SCREENS)
    SCREENS.mkdir(parents=True)
    problems, formulas = check_pages(sync_api, built_site, served, SCREENS)
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:40])
    assert formulas > 0, "no formula rendered anywhere: the notebooks' $...$ math did not reach MathJax"
    assert sorted(p.name for p in SCREENS.glob("*.png")) == sorted(
        p.replace("/", "__").removesuffix(".html") + ".png" for p in pages)


def test_browser_check_catches_each_kind_of_breakage(built_site, tmp_path):
    """The same checks on a small broken site (with the real site's MathJax): every fault is reported."""
    sync_api = _browser()
    root = tmp_path / "broken"
    shutil.copytree(built_site / "_static" / "mathjax", root / "_static" / "mathjax")
    mathjax = '<script defer src="_static/mathjax/tex-chtml.js"></script>'
    (root / "index.html").write_text(
        f'<html><head><meta charset="utf-8"><link rel="icon" href="data:,">{mathjax}</head><body>'
        '<p><span class="math">\\(a^2\\)</span> fine</p>'
        '<img src="missing.png"><a href="gone.html">gone</a><a href="index.html#nowhere">anchor</a>'
        '<p>left raw: $x_1 + y$ </p><script>console.error("boom")</script>'
        '<div class="cell"><div class="cell_output"><div class="output stream"><pre>epoch 1</pre></div>'
        '<div class="output stream"><pre>epoch 2</pre></div></div></div>'
        '<div class="cell_output" style="width:300px"><pre style="white-space:pre;overflow:auto">'
        + "x" * 400 + '</pre></div>'
        '<article style="width:300px"><div style="overflow-x:auto"><table><tr><th>wide</th><td>'
        + "y" * 400 + '</td></tr></table></div></article></body></html>', encoding="utf-8")
    (root / "notebooks").mkdir()
    (root / "notebooks" / "n.html").write_text('<html><head><link rel="icon" href="data:,"></head><body>'
                                              '<div class="cell"><div class="cell_input">import os</div></div>'
                                              '</body></html>', encoding="utf-8")
    (root / "plain.html").write_text('<html><head><link rel="icon" href="data:,"></head><body>'
                                     '<span class="math">\\(b\\)</span></body></html>', encoding="utf-8")
    httpd, base = _serve(root)
    try:
        problems, formulas = check_pages(sync_api, root, base, tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()
    text = "\n".join(problems)
    assert formulas == 1, text
    for expected in ("index.html: image did not load: missing.png", "index.html: console error: boom",
                     "index.html: broken link gone.html (HTTP 404)", "missing anchor index.html#nowhere",
                     "index.html: raw TeX left in the text: 'left raw: $x_1 + y$'",
                     "plain.html: formula not rendered: '\\\\(b\\\\)'",
                     "index.html: 1 cell(s) show their stream output in several blocks",
                     "index.html: output line cut off at the right edge: 'xxxx",
                     "index.html: table wider than the page at 1280 px: 'wide'",
                     "notebooks/n.html: the setup cell's source is not folded away"):
        assert expected in text, f"{expected!r} not reported in:\n{text}"


# ---------------------------------------------------------------- tools/execute_notebooks.py

def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"paddle_cnn_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_execute_notebooks_refuses_smoke_into_the_executed_folder(capsys):
    tool = _load_tool("execute_notebooks")
    assert tool.main(["--profile", "smoke", "00_lenet.ipynb"]) == 2
    assert "smoke outputs are not kept" in capsys.readouterr().err
    assert tool.main(["no_such.ipynb"]) == 2
    assert "no such notebook" in capsys.readouterr().err


@pytest.mark.notebooks
@pytest.mark.slow
def test_execute_notebooks_writes_copy_and_time_smoke(tmp_path):
    """A real Run All of 00_lenet (smoke) in a scratch copy of the repository: the executed copy holds the
    outputs and the same code, the student copy holds none and gets the measured time in its first cell."""
    pytest.importorskip("nbclient")
    tool = _load_tool("execute_notebooks")
    times = tool.time_notebooks
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "paddle_cnn").symlink_to(REPO / "paddle_cnn")  # the setup cell finds the package from the cwd
    student = site.read_notebook(REPO / "notebooks" / "00_lenet.ipynb")
    first = next(c for c in student["cells"] if c["cell_type"] == "markdown")
    first["source"] = times.LINE.sub(times.runtime_line(), site._source(first))
    path = repo / "notebooks" / "00_lenet.ipynb"
    path.write_text(json.dumps(student, ensure_ascii=False))
    out = tmp_path / "executed"

    homework = tmp_path / "homework"
    assert tool.main(["--notebooks-dir", str(repo / "notebooks"), "--out", str(out), "--profile", "smoke",
                      "--homework", str(homework), "00_lenet.ipynb"]) == 0
    # The exercise cell ran with the sample answer: the check passed and the student's network was recorded.
    runs = json.loads((homework / "lenet" / "results.json").read_text())["runs"]
    assert runs["lenet_relu.student"]["exercise"] == {"name": "lenet_relu", "outcome": "passed"}
    assert "✓ 练习 lenet_relu：通过" in json.dumps(site.read_notebook(out / "00_lenet.ipynb"), ensure_ascii=False)

    after, executed = site.read_notebook(path), site.read_notebook(out / "00_lenet.ipynb")
    assert site.code_mismatch(after, executed) is None
    assert site.code_mismatch(student, after) is None
    assert not any(c.get("outputs") for c in after["cells"] if c["cell_type"] == "code")
    assert sum(bool(c.get("outputs")) for c in executed["cells"] if c["cell_type"] == "code") >= 5
    assert site.executed_profile(executed) == "smoke"
    assert executed["metadata"]["paddle_cnn"]["run_all_seconds"] > 0
    line = times.read_line(site._source(next(c for c in after["cells"] if c["cell_type"] == "markdown")))
    assert line is not None and times.UNMEASURED not in line[0] and "秒" in line[0]
    assert line[1] == times.UNMEASURED, "a smoke run must not fill the default profile's field"
    assert site._source(executed["cells"][0]) == site._source(after["cells"][0])
    merged = site.merge_outputs(after, executed)
    pictures = [o for c in merged["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pictures) >= 3, "figures must be stored inline even with MPLBACKEND=Agg in the environment"
    widgets = [o for c in executed["cells"] for o in c.get("outputs", []) if tool.WIDGET in o.get("data", {})]
    assert not widgets, "progress-bar widgets (a stale 0% frame once saved) stay out of the executed copy"
    assert "epoch 1/1: loss" in json.dumps(executed), "the epoch lines stay"
