"""The documentation site builds with `mkdocs build --strict` (no broken link, no
missing page, no docstring that fails to render), and has an API entry for every
public name."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jaxflow as jf


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return out


def _api_ids(site: Path) -> set[str]:
    ids = set()
    for page in (site / "api").rglob("index.html"):
        ids |= set(re.findall(r'id="(jaxflow\.[\w.]+)"', page.read_text()))
    return ids


def test_every_public_name_has_an_api_entry(site):
    ids = _api_ids(site)
    expected = set()
    for name in jf.__all__:
        module = getattr(jf, name)
        if isinstance(module, type(jf)):
            expected |= {f"jaxflow.{name}.{sub}" for sub in module.__all__}
        else:
            expected.add(f"jaxflow.{name}")
    missing = expected - ids
    assert not missing, f"no API entry for {sorted(missing)}"


def test_pages_render_math_and_figures(site):
    kinks = (site / "concepts" / "kinks" / "index.html").read_text()
    # arithmatex leaves math for KaTeX in spans; the KaTeX files ship with the site.
    assert 'class="arithmatex"' in kinks
    assert (site / "assets" / "katex" / "katex.min.js").is_file()
    for src in re.findall(r'<img[^>]* src="([^"]+)"', kinks):
        assert (site / "concepts" / "kinks" / src).resolve().is_file(), src
    assert re.search(r"<img[^>]* src=", kinks), "the kinks page has no figure"
