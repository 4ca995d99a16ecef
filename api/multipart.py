"""A multipart body must end with its closing boundary: one cut short (a client that died mid-upload, a
proxy that truncated it) is a 400, not a form with parts silently missing (which FastAPI reports as a 422
about absent fields) or, worse, a last file cut short but accepted."""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BOUNDARY = re.compile(rb'boundary="?([^";,\s]+)"?', re.IGNORECASE)
EPILOGUE = 64  # bytes a client may send after the closing boundary (usually just CRLF)


class MultipartCompleteness:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = dict(scope.get("headers", ())).get(b"content-type", b"") if scope["type"] == "http" else b""
        found = _BOUNDARY.search(content_type) if content_type.lower().startswith(b"multipart/") else None
        if found is None:
            await self.app(scope, receive, send)
            return
        closing = b"--" + found.group(1) + b"--"
        tail = b""

        async def checked() -> Message:
            nonlocal tail
            message = await receive()
            if message["type"] == "http.request":
                tail = (tail + message.get("body", b""))[-(len(closing) + EPILOGUE) :]
                if not message.get("more_body", False) and closing not in tail:
                    # Raised inside the form parser: FastAPI passes an HTTPException through as it is.
                    raise HTTPException(
                        400,
                        "the multipart body is truncated: it does not end with its closing "
                        "boundary (was the upload interrupted?)",
                    )
            return message

        await self.app(scope, checked, send)
