"""A slow model server for benches/proxy_vs_nginx.sh: answers every HTTP/1.1 request
with a fixed body after sleeping DELAY milliseconds (asyncio.sleep, so thousands of
requests can wait at once on one thread). Keep-alive, Content-Length bodies only (what
shadowgate and nginx send). Counts requests and connections; GET /__count answers
"REQUESTS CONNECTIONS" at once.

nginx-light has no echo_sleep and `limit_rate` works in whole seconds, so this is the
one upstream that is not nginx. Its CPU is not measured; only the proxy's is.

usage: python3 slow_upstream.py PORT DELAY_MS BODY_FILE
"""

import asyncio
import sys

PORT = int(sys.argv[1])
DELAY = int(sys.argv[2]) / 1000.0
BODY = open(sys.argv[3], "rb").read()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
count = 0
connections = 0


async def handle(reader, writer):
    global count, connections
    connections += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            if head.startswith(b"GET /__count "):
                text = b"%d %d" % (count, connections)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)
                )
                await writer.drain()
                continue
            count += 1
            await asyncio.sleep(DELAY)
            writer.write(RESPONSE)
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", PORT, backlog=4096)
    async with server:
        await server.serve_forever()


asyncio.run(main())
