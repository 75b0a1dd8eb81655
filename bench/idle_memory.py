#!/usr/bin/env python3
"""Memory per idle client connection: azgate's VmRSS with N idle connections open, less
its VmRSS before, divided by N.

    python3 bench/idle_memory.py                        # this tree's release build, N = 2000
    python3 bench/idle_memory.py --connections 10000
    python3 bench/idle_memory.py before=/tmp/old-azgate after=target/release/azgate
    python3 bench/idle_memory.py --kinds http,http-fresh --rounds 3

Kinds (each on a fresh azgate on loopback, no routes, so every request gets the 404 JSON
error without an upstream):

- `http`: HTTP/1.1, one request on each connection, then held idle on keep-alive;
- `http-fresh`: HTTP/1.1 connections that have sent nothing yet;
- `https`, `https-fresh`: the same over TLS (a throw-away certificate from `openssl`);
- `h2c`: HTTP/2 with prior knowledge over plain TCP, one request, then idle;
- `h2`: HTTP/2 over TLS (ALPN), one request, then idle.

Each azgate first serves one connection of the kind (threads and buffers exist), settles
for 2 s, then N connections are opened one after another and RSS is read again after 2 s.
Builds take turns per round (interleaved); the median per build and kind is reported.
Bounded: every socket has a timeout, azgate is killed at the end whatever happens, and
header_timeout / idle_timeout are 10 minutes so nothing closes during a measurement.
"""
import argparse
import pathlib
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
REQUEST = b"GET /none HTTP/1.1\r\nHost: azgate\r\n\r\n"
KINDS = ["http", "http-fresh", "https", "https-fresh", "h2c", "h2"]
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def rss_kib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_http1_answer(sock):
    """Reads one answer (azgate's 404 JSON error, with Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("closed before the answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("closed in the body")
        body += chunk


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_exchange(sock):
    """One GET on stream 1 over HTTP/2, by hand (HPACK static-table and literal fields),
    read until the stream ends; SETTINGS are acknowledged, as a client must."""
    authority = b"azgate"
    headers = (b"\x82\x86\x84"                                 # :method GET, :scheme http, :path /
               + b"\x01" + bytes([len(authority)]) + authority)  # :authority, literal, not indexed
    sock.sendall(H2_PREFACE + h2_frame(4, 0, 0) + h2_frame(1, 0x5, 1, headers))
    data = b""
    while True:
        while len(data) < 9:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("closed before the answer")
            data += chunk
        length = int.from_bytes(data[:3], "big")
        while len(data) < 9 + length:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("closed in a frame")
            data += chunk
        kind, flags, stream = data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        data = data[9 + length:]
        if kind == 4 and not flags & 1:
            sock.sendall(h2_frame(4, 1, 0))
        if stream == 1 and kind in (0, 1) and flags & 1:
            return


class Azgate:
    """One azgate on loopback, killed on exit."""

    def __init__(self, binary, kind, n, tls_dir, scratch):
        self.kind, self.tls_dir = kind, tls_dir
        self.port = free_port()
        config = pathlib.Path(scratch) / f"{kind}.toml"
        text = (f'[server]\nlisten = "127.0.0.1:{self.port}"\nmax_connections = {n + 100}\n'
                f'idle_timeout = "10m"\nheader_timeout = "10m"\n[admin]\nlisten = ""\n'
                f'[log]\nlevel = "warn"\n')
        if self.tls:
            text += f'[server.tls]\ncert = "{tls_dir}/cert.pem"\nkey = "{tls_dir}/key.pem"\n'
        config.write_text(text)
        self.context = None
        if self.tls:
            self.context = ssl.create_default_context(cafile=f"{tls_dir}/cert.pem")
            self.context.check_hostname = False
            self.context.set_alpn_protocols(["h2"] if kind == "h2" else ["http/1.1"])
        self.proc = subprocess.Popen([str(binary), "serve", "-c", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def tls(self):
        return self.kind in ("https", "https-fresh", "h2")

    def __enter__(self):
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.05)

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait(timeout=10)

    def connect(self, exchange):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context:
            sock = self.context.wrap_socket(sock, server_hostname="localhost")
        if exchange:
            if self.kind in ("h2", "h2c"):
                h2_exchange(sock)
            else:
                sock.sendall(REQUEST)
                read_http1_answer(sock)
        return sock


def measure(binary, kind, n, tls_dir, scratch):
    """KiB of VmRSS per idle connection of `kind`."""
    exchange = not kind.endswith("-fresh")
    sockets = []
    with Azgate(binary, kind, n, tls_dir, scratch) as azgate:
        try:
            # One exchange (or, for -fresh, a request on a second connection) first: the
            # runtime's threads and the buffers of the first request exist.
            warm = azgate.connect(exchange)
            if not exchange:
                azgate.connect(True).close()
            warm.close()
            time.sleep(2)
            before = rss_kib(azgate.proc.pid)
            for _ in range(n):
                sockets.append(azgate.connect(exchange))
            time.sleep(2)
            with_open = rss_kib(azgate.proc.pid)
            if azgate.proc.poll() is not None:
                raise RuntimeError(f"azgate exited during {kind}")
        finally:
            for sock in sockets:
                sock.close()
    return (with_open - before) / n


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builds", nargs="*", help="label=path/to/azgate (default: this tree's release build)")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    builds = [b.split("=", 1) for b in args.builds] or [["azgate", str(ROOT / "target/release/azgate")]]
    kinds = args.kinds.split(",")
    for label, path in builds:
        if not pathlib.Path(path).is_file():
            sys.exit(f"{label}: {path} is missing (cargo build --release?)")
    for kind in kinds:
        if kind not in KINDS:
            sys.exit(f"unknown kind {kind}; kinds: {', '.join(KINDS)}")
    results = {(label, kind): [] for label, _ in builds for kind in kinds}
    with tempfile.TemporaryDirectory() as tls_dir, tempfile.TemporaryDirectory() as scratch:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", f"{tls_dir}/key.pem", "-out", f"{tls_dir}/cert.pem"],
                       check=True, capture_output=True, timeout=30)
        for round_ in range(args.rounds):
            for kind in kinds:
                for label, path in builds:
                    kib = measure(path, kind, args.connections, tls_dir, scratch)
                    results[(label, kind)].append(kib)
                    print(f"round {round_ + 1}: {label:>10} {kind:<12} {kib:6.1f} KiB per idle connection",
                          flush=True)
    print(f"\nmedians, {args.connections} connections, {args.rounds} round(s):")
    print("| kind | " + " | ".join(label for label, _ in builds) + " |")
    print("| --- |" + " --- |" * len(builds))
    for kind in kinds:
        cells = [f"{statistics.median(results[(label, kind)]):.1f} KiB" for label, _ in builds]
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
