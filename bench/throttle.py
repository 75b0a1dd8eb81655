#!/usr/bin/env python3
"""Goodput against a throttled upstream (issue 16): azgate with and without its route hold,
nginx and HAProxy, each in front of the same token-bucket upstream, driven above its rate.

    python3 bench/throttle.py                 # full run, about 5 minutes
    python3 bench/throttle.py --smoke         # a few seconds, azgate (holds on) only
    python3 bench/throttle.py --bin PATH      # an azgate binary instead of building one
    python3 bench/throttle.py --systems azgate-hold,nginx --seconds 10

The upstream (this file, `upstream` mode, its own process) is a token bucket of 10 requests
refilled at 10/s per principal (the `Authorization` it receives); an empty bucket answers 429
with `Retry-After: 1` and opens a one-second window for that principal, and, as ARM does, a
request arriving inside the window is refused too and restarts it (`--no-penalty` turns the
restart off). Otherwise 200 with a small JSON body. 8 clients send 20 requests/s in all for
30 s (open loop: a request leaves on schedule whether or not earlier ones are answered), each
with a 60 s timeout. Results go to bench/out/<time>/throttle.md. See bench/README.md.
"""
import argparse
import asyncio
import bisect
import datetime
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from run import LOAD_CPU, PROXY_CPU, ROOT, Proc, build, install, log, nginx_conf, wait_port  # noqa: E402

BEARER = "Bearer throttle-bench-principal"
BUCKET = 10  # requests
REFILL = 10.0  # requests per second
WINDOW = 1.0  # seconds announced by Retry-After
BODY = b'{"id":"bench","status":"Succeeded","value":[1,2,3]}'
SYSTEMS = ["azgate-hold", "azgate-nohold", "nginx", "haproxy", "azgate-rate"]
LABELS = {
    "azgate-hold": "azgate, holds on (default `[routes.throttle]`)",
    "azgate-nohold": "azgate, `hold = false`",
    "nginx": "nginx (`proxy_pass`)",
    "haproxy": "HAProxy (plain)",
    "azgate-rate": "azgate, holds on + `rate = \"10/s\"` (extra)",
}
STARTED = []  # every process this script started; stopped on the way out, whatever happens


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# the throttled upstream (its own process: `throttle.py upstream PORT [--no-penalty]`)


async def read_message(reader, request):
    """One HTTP/1.1 message: (first line, headers lower-cased, body). None at EOF. Bodies by
    Content-Length or chunked; a response without either (and not 1xx/204/304) is not expected
    from the systems here."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    else:
        length = int(headers.get("content-length", "0") or 0)
        body = await reader.readexactly(length) if length else b""
    return lines[0], headers, body


def answer(status, reason, body, extra=()):
    head = [f"HTTP/1.1 {status} {reason}", f"content-length: {len(body)}", "content-type: application/json", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Upstream:
    """A token bucket per principal; an empty bucket answers 429 `Retry-After: 1` and opens
    a window in which (with `penalty`) every request of that principal is refused and
    restarts the window."""

    def __init__(self, penalty):
        self.penalty = penalty
        self.reset()

    def reset(self):
        self.origin = time.monotonic()
        self.principals = {}  # authorization -> [tokens, last refill, window end]
        self.calls = []  # (seconds since reset, status, "ok" | "empty" | "window")

    def decide(self, principal):
        now = time.monotonic()
        state = self.principals.setdefault(principal, [float(BUCKET), now, 0.0])
        state[0] = min(float(BUCKET), state[0] + (now - state[1]) * REFILL)
        state[1] = now
        if self.penalty and now < state[2]:
            state[2] = now + WINDOW
            kind = "window"
        elif state[0] >= 1.0:
            state[0] -= 1.0
            kind = "ok"
        else:
            state[2] = now + WINDOW
            kind = "empty"
        self.calls.append((round(now - self.origin, 4), 200 if kind == "ok" else 429, kind))
        return kind

    async def serve(self, reader, writer):
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                msg = await read_message(reader, True)
                if msg is None:
                    break
                first, headers, _ = msg
                target = first.split(" ")[1] if " " in first else "/"
                if target.startswith("/__reset"):
                    self.reset()
                    writer.write(answer(200, "OK", b"{}"))
                elif target.startswith("/__stats"):
                    writer.write(answer(200, "OK", json.dumps({"penalty": self.penalty, "calls": self.calls}).encode()))
                elif self.decide(headers.get("authorization", "")) == "ok":
                    writer.write(answer(200, "OK", BODY))
                else:
                    body = b'{"error":{"code":"TooManyRequests","message":"throttled, retry after 1 s"}}'
                    writer.write(answer(429, "Too Many Requests", body, [f"retry-after: {int(WINDOW)}"]))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


def upstream_main(port, penalty):
    async def main():
        up = Upstream(penalty)
        server = await asyncio.start_server(up.serve, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def upstream_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


# ---------------------------------------------------------------------------
# systems, each configured as a user would


def azgate_conf(port, admin, upstream, throttle):
    return f"""[server]
