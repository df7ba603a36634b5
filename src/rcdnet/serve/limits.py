"""Request bodies are counted as they arrive, whatever the client declares.

A ``Content-Length`` over the limit is refused before a byte is read; a chunked body (no length) or one that sends more
than it declared is cut the moment it passes the limit, before the multipart parser has spooled the rest to disk; a
body that stops arriving for ``idle_s`` seconds is cut too (408). Both answers are plain JSON, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging

SLACK = 65536  # multipart boundaries and form fields around the file itself
log = logging.getLogger("rcdnet.serve")


class BodyCut(Exception):
    """Raised into the application's read of the body: it went over the limit or stalled."""


class BodyLimit:
    """ASGI middleware: bodies over ``limit`` bytes (plus :data:`SLACK`) are answered 413, stalled ones 408."""

    def __init__(self, app, limit: int, idle_s: float = 30.0):
        self.app, self.limit, self.idle_s = app, limit, idle_s
        self.message = f"upload too large: the limit is {limit / 2**20:g} MB"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"").decode("latin-1")
        if length.isdigit() and int(length) > self.limit + SLACK:
            return await _answer(send, 413, self.message)
        state = {"read": 0, "cut": None, "started": False}

        async def counted_receive():
            try:
                message = await asyncio.wait_for(receive(), self.idle_s)
            except asyncio.TimeoutError:
                state["cut"] = (408, f"upload stalled: no data for {self.idle_s:g} s")
                log.warning("%s %s: %s after %d bytes", scope.get("method"), scope.get("path"), state["cut"][1],
                            state["read"])
                raise BodyCut(state["cut"][1]) from None
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > self.limit + SLACK:
                    state["cut"] = (413, self.message)
                    log.warning("%s %s: cut at %d bytes (%s)", scope.get("method"), scope.get("path"),
                                state["read"], self.message)
                    raise BodyCut(self.message)
            return message

        async def guarded_send(message):
            if state["cut"] is not None:  # the application's own answer to the cut body is replaced by ours
                if not state["started"]:
                    state["started"] = True
                    await _answer(send, *state["cut"])
                return
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyCut:
            if not state["started"]:
                state["started"] = True
                await _answer(send, *state["cut"])


async def _answer(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
