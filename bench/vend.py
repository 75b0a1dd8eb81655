#!/usr/bin/env python3
"""Token vending routes (issue 14): a warm vending cache next to a forwarded request, and
100,000 distinct keys through a cache bounded at 10,000 entries.

    python3 bench/vend.py           # builds azgate --release, about 2 minutes after the build
    python3 bench/vend.py --smoke   # a few seconds, debug build, no oha or nginx

azgate runs pinned to CPU 0 with two routes: `/vi-tokens` vending classic Video Indexer
viewer tokens from a mock Video Indexer (an asyncio HTTP/1.1 server in this file, run as
`vend.py --mock PORT`), and `/up` forwarding to an nginx upstream with a `static`
credential, as in bench/run.py. The mock, nginx and the load generators share CPU 1.
Results go to bench/out/<time>/vend.md (method, machine, versions, commands, figures).
See bench/README.md ("Token vending").
"""
import argparse
import asyncio
import base64
import datetime
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: Proc, oha, nginx config, steal, median)

ROOT = bench.ROOT
PORTS = {"azgate": 18091, "admin": 18092, "mock": 18093}
ACCOUNT = "00000000-0000-0000-0000-00000000abcd"
VI_KEY = "bench-vi-subscription-key"
PREFIX = "/vi-tokens"
WARM_ID = "v1"
log = bench.log