listen = "127.0.0.1:{port}"

[admin]
listen = "127.0.0.1:{admin}"

[log]
level = "warn"

[credentials.bench]
type = "static"
header = "Authorization"
value = "{BEARER}"

[[routes]]
prefix = "/up"
upstream = "http://127.0.0.1:{upstream}"
credential = "bench"
{throttle}"""


def nginx_proxy_conf(out, port, upstream):
    # proxy_next_upstream can name http_429, but only moves a request to *another* server
    # of the group; with the one upstream there is none, so nginx passes the 429 on. No
    # trick (a second `server` line to the same address, error_page + named location) is
    # used: this is nginx as a user would configure it.
    return nginx_conf(out, "nginx-proxy", f"""  upstream backend {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location /up/ {{
      proxy_pass http://backend/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1:{upstream};
      proxy_set_header Authorization "{BEARER}";
      proxy_read_timeout 60s;
    }}
  }}""")


def haproxy_conf(port, upstream):
    # HAProxy 2.6 has no `retry-on 429` (its retry-on list stops at 425, 500-504 and
    # connection failures; `haproxy -c` refuses 429), and its retries would not wait for
    # Retry-After anyway: plain, with the default `retries 3` on connection failures.
    return f"""global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:{port}
  http-request set-header Authorization "{BEARER}"
  http-request set-path %[path,regsub(^/up/,/)]
  default_backend be
backend be
  http-reuse always
  server up 127.0.0.1:{upstream} maxconn 1000
