"""A minimal peer for the access tests: HELLO (with this process's pid, or the one given) and GOODBYE over a
raw socket. Plain Python (any 3.x, no shim), so that it runs as another user with the system interpreter.
Prints "connect failed: <reason>" or "connected" (an agent that refuses the peer just closes: see its log)."""
import os
import socket
import struct
import sys


def varint(value):
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def frame(kind, payload):
    return bytes([kind]) + struct.pack("<I", len(payload)) + payload


pid = int(sys.argv[2]) if len(sys.argv) > 2 else os.getpid()
name = b"peer-test"
hello = b"\x08\x01" + b"\x18" + varint(pid) + b"\x5a" + varint(len(name)) + name
stream = b"TAPY\x01\x00\x00\x00" + frame(1, hello) + frame(5, b"")

sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect(sys.argv[1])
except OSError as error:
    print("connect failed:", error.strerror)
    sys.exit(0)
try:
    sock.sendall(stream)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)  # the agent never writes: this waits for it to close
except OSError:
    pass  # reset by an agent that refused us
print("connected")
