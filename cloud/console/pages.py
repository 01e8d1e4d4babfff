"""The console's pages at ``/console``: each a Jinja2 frame in the user's language (``?lang=`` or
the ``linli_lang`` cookie, Chinese by default) with its script; the scripts and styles at
``/console/static``. No page holds data: the scripts read the API with the user's token.

Every answer forbids scripts, styles and connections from anywhere but this server
(Content-Security-Policy), and is never framed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, Cookie, FastAPI, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from cloud.console.texts import LANGS, Lang, texts

PREFIX: Final = "/console"
STATIC: Final = Path(__file__).parent / "static"
LANG_COOKIE: Final = "linli_lang"

HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; media-src 'self' data:; object-src 'none'; base-uri 'none';"
        " form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}

#: page name -> (template, the nav entry it belongs to)
PAGES: Final = {
    "login": "login.html",
    "board": "board.html",
    "incident": "incident.html",
    "map": "map.html",
    "device": "device.html",
    "gateways": "gateways.html",
    "performance": "performance.html",
}


def asset_version() -> str:
    """A digest of every static file: asset URLs carry it, so a new release is never served
    from a browser's stale cache."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(STATIC).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class Console:
    """The templates and what every page shows."""

    def __init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("cloud.console", "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.version = asset_version()
        self.texts = {lang: texts(lang) for lang in LANGS}

    def render(self, page: str, lang: Lang, *, remember: bool, **values: object) -> HTMLResponse:
        t = self.texts[lang]
        html = self.env.get_template(PAGES[page]).render(
            page=page,
            lang=lang,
            other_lang="en" if lang == "zh" else "zh",
            t=t,
            texts=t,
            base=PREFIX,
            static=f"{PREFIX}/static",
            v=self.version,
            **values,
        )
        response = HTMLResponse(html, headers=HEADERS)
        if remember:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86_400, samesite="strict", path=PREFIX)
        return response


def _lang(query: str | None, cookie: str | None) -> tuple[Lang, bool]:
    """The language to show, and whether the query chose it (then it is remembered)."""
    for chosen, remember in ((query, True), (cookie, False)):
        if chosen == "zh":
            return "zh", remember
        if chosen == "en":
            return "en", remember
    return "zh", False


LangQuery = Annotated[str | None, Query(alias="lang", max_length=8)]
LangCookie = Annotated[str | None, Cookie(alias=LANG_COOKIE, max_length=8)]


def mount(app: FastAPI) -> None:
    """Serve the console at ``/console`` on `app`."""
    console = Console()
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    def page(name: str, query: str | None, cookie: str | None, **values: object) -> HTMLResponse:
        lang, remember = _lang(query, cookie)
        return console.render(name, lang, remember=remember, **values)

    @router.get("")
    @router.get("/")
    def home() -> Response:
        return RedirectResponse(f"{PREFIX}/board", status_code=303)

    @router.get("/login")
    def login(lang: LangQuery = None, cookie: LangCookie = None) -> HTMLResponse:
        return page("login", lang, cookie)

    @router.get("/board")
    def board(lang: LangQuery = None, cookie: LangCookie = None) -> HTMLResponse:
        return page("board", lang, cookie)

    @router.get("/incidents/{incident_id}")
    def incident(incident_id: int, lang: LangQuery = None, cookie: LangCookie = None) -> HTMLResponse:
        return page("incident", lang, cookie, incident_id=incident_id)

    @router.get("/map")
    def site_map(lang: LangQuery = None, cookie: LangCookie = None) -> HTMLResponse:
        return page("map", lang, cookie)

    @router.get("/devices/{device_id}")
    def device(device_id: str, lang: LangQuery = None, cookie: LangCookie = None) -> HTMLResponse:
        return page("device", lang, cookie, device_id=device_id)

    @router.get("/gateways")
    def gateways(lang: LangQuery = None, cookie: LangCookie = None) -> HTMLResponse:
        return page("gateways", lang, cookie)

    @router.get("/performance")
    def performance(lang: LangQuery = None, cookie: LangCookie = None) -> HTMLResponse:
        return page("performance", lang, cookie)

    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="console-static")
