#!/usr/bin/env python3
"""azgate against nginx and HAProxy, doing the same job on the same loopback machine.

    python3 bench/run.py            # full run (installs peers, builds azgate --release)
    python3 bench/run.py --smoke    # a few seconds, no peers: proves the script works

Every system proxies to one nginx upstream answering a small JSON body and injects
`Authorization: Bearer …`, replacing the client's. Proxies run pinned to CPU 0, the
upstream and the load generator to CPU 1. Results go to bench/out/<time>/results.md
(method, machine, versions, exact commands, figures). See bench/README.md.
"""
import argparse
import asyncio
import datetime
import http.server
import json
import os
import pathlib
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PORTS = {
    "upstream": 18080,
    "azgate": 18081,
    "azgate-token": 18082,
    "nginx": 18083,
    "haproxy": 18084,
    "token": 18085,
}
PROXY_CPU = "0"
LOAD_CPU = "1"
BEARER = "Bearer static-bench-token"
COMMANDS = []  # every load command, in the order run, for the results file


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def have(tool):
    return shutil.which(tool) is not None


def install():
    missing = [p for p, tool in [("nginx", "nginx"), ("haproxy", "haproxy"), ("curl", "curl")] if not have(tool)]
    if missing:
        log(f"installing {' '.join(missing)} from Debian")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        run(sudo + ["apt-get", "update", "-qq"])
        run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing)
    if not have("oha"):
        log("installing oha from crates.io (a few minutes, once)")
        subprocess.run(["cargo", "install", "oha", "--locked", "--quiet"], check=True)


def build():
    log("building azgate (release)")
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], check=True, cwd=ROOT)
    return ROOT / "target" / "release" / "azgate"


