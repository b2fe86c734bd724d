"""A minimal WebSocket client for the kubelet API tests (stdlib only).

usage: ws_client.py HOST PORT PATH PROTOCOL CERT KEY MODE
MODE exec:  sends stdin (channel 0) then a v5 close of stdin, collects every
            channel until the server closes; prints JSON {status, channels}.
MODE pf:    reads the two port frames, sends an HTTP request on channel 0,
            collects channel 0 until it holds "ok\n"; prints JSON.
MODE stall: starts the session and never reads (back-pressure); sleeps
            argv[8] seconds, then exits.
"""
import base64, json, os, socket, ssl, struct, sys, time

host, port, path, proto, cert, key, mode = sys.argv[1:8]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.load_cert_chain(cert, key)
s = ctx.wrap_socket(socket.create_connection((host, int(port))), server_hostname=host)
k = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {k}\r\nSec-WebSocket-Protocol: {proto}\r\n\r\n").encode())
buf = b""
while b"\r\n\r\n" not in buf:
    d = s.recv(4096)
    if not d:
        break
    buf += d
head, _, buf = buf.partition(b"\r\n\r\n")
status = head.split(b"\r\n")[0].decode()


def send(op, data):
    m = os.urandom(4)
    n = len(data)
    if n < 126:
        h = bytes([0x80 | op, 0x80 | n])
    elif n < 65536:
        h = bytes([0x80 | op, 0x80 | 126]) + struct.pack(">H", n)
    else:
        h = bytes([0x80 | op, 0x80 | 127]) + struct.pack(">Q", n)
    s.sendall(h + m + bytes(b ^ m[i % 4] for i, b in enumerate(data)))


def need(n):
    global buf
    while len(buf) < n:
        d = s.recv(65536)
        if not d:
            raise EOFError
        buf += d


def recv():
    global buf
    need(2)
    op, n, p = buf[0] & 15, buf[1] & 127, 2
    if n == 126:
        need(4)
        n, p = struct.unpack(">H", buf[2:4])[0], 4
    elif n == 127:
        need(10)
        n, p = struct.unpack(">Q", buf[2:10])[0], 10
    need(p + n)
    d, buf = buf[p:p + n], buf[p + n:]
    return op, d


def channel(op, d):
    if op == 1:
        return int(chr(d[0])), base64.b64decode(d[1:])
    return d[0], d[1:]


out = {}
if mode == "stall":
    time.sleep(float(sys.argv[8]))
    sys.exit(0)
if mode == "exec":
    data = sys.stdin.buffer.read()
    if data:
        send(2, b"\x00" + data)
    send(2, b"\xff\x00")
    try:
        while True:
            op, d = recv()
            if op == 8:
                break
            if op in (1, 2) and d:
                ch, p = channel(op, d)
                out[ch] = out.get(ch, b"") + p
    except EOFError:
        pass
elif mode == "pf":
    s.settimeout(20)
    for _ in range(2):
        op, d = recv()
        ch, p = channel(op, d)
        out["init%d" % ch] = list(p)
    send(2, b"\x00GET /healthz HTTP/1.0\r\n\r\n")
    got = b""
    while not got.endswith(b"ok\n"):
        op, d = recv()
        ch, p = channel(op, d)
        if ch == 0:
            got += p
    out[0] = got
    send(8, b"\x03\xe8")
print(json.dumps({"status": status,
                  "channels": {str(k): (v if isinstance(v, list) else v.decode("utf-8", "replace")) for k, v in out.items()}}))
