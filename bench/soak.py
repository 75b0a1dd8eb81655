#!/usr/bin/env python3
"""Soak benchmark: azgate for minutes at a fixed rate against a faulty upstream, with
short-lived tokens and config reloads; checks that nothing leaks and no client sees an
error beyond the faults injected.

    python3 bench/soak.py               # 10 minutes (--minutes N to change)
    python3 bench/soak.py --short       # about a minute, looser bounds (run by .ci/run)

Loopback only. Everything it starts (azgate release; a mock Entra ID token endpoint and a
mock upstream, both in this process) is stopped at the end, on an error and on Ctrl-C.
The report goes to bench/out/<time>/soak.md and to stdout; the exit status is 1 when a
goal is missed. Method and bounds: bench/README.md, section "Soak".
"""
import argparse
import asyncio
import collections
import datetime
import json
import os
import pathlib
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from run import ROOT, Proc, build, log, wait_port  # noqa: E402  (bench/run.py's helpers)

TOKEN_LIFETIME = 60  # seconds, the mock Entra's expires_in
TENANT = "soak-tenant"
HEADER = "x-soak-generation"  # the route's set_headers value the reloads toggle
MAX_ATTEMPTS = 4  # azgate's default [retry] max_attempts
REQUEST_TIMEOUT = 15.0  # a client gives up on an answer after this long
STARTED = []  # processes this script started, killed on the way out whatever happens


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rst(writer):
    """Closes a connection with a TCP reset (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


async def read_head(reader):
    """One HTTP/1.1 request head: (method, target, headers dict lower-cased), and the body
    by Content-Length. None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(length) if length else b""
    return method, target, headers, body


