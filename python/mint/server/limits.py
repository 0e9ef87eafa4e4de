"""ASGI middleware bounding request bodies (413 beyond ``max_bytes``) and undoing ``zstd`` encoding."""

from __future__ import annotations

import json


class BodyLimitMiddleware:
    """Reads each request body up to ``max_bytes`` (413 once it is larger, before or after zstd
    decompression), then hands the application the (decompressed) body."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _reply(self, send, status: int, message: str) -> None:
        body = json.dumps({"detail": message, "field": "body", "type": "RequestTooLarge" if status == 413 else "BadRequest"}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"x-should-retry", b"false")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        try:
            if length is not None and int(length) > self.max_bytes:
                return await self._reply(send, 413, f"request body exceeds {self.max_bytes} bytes")
        except ValueError:
            return await self._reply(send, 400, "bad content-length")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._reply(send, 413, f"request body exceeds {self.max_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        encoding = headers.get(b"content-encoding", b"").strip().lower()
        if encoding == b"zstd":
            try:
                import zstandard
            except ImportError:
                return await self._reply(send, 415, "this server cannot read zstd bodies (pip install zstandard)")

            try:
                reader = zstandard.ZstdDecompressor().stream_reader(body)
                parts, total = [], 0
                while total <= self.max_bytes:
                    part = reader.read(1 << 20)
                    if not part:
                        break
                    parts.append(part)
                    total += len(part)
                body = b"".join(parts)
            except zstandard.ZstdError as exc:
                return await self._reply(send, 400, f"bad zstd body ({exc})")
            if len(body) > self.max_bytes:
                return await self._reply(send, 413, f"decompressed request body exceeds {self.max_bytes} bytes")
            scope = dict(scope)
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")]
            scope["headers"].append((b"content-length", str(len(body)).encode()))
        elif encoding not in (b"", b"identity"):
            return await self._reply(send, 415, f"unsupported content-encoding {encoding.decode(errors='replace')!r}")

        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
