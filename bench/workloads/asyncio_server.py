"""An asyncio TCP server with concurrent clients over loopback: a line protocol, JSON replies."""

import asyncio
import json
import sys
import time


async def handle(reader, writer):
    while True:
        line = await reader.readline()
        if not line:
            break
        request = json.loads(line)
        reply = {"id": request["id"], "sum": sum(request["values"]), "echo": request["name"].upper()}
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def client(port, index, requests):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    total = 0
    for i in range(requests):
        request = {"id": i, "name": "client-%d" % index, "values": list(range(i % 20))}
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        total += json.loads(await reader.readline())["sum"]
    writer.close()
    await writer.wait_closed()
    return total


async def main(scale):
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        totals = await asyncio.gather(*(client(port, i, int(600 * scale)) for i in range(8)))
    print(sum(totals))


if __name__ == "__main__":
    started = time.process_time()
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0))
    print("work_cpu_s=%.6f" % (time.process_time() - started), file=sys.stderr)  # bench/run.py: steady state
