"""Sphinx configuration of the chapter website; ``tools/site.py build`` copies it into the staged sources.

Sphinx + MyST-NB + sphinx-book-theme, chosen because all three install from PyPI and build with no
network: MyST-NB renders the outputs stored in the notebooks (execution is off), the book theme bundles
its fonts and icons, and ``sphinx-mathjax-offline`` ships MathJax 3 with its web fonts into
``_static/mathjax`` so formulas render without a CDN (see tools/site.py for the comparison).
"""
project = "现代卷积神经网络（PaddlePaddle）"
author = "paddle-cnn"
language = "zh_CN"

extensions = ["myst_nb", "sphinx.ext.mathjax", "sphinx-mathjax-offline"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# Never execute during a build: pages show the outputs stored in the executed copies.
nb_execution_mode = "off"
# No Jupyter widgets: their JavaScript would come from a CDN (the progress bar is text-only anyway).
nb_ipywidgets_js = {}
nb_render_markdown_format = "myst"
# The folded setup cell's toggle, in the site's language.
nb_code_prompt_show = "显示代码"
nb_code_prompt_hide = "隐藏代码"

exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]

html_theme = "sphinx_book_theme"
html_title = "现代卷积神经网络 · paddle-cnn"
html_static_path = ["_static"]
html_css_files = ["site.css"]
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
    "navigation_with_keys": False,
}
html_context = {"default_mode": "auto"}  # empty, the theme logs a console error on a first visit
html_favicon = "_static/favicon.svg"      # without one the browser's /favicon.ico request is a 404
html_search_options = {"dict": ""}        # jieba splits Chinese words with its built-in dictionary; no extra one
html_show_sourcelink = False
# The theme's download button links to _sources/<page source>: Sphinx copies the sources there, and
# tools/site.py puts the student notebook behind each section page (no outputs, as students start).
html_copy_source = True
html_last_updated_fmt = None


def setup(app):
    # Sphinx 9.0's Chinese search writes `window.Stemmer = ChineseStemmer;` but ships only the English
    # stemmer (it stems the Latin words of a Chinese page): name the one it ships.
    from sphinx.search import zh

    if zh.SearchChinese.js_stemmer_rawcode == "english-stemmer.js":
        zh.SearchChinese.language_name = "English"