"""


THROTTLE = {
    "azgate-hold": "",
    "azgate-nohold": "\n[routes.throttle]\nhold = false\n",
    "azgate-rate": '\n[routes.throttle]\nrate = "10/s"\n',
}


def start_system(system, binary, out, ports):
    conf = out / "conf"
    port = ports["proxy"]
    if system.startswith("azgate"):
        path = conf / f"{system}.toml"
        path.write_text(azgate_conf(port, ports["admin"], ports["upstream"], THROTTLE[system]))
        proc = Proc(system, [str(binary), "serve", "-c", str(path)], port, PROXY_CPU, out)
    elif system == "nginx":
        path = conf / "nginx-proxy.conf"
        path.write_text(nginx_proxy_conf(out, port, ports["upstream"]))
        proc = Proc(system, ["nginx", "-c", str(path)], port, PROXY_CPU, out)
    elif system == "haproxy":
        path = conf / "haproxy.cfg"
        path.write_text(haproxy_conf(port, ports["upstream"]))
        proc = Proc(system, ["haproxy", "-f", str(path)], port, PROXY_CPU, out)
    else:
        raise SystemExit(f"unknown system {system}")
    STARTED.append(proc)
    return proc


def stop(proc):
    if proc in STARTED:
        STARTED.remove(proc)
        proc.stop()


# ---------------------------------------------------------------------------
# load: open loop, 8 clients, each with its own keep-alive connections


async def load(port, clients, rate, seconds, timeout):
    """Each client sends one request every clients/rate seconds (the clients staggered), on
    an idle keep-alive connection of its own or a new one. Returns one record per request."""
    interval = clients / rate
    per_client = int(round(seconds * rate / clients))
    start = time.monotonic() + 0.2
    records = []
    idle = [[] for _ in range(clients)]
    request = (f"GET /up/subscriptions/bench/resources?api-version=2021-04-01 HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer client-own\r\n"
               "Accept: application/json\r\n\r\n").encode()

    async def one(client):
        sent = time.monotonic()
        rec = {"sent": sent - start, "status": None, "error": None, "azgate_error": None, "attempts": None}
        conn = None
        try:
            async def exchange():
                nonlocal conn
                conn = idle[client].pop() if idle[client] else await asyncio.open_connection("127.0.0.1", port)
                reader, writer = conn
                writer.write(request)
                await writer.drain()
                msg = await read_message(reader, False)
                if msg is None:
                    raise ConnectionError("closed before an answer")
                return msg

            first, headers, _ = await asyncio.wait_for(exchange(), timeout)
            rec["status"] = int(first.split(" ")[1])
            rec["azgate_error"] = headers.get("x-azgate-error")
            rec["attempts"] = headers.get("x-azgate-attempts")
            rec["latency"] = time.monotonic() - sent
            if headers.get("connection", "").lower() == "close":
                conn[1].close()
            else:
                idle[client].append(conn)
        except asyncio.TimeoutError:
            rec["error"] = "timeout"
            rec["latency"] = time.monotonic() - sent
            if conn:
                conn[1].close()
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError) as err:
            rec["error"] = type(err).__name__
            rec["latency"] = time.monotonic() - sent
            if conn:
                conn[1].close()
        rec["done"] = time.monotonic() - start
        records.append(rec)

    async def client(i):
        tasks = []
        for k in range(per_client):
            at = start + i * interval / clients + k * interval
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)

    await asyncio.gather(*(client(i) for i in range(clients)))
    for conns in idle:
        for _, writer in conns:
            writer.close()
    return records


# ---------------------------------------------------------------------------
# figures


def percentile(values, p):
    values = sorted(values)
    if not values:
        return None
    return values[min(len(values) - 1, max(0, int(round(p / 100 * len(values) + 0.5)) - 1))]


def biggest_burst(times, width=0.1):
    """The most upstream calls inside any `width`-second span."""
    times = sorted(times)
    return max((bisect.bisect_right(times, t + width) - i for i, t in enumerate(times)), default=0)


def scrape(admin):
    """azgate's throttle and retry counters from its /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        m = re.match(r'(azgate_throttle_holds_total|azgate_throttled_total|azgate_retries_total)\{([^}]*)\} (\S+)', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            key = m.group(1).replace("azgate_", "") + "".join(f"[{v}]" for k, v in sorted(labels.items()) if k != "route")
            found[key] = found.get(key, 0) + float(m.group(3))
    return found


def summarise(system, records, calls, metrics, seconds):
    ok = [r for r in records if r["status"] and 200 <= r["status"] < 300]
    c429 = [r for r in records if r["status"] == 429]
    own = [r for r in c429 if r["azgate_error"]]  # azgate's own `throttled` answers
    other_status = [r for r in records if r["status"] and r["status"] not in (429,) and not 200 <= r["status"] < 300]
    failed = [r for r in records if r["error"]]
    span = max((r["done"] for r in records), default=0.0) - min((r["sent"] for r in records), default=0.0)
    up429 = sum(1 for c in calls if c[1] == 429)
    return {
        "system": system,
        "sent": len(records),
        "ok": len(ok),
        "c429": len(c429),
        "c429_own": len(own),
        "c429_attempts": sorted({r["attempts"] for r in c429 if r["attempts"]}),
        "other": len(other_status) + len(failed),
        "other_detail": sorted({str(r["status"]) for r in other_status} | {r["error"] for r in failed}),
        "up_calls": len(calls),
        "up_429": up429,
        "up_429_window": sum(1 for c in calls if c[2] == "window"),
        "up_429_share": up429 / len(calls) if calls else 0.0,
        "span": span,
        "goodput": len(ok) / span if span else 0.0,
        "goodput_load": sum(1 for r in ok if r["done"] <= seconds + 0.2) / seconds,
        "p50": percentile([r["latency"] for r in ok], 50),
        "p99": percentile([r["latency"] for r in ok], 99),
        "max": max((r["latency"] for r in ok), default=None),
        "burst": biggest_burst([c[0] for c in calls]),
        "after_load": sum(1 for c in calls if c[0] > seconds + 0.3),
        "metrics": metrics,
    }


def fmt_ms(s):
    return "–" if s is None else f"{s * 1000:.0f}"


