"""Where the service will send a callback: allow-listed host and port, and never, through a DNS name, to
an address of its own network that the allow-list does not name."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from settings import Settings
from worker.callbacks import REFUSALS, post_pinned, vetted_address


def refusal(settings: Settings, url: str) -> str | None:
    return vetted_address(settings, url)[1]


@pytest.mark.parametrize(("allowed", "url", "expected"), [
    (["hooks.example.com"], "https://hooks.example.com/x", True),
    (["hooks.example.com"], "https://hooks.example.com:8443/x", False),  # no port named: the default only
    (["hooks.example.com:*"], "https://hooks.example.com:8443/x", True),
    (["*.example.com"], "https://a.b.example.com/x", True),
    (["*.example.com"], "https://example.com.evil.org/x", False),
    (["127.0.0.1:9000"], "http://127.0.0.1:9000/x", True),
    (["127.0.0.1:9000"], "http://127.0.0.1:9001/x", False),
    (["example.com"], "http://example.com:99999/x", False),
    (["[::1]:9000"], "http://[::1]:9000/x", True),
    (["[::1]:9000"], "http://[::1]:9001/x", False),
])
def test_the_allow_list_matches_host_and_port(allowed: list[str], url: str, expected: bool) -> None:
    assert Settings(callback_allowed_hosts=allowed).callback_host_allowed(url) is expected


def test_a_name_that_resolves_to_loopback_is_refused_unless_the_address_is_allowed() -> None:
    # "localhost" resolves to 127.0.0.1 (and ::1): a name on the allow-list is not enough for it.
    by_name = Settings(callback_allowed_hosts=["localhost:*"])
    assert refusal(by_name, "http://localhost:9000/hook") == REFUSALS[1]
    by_address = Settings(callback_allowed_hosts=["localhost:*", "127.0.0.1:9000", "[::1]:9000"])
    assert refusal(by_address, "http://localhost:9000/hook") is None
    assert refusal(Settings(callback_allowed_hosts=["127.0.0.1:9000"]), "http://127.0.0.1:9000/hook") is None
    assert refusal(Settings(), "http://127.0.0.1:9000/hook") == REFUSALS[0]


def test_the_call_goes_to_the_address_vetted_not_to_a_second_dns_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name answers a public address when vetted and a loopback one a moment later. The
    call must go to the vetted address (unreachable here), never to the service on loopback."""
    hits: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(self.headers["Host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    answers = iter([[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.10", port))]])  # TEST-NET-1, public

    def rebinding(host: str, *args: object, **kwargs: object) -> list:
        if host == "hooks.rebind.test":
            return next(answers, [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))])
        return real(host, *args, **kwargs)

    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    settings = Settings(callback_allowed_hosts=["hooks.rebind.test:*", "192.0.2.10:*"])
    url = f"http://hooks.rebind.test:{port}/hook"
    address, refused = vetted_address(settings, url)
    assert (address, refused) == ("192.0.2.10", None)
    with pytest.raises(httpx.HTTPError):  # 192.0.2.10 is unreachable here
        post_pinned(url, address, "{}", {"content-type": "application/json"})
    assert hits == []  # the second answer (loopback) was never used

    local = f"http://127.0.0.1:{port}/hook"  # and a pinned call does reach a vetted address, Host intact
    assert post_pinned(local, "127.0.0.1", "{}", {}).status_code == 204
    assert hits == [f"127.0.0.1:{port}"]
    server.shutdown()
