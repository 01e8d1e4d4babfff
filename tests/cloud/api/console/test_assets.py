"""The console's pages as HTTP answers: every text in both languages, every text the pages and
scripts use defined, nothing loaded from elsewhere, and headers that forbid it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cloud.api.app import create_app
from cloud.config import CloudSettings
from cloud.console.pages import STATIC
from cloud.console.texts import TEXTS
from cloud.incidents.record import Context
from tests.cloud.api.conftest import serve

pytestmark = [pytest.mark.integration]

TEMPLATES = Path(STATIC).parent / "templates"
PAGES = ("login", "board", "incidents/7", "map", "devices/door-1", "gateways", "performance")


@pytest.fixture
def http(api_settings: CloudSettings, api_context: Context) -> Iterator[httpx.Client]:
    with serve(create_app(api_settings, context=api_context)) as url, httpx.Client(base_url=url) as c:
        yield c


def test_every_text_used_is_defined_in_both_languages() -> None:
    used: set[str] = set()
    for script in (STATIC / "js").glob("*.js"):
        used |= set(re.findall(r"""\bt\(\s*[`"]([a-z_]+\.[a-z_0-9]+|[a-z_]+)[`"]""", script.read_text()))
        used |= {f"{prefix}.x" for prefix in re.findall(r"""\bt\(`([a-z_]+)\.\$\{""", script.read_text())}
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""t\['([a-z_.0-9]+)'\]""", template.read_text()))
    prefixes = {k.split(".")[0] for k in TEXTS}
    missing = sorted(k for k in used if k not in TEXTS and not (k.endswith(".x") and k[:-2] in prefixes))
    assert not missing, f"texts used but not defined: {missing}"
    for key, (zh, en) in TEXTS.items():
        assert zh.strip(), key
        assert en.strip(), key
        assert set(re.findall(r"\{(\w+)\}", zh)) == set(re.findall(r"\{(\w+)\}", en)), key


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_pages_load_nothing_from_elsewhere(http: httpx.Client, lang: str) -> None:
    for page in PAGES:
        r = http.get(f"/console/{page}", params={"lang": lang})
        assert r.status_code == 200, page
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert f'<html lang="{"zh-CN" if lang == "zh" else "en"}">' in r.text
        for ref in re.findall(r"""(?:src|href)="([^"]*)\"""", r.text):
            assert ref.startswith(("/console/", "?", "#")), f"{page} refers to {ref}"
            if ref.startswith("/console/static/"):
                asset = http.get(ref)
                assert asset.status_code == 200, ref
    assert http.get("/console", follow_redirects=False).headers["location"] == "/console/board"
    assert http.get("/console/incidents/not-a-number").status_code == 422
    for script in (STATIC / "js").glob("*.js"):
        assert not re.search(r"https?://", script.read_text()), f"{script.name} names another server"


def test_the_language_is_remembered(http: httpx.Client) -> None:
    english = http.get("/console/board", params={"lang": "en"})
    assert "Live board" in english.text
    assert english.cookies.get("linli_lang") == "en"
    assert "Site plan" in http.get("/console/map").text  # the cookie chose it
    assert "一张图" in http.get("/console/map", params={"lang": "zh"}).text
    assert "一张图" in http.get("/console/map").text
    assert "一张图" in http.get("/console/map", params={"lang": "fr"}).text  # unknown: the remembered one