# ---------------------------------------------------------------------------
# mock classic Video Indexer: GET /auth/{location}/Accounts/{id}[/Videos/{vid}|/Projects/{pid}]/AccessToken
# answers a JSON string, a JWT-shaped token whose `exp` is an hour away. GET /count: the calls.


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def mock_main(port, key):
    path_re = re.compile(
        rb"^/auth/trial/Accounts/" + ACCOUNT.encode()
        + rb"(?:/(Videos|Projects)/([A-Za-z0-9_-]{1,64}))?/AccessToken\?allowEdit=false$"
    )
    key_header = b"ocp-apim-subscription-key: " + key.encode()
    counts = {"video": 0, "project": 0, "account": 0, "refused": 0}
    token_at = [0, b""]  # second, response bytes (the token is renewed once a second)
    header = b64url(b'{"alg":"HS256","typ":"JWT"}')

    def token_response():
        now = int(time.time())
        if token_at[0] != now:
            payload = b64url(json.dumps({"exp": now + 3600, "iss": "bench"}).encode())
            body = b'"' + header + b"." + payload + b'.c2ln"'
            token_at[:] = [now, response(200, body)]
        return token_at[1]

    def response(status, body, ctype=b"application/json"):
        reason = {200: b"OK", 401: b"Unauthorized", 404: b"Not Found"}[status]
        return (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n" % (status, reason, ctype, len(body))) + body

    class Conn(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.buf = b""

        def data_received(self, data):
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head, self.buf = self.buf[:end], self.buf[end + 4 :]
                lines = head.split(b"\r\n")
                try:
                    method, target, _ = lines[0].split(b" ", 2)
                except ValueError:
                    self.transport.close()
                    return
                if target == b"/count":
                    self.transport.write(response(200, json.dumps(counts).encode()))
                    continue
                m = path_re.match(target)
                if method != b"GET" or not m:
                    counts["refused"] += 1
                    self.transport.write(response(404, b'{"ErrorType":"NOT_FOUND","Message":"bench mock"}'))
                    continue
                if not any(line.lower() == key_header for line in lines[1:]):
                    counts["refused"] += 1
                    self.transport.write(response(401, b'{"ErrorType":"USER_NOT_ALLOWED","Message":"bad key"}'))
                    continue
                kind = {b"Videos": "video", b"Projects": "project", None: "account"}[m.group(1)]
                counts[kind] += 1
                self.transport.write(token_response())

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Conn, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def mock_counts():
    with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['mock']}/count", timeout=5) as r:
        return json.loads(r.read())


# ---------------------------------------------------------------------------
# azgate config, client, admin metrics


def azgate_conf(max_entries, upstream_port):
    return f"""
[server]
listen = "127.0.0.1:{PORTS['azgate']}"
max_connections = 30000

[admin]
listen = "127.0.0.1:{PORTS['admin']}"

[log]
level = "warn"

{bench.STATIC_CREDENTIAL}
[credentials.vi]
type = "video_indexer"
location = "trial"
account_id = "{ACCOUNT}"
subscription_key = "${{VI_KEY}}"
api_url = "http://127.0.0.1:{PORTS['mock']}"

[[routes]]
prefix = "/up"
upstream = "http://127.0.0.1:{upstream_port}"
credential = "bench"

[[routes]]
prefix = "{PREFIX}"
vend = "vi"
max_entries = {max_entries}
# max_concurrent_fetches = 8        (default)
"""


def metrics():
    """The admin endpoint's vending series: {name{labels}: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['admin']}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("azgate_vend_"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def metric_sum(found, name, **labels):
    total = 0.0
    for key, value in found.items():
        if key == name or key.startswith(name + "{"):
            if all(f'{k}="{v}"' in key for k, v in labels.items()):
                total += value
    return total


def distinct_keys(port, n, concurrency):
    """GET {PREFIX}/videos/k0..k{n-1} once each over `concurrency` keep-alive connections.
    Returns (statuses {code: count}, seconds)."""

    async def main():
        statuses = {}
        next_key = iter(range(n))

        async def worker():
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                for i in next_key:
                    writer.write(f"GET {PREFIX}/videos/k{i} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.split(b"\r\n")
                    status = int(lines[0].split()[1])
                    length = 0
                    for line in lines[1:]:
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    body = await reader.readexactly(length)
                    if status == 200 and b'"accessToken"' not in body:
                        status = -1  # 200 without a token: counted apart
                    statuses[status] = statuses.get(status, 0) + 1
            finally:
                writer.close()

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout=240)
        return statuses, time.monotonic() - started

    return asyncio.run(main())


def get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['azgate']}{path}", timeout=10) as r:
        return r.status, json.loads(r.read())


class Proc(bench.Proc):
    """bench.Proc that stops its process when it never listens (bench.Proc would leave it running)."""

    def __init__(self, name, cmd, port, cpu, out, env=None):
        self.name = name
        self.log = open(out / f"{name}.log", "w")
        self.proc = subprocess.Popen(["taskset", "-c", cpu] + cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        try:
            bench.wait_port(port)
        except BaseException:
            self.stop()
            raise


def start_mock(out, cpu):
    return Proc("mock-vi", [sys.executable, __file__, "--mock", str(PORTS["mock"])], PORTS["mock"], cpu, out)


def start_azgate(binary, conf, out, name, cpu):
    env = dict(os.environ, VI_KEY=VI_KEY)
    proc = Proc(name, [str(binary), "serve", "-c", str(conf)], PORTS["azgate"], cpu, out, env=env)
    try:
        bench.wait_port(PORTS["admin"])
    except BaseException:
        proc.stop()
        raise
    return proc


def settle(proc, seconds=5.0, every=0.5):
    """VmRSS samples (MiB) over `seconds`."""
    samples = []
    end = time.monotonic() + seconds
    while True:
        samples.append(proc.memory_kib("VmRSS") / 1024)
        if time.monotonic() >= end:
            return samples
        time.sleep(every)


def git_state():
    def out(*cmd):
        p = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True)
        return p.stdout.rstrip("\n")

    head = out("rev-parse", "--short", "HEAD")
    dirty = [l[3:] for l in out("status", "--porcelain", "--untracked-files=no").splitlines() if l.strip()]
    return head + (f" plus uncommitted changes in {', '.join(dirty)}" if dirty else "")


# ---------------------------------------------------------------------------
# full run


def install():
    missing = [p for p in ["nginx", "curl"] if not bench.have(p)]
    if missing:
        log(f"installing {' '.join(missing)} from Debian")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        bench.run(sudo + ["apt-get", "update", "-qq"])
        bench.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing)
    if not bench.have("oha"):
        log("installing oha from crates.io (a few minutes, once)")
        subprocess.run(["cargo", "install", "oha", "--locked", "--quiet"], check=True)


def full(args, out):
    install()
    binary = bench.build()
    build_state = git_state()
    # The driver (and the asyncio client of the distinct-key pass) stays off azgate's CPU.
    os.sched_setaffinity(0, {int(bench.LOAD_CPU)})
    (out / "conf").mkdir(exist_ok=True)
    (out / "conf" / "nginx-upstream.conf").write_text(bench.nginx_upstream_conf(out))
    conf = out / "conf" / "azgate-vend.toml"
    conf.write_text(azgate_conf(args.max_entries, bench.PORTS["upstream"]))
    vend_url = f"http://127.0.0.1:{PORTS['azgate']}{PREFIX}/videos/{WARM_ID}"
    fwd_url = f"http://127.0.0.1:{PORTS['azgate']}/up/"
    res = {"build": build_state, "rounds": [], "load": []}
    procs = []
    try:
        procs.append(Proc("upstream", ["nginx", "-c", str(out / "conf" / "nginx-upstream.conf")], bench.PORTS["upstream"], bench.LOAD_CPU, out))
        procs.append(start_mock(out, bench.LOAD_CPU))

        # Pass 1: warm vending cache vs forwarded, one azgate process, interleaved rounds.
        gw = start_azgate(binary, conf, out, "azgate-warm", bench.PROXY_CPU)
        procs.append(gw)
        status, body = get(f"{PREFIX}/videos/{WARM_ID}")
        assert status == 200 and body.get("accessToken") and body.get("videoId") == WARM_ID, body
        res["sample_answer_keys"] = sorted(body)
        res["idle_rss_mib"] = gw.memory_kib("VmRSS") / 1024
        for round_no in range(args.repeat):
            for name, target in [("vend (warm cache)", vend_url), ("forwarded (static)", fwd_url)]:
                bench.oha(target, "-z", "3s", "-c", str(args.connections))  # warm-up
                calls0 = mock_counts()["video"]
                cpu0 = gw.cpu_seconds()
                ticks0 = bench.cpu_ticks()
                wall0 = time.monotonic()
                tput = bench.oha(target, "-z", f"{args.seconds}s", "-c", str(args.connections))
                wall = time.monotonic() - wall0
                stolen = bench.steal_pct(ticks0, bench.cpu_ticks())
                cpu1 = gw.cpu_seconds()
                calls = mock_counts()["video"] - calls0
                res["rounds"].append({
                    "round": round_no + 1, "name": name, "rps": tput["rps"], "ok": tput["ok"], "total": tput["total"],
                    "cpu_us": (cpu1 - cpu0) / tput["total"] * 1e6 if tput["total"] else None,
                    "steal": stolen, "mock_calls": calls, "load": os.getloadavg()[0],
                    # azgate's CPU time / wall time: below ~100% it was not the bottleneck
                    # (or other work on CPU 0 took its time).
                    "share": (cpu1 - cpu0) / wall * 100,
                })
                log(f"round {round_no + 1}: {name}: {tput['rps']:.0f} req/s, "
                    f"{res['rounds'][-1]['cpu_us']:.1f} CPU µs/request, azgate at {res['rounds'][-1]['share']:.0f}% of a CPU, "
                    f"steal {stolen:.0f}%, load {os.getloadavg()[0]:.1f}, {calls} token calls")
        res["warm_hwm_mib"] = gw.memory_kib("VmHWM") / 1024
        gw.stop()
        procs.remove(gw)

        # Pass 2: distinct keys through a bounded cache, on a fresh process.
        gw = start_azgate(binary, conf, out, "azgate-keys", bench.PROXY_CPU)
        procs.append(gw)
        get(f"{PREFIX}/videos/{WARM_ID}")
        time.sleep(1)
        res["keys_rss_before_mib"] = gw.memory_kib("VmRSS") / 1024
        res["keys_hwm_before_mib"] = gw.memory_kib("VmHWM") / 1024
        calls0 = mock_counts()
        cpu0 = gw.cpu_seconds()
        bench.COMMANDS.append(f"(asyncio client in vend.py, CPU {bench.LOAD_CPU}) GET {PREFIX}/videos/k0..k{args.keys - 1}, "
                              f"once each, {args.key_concurrency} keep-alive connections")
        statuses, took = distinct_keys(PORTS["azgate"], args.keys, args.key_concurrency)
        res["keys_cpu_us"] = (gw.cpu_seconds() - cpu0) / args.keys * 1e6
        calls1 = mock_counts()
        res["keys_statuses"] = statuses
        res["keys_seconds"] = took
        res["keys_mock_calls"] = calls1["video"] - calls0["video"]
        res["keys_mock_refused"] = calls1["refused"] - calls0["refused"]
        res["keys_rss_end_mib"] = gw.memory_kib("VmRSS") / 1024
        log(f"{args.keys} distinct keys in {took:.1f} s: {statuses}, {res['keys_mock_calls']} token calls, "
            f"RSS {res['keys_rss_end_mib']:.1f} MiB; settling {args.settle:.0f} s")
        res["keys_settle_mib"] = settle(gw, args.settle)
        res["keys_hwm_mib"] = gw.memory_kib("VmHWM") / 1024
        found = metrics()
        res["keys_entries"] = metric_sum(found, "azgate_vend_cache_entries")
        res["keys_outcomes"] = {o: metric_sum(found, "azgate_vend_requests_total", outcome=o) for o in ["hit", "miss", "refused", "error"]}
        res["metrics_lines"] = sorted(k + " " + f"{v:g}" for k, v in found.items())
        # The cache still answers: an early key (evicted or not) and the newest.
        for key in ["k0", f"k{args.keys - 1}"]:
            status, body = get(f"{PREFIX}/videos/{key}")
            assert status == 200 and body.get("accessToken"), body
        gw.stop()
        procs.remove(gw)
    finally:
        for p in reversed(procs):
            p.stop()
    return res


def report(res, args, out):
    cpu = platform.processor() or "unknown"
    try:
        cpu = [l.split(":", 1)[1].strip() for l in pathlib.Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")][0]
    except (OSError, IndexError):
        pass
    versions = bench.versions(ROOT / "target" / "release" / "azgate")
    names = ["vend (warm cache)", "forwarded (static)"]
    summary = {}
    for name in names:
        rounds = [r for r in res["rounds"] if r["name"] == name]
        summary[name] = {
            "rps": bench.median([r["rps"] for r in rounds]),
            "cpu_us": bench.median([r["cpu_us"] for r in rounds]),
            "rounds": rounds,
        }
    v, f = summary[names[0]], summary[names[1]]
    lines = [
        f"# azgate token vending benchmark — {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"Machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}. azgate pinned to CPU {bench.PROXY_CPU} "
        f"(one tokio worker); nginx upstream (1 worker), mock Video Indexer (asyncio, one process) and load generators on CPU {bench.LOAD_CPU}.",
        "",
        f"Build: {res['build']}. Versions: azgate: {versions['azgate']}; nginx: {versions['nginx']}; oha: {versions['oha']}; rustc: {versions['rustc']}.",
        "",
        f"## Warm vending cache vs forwarded request",
        "",
        f"One azgate process; `GET {PREFIX}/videos/{WARM_ID}` (token cached by one request before) and `GET /up/` "
        f"(forwarded to nginx with a `static` credential) take turns, {args.repeat} rounds of `oha -c {args.connections} -z {args.seconds}s` "
        f"after a 3 s warm-up each; medians. CPU = azgate's utime+stime over the run / requests.",
        "",
        "| route | req/s | CPU µs / request | per round: req/s (azgate's share of a CPU, steal %, 1-min load avg) | token calls during runs |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        s = summary[name]
        per_round = ", ".join(f"{r['rps']:.0f} ({r['share']:.0f}%, {r['steal']:.0f}%, {r['load']:.1f})" for r in s["rounds"])
        non2xx = sum(r["total"] - r["ok"] for r in s["rounds"])
        calls = sum(r["mock_calls"] for r in s["rounds"]) if name.startswith("vend") else "–"
        lines.append(f"| {name} | {s['rps']:.0f} | {s['cpu_us']:.1f} | {per_round} | {calls} |")
        if non2xx:
            lines.append(f"|  ({non2xx} non-2xx answers) | | | | |")
    lines += [
        "",
        f"Vending / forwarded: {v['rps'] / f['rps']:.2f}× the requests/s, {v['cpu_us'] / f['cpu_us']:.2f}× the CPU per request. "
        f"Idle RSS after start and one token: {res['idle_rss_mib']:.1f} MiB; VmHWM after the pass: {res['warm_hwm_mib']:.1f} MiB. "
        f"Answer fields: {', '.join(res['sample_answer_keys'])}.",
        "",
        f"## {args.keys:,} distinct keys, max_entries = {args.max_entries:,}",
        "",
        f"A fresh azgate process; `GET {PREFIX}/videos/k0 … k{args.keys - 1}` once each from an asyncio client "
        f"over {args.key_concurrency} keep-alive connections (default max_concurrent_fetches = 8), then VmRSS sampled "
        f"every 0.5 s for {args.settle:.0f} s.",
        "",
        f"- answers: {res['keys_statuses']} in {res['keys_seconds']:.1f} s ({args.keys / res['keys_seconds']:.0f} req/s); "
        f"token calls to the mock: {res['keys_mock_calls']:,} (refused by the mock: {res['keys_mock_refused']}); "
        f"azgate CPU {res['keys_cpu_us']:.1f} µs per request",
        f"- RSS before (after start and one token): {res['keys_rss_before_mib']:.1f} MiB (VmHWM {res['keys_hwm_before_mib']:.1f})",
        f"- RSS right after the last answer: {res['keys_rss_end_mib']:.1f} MiB",
        f"- RSS settled: {res['keys_settle_mib'][-1]:.1f} MiB (samples {', '.join(f'{x:.1f}' for x in res['keys_settle_mib'])})",
        f"- VmHWM: {res['keys_hwm_mib']:.1f} MiB",
        f"- `azgate_vend_cache_entries` after settling: {res['keys_entries']:.0f} "
        f"({'<=' if res['keys_entries'] <= args.max_entries else '**>**'} {args.max_entries:,}); "
        f"`azgate_vend_requests_total` by outcome: {', '.join(f'{k} {v:.0f}' for k, v in res['keys_outcomes'].items())}",
        "",
        "Vending series from /metrics at the end:",
        "",
        "```",
        *res["metrics_lines"],
        "```",
        "",
        "Commands (in order):",
        "",
        "```",
        *bench.COMMANDS,
        "```",
        "",
        f"Configs: {out}/conf/ (azgate-vend.toml, nginx-upstream.conf); the mock: `python3 bench/vend.py --mock {PORTS['mock']}`.",
    ]
    text = "\n".join(lines) + "\n"
    (out / "vend.md").write_text(text)
    return text


# ---------------------------------------------------------------------------
# smoke: debug build, the mock, a few hundred requests; checks, no figures


def smoke(out):
    binary = ROOT / "target" / "debug" / "azgate"
    subprocess.run(["cargo", "build", "--quiet"], check=True, cwd=ROOT)
    conf = out / "conf" / "azgate-vend-smoke.toml"
    conf.parent.mkdir(exist_ok=True)
    # The forwarding route points at the mock (any path it does not know is a 404).
    conf.write_text(azgate_conf(100, PORTS["mock"]))
    cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    procs = []
    try:
        procs.append(start_mock(out, cpus))
        gw = start_azgate(binary, conf, out, "azgate-smoke", cpus)
        procs.append(gw)
        started = time.time()
        for _ in range(100):
            status, body = get(f"{PREFIX}/videos/{WARM_ID}")
            assert status == 200 and body["accessToken"].endswith(".c2ln") and body["videoId"] == WARM_ID, body
        assert mock_counts()["video"] == 1, mock_counts()
        statuses, _ = distinct_keys(PORTS["azgate"], 500, 16)
        assert statuses == {200: 500}, statuses
        assert mock_counts()["video"] == 501, mock_counts()
        deadline = time.time() + 5
        while True:
            entries = metric_sum(metrics(), "azgate_vend_cache_entries")
            if entries <= 100 or time.time() > deadline:
                break
            time.sleep(0.2)
        assert entries <= 100, entries
        print(f"vend smoke: 100 requests for one video (1 token call), 500 distinct keys (500 token calls), "
              f"{entries:.0f} entries kept of max 100, in {time.time() - started:.2f} s")
    finally:
        for p in reversed(procs):
            p.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few seconds, debug build, no oha or nginx")
    parser.add_argument("--mock", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--key-concurrency", type=int, default=64)
    parser.add_argument("--max-entries", type=int, default=10_000)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of RSS sampling after the distinct keys")
    args = parser.parse_args()
    if args.mock:
        mock_main(args.mock, VI_KEY)
        return
    out = ROOT / "bench" / "out" / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        smoke(out)
        return
    res = full(args, out)
    print(report(res, args, out))
    log(f"written to {out / 'vend.md'}")


if __name__ == "__main__":
    main()