def response(status, reason, body, extra=()):
    head = [f"HTTP/1.1 {status} {reason}", f"content-length: {len(body)}", "content-type: application/json", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def body_for(rid):
    """The upstream's 200 body for a request id: the client checks every byte of it."""
    text = json.dumps({"id": rid, "status": "Succeeded", "pad": "x" * 480})
    return text.encode()


# ---------------------------------------------------------------------------
# mock Entra ID and mock upstream (one asyncio loop in a thread of this process)


class Mocks:
    def __init__(self, seed, fault_rate, reset_rate):
        self.rng = random.Random(seed)
        self.fault_rate = fault_rate  # share of upstream attempts answered 503
        self.reset_rate = reset_rate  # share reset (half before answering, half mid-body)
        self.lock = threading.Lock()
        # Entra
        self.token_calls = []  # (monotonic time, n)
        self.token_issued = {}  # n -> monotonic time
        self.token_bad_requests = 0
        # upstream
        self.attempts = collections.defaultdict(list)  # request id -> ["ok" | "503" | "reset_before" | "reset_mid" | "401"]
        self.injected = collections.Counter()
        self.unauthorized = collections.Counter()  # why a bearer was refused
        self.tokens_seen = collections.Counter()  # token age buckets at use
        self.in_margin = 0  # requests carrying a token in its last tenth of lifetime
        self.generation_seen = None  # last x-soak-generation value, and when it changed
        self.generation_changed_at = None
        self.no_id = 0
        self.connections = 0

    # -- Entra: POST /{tenant}/oauth2/v2.0/token
    async def entra(self, reader, writer):
        try:
            while True:
                req = await read_head(reader)
                if req is None:
                    break
                method, target, headers, body = req
                form = dict(p.split("=", 1) for p in body.decode().split("&") if "=" in p)
                if method != "POST" or target != f"/{TENANT}/oauth2/v2.0/token" or form.get("grant_type") != "client_credentials":
                    with self.lock:
                        self.token_bad_requests += 1
                    writer.write(response(400, "Bad Request", b'{"error":"invalid_request"}'))
                    await writer.drain()
                    continue
                with self.lock:
                    n = len(self.token_calls) + 1
                    now = time.monotonic()
                    self.token_calls.append((now, n))
                    self.token_issued[n] = now
                payload = {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME, "ext_expires_in": TOKEN_LIFETIME, "access_token": f"tok-{n}"}
                writer.write(response(200, "OK", json.dumps(payload).encode()))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def check_bearer(self, auth):
        """None when `auth` carries the current or the previous tok-N, unexpired; else why not."""
        m = re.fullmatch(r"Bearer tok-(\d+)", auth or "")
        if not m:
            return "no token"
        n = int(m.group(1))
        now = time.monotonic()
        with self.lock:
            current = len(self.token_calls)
            issued = self.token_issued.get(n)
        if issued is None:
            return "unknown token"
        if n < current - 1:
            return "older than the previous token"
        age = now - issued
        if age >= TOKEN_LIFETIME:
            return "expired"
        if age >= TOKEN_LIFETIME * 0.9:
            self.in_margin += 1
        self.tokens_seen[int(age // 10) * 10] += 1
        return None

    # -- upstream: GET /item/{i}, faults injected per attempt
    async def upstream(self, reader, writer):
        self.connections += 1
        try:
            while True:
                req = await read_head(reader)
                if req is None:
                    break
                _, _, headers, _ = req
                rid = headers.get("x-ms-client-request-id")
                if not rid:
                    self.no_id += 1
                    rid = "?"
                gen = headers.get(HEADER)
                if gen != self.generation_seen:
                    self.generation_seen = gen
                    self.generation_changed_at = time.monotonic()
                why = self.check_bearer(headers.get("authorization"))
                if why:
                    self.unauthorized[why] += 1
                    self.attempts[rid].append("401")
                    writer.write(response(401, "Unauthorized", b'{"error":{"code":"InvalidAuthenticationToken"}}'))
                    await writer.drain()
                    continue
                roll = self.rng.random()
                if roll < self.fault_rate:
                    kind = "503"
                    extra = ["retry-after: 0"] if self.rng.random() < 0.5 else []
                    self.injected["503 (Retry-After: 0)" if extra else "503 (no Retry-After)"] += 1
                    self.attempts[rid].append(kind)
                    writer.write(response(503, "Service Unavailable", b'{"error":{"code":"ServerBusy","message":"injected"}}', extra))
                    await writer.drain()
                    continue
                if roll < self.fault_rate + self.reset_rate / 2:
                    self.injected["reset before answering"] += 1
                    self.attempts[rid].append("reset_before")
                    rst(writer)
                    return
                body = body_for(rid)
                if roll < self.fault_rate + self.reset_rate:
                    self.injected["reset mid-body"] += 1
                    self.attempts[rid].append("reset_mid")
                    whole = response(200, "OK", body)
                    writer.write(whole[: len(whole) - len(body) // 2])
                    await writer.drain()
                    # Long enough for azgate to have passed the head and the first half on.
                    await asyncio.sleep(0.05)
                    rst(writer)
                    return
                self.attempts[rid].append("ok")
                writer.write(response(200, "OK", body))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def start_mocks(mocks):
    """Runs both mock servers on their own loop in a daemon thread; returns (loop, ports)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    ports = {}

    async def serve():
        entra = await asyncio.start_server(mocks.entra, "127.0.0.1", 0)
        upstream = await asyncio.start_server(mocks.upstream, "127.0.0.1", 0, backlog=1024)
        for s in (entra, upstream):
            for sock in s.sockets:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ports["entra"] = entra.sockets[0].getsockname()[1]
        ports["upstream"] = upstream.sockets[0].getsockname()[1]
        ready.set()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve())
        loop.run_forever()

    threading.Thread(target=run, daemon=True, name="mocks").start()
    if not ready.wait(10):
        raise RuntimeError("the mock servers did not start")
    return loop, ports


# ---------------------------------------------------------------------------
# azgate


def azgate_conf(ports, generation):
    return f"""# written by bench/soak.py; the reloads toggle {HEADER} between 0 and 1
[server]
listen = "127.0.0.1:{ports['azgate']}"

[admin]
listen = "127.0.0.1:{ports['admin']}"

[log]
level = "warn"

[credentials.soak]
type = "client_secret"
tenant = "{TENANT}"
client_id = "soak-app"
client_secret = "soak-secret"
scope = "https://management.azure.com/.default"
token_url = "http://127.0.0.1:{ports['entra']}/{TENANT}/oauth2/v2.0/token"

[[routes]]
prefix = "/up"
upstream = "http://127.0.0.1:{ports['upstream']}"
credential = "soak"
set_headers = {{ "{HEADER}" = "{generation}" }}
"""


def metrics(port):
    """The admin /metrics page as {(name, labels text): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def metric(values, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for (n, lab), v in values.items():
        if n == name and all(f'{k}="{val}"' in lab for k, val in labels.items()):
            total += v
    return total


def tcp_table():
    """inode -> (local port, remote port, state) for every TCP socket in this namespace."""
    states = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "06": "TIME_WAIT",
              "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}
    table = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = pathlib.Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            table[f[9]] = (int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16), states.get(f[3], f[3]))
    return table


def fds(pid, ports):
    """azgate's open descriptors by kind; sockets by what they connect to and by state."""
    kinds = collections.Counter()
    states = collections.Counter()
    table = tcp_table()
    d = pathlib.Path(f"/proc/{pid}/fd")
    for fd in os.listdir(d):
        try:
            target = os.readlink(d / fd)
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if not m:
            if target.startswith("anon_inode:"):
                kinds[target.split(":", 1)[1].strip("[]")] += 1
            elif target.startswith("pipe:"):
                kinds["pipe"] += 1
            else:
                kinds["file " + target] += 1
            continue
        entry = table.get(m.group(1))
        if entry is None:
            kinds["socket (not TCP)"] += 1
            continue
        local, remote, state = entry
        states[state] += 1
        if state == "LISTEN":
            kinds["listening sockets"] += 1
        elif local == ports["azgate"]:
            kinds["client connections"] += 1
        elif local == ports["admin"]:
            kinds["admin connections"] += 1
        elif remote == ports["upstream"]:
            kinds["upstream connections"] += 1
        elif remote == ports["entra"]:
            kinds["token endpoint connections"] += 1
        else:
            kinds["other TCP"] += 1
    return {"total": sum(kinds.values()), "kinds": dict(kinds), "states": dict(states)}


SOCKET_KINDS = {"listening sockets", "client connections", "admin connections", "upstream connections",
                "token endpoint connections", "other TCP", "socket (not TCP)"}


# ---------------------------------------------------------------------------
# load generator: a fixed rate over a few keep-alive connections


class Conn:
    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def drop(self):
        if self.writer:
            self.writer.transport.abort()
        self.reader = self.writer = None


async def read_response(reader):
    """(status, headers, body, complete). Raises on EOF/reset before the head is complete."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = b""
    try:
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                body += chunk[:-2]
                if size == 0:
                    break
        else:
            body = await reader.read()  # close-delimited
    except (asyncio.IncompleteReadError, ConnectionError) as e:
        partial = e.partial if isinstance(e, asyncio.IncompleteReadError) else b""
        return status, headers, body + partial, False
    return status, headers, body, True


class Load:
    def __init__(self, port, rate, connections):
        self.port = port
        self.rate = rate
        self.conns = [Conn(port) for _ in range(connections)]
        self.results = {}  # request id -> outcome dict
        self.late = []  # how late each send was against its slot (s)
        self.sent = 0
        self.reconnects = 0

    async def one(self, conn, rid, idle):
        outcome = {"sent_at": time.monotonic()}
        try:
            if conn.writer is None:
                await conn.open()
                self.reconnects += 1
            conn.writer.write(f"GET /up/item/{rid} HTTP/1.1\r\nHost: soak\r\nx-ms-client-request-id: {rid}\r\n\r\n".encode())
            await conn.writer.drain()
            status, headers, body, complete = await asyncio.wait_for(read_response(conn.reader), REQUEST_TIMEOUT)
            outcome.update(status=status, complete=complete, attempts=int(headers.get("x-azgate-attempts", "1")),
                           error_code=headers.get("x-azgate-error"))
            if status == 200 and complete:
                outcome["body_ok"] = body == body_for(rid)
            if not complete or headers.get("connection", "").lower() == "close":
                conn.drop()
        except asyncio.TimeoutError:
            outcome.update(status=None, error="timeout")
            conn.drop()
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            outcome.update(status=None, error=f"no answer ({type(e).__name__})")
            conn.drop()
        except Exception as e:  # a malformed answer: counted, and the connection replaced
            outcome.update(status=None, error=f"unreadable answer ({type(e).__name__}: {e})")
            conn.drop()
        outcome["latency"] = time.monotonic() - outcome["sent_at"]
        self.results[rid] = outcome
        idle.put_nowait(conn)

    async def run(self, seconds):
        idle = asyncio.Queue()
        for c in self.conns:
            idle.put_nowait(c)
        tasks = set()
        start = time.monotonic()
        total = int(seconds * self.rate)
        for i in range(total):
            slot = start + i / self.rate
            delay = slot - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = await idle.get()
            self.late.append(max(0.0, time.monotonic() - slot))
            rid = f"soak-{i}"
            self.sent += 1
            t = asyncio.create_task(self.one(conn, rid, idle))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 5)
        for c in self.conns:
            c.drop()
        return time.monotonic() - start


# ---------------------------------------------------------------------------
# classification: each client outcome against what the upstream did with that request id


def classify(rid, outcome, attempts):
    """(class, expected?) for one request."""
    last = attempts[-1] if attempts else None
    status = outcome.get("status")
    if status == 200 and outcome.get("complete"):
        if not outcome.get("body_ok"):
            return "200 with a wrong body", False
        if "401" in attempts:
            return "200 after the upstream refused a stale token", False
        if len(attempts) > 1 and attempts[-1] == "ok" and all(a.startswith("reset_") for a in attempts[:-1]):
            if all(a == "reset_before" for a in attempts[:-1]):
                return "200 after an injected reset before the answer (retried by azgate)", True
            # The reset reached azgate before it had read the response head: a connection
            # failure like the one before, so retrying is right.
            return "200 after an injected mid-body reset that came before azgate read the head (retried)", True
        if attempts != ["ok"]:
            return f"200 (upstream saw: {', '.join(attempts) or 'nothing'})", False
        return "200", True
    if status == 503 and outcome.get("complete") and last == "503" and not outcome.get("error_code"):
        return "503 injected, passed through (503 is not in the default retry.on)", True
    if status == 200 and not outcome.get("complete") and last == "reset_mid":
        return "200 truncated by an injected mid-body reset (connection closed before Content-Length)", True
    if status == 502 and last and last.startswith("reset_") and len(attempts) >= MAX_ATTEMPTS:
        return "502 after max_attempts injected resets in a row", True
    if status is None:
        return f"{outcome.get('error')} (upstream saw: {', '.join(attempts) or 'nothing'})", False
    state = "complete" if outcome.get("complete") else "truncated"
    code = f" {outcome['error_code']}" if outcome.get("error_code") else ""
    return f"{status}{code} {state} (upstream saw: {', '.join(attempts) or 'nothing'})", False


# ---------------------------------------------------------------------------


async def reloader(proc, conf_path, ports, mocks, interval, started, stop_at, events):
    """Every `interval`: odd reloads rewrite the config in place (toggling the set_headers
    value), even ones send SIGHUP with the file unchanged. Each is checked in the counter
    azgate_config_reloads_total{outcome="success"}, a rewrite also in what the upstream sees."""
    n = 0
    base = metric(await asyncio.to_thread(metrics, ports["admin"]), "azgate_config_reloads_total", outcome="success")
    generation = 0
    next_at = time.monotonic() + interval
    while next_at + 5 < stop_at:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval
        n += 1
        ev = {"n": n, "t": time.monotonic()}
        ev["at"] = ev["t"] - started
        if n % 2:
            generation ^= 1
            ev["how"] = f"file rewritten in place ({HEADER} = \"{generation}\")"
            with open(conf_path, "w") as f:
                f.write(azgate_conf(ports, generation))
        else:
            ev["how"] = "SIGHUP"
            os.kill(proc.proc.pid, signal.SIGHUP)
        deadline = ev["t"] + 5
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if "counted_after" not in ev:
                m = await asyncio.to_thread(metrics, ports["admin"])
                if metric(m, "azgate_config_reloads_total", outcome="success") - base >= n:
                    ev["counted_after"] = time.monotonic() - ev["t"]
            if n % 2 and "in_service_after" not in ev and mocks.generation_seen == str(generation):
                ev["in_service_after"] = mocks.generation_changed_at - ev["t"]
            if "counted_after" in ev and (n % 2 == 0 or "in_service_after" in ev):
                break
        events.append(ev)


def rss_kib(proc):
    return proc.memory_kib("VmRSS")


async def soak(args, out, binary):
    seconds = args.minutes * 60
    warmup = args.warmup
    mocks = Mocks(args.seed, args.fault_rate, args.reset_rate)
    mock_loop, mports = start_mocks(mocks)
    ports = {"azgate": free_port(), "admin": free_port(), **mports}
    # The config lives apart from the logs: azgate watches its config's directory.
    conf_dir = out / "conf"
    conf_dir.mkdir(exist_ok=True)
    conf_path = conf_dir / "azgate-soak.toml"
    conf_path.write_text(azgate_conf(ports, 0))
    proc = Proc("azgate", [str(binary), "serve", "-c", str(conf_path)], ports["azgate"], args.cpus, out)
    STARTED.append(proc.proc)
    data = {"ports": ports, "config": str(conf_path)}
    try:
        wait_port(ports["admin"])
        load = Load(ports["azgate"], args.rate, args.connections)
        events = []
        started = time.monotonic()
        stop_at = started + seconds
        load_task = asyncio.create_task(load.run(seconds))
        reload_task = asyncio.create_task(reloader(proc, conf_path, ports, mocks, args.reload_every, started, stop_at, events))
        cpu0 = proc.cpu_seconds()
        await asyncio.sleep(warmup)
        data["warm"] = {"at": time.monotonic() - started, "rss_kib": rss_kib(proc), "fds": fds(proc.proc.pid, ports)}
        log(f"after {warmup} s warm-up: RSS {data['warm']['rss_kib'] / 1024:.1f} MiB, {data['warm']['fds']['total']} fds")
        progress_every = 60 if seconds > 120 else 20
        next_progress = time.monotonic() + progress_every
        end_snapshot = stop_at - 2  # under load, like the warm-up one
        while not load_task.done():
            now = time.monotonic()
            wake = min(next_progress, end_snapshot) if "end" not in data else next_progress
            await asyncio.wait({load_task}, timeout=max(0.0, wake - now))
            now = time.monotonic()
            if "end" not in data and now >= end_snapshot:
                data["end"] = {"at": now - started, "rss_kib": rss_kib(proc), "fds": fds(proc.proc.pid, ports)}
            if now >= next_progress and not load_task.done():
                next_progress += progress_every
                log(f"{now - started:.0f} s: {load.sent} sent, RSS {rss_kib(proc) / 1024:.1f} MiB, "
                    f"{len(mocks.token_calls)} token fetches, {len(events)} reloads")
        data["duration"] = load_task.result()
        await reload_task
        data.setdefault("end", {"at": time.monotonic() - started, "rss_kib": rss_kib(proc), "fds": fds(proc.proc.pid, ports)})
        await asyncio.sleep(1)  # the clients have closed their connections: azgate's side must follow
        data["after"] = {"at": time.monotonic() - started, "rss_kib": rss_kib(proc), "fds": fds(proc.proc.pid, ports)}
        data["hwm_kib"] = proc.memory_kib("VmHWM")
        data["cpu_s"] = proc.cpu_seconds() - cpu0
        data["metrics"] = await asyncio.to_thread(metrics, ports["admin"])
        data["first_token_at"] = mocks.token_calls[0][0] - started if mocks.token_calls else None
        data["token_span"] = (time.monotonic() - mocks.token_calls[0][0]) if mocks.token_calls else 0
        data["alive"] = proc.proc.poll() is None
        data["load"] = load
        data["events"] = events
    finally:
        proc.proc.terminate()
        try:
            data["exit"] = proc.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.proc.kill()
            data["exit"] = "killed after 40 s"
        proc.log.close()
        mock_loop.call_soon_threadsafe(mock_loop.stop)
    data["mocks"] = mocks
    data["azgate_log"] = (out / "azgate.log").read_text(errors="replace").splitlines()
    return data


def report(args, data, out):
    load, mocks, m = data["load"], data["mocks"], data["metrics"]
    duration = data["duration"]
    lines = []
    goals = []  # (goal, figure, ok)

    def goal(name, figure, ok):
        goals.append((name, figure, ok))

    version = subprocess.run([str(args.binary), "--version"], capture_output=True, text=True).stdout.strip()
    if args.bin:
        head = f"{args.binary} ({version})"
    else:
        tree = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        head = f"target/release/azgate built from {tree} ({version})"
    mode = "--short" if args.short else f"--minutes {args.minutes:g}"
    lines += [
        f"# azgate soak — {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"Command: `{' '.join(['python3', 'bench/soak.py', *sys.argv[1:]])}`",
        f"Build: {head}; {os.cpu_count()} CPUs, shared with whatever else runs. Mode: {mode}.",
        f"Load: {args.rate} req/s fixed rate over {args.connections} keep-alive connections (GET, {len(body_for('soak-0'))}-byte "
        f"JSON answers) for {duration:.1f} s; upstream faults per attempt: {args.fault_rate:.1%} 503, "
        f"{args.reset_rate:.1%} TCP reset (half before answering, half mid-body); tokens live {TOKEN_LIFETIME} s; "
        f"a reload every {args.reload_every:g} s (alternately the config rewritten in place and SIGHUP). "
        f"azgate: default [retry], [log] level = \"warn\". Config: {data['config']}.",
        "",
    ]

    # -- requests
    results = load.results
    by_status = collections.Counter()
    classes = collections.Counter()
    expected_classes = {}
    unexpected_examples = []
    for rid, outcome in results.items():
        st = outcome.get("status")
        key = "no answer" if st is None else f"{st}" + ("" if outcome.get("complete") else " truncated")
        by_status[key] += 1
        cls, ok = classify(rid, outcome, mocks.attempts.get(rid, []))
        classes[cls] += 1
        expected_classes[cls] = ok
        if not ok and len(unexpected_examples) < 10:
            unexpected_examples.append(f"{rid}: {cls}, {outcome.get('latency', 0) * 1000:.0f} ms")
    unexpected = sum(n for c, n in classes.items() if not expected_classes[c])
    not_answered = load.sent - len(results)
    achieved = len(results) / duration if duration else 0
    late = sorted(load.late)
    p99_late = late[int(len(late) * 0.99)] if late else 0
    lat = sorted(o["latency"] for o in results.values() if o.get("status") == 200 and o.get("complete"))
    pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] * 1000 if lat else 0  # noqa: E731
    attempts_hist = collections.Counter(o.get("attempts", 1) for o in results.values() if o.get("status") is not None)
    lines += [
        "## Requests",
        "",
        f"Sent {load.sent} ({achieved:.1f} req/s answered or failed; sends were late against their slot by "
        f"{p99_late * 1000:.1f} ms at p99, {late[-1] * 1000 if late else 0:.0f} ms at most); "
        f"{not_answered} still unanswered at the end. Latency of complete 200s: p50 {pct(0.5):.1f} ms, "
        f"p99 {pct(0.99):.1f} ms, max {pct(1.0):.0f} ms. Client reconnections: {load.reconnects - args.connections} "
        f"(after truncated answers). Answers by x-azgate-attempts: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(attempts_hist.items())) + ".",
        "",
        "Answers by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(by_status.items())) + ".",
        "",
        "Injected by the upstream (per attempt): "
        + (", ".join(f"{k}: {v}" for k, v in sorted(mocks.injected.items())) or "nothing")
        + f"; attempts refused 401 for a stale/unknown bearer: {sum(mocks.unauthorized.values())}"
        + (f" ({dict(mocks.unauthorized)})" if mocks.unauthorized else "")
        + f"; attempts without a request id: {mocks.no_id}.",
        "",
        "Each client answer is classified against what the upstream did with its request id "
        "(`x-ms-client-request-id`, which azgate forwards):",
        "",
        "| class | requests | expected |",
        "|---|---|---|",
    ]
    for cls, n in classes.most_common():
        lines.append(f"| {cls} | {n} | {'yes' if expected_classes[cls] else '**no**'} |")
    lines += [
        "",
        "Expected, by azgate's documented behaviour with its default `[retry]` (`on = [429, 504]`, "
        "4 attempts, connection failures retried for idempotent methods): an injected 503 reaches the "
        "client unchanged (503 is not retried by default); a reset before any response header is a "
        "connection failure, retried, so the client gets a 200 (`x-azgate-attempts: 2`); a reset after "
        "the head was passed on cannot be retried, and the client must see the body cut short (the "
        "connection closes before Content-Length is reached), never a shortened body presented as complete.",
        "",
    ]
    if unexpected_examples:
        lines += ["Unexpected answers (first 10):", "", *[f"- {e}" for e in unexpected_examples], ""]
    retries = {r: metric(m, "azgate_retries_total", reason=r) for r in ("connection", "504", "429", "status")}
    lines += [f"azgate's own count of retries: " + ", ".join(f"{k} {v:.0f}" for k, v in retries.items()) + ".", ""]
    goal("client errors beyond the injected faults", f"{unexpected} unexpected, {not_answered} unanswered", unexpected == 0 and not_answered == 0)
    goal("stale or expired tokens reaching the upstream", f"{sum(mocks.unauthorized.values())}", not mocks.unauthorized)
    goal(f"load held at the fixed rate (≥ 95% of {args.rate} req/s)", f"{achieved:.1f} req/s", achieved >= 0.95 * args.rate)

    # -- tokens
    calls = len(mocks.token_calls)
    span = data["token_span"]
    refresh_interval = TOKEN_LIFETIME / 2  # min(5 min, half the lifetime) before expiry
    expected_calls = 1 + int(span // refresh_interval)
    per_lifetime = calls / (duration / TOKEN_LIFETIME) if duration else 0
    per_interval = (calls - 1) / (span / refresh_interval) if span else 0  # refreshes, after the first fetch
    gaps = [b[0] - a[0] for a, b in zip(mocks.token_calls, mocks.token_calls[1:])]
    lines += [
        "## Tokens",
        "",
        f"{calls} calls to the mock Entra ID over {duration:.0f} s: **{per_lifetime:.2f} per {TOKEN_LIFETIME} s token lifetime**. "
        f"azgate refreshes a token when `min(5 min, half the lifetime)` remains (README, \"What azgate does to every "
        f"request\"), so a {TOKEN_LIFETIME} s token is replaced every {refresh_interval:.0f} s and ≈ 2 fetches per "
        f"lifetime is the design, not waste (with 1-hour tokens it would be 1.09). Refreshes (fetches after "
        f"the first) per {refresh_interval:.0f} s refresh interval: {per_interval:.2f} (goal ≈ 1); expected {expected_calls} calls in the {span:.0f} s since the first. "
        f"Gaps between fetches: "
        + (f"{min(gaps):.1f}–{max(gaps):.1f} s" if gaps else "–")
        + f". Malformed token requests: {mocks.token_bad_requests}. Requests that reached the upstream with a token "
        f"in its last tenth of life: {mocks.in_margin}.",
        "",
    ]
    goal("token fetches ≈ 1 per refresh interval (≈ 2 per 60 s lifetime)", f"{calls} (expected {expected_calls} ± 1; {per_lifetime:.2f} per lifetime)",
         abs(calls - expected_calls) <= 1)

    # -- reloads
    events = data["events"]
    success = metric(m, "azgate_config_reloads_total", outcome="success")
    failure = metric(m, "azgate_config_reloads_total", outcome="failure")
    lines += ["## Reloads", "", "| # | at s | how | counted after s | new header at the upstream after s |", "|---|---|---|---|---|"]
    for ev in events:
        c = ev.get("counted_after")
        s = ev.get("in_service_after")
        lines.append(f"| {ev['n']} | {ev['at']:.0f} | {ev['how']} | {'**not within 5 s**' if c is None else f'{c:.2f}'} | "
                     f"{'–' if 'SIGHUP' in ev['how'] else ('**not within 5 s**' if s is None else f'{max(s, 0):.2f}')} |")
    late_reloads = [ev for ev in events if ev.get("counted_after") is None or ("SIGHUP" not in ev["how"] and ev.get("in_service_after") is None)]
    lines += ["", f"`azgate_config_reloads_total`: success {success:.0f}, failure {failure:.0f}, for {len(events)} reloads triggered.", ""]
    goal("every reload counted as a success, none failed, each in service within 5 s",
         f"{success:.0f}/{len(events)} success, {failure:.0f} failure", success == len(events) and failure == 0 and not late_reloads and events)

    # -- memory and descriptors
    warm, end = data["warm"], data["end"]
    growth = (end["rss_kib"] - warm["rss_kib"]) / 1024
    lines += [
        "## Memory and descriptors",
        "",
        f"RSS after {warm['at']:.0f} s warm-up {warm['rss_kib'] / 1024:.1f} MiB, at the end ({end['at']:.0f} s) "
        f"{end['rss_kib'] / 1024:.1f} MiB: growth **{growth:+.2f} MiB** (peak {data['hwm_kib'] / 1024:.1f} MiB). "
        f"azgate CPU: {data['cpu_s']:.1f} s over the run ({data['cpu_s'] / max(1, load.sent) * 1e5:.2f} s per 100k requests).",
        "",
        f"| descriptors | after warm-up ({warm['at']:.0f} s) | at the end, under load ({end['at']:.0f} s) | 1 s after the clients closed |",
        "|---|---|---|---|",
    ]
    after = data["after"]
    kinds = sorted(set(warm["fds"]["kinds"]) | set(end["fds"]["kinds"]) | set(after["fds"]["kinds"]))
    for k in kinds:
        lines.append(f"| {k} | {warm['fds']['kinds'].get(k, 0)} | {end['fds']['kinds'].get(k, 0)} | {after['fds']['kinds'].get(k, 0)} |")
    lines.append(f"| **total** | {warm['fds']['total']} | {end['fds']['total']} | {after['fds']['total']} |")
    states = sorted(set(warm["fds"]["states"]) | set(end["fds"]["states"]) | set(after["fds"]["states"]))
    lines += ["", "TCP states of azgate's sockets, after warm-up → end → after the clients closed: "
              + ", ".join(f"{s} {warm['fds']['states'].get(s, 0)} → {end['fds']['states'].get(s, 0)} → {after['fds']['states'].get(s, 0)}"
                          for s in states) + ".", ""]
    non_socket = lambda f: sum(v for k, v in f["kinds"].items() if k not in SOCKET_KINDS)  # noqa: E731
    ns_warm, ns_end = non_socket(warm["fds"]), non_socket(end["fds"])
    pool_end = end["fds"]["kinds"].get("upstream connections", 0)
    clients_end = end["fds"]["kinds"].get("client connections", 0)
    stuck = sum(v for s, v in after["fds"]["states"].items() if s not in ("ESTABLISHED", "LISTEN"))
    clients_after = after["fds"]["kinds"].get("client connections", 0)
    fd_ok = (abs(ns_end - ns_warm) <= args.fd_slack and pool_end <= args.connections and clients_end <= args.connections
             and clients_after == 0 and stuck == 0
             and end["fds"]["kinds"].get("token endpoint connections", 0) <= 2
             and after["fds"]["kinds"].get("admin connections", 0) <= 1
             and all(end["fds"]["kinds"].get(k, 0) == warm["fds"]["kinds"].get(k, 0) for k in ("other TCP", "socket (not TCP)"))
             and end["fds"]["kinds"].get("listening sockets") == warm["fds"]["kinds"].get("listening sockets"))
    lines += [
        "Descriptor goal: the same descriptors that are not sockets (± "
        f"{args.fd_slack} for the reloads' file watchers), the same listening sockets, at most one client and one "
        f"pooled upstream connection per load connection ({args.connections}; the upstream pool's size follows the "
        "concurrency of the last 90 s, so it may differ between the two snapshots without leaking), at most 2 "
        "token endpoint connections, the same other sockets, no client connection left once the clients have "
        "closed theirs (admin: at most the last scrape's), and no socket left in CLOSE_WAIT or another closing state.",
        "",
    ]
    goal(f"RSS growth after warm-up < {args.rss_bound:g} MiB", f"{growth:+.2f} MiB", growth < args.rss_bound)
    goal("open descriptors at the end = after warm-up (but for the upstream pool's size)", f"{warm['fds']['total']} → {end['fds']['total']} (not sockets {ns_warm} → {ns_end}, "
         f"client connections after the clients closed {clients_after}, upstream pool {warm['fds']['kinds'].get('upstream connections', 0)} → {pool_end}, closing sockets {stuck})", fd_ok)

    # -- process
    warn_lines = [l for l in data["azgate_log"] if re.search(r"\b(WARN|ERROR)\b|\"level\":\"(WARN|ERROR)\"", l)]
    panics = [l for l in data["azgate_log"] if "panick" in l]
    lines += [
        "## azgate's log and exit",
        "",
        f"{len(data['azgate_log'])} log lines at level warn, {len(warn_lines)} WARN/ERROR, {len(panics)} panics; "
        f"alive at the end: {data['alive']}; exit status after SIGTERM: {data['exit']}.",
        "",
    ]
    if data["azgate_log"]:
        lines += ["First lines:", "", "```", *[l[:300] for l in data["azgate_log"][:12]], "```", ""]
    goal("azgate alive at the end, no panic, clean exit on SIGTERM", f"alive {data['alive']}, {len(panics)} panics, exit {data['exit']}",
         data["alive"] and not panics and data["exit"] == 0)

    # -- goals
    lines[6:6] = [
        "## Goals",
        "",
        "| goal | figure | met |",
        "|---|---|---|",
        *[f"| {g} | {f} | {'yes' if ok else '**NO**'} |" for g, f, ok in goals],
        "",
    ]
    text = "\n".join(lines) + "\n"
    (out / "soak.md").write_text(text)
    return text, all(ok for _, _, ok in goals)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--short", action="store_true", help="about a minute (60 s, 10 s warm-up), for CI")
    parser.add_argument("--rate", type=int, default=200, help="requests per second")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive client connections")
    parser.add_argument("--warmup", type=float, help="seconds before the first RSS/fd snapshot (30; 10 with --short)")
    parser.add_argument("--reload-every", type=float, default=20)
    parser.add_argument("--fault-rate", type=float, default=0.01, help="share of upstream attempts answered 503")
    parser.add_argument("--reset-rate", type=float, default=0.01, help="share of upstream attempts reset")
    parser.add_argument("--rss-bound", type=float, default=5.0, help="MiB of RSS growth allowed after warm-up")
    parser.add_argument("--fd-slack", type=int, default=2, help="non-socket descriptors allowed to differ")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--bin", help="an azgate binary to soak instead of building target/release/azgate")
    parser.add_argument("--cpus", default="0-%d" % (os.cpu_count() - 1), help="taskset CPU list for azgate")
    args = parser.parse_args()
    if args.short:
        args.minutes = 1
    if args.warmup is None:
        args.warmup = 10 if args.short else 30
    out = ROOT / "bench" / "out" / (datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + "-soak")
    out.mkdir(parents=True, exist_ok=True)

    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (in the background)
    binary = pathlib.Path(args.bin).resolve() if args.bin else build()
    args.binary = binary
    log(f"soak: {args.minutes:g} min at {args.rate} req/s; output in {out}")
    # Bounded: the run stops by itself, and is cut if it overruns by 3 minutes.
    limit = args.minutes * 60 + 180
    try:
        data = asyncio.run(asyncio.wait_for(soak(args, out, binary), limit))
    except KeyboardInterrupt:
        log("interrupted: azgate stopped, nothing reported")
        sys.exit(130)
    finally:
        for p in STARTED:
            if p.poll() is None:
                p.kill()
                p.wait()
    text, ok = report(args, data, out)
    print(text)
    log(f"written to {out / 'soak.md'}; goals {'met' if ok else 'MISSED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
