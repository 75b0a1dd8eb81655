#!/usr/bin/env python3
"""Measures azgate's memory per idle keep-alive client connection, for sizing the
container memory limit against server.max_connections.

Starts a release build of azgate on loopback (plain HTTP, then HTTPS with a throw-away
certificate from `openssl`), opens N client connections that each make one request and
then sit idle on keep-alive, and reads azgate's VmRSS from /proc before, with all N open,
and again after they are closed. Bounded: every step has a timeout, and azgate is killed
at the end whatever happens.

Run from the repository root on Linux after `cargo build --release`:

    python3 deploy/measure-connection-memory.py [N]     # N defaults to 2000

Prints one line per listener kind and a summary; the numbers in README.md ("Sizing")
come from it.
"""

import pathlib
import socket
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "azgate"
REQUEST = b"GET /none HTTP/1.1\r\nHost: azgate\r\n\r\n"


def rss_kib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_answer(sock):
    """Reads one answer (azgate's 404 JSON error, with Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("closed before the answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)


def settle(pid, seconds=2.0):
    time.sleep(seconds)
    return rss_kib(pid)


def measure(n, tls_dir):
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        config = pathlib.Path(scratch) / "proxy.toml"
        text = (f'[server]\nlisten = "127.0.0.1:{port}"\nmax_connections = {n + 100}\n'
                f'idle_timeout = "10m"\nheader_timeout = "10m"\n[admin]\nlisten = ""\n'
                f'[log]\nlevel = "warn"\n')
        if tls_dir:
            text += f'[server.tls]\ncert = "{tls_dir}/cert.pem"\nkey = "{tls_dir}/key.pem"\n'
        config.write_text(text)
        azgate = subprocess.Popen([str(BINARY), "serve", "-c", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sockets = []
        try:
            deadline = time.time() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.05)
            # One request on a connection first: the runtime's threads and buffers exist.
            warm = socket.create_connection(("127.0.0.1", port), timeout=10)
            context = None
            if tls_dir:
                context = ssl.create_default_context(cafile=f"{tls_dir}/cert.pem")
                context.check_hostname = False
                warm = context.wrap_socket(warm, server_hostname="localhost")
            warm.sendall(REQUEST)
            read_answer(warm)
            warm.close()
            before = settle(azgate.pid)
            for _ in range(n):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                if context:
                    sock = context.wrap_socket(sock, server_hostname="localhost")
                sock.sendall(REQUEST)
                read_answer(sock)
                sockets.append(sock)
            with_open = settle(azgate.pid)
            for sock in sockets:
                sock.close()
            sockets.clear()
            after = settle(azgate.pid, 5.0)
            # mimalloc returns freed pages lazily, from later allocator calls: some traffic.
            for _ in range(50):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                if context:
                    sock = context.wrap_socket(sock, server_hostname="localhost")
                sock.sendall(REQUEST)
                read_answer(sock)
                sock.close()
                time.sleep(0.1)
            later = settle(azgate.pid)
        finally:
            for sock in sockets:
                sock.close()
            azgate.kill()
            azgate.wait(timeout=10)
    per_connection = (with_open - before) * 1024 / n
    kind = "https" if tls_dir else "http"
    print(f"{kind}: {n} idle keep-alive connections: VmRSS {before / 1024:.1f} MiB before, "
          f"{with_open / 1024:.1f} MiB with them open ({per_connection / 1024:.1f} KiB each), "
          f"{after / 1024:.1f} MiB 5 s after closing them, {later / 1024:.1f} MiB after 50 more requests")
    return before, per_connection


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    if not BINARY.is_file():
        sys.exit(f"{BINARY} is missing: run `cargo build --release` first")
    with tempfile.TemporaryDirectory() as tls_dir:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", f"{tls_dir}/key.pem", "-out", f"{tls_dir}/cert.pem"],
                       check=True, capture_output=True, timeout=30)
        measure(n, None)
        measure(n, tls_dir)


if __name__ == "__main__":
    main()
