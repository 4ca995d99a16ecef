"""The console's files as the API serves them (the pages themselves are driven in a browser in
tests/e2e/test_console.py)."""

from __future__ import annotations

from .conftest import Service, assert_problem


def test_console_page_and_its_files_come_from_the_api_itself(service: Service) -> None:
    anonymous = service.anonymous()
    page = anonymous.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src" not in policy  # scripts from this origin only
    assert "https://" not in page.text and "http://" not in page.text  # no CDN
    for name in ("console.js", "console.css", "plotly.min.js"):
        assert f"/console/static/{name}" in page.text
        served = anonymous.get(f"/console/static/{name}")
        assert served.status_code == 200 and len(served.content) > 1000, name
    assert "Plotly" in anonymous.get("/console/static/plotly.min.js").text[:5000]


def test_unknown_console_files_are_a_404_problem(service: Service) -> None:
    anonymous = service.anonymous()
    for name in ("index.html", "..%2Fapp.py", "%2E%2E%2F%2E%2E%2Fsettings%2F__init__.py", "x.js"):
        assert_problem(anonymous.get(f"/console/static/{name}"), 404)
