"""Where the service will send a callback: allow-listed host and port, and never, through a DNS name, to
an address of its own network that the allow-list does not name."""

from __future__ import annotations

import pytest

from settings import Settings
from worker.callbacks import REFUSALS, refusal


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
