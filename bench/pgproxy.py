"""A counting TCP proxy for the PostgreSQL wire protocol (the idle scenario's meter) that can
also cut a replica off (`freeze`/`thaw`: the partition scenario and its system test).

pg_stat_statements needs `shared_preload_libraries` (a server restart), which a shared server
may not allow; pg_stat_database only counts transactions. This proxy sits between one replica
and the server and counts every statement the replica sends: a simple-protocol Query ('Q') or an
extended-protocol Execute ('E'), keyed by the statement's text (Parse and Bind are followed so
prepared statements are named too). BEGIN and COMMIT count as statements, as in
pg_stat_statements. Connect with `sslmode=disable&gssencmode=disable` (TLS cannot be read).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import threading
from collections import Counter

_SPECIAL_CODES = {80877103, 80877104, 80877102}  # SSLRequest, GSSENCRequest, CancelRequest


def _normalise(sql: str) -> str:
    sql = re.sub(r"\s+", " ", sql).strip()
    sql = re.sub(r"\$\d+|%\(\w+\)s|'[^']*'|\b\d+(\.\d+)?\b", "?", sql)
    return sql[:140]


class _Stream:
    """Parses one client-to-server byte stream; counts statements into `counts`."""

    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts
        self.buf = bytearray()
        self.startup = True
        self.statements: dict[bytes, str] = {}
        self.portals: dict[bytes, str] = {}

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.startup:
                if len(self.buf) < 8:
                    return
                length, code = struct.unpack("!ii", self.buf[:8])
                if len(self.buf) < length:
                    return
                del self.buf[:length]
                if code not in _SPECIAL_CODES:
                    self.startup = False
                continue
            if len(self.buf) < 5:
                return
            kind = bytes(self.buf[0:1])
            (length,) = struct.unpack("!i", self.buf[1:5])
            if len(self.buf) < 1 + length:
                return
            body = bytes(self.buf[5 : 1 + length])
            del self.buf[: 1 + length]
            self._message(kind, body)

    def _message(self, kind: bytes, body: bytes) -> None:
        if kind == b"Q":
            self.counts[_normalise(body.split(b"\0", 1)[0].decode(errors="replace"))] += 1
        elif kind == b"P":
            name, rest = body.split(b"\0", 1)
            self.statements[name] = _normalise(rest.split(b"\0", 1)[0].decode(errors="replace"))
        elif kind == b"B":
            portal, rest = body.split(b"\0", 1)
            stmt = rest.split(b"\0", 1)[0]
            self.portals[portal] = self.statements.get(stmt, "?")
        elif kind == b"E":
            portal = body.split(b"\0", 1)[0]
            self.counts[self.portals.get(portal, "?")] += 1


class CountingProxy:
    """Listens on 127.0.0.1:<port> and forwards to the server; one per replica."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> None:
        self.loop = loop
        self.target = (host, port)
        self.counts: Counter[str] = Counter()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.flowing = asyncio.Event()  # cleared: a partition (bytes are held, sockets open)
        self.flowing.set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        stream = _Stream(self.counts)

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, parse: _Stream | None
        ) -> None:
            try:
                while data := await src.read(65536):
                    if parse is not None:
                        parse.feed(data)
                    await self.flowing.wait()
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer, stream), pipe(up_reader, writer, None))

    def freeze(self) -> None:
        """Stop forwarding bytes either way; connections stay open (a network partition as
        the replica sees it: its calls hang, nothing fails)."""
        self.loop.call_soon_threadsafe(self.flowing.clear)

    def thaw(self) -> None:
        """Forward again, the held bytes first."""
        self.loop.call_soon_threadsafe(self.flowing.set)

    def snapshot(self) -> Counter[str]:
        """A copy of the counts, taken on the proxy's loop (where they change)."""

        async def copy() -> Counter[str]:
            return Counter(self.counts)

        return asyncio.run_coroutine_threadsafe(copy(), self.loop).result(10)


class Proxies:
    """Counting proxies on a background event loop (a thread of this process)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name="bench-pgproxy"
        )
        self.thread.start()
        self.proxies: list[CountingProxy] = []

    def new(self) -> CountingProxy:
        proxy = CountingProxy(self.loop, self.host, self.port)
        asyncio.run_coroutine_threadsafe(proxy.start(), self.loop).result(10)
        self.proxies.append(proxy)
        return proxy

    def close(self) -> None:
        async def shut() -> None:
            for p in self.proxies:
                if p.server is not None:
                    p.server.close()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()