def wait_port(port, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Proc:
    """A peer process pinned to a CPU; measures CPU time and memory of it and its children."""

    def __init__(self, name, cmd, port, cpu, out, env=None):
        self.name = name
        self.log = open(out / f"{name}.log", "w")
        self.proc = subprocess.Popen(["taskset", "-c", cpu] + cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_port(port)

    def pids(self):
        pids = [self.proc.pid]
        try:
            children = run(["pgrep", "-P", str(self.proc.pid)]).stdout.split()
            pids += [int(p) for p in children]
        except subprocess.CalledProcessError:
            pass
        return pids

    def cpu_seconds(self):
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            try:
                fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError):
                pass
        return total / ticks

    def memory_kib(self, field):
        total = 0
        for pid in self.pids():
            try:
                for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def oha(url, *args, timeout=120):
    cmd = ["taskset", "-c", LOAD_CPU, "oha", "--no-tui", "--output-format", "json", *args, url]
    COMMANDS.append(" ".join(cmd))
    out = run(cmd, timeout=timeout).stdout
    data = json.loads(out)
    summary = data["summary"]
    pct = data.get("latencyPercentiles", {})
    codes = data.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    total = sum(codes.values())
    elapsed = summary.get("total") or 0.0
    return {
        # Successful answers per second (oha's own figure counts errors too).
        "rps": ok / elapsed if elapsed else 0.0,
        "p50": pct.get("p50"),
        "p99": pct.get("p99"),
        "p999": pct.get("p99.9"),
        "ok": ok,
        "total": total,
    }


# ---------------------------------------------------------------------------
# peer configs


def nginx_conf(out, name, http_body):
    """One nginx worker in the foreground, no access log, long keep-alive; its temp
    directories (created here) under out/<name>-tmp."""
    tmp = out / f"{name}-tmp"
    for d in ["body", "proxy", "fastcgi", "uwsgi", "scgi"]:
        (tmp / d).mkdir(parents=True, exist_ok=True)
    return f"""
worker_processes 1;
daemon off;
pid {out}/{name}.pid;
error_log {out}/{name}.err warn;
events {{ worker_connections 30000; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
{http_body}
}}
"""


def nginx_upstream_conf(out):
    return nginx_conf(out, "nginx-upstream", f"""  server {{
    listen 127.0.0.1:{PORTS['upstream']} backlog=4096;
    location / {{ default_type application/json; return 200 '{{"id":"bench","status":"Succeeded","value":[1,2,3]}}'; }}
    location = /big {{ alias {out}/1g.bin; }}
    location = /sink {{ client_max_body_size 0; client_body_buffer_size 1m; return 200 "ok"; }}
  }}""")


def nginx_proxy_conf(out):
    return nginx_conf(out, "nginx-proxy", f"""  upstream backend {{ server 127.0.0.1:{PORTS['upstream']}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{PORTS['nginx']} backlog=4096;
    location /up/ {{
      proxy_pass http://backend/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1:{PORTS['upstream']};
      proxy_set_header Authorization "{BEARER}";
    }}
  }}""")


def haproxy_conf(out):
    return f"""
global
  nbthread 1
  # Two descriptors per proxied connection; the shell's limit here is 20000.
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:{PORTS['haproxy']}
  http-request set-header Authorization "{BEARER}"
  http-request set-path %[path,regsub(^/up/,/)]
  default_backend be
backend be
  http-reuse always
  server up 127.0.0.1:{PORTS['upstream']} maxconn 2000
"""


def azgate_conf(port, credential):
    return f"""
[server]
listen = "127.0.0.1:{port}"
max_connections = 30000

[admin]
listen = ""

[log]
level = "warn"

{credential}

[[routes]]
prefix = "/up"
upstream = "http://127.0.0.1:{PORTS['upstream']}"
credential = "bench"
"""


STATIC_CREDENTIAL = f"""[credentials.bench]
type = "static"
header = "Authorization"
value = "{BEARER}"
"""

TOKEN_CREDENTIAL = f"""[credentials.bench]
type = "client_secret"
tenant = "bench"
client_id = "bench-app"
client_secret = "bench-secret"
scope = "https://management.azure.com/.default"
token_url = "http://127.0.0.1:{PORTS['token']}/bench/oauth2/v2.0/token"
"""


def url(system, path="/"):
    if system == "direct":
        return f"http://127.0.0.1:{PORTS['upstream']}{path}"
    if system == "azgate-before":
        system = "azgate"
    return f"http://127.0.0.1:{PORTS[system]}/up{path}"


# ---------------------------------------------------------------------------
# scenarios


def idle_connections(port, n):
    """Opens n keep-alive connections, one request each, then holds them idle."""

    async def main():
        writers = []
        sem = asyncio.Semaphore(500)

        async def one():
            async with sem:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /up/ HTTP/1.1\r\nHost: bench\r\n\r\n")
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
                await reader.readexactly(length)
                writers.append(writer)

        await asyncio.gather(*(one() for _ in range(n)))
        return writers

    loop = asyncio.new_event_loop()
    writers = loop.run_until_complete(main())
    return loop, writers


def curl_transfer(args):
    cmd = ["taskset", "-c", LOAD_CPU, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{size_upload} %{time_total}", *args]
    COMMANDS.append(" ".join(cmd))
    code, down, up, total = run(cmd, timeout=600).stdout.split()
    return int(code), int(down), int(up), float(total)


def cpu_ticks():
    """Per CPU (steal, total) ticks from /proc/stat: time the hypervisor gave to others."""
    ticks = {}
    try:
        for line in pathlib.Path("/proc/stat").read_text().splitlines():
            fields = line.split()
            if fields and fields[0].startswith("cpu") and fields[0] != "cpu":
                values = [int(v) for v in fields[1:]]
                ticks[fields[0]] = (values[7] if len(values) > 7 else 0, sum(values[:8]))
    except (OSError, ValueError):
        pass
    return ticks


def steal_pct(before, after):
    """The highest share of stolen time on any CPU between two `cpu_ticks()`."""
    worst = 0.0
    for cpu, (steal1, total1) in after.items():
        steal0, total0 = before.get(cpu, (steal1, total1))
        if total1 > total0:
            worst = max(worst, (steal1 - steal0) / (total1 - total0) * 100)
    return worst


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def fmt_ms(seconds):
    return "–" if seconds is None else f"{seconds * 1000:.2f}"


def full(args, out):
    install()
    binary = build()
    if not args.quick:
        with open(out / "1g.bin", "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(1024):
                f.write(chunk)
    confs = {
        "nginx-upstream.conf": nginx_upstream_conf(out),
        "nginx-proxy.conf": nginx_proxy_conf(out),
        "haproxy.cfg": haproxy_conf(out),
        "azgate-static.toml": azgate_conf(PORTS["azgate"], STATIC_CREDENTIAL),
        "azgate-token.toml": azgate_conf(PORTS["azgate-token"], TOKEN_CREDENTIAL),
    }
    # Configs live apart from the logs: azgate watches its config's directory for changes.
    (out / "conf").mkdir(exist_ok=True)
    for name, text in confs.items():
        (out / "conf" / name).write_text(text)

    upstream = Proc("upstream", ["nginx", "-c", str(out / "conf" / "nginx-upstream.conf")], PORTS["upstream"], LOAD_CPU, out)
    token = Proc("token", [sys.executable, str(ROOT / "bench" / "mock_token.py"), str(PORTS["token"])], PORTS["token"], LOAD_CPU, out)
    results = {}
    extra = {}
    try:
        def start(system):
            if system == "azgate":
                return Proc(system, [str(binary), "serve", "-c", str(out / "conf" / "azgate-static.toml")], PORTS[system], PROXY_CPU, out)
            if system == "azgate-before":
                # An earlier build (--before-bin), same config as `azgate`, for before/after rows.
                return Proc(system, [args.before_bin, "serve", "-c", str(out / "conf" / "azgate-static.toml")], PORTS["azgate"], PROXY_CPU, out)
            if system == "azgate-token":
                return Proc(system, [str(binary), "serve", "-c", str(out / "conf" / "azgate-token.toml")], PORTS[system], PROXY_CPU, out)
            if system == "nginx":
                return Proc(system, ["nginx", "-c", str(out / "conf" / "nginx-proxy.conf")], PORTS[system], PROXY_CPU, out)
            if system == "haproxy":
                return Proc(system, ["haproxy", "-f", str(out / "conf" / "haproxy.cfg")], PORTS[system], PROXY_CPU, out)
            return None

        systems = args.systems.split(",") if args.systems else ["direct", "azgate", "azgate-token", "nginx", "haproxy"]
        # Pass 1: throughput at fixed concurrency, CPU per 100k requests, peak RSS,
        # 1-connection latency. Systems take turns, `--repeat` times; medians are reported,
        # since a shared machine's speed drifts over minutes.
        runs = {system: [] for system in systems}
        for round_no in range(args.repeat):
            for system in systems:
                proc = start(system)
                try:
                    target = url(system)
                    oha(target, "-z", "3s", "-c", str(args.connections))  # warm-up: pools, token cache
                    cpu0 = proc.cpu_seconds() if proc else None
                    ticks0 = cpu_ticks()
                    tput = oha(target, "-z", f"{args.seconds}s", "-c", str(args.connections))
                    stolen = steal_pct(ticks0, cpu_ticks())
                    cpu1 = proc.cpu_seconds() if proc else None
                    single = oha(target, "-z", f"{max(3, args.seconds // 2)}s", "-c", "1")
                    runs[system].append({
                        "rps": tput["rps"],
                        "ok": tput["ok"],
                        "total": tput["total"],
                        "cpu_per_100k": None if proc is None or tput["total"] == 0 else (cpu1 - cpu0) / tput["total"] * 100_000,
                        "peak_rss_mib": None if proc is None else proc.memory_kib("VmHWM") / 1024,
                        "single_p50": single["p50"],
                        "single_p99": single["p99"],
                        "steal_pct": stolen,
                    })
                    log(f"round {round_no + 1}: {system}: {tput['rps']:.0f} req/s, 1-conn p50 {fmt_ms(single['p50'])} ms, steal {stolen:.0f}%")
                finally:
                    if proc:
                        proc.stop()
        for system, rounds in runs.items():
            results[system] = {key: median([r[key] for r in rounds]) for key in rounds[0]}
            results[system]["rounds_rps"] = [round(r["rps"]) for r in rounds]
            results[system]["rounds_steal"] = [round(r["steal_pct"]) for r in rounds]
        if args.quick:
            return results, extra, 0
        # Pass 2: latency at one fixed rate below every proxy's saturation.
        slowest = min(results[s]["rps"] for s in systems if s != "direct")
        rate = int(slowest * args.load_factor)
        for system in systems:
            proc = start(system)
            try:
                target = url(system)
                oha(target, "-z", "2s", "-c", str(args.connections))
                lat = oha(target, "-z", f"{args.seconds}s", "-c", str(args.connections), "-q", str(rate), "--latency-correction")
                results[system].update({"p50": lat["p50"], "p99": lat["p99"], "p999": lat["p999"], "rate_ok": lat["ok"], "rate_total": lat["total"]})
            finally:
                if proc:
                    proc.stop()

        # azgate alone: idle RSS, streaming, idle connections, cold burst.
        proc = start("azgate")
        try:
            time.sleep(1)
            extra["idle_rss_mib"] = proc.memory_kib("VmRSS") / 1024
            for name, curl_args in [
                ("download", ["http://127.0.0.1:%d/big"]),
                ("upload", ["-T", str(out / "1g.bin"), "http://127.0.0.1:%d/sink"]),
            ]:
                # Direct and through azgate take turns, `--repeat` times; medians are
                # reported, with each pair's ratio (the machine's speed drifts).
                size = 1 << 30
                pairs = []
                for _ in range(args.repeat):
                    direct = curl_transfer([a.replace("%d", str(PORTS["upstream"])) if "%d" in a else a for a in curl_args])
                    via = curl_transfer([a.replace(":%d/", f":{PORTS['azgate']}/up/") if "%d" in a else a for a in curl_args])
                    moved = via[1] if name == "download" else via[2]
                    pairs.append((size / direct[3] / (1 << 20), size / via[3] / (1 << 20), via[0], moved == size))
                extra[name] = {
                    "code": max(p[2] for p in pairs),
                    "bytes_ok": all(p[2] == 200 and p[3] for p in pairs),
                    "direct_mib_s": median([p[0] for p in pairs]),
                    "azgate_mib_s": median([p[1] for p in pairs]),
                    "ratios": [round(p[1] / p[0], 2) for p in pairs],
                    "ratio": median([p[1] / p[0] for p in pairs]),
                }
            extra["stream_peak_rss_mib"] = proc.memory_kib("VmHWM") / 1024
            loop, writers = idle_connections(PORTS["azgate"], args.idle_connections)
            time.sleep(2)
            extra["idle_conns"] = len(writers)
            extra["idle_conns_rss_mib"] = proc.memory_kib("VmRSS") / 1024
            for w in writers:
                w.close()
            loop.close()
        finally:
            proc.stop()
        before = int(run(["curl", "-s", f"http://127.0.0.1:{PORTS['token']}/count"]).stdout)
        proc = start("azgate-token")
        try:
            burst = oha(url("azgate-token"), "-n", "1000", "-c", "1000")
            after = int(run(["curl", "-s", f"http://127.0.0.1:{PORTS['token']}/count"]).stdout)
            extra["burst"] = {"ok": burst["ok"], "total": burst["total"], "token_calls": after - before}
        finally:
            proc.stop()
    finally:
        token.stop()
        upstream.stop()
    return results, extra, rate


def versions(binary):
    def first_line(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True)
            return (p.stdout or p.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "not found"

    return {
        "azgate": first_line([str(binary), "--version"]),
        "nginx": first_line(["nginx", "-v"]),
        "haproxy": first_line(["haproxy", "-v"]),
        "oha": first_line(["oha", "--version"]),
        "curl": first_line(["curl", "--version"]),
        "rustc": first_line(["rustc", "--version"]),
    }


def report(results, extra, rate, args, out):
    binary = ROOT / "target" / "release" / "azgate"
    cpu = platform.processor() or "unknown"
    try:
        cpu = [l.split(":", 1)[1].strip() for l in pathlib.Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")][0]
    except (OSError, IndexError):
        pass
    lines = [
        f"# azgate benchmark — {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"Machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}. "
        f"Proxies pinned to CPU {PROXY_CPU}; upstream (nginx, 1 worker) and load generator (oha) to CPU {LOAD_CPU}.",
        "",
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in versions(binary).items()),
        "",
        f"Throughput: {args.connections} connections for {args.seconds} s after a 3 s warm-up. "
        f"Latency: open loop at {rate} req/s ({args.load_factor:.0%} of the slowest proxy's throughput) with oha's latency correction.",
        "",
        "| system | req/s | vs nginx | vs HAProxy | p50 ms | p99 ms | p99.9 ms | 1-conn p50 ms | added p50 µs | CPU s / 100k | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    direct_p50 = results["direct"]["single_p50"] or 0
    for system, r in results.items():
        added = None if system == "direct" or r["single_p50"] is None else (r["single_p50"] - direct_p50) * 1e6
        added_text = "–" if added is None else f"{added:.0f}"
        cpu_text = "–" if r["cpu_per_100k"] is None else f"{r['cpu_per_100k']:.2f}"
        rss_text = "–" if r["peak_rss_mib"] is None else f"{r['peak_rss_mib']:.1f}"
        lines.append(
            f"| {system} | {r['rps']:.0f} | {r['rps'] / results['nginx']['rps']:.2f} | {r['rps'] / results['haproxy']['rps']:.2f} "
            f"| {fmt_ms(r.get('p50'))} | {fmt_ms(r.get('p99'))} | {fmt_ms(r.get('p999'))} | {fmt_ms(r['single_p50'])} "
            f"| {added_text} | {cpu_text} | {rss_text} |"
        )
    errors = {s: (r["total"] - r["ok"], r.get("rate_total", 0) - r.get("rate_ok", 0)) for s, r in results.items()}
    lines += [
        "",
        "Throughput per round (req/s, and the highest share of CPU time stolen by the hypervisor "
        "on either CPU during it; rounds with steal are slower for reasons outside the systems):",
        "",
    ]
    for system, r in results.items():
        rounds = ", ".join(f"{rps} ({st}% steal)" for rps, st in zip(r["rounds_rps"], r["rounds_steal"]))
        lines.append(f"- {system}: {rounds}")
    lines += ["", "Non-2xx answers (throughput run, latency run): " + ", ".join(f"{s} {a}/{b}" for s, (a, b) in errors.items()), ""]
    lines += [
        "azgate alone:",
        "",
        f"- idle RSS after start: {extra['idle_rss_mib']:.1f} MiB",
    ]
    for name in ["download", "upload"]:
        e = extra[name]
        lines.append(
            f"- 1 GiB {name}: {e['azgate_mib_s']:.0f} MiB/s through azgate vs {e['direct_mib_s']:.0f} MiB/s direct "
            f"(median of the turns' ratios {e['ratio']:.0%}, per turn {e['ratios']}; speeds are medians of {len(e['ratios'])} turns), "
            f"status {e['code']}, all bytes: {e['bytes_ok']}"
        )
    lines += [
        f"- peak RSS while streaming 1 GiB each way: {extra['stream_peak_rss_mib']:.1f} MiB",
        f"- {extra['idle_conns']} idle keep-alive connections: RSS {extra['idle_conns_rss_mib']:.1f} MiB",
        f"- cold burst of {extra['burst']['total']} concurrent requests ({extra['burst']['ok']} answered 2xx): "
        f"{extra['burst']['token_calls']} token-endpoint call(s)",
        "",
        "Commands (in order):",
        "",
        "```",
        *COMMANDS,
        "```",
        "",
        f"Peer configs: {out}/conf/ (nginx-upstream.conf, nginx-proxy.conf, haproxy.cfg, azgate-*.toml).",
    ]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text


# ---------------------------------------------------------------------------
# smoke mode: azgate in front of an in-process Python upstream, a few requests


def smoke(out):
    class Up(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body are two writes: without this, Nagle + delayed ACK add 40 ms.
        disable_nagle_algorithm = True

        def log_message(self, *a):
            pass

        def do_GET(self):
            body = json.dumps({"authorization": self.headers.get("authorization")}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Up)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    up_port = server.server_address[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        gw_port = s.getsockname()[1]
    conf = azgate_conf(gw_port, STATIC_CREDENTIAL).replace(f"127.0.0.1:{PORTS['upstream']}", f"127.0.0.1:{up_port}")
    (out / "azgate-smoke.toml").write_text(conf)
    binary = ROOT / "target" / "debug" / "azgate"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--quiet"], check=True, cwd=ROOT)
    proc = subprocess.Popen([str(binary), "serve", "-c", str(out / "azgate-smoke.toml")], stderr=subprocess.DEVNULL)
    try:
        wait_port(gw_port)
        import urllib.request

        started = time.time()
        for _ in range(200):
            with urllib.request.urlopen(f"http://127.0.0.1:{gw_port}/up/x") as r:
                seen = json.loads(r.read())
                assert seen["authorization"] == BEARER, seen
        took = time.time() - started
        print(f"smoke: 200 requests through azgate in {took:.2f} s, bearer injected")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        server.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few seconds, no peers")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--load-factor", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the throughput pass (medians are reported)")
    parser.add_argument("--quick", action="store_true", help="throughput pass only (for iterating on optimisations)")
    parser.add_argument("--before-bin", help="an earlier azgate binary, run as system `azgate-before`")
    parser.add_argument("--systems", help="comma-separated subset of direct,azgate,azgate-token,nginx,haproxy")
    args = parser.parse_args()
    out = ROOT / "bench" / "out" / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        smoke(out)
        return
    results, extra, rate = full(args, out)
    if args.quick:
        for system, r in results.items():
            cpu = "–" if r["cpu_per_100k"] is None else f"{r['cpu_per_100k']:.2f}"
            print(f"{system:14} {r['rps']:9.0f} req/s (rounds {r['rounds_rps']}, steal % {r['rounds_steal']})  1-conn p50 {fmt_ms(r['single_p50'])} ms  CPU s/100k {cpu}")
        return
    print(report(results, extra, rate, args, out))
    log(f"written to {out / 'results.md'}")


if __name__ == "__main__":
    main()
