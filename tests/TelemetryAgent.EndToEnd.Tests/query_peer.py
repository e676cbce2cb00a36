"""A minimal peer of the agent's query socket for the access tests: it speaks the first bytes of HTTP/2 (the client
preface and an empty SETTINGS frame). Plain Python, so that it runs as another user with the system interpreter.
Prints "answered" when the agent answers with its SETTINGS frame, "closed" when it closes the connection without a
word, or "connect failed: <reason>"."""
import socket
import sys

sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(20)
try:
    sock.connect(sys.argv[1])
except OSError as error:
    print("connect failed:", error.strerror)
    sys.exit(0)
try:
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
    header = sock.recv(9)
except OSError:
    header = b""
print("answered" if len(header) >= 4 and header[3] == 4 else "closed")