def table(rows):
    lines = [
        "| system | sent | 2xx | 429 to client (azgate's own) | other errors | upstream calls | upstream 429s (share) | goodput /s (span s) | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        other = f"{r['other']}" + (f" ({', '.join(r['other_detail'])})" if r["other"] else "")
        lines.append(
            f"| {LABELS.get(r['system'], r['system'])} | {r['sent']} | {r['ok']} | {r['c429']} ({r['c429_own']}) | {other} "
            f"| {r['up_calls']} | {r['up_429']} ({r['up_429_share']:.0%}) | {r['goodput']:.2f} ({r['span']:.0f}) "
            f"| {fmt_ms(r['p50'])} | {fmt_ms(r['p99'])} |"
        )
    return lines


def goal(r):
    """The issue's goal for azgate with holds on. A 429 `throttled` from azgate is allowed
    (the queue or a deadline did not allow the wait); an upstream 429 passed on is not."""
    passed = r["c429"] - r["c429_own"]
    checks = [
        (f"no upstream 429 reaches a client (queue and deadlines allowed every wait: "
         f"{r['c429_own']} of azgate's own `throttled`)", passed == 0, f"{passed} passed on"),
        ("at most 5% of upstream calls spent on 429s", r["up_429_share"] <= 0.05, f"{r['up_429_share']:.1%}"),
        (f"goodput ≥ 95% of the bucket's rate ({0.95 * REFILL:.1f}/s)", r["goodput"] >= 0.95 * REFILL, f"{r['goodput']:.2f}/s"),
    ]
    return checks


# ---------------------------------------------------------------------------


def run_system(system, binary, out, ports, args):
    upstream_get(ports["upstream"], "/__reset")
    proc = start_system(system, binary, out, ports)
    try:
        if system.startswith("azgate"):
            wait_port(ports["admin"])
        # One request opens the proxy's upstream connection; then the bucket is reset and
        # left to refill before the load (the reset fills it).
        urllib.request.urlopen(f"http://127.0.0.1:{ports['proxy']}/up/warm", timeout=10).read()
        time.sleep(0.3)
        upstream_get(ports["upstream"], "/__reset")
        records = asyncio.run(load(ports["proxy"], args.clients, args.rate, args.seconds, args.client_timeout))
        calls = upstream_get(ports["upstream"], "/__stats")["calls"]
        metrics = scrape(ports["admin"]) if system.startswith("azgate") else {}
    finally:
        stop(proc)
    r = summarise(system, records, calls, metrics, args.seconds)
    (out / f"{system}-calls.json").write_text(json.dumps({"calls": calls, "records": records}))
    log(f"{system}: {r['ok']}/{r['sent']} 2xx, {r['c429']} × 429 to clients ({r['c429_own']} azgate's own), "
        f"{r['other']} other; upstream {r['up_calls']} calls, {r['up_429']} × 429 ({r['up_429_share']:.0%}); "
        f"goodput {r['goodput']:.2f}/s over {r['span']:.1f} s; p50 {fmt_ms(r['p50'])} ms p99 {fmt_ms(r['p99'])} ms; "
        f"largest burst {r['burst']} calls/100 ms; {metrics}")
    return r


def versions(binary):
    def first(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True)
            return (p.stdout or p.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "not found"

    return {"azgate": first([str(binary), "--version"]), "nginx": first(["nginx", "-v"]), "haproxy": first(["haproxy", "-v"]),
            "python": sys.version.split()[0]}


def report(rows, args, out, binary, commit, started_at, took):
    lines = [
        f"# Throttled upstream — {started_at.strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"Command: `python3 bench/throttle.py {' '.join(sys.argv[1:])}`".rstrip() + f" (whole run {took:.0f} s)",
        "",
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in versions(binary).items()) + f"; azgate binary {binary}" + (f" (commit {commit})" if commit else ""),
        "",
        f"Upstream: token bucket of {BUCKET} refilled at {REFILL:g}/s per principal; empty → 429 `Retry-After: {int(WINDOW)}` "
        f"and a {WINDOW:g} s window; " + ("a request inside the window is refused (429) and restarts it (as ARM does)." if args.penalty else "no penalty for requests inside the window (`--no-penalty`).")
        + f" Load: {args.clients} clients, {args.rate:g} req/s in all (open loop) for {args.seconds} s, client timeout {args.client_timeout:g} s. "
        f"Proxies on CPU {PROXY_CPU}; upstream and load on CPU {LOAD_CPU}. Systems one after the other, the upstream reset between them.",
        "",
        *table(rows),
        "",
        "429 to client: all 429 answers, in brackets those azgate made itself (`x-azgate-error: throttled`). Upstream 429s: "
        "calls the upstream refused, both for an empty bucket and inside a window. Goodput: 2xx answers per second from the "
        "first request sent to the last answer (span). Latency: of the 2xx answers, from send to the whole answer.",
        "",
        "Per system:",
        "",
    ]
    for r in rows:
        extra = f"; azgate metrics {r['metrics']}" if r["metrics"] else ""
        lines.append(
            f"- {r['system']}: upstream 429s inside a window {r['up_429_window']} of {r['up_429']}; largest burst {r['burst']} "
            f"upstream calls within 100 ms; {r['after_load']} upstream calls after the load ended; 2xx per second within the "
            f"{args.seconds} s of load {r['goodput_load']:.2f}; slowest 2xx {fmt_ms(r['max'])} ms"
            + (f"; attempts on 429s passed on: {', '.join(r['c429_attempts'])}" if r["c429_attempts"] else "") + extra)
    hold = [r for r in rows if r["system"] == "azgate-hold"]
    if hold:
        checks = goal(hold[0])
        met = all(ok for _, ok, _ in checks)
        lines += ["", f"Goal for azgate with holds on: **{'met' if met else 'not met'}**", ""]
        lines += [f"- {what}: {'yes' if ok else 'no'} ({value})" for what, ok, value in checks]
    lines += ["", f"Configs: {out}/conf/; every upstream call and client answer: {out}/<system>-calls.json."]
    text = "\n".join(lines) + "\n"
    (out / "throttle.md").write_text(text)
    return text


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "upstream":
        upstream_main(int(sys.argv[2]), "--no-penalty" not in sys.argv)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few seconds, azgate (holds on) only")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=2 * REFILL, help="requests per second, all clients together")
    parser.add_argument("--client-timeout", type=float, default=60.0)
    parser.add_argument("--no-penalty", dest="penalty", action="store_false", help="requests inside a window do not restart it")
    parser.add_argument("--bin", help="an azgate binary (default: build with cargo --release; --smoke: target/debug)")
    args = parser.parse_args()
    systems = args.systems.split(",")
    if args.smoke:
        systems, args.seconds = ["azgate-hold"], 4

    started_at = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    out = ROOT / "bench" / "out" / (datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-throttle-smoke" if args.smoke else "-throttle"))
    (out / "conf").mkdir(parents=True, exist_ok=True)
    commit = None
    if args.bin:
        binary = pathlib.Path(args.bin).resolve()
    elif args.smoke:
        binary = ROOT / "target" / "debug" / "azgate"
        if not binary.exists():
            subprocess.run(["cargo", "build", "--quiet"], check=True, cwd=ROOT)
    else:
        if any(s in ("nginx", "haproxy") for s in systems):
            install()
        binary = build()
    if not args.bin:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        if subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True).stdout.strip():
            commit += " with uncommitted changes in src/"

    # The load generator (this process) shares CPU 1 with the upstream.
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ports = {"upstream": free_port(), "proxy": free_port(), "admin": free_port()}
    rows = []
    try:
        upstream = Proc("upstream", [sys.executable, __file__, "upstream", str(ports["upstream"])] + ([] if args.penalty else ["--no-penalty"]),
                        ports["upstream"], LOAD_CPU, out)
        STARTED.append(upstream)
        for system in systems:
            rows.append(run_system(system, binary, out, ports, args))
            time.sleep(1.5)  # the upstream's window (if any) ends before the next system
    finally:
        for proc in list(reversed(STARTED)):
            stop(proc)
    text = report(rows, args, out, binary, commit, started_at, time.monotonic() - t0)
    print(text)
    log(f"written to {out / 'throttle.md'}")
    if args.smoke:
        r = rows[0]
        if r["ok"] == 0 or r["other"]:
            raise SystemExit("smoke: no 2xx answers, or errors other than 429")


if __name__ == "__main__":
    main()
