"""The body limit on its own, as ASGI: a declared length over the limit, a body that outgrows it, a stalled body."""

import asyncio
import json

from rcdnet.serve.limits import SLACK, BodyLimit


async def _reader(scope, receive, send):  # an application that reads the whole body, then answers 200
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _call(chunks, headers=(), idle_s=5.0, limit=1000):
    sent, pulled = [], []

    async def receive():
        if len(pulled) == len(chunks):
            await asyncio.sleep(3600)
        pulled.append(1)
        return {"type": "http.request", "body": chunks[len(pulled) - 1], "more_body": len(pulled) < len(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "headers": list(headers)}
    asyncio.run(BodyLimit(_reader, limit, idle_s)(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"] or b"{}") if sent[0]["status"] != 200 else {}, len(pulled)


def test_declared_length_over_the_limit_is_refused_unread():
    status, body, pulled = _call([b"x"], headers=[(b"content-length", str(1000 + SLACK + 1).encode())])
    assert status == 413 and pulled == 0 and "limit is" in body["detail"]


def test_a_body_that_outgrows_the_limit_is_cut_where_it_passes_it():
    chunk = b"\0" * 16384
    status, body, pulled = _call([chunk] * 50)  # 800 KB offered, 65 KB allowed
    assert status == 413 and pulled == SLACK // len(chunk) + 1


def test_a_stalled_body_is_408_and_a_small_one_passes():
    status, body = _stalled()
    assert status == 408 and "stalled" in body["detail"]
    assert _call([b"abc", b"def"])[0] == 200


def _stalled():
    sent = []

    async def receive():
        if not sent and not getattr(receive, "done", False):
            receive.done = True
            return {"type": "http.request", "body": b"start", "more_body": True}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    asyncio.run(BodyLimit(_reader, 1000, 0.2)({"type": "http", "headers": []}, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])
