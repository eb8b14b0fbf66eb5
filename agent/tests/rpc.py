#!/usr/bin/env python3
"""One JSON-RPC 2.0 request to vpf-agent (tests only): rpc.py SOCKET METHOD [PARAMS-JSON | --raw LINE].
Prints the result (exit 0) or the error object (exit 1)."""
import json, socket, sys

sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
sock.connect(sys.argv[1])
if sys.argv[2] == "--raw":
    line = sys.argv[3]
else:
    params = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": sys.argv[2], "params": params})
try:
    sock.sendall(line.encode() + b"\n")
except (BrokenPipeError, ConnectionResetError):
    pass  # a refused client: the reason is waiting to be read
buf = b""
while b"\n" not in buf:
    try:
        chunk = sock.recv(65536)
    except ConnectionResetError:
        break
    if not chunk:
        break
    buf += chunk
reply = json.loads(buf.split(b"\n")[0])
if "error" in reply:
    print(json.dumps(reply["error"]))
    sys.exit(1)
print(json.dumps(reply["result"]))
