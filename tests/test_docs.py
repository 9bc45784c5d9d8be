"""The documentation: the site builds strictly, its generated tables are in it, and the README (the front page)
stays small and links only to files that exist."""

import importlib.util
from pathlib import Path
import re
import subprocess
import sys
import types

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_readme_is_a_front_page_whose_links_resolve():
    readme = (ROOT / "README.md").read_text()
    size = len(readme.encode())
    assert size <= 12 * 1024, f"README.md is {size} bytes; the front page stays <= 12 KB"
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert local, "the README links into docs/"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
    # the two commands the brief promises, verbatim
    assert "pip install -e '.[test]' && python train.py --model=jmvae --beta=2.0" in readme
    assert ". .venv/bin/activate && python -m pytest -q -n 2 tests" in readme


def test_every_docs_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert pages and not [p for p in pages if f": {p}" not in nav], "a page under docs/ missing from mkdocs.yml nav"


@pytest.mark.slow
def test_site_builds_strictly_with_generated_tables_and_api(tmp_path):
    """``mkdocs build --strict``: a broken link or anchor, a page outside the navigation or a docstring
    reference that does not resolve fails it. The built pages hold the tables generated from the code."""
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    training = (site / "training" / "index.html").read_text()
    for flag in ("--model", "--missing", "--validation", "--compilation_cache"):
        assert f"<code>{flag}</code>" in training, flag
    pemvae = (site / "models" / "pemvae" / "index.html").read_text()
    assert "<code>--unimodal_weight</code>" in pemvae and "mask token" in pemvae
    evaluation = (site / "evaluation" / "index.html").read_text()
    assert "<code>--sampler</code>" in evaluation and "<code>--coherence_points</code>" in evaluation
    api = (site / "api" / "index.html").read_text()
    for name in ("multimodal_elbo", "product_of_experts", "train_and_evaluate", "register_model", "Config"):
        assert name in api, name
    # The Colab badge: none while mkdocs.yml names no repository; the built notebook page gets one once it does.
    notebook = (site / "notebooks" / "colab_tpu" / "index.html").read_text()
    assert "colab-badge" not in notebook
    page = types.SimpleNamespace(file=types.SimpleNamespace(src_path="notebooks/colab_tpu.ipynb"))
    config = {"docs_dir": str(ROOT / "docs"), "repo_url": "https://github.com/someone/mvae_jax", "extra": {}}
    badged = _hooks().on_post_page(notebook, page, config)
    url = "https://colab.research.google.com/github/someone/mvae_jax/blob/main/docs/notebooks/colab_tpu.ipynb"
    assert badged.count(f'<a href="{url}"><img src="https://colab.research.google.com/assets/colab-badge.svg"') == 1


def _hooks():
    spec = importlib.util.spec_from_file_location("hooks", ROOT / "docs/hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    return hooks


@pytest.mark.parametrize(
    "repo_url, url",
    [
        ("https://github.com/a/b", "https://colab.research.google.com/github/a/b/blob/dev/docs/x.ipynb"),
        ("https://github.com/a/b.git", "https://colab.research.google.com/github/a/b/blob/dev/docs/x.ipynb"),
        ("https://gitlab.com/a/b", None),
        (None, None),
    ],
)
def test_the_colab_badge_points_at_the_notebook_in_a_github_repository(repo_url, url):
    assert _hooks().colab_url(repo_url, "dev", "docs/x.ipynb") == url
