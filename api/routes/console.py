"""The operator console (`/console`): static pages of the project's own plus Plotly's bundle from the installed
`plotly` package (no CDN, no build step). The pages call the API from the browser with the operator's key,
kept in the tab's sessionStorage: the server renders no data and never sees the key outside the
Authorization header. `GET /v1/keys/me` tells the console which buttons the key may use."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.auth import Principal
from api.deps import require
from api.schemas import Out
from domain.problems import Problem

router = APIRouter()

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
# Located without importing plotly: the API only serves the file.
_plotly = importlib.util.find_spec("plotly")
PLOTLY_JS = (
    Path(next(iter(_plotly.submodule_search_locations or []))) / "package_data" / "plotly.min.js" if _plotly else None
)
# Scripts and styles from this origin only (Plotly sets inline styles on its SVG); no framing, no referrer.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: "
    "blob:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class IdentityOut(Out):
    name: str
    scopes: list[str]


@router.get("/v1/keys/me", response_model=IdentityOut, tags=["keys"])
def who_am_i(principal: Annotated[Principal, require(None)]) -> IdentityOut:
    """The calling key's name and scopes (any valid key may ask)."""
    return IdentityOut(name=principal.name, scopes=sorted(principal.scopes))


@router.get("/console", include_in_schema=False)
def console_page() -> FileResponse:
    return FileResponse(CONSOLE_DIR / "index.html", media_type="text/html", headers=HEADERS)


@router.get("/console/static/{name}", include_in_schema=False)
def console_file(name: str) -> FileResponse:
    files = {
        "console.js": CONSOLE_DIR / "console.js",
        "console.css": CONSOLE_DIR / "console.css",
        "plotly.min.js": PLOTLY_JS,
    }
    path = files.get(name)
    if path is None or not path.is_file():
        raise Problem(404, f"no console file '{name}'")
    media = "text/css" if name.endswith(".css") else "text/javascript"
    # Plotly's 4.6 MB change only with the installed package: cached for a day; our own files are revalidated.
    cache = {"Cache-Control": "public, max-age=86400"} if name == "plotly.min.js" else {}
    return FileResponse(path, media_type=media, headers=HEADERS | cache)
