#!/usr/bin/env python3
"""azgate against nginx and HAProxy, doing the same job on the same loopback machine.

    python3 bench/run.py            # full run (installs peers, builds azgate --release), about 18 minutes
    python3 bench/run.py --smoke    # a few seconds, no peers: proves the script works
    python3 bench/run.py --quick --scenarios https-h2 --modes keep-alive   # throughput only

Every system proxies to one nginx upstream answering a small JSON body and injects
`Authorization: Bearer …`, replacing the client's. The scenarios (bench/peers.py) are
Azure's shape — HTTPS upstreams with HTTP/1.1 and offering h2, and an HTTPS listener —
plus plain HTTP/1.1 on loopback as the worst case, each with keep-alive clients and with
a new connection per request. Proxies run pinned to CPU 0, the upstream and the load
generator to CPU 1; CPU time per request comes from /proc. Results go to
bench/out/<time>/results.md (method, machine, versions, exact commands, figures).
See bench/README.md.
"""
import argparse
import asyncio
import datetime
import http.server
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import report  # noqa: E402  (writes results.md)
from peers import (  # noqa: E402,F401  (re-exported: instructions.py, vend.py, soak.py and throttle.py use them from here)
    BEARER,
    PORTS,
    SCENARIOS,
    STATIC_CREDENTIAL,
    TOKEN_CREDENTIAL,
    Scenario,
    azgate_conf,
    haproxy_conf,
    make_certs,
    nginx_conf,
    nginx_proxy_conf,
    nginx_upstream_conf,
    url,
    write_configs,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROXY_CPU = "0"
LOAD_CPU = "1"
COMMANDS = []  # every load command, in the order run, for the results file
# The run's CA: oha is given it for https:// targets.
TLS_CA = None
# Client modes: oha's default keeps connections alive; legacy tools open one per request.
MODES = {"keep-alive": [], "close": ["--disable-keepalive"]}


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def have(tool):
    return shutil.which(tool) is not None


def install():
    missing = [p for p, tool in [("nginx", "nginx"), ("haproxy", "haproxy"), ("curl", "curl"), ("openssl", "openssl")] if not have(tool)]
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
        try:
            wait_port(port)
        except BaseException:
            self.stop()  # it never listened: stop it rather than leave it running
            raise

    def pids(self):
        pids = [self.proc.pid]
        try:
            children = run(["pgrep", "-P", str(self.proc.pid)]).stdout.split()
            pids += [int(p) for p in children]
        except subprocess.CalledProcessError:
            pass
        return pids

    def cpu_split(self):
        """(user, kernel) CPU seconds of the process and its children: utime and stime."""
        ticks = os.sysconf("SC_CLK_TCK")
        user = kernel = 0
        for pid in self.pids():
            try:
                fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                user += int(fields[11])
                kernel += int(fields[12])
            except (OSError, IndexError):
                pass
        return user / ticks, kernel / ticks

    def cpu_seconds(self):
        return sum(self.cpu_split())

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
    tls = ["--cacert", str(TLS_CA)] if url.startswith("https:") and TLS_CA else []
    cmd = ["taskset", "-c", LOAD_CPU, "oha", "--no-tui", "--output-format", "json", *tls, *args, url]
    COMMANDS.append(" ".join(cmd))
    out = run(cmd, timeout=timeout).stdout
    data = json.loads(out)
    summary = data["summary"]
    pct = data.get("latencyPercentiles", {})
    codes = data.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    total = sum(codes.values())
    # Connection errors, not in the status codes; requests still in flight when `-z` ends
    # ("aborted due to deadline") are not errors.
    errors = sum(v for k, v in data.get("errorDistribution", {}).items() if "deadline" not in k)
    elapsed = summary.get("total") or 0.0
    return {
        # Successful answers per second (oha's own figure counts errors too).
        "rps": ok / elapsed if elapsed else 0.0,
        "p50": pct.get("p50"),
        "p99": pct.get("p99"),
        "p999": pct.get("p99.9"),
        "ok": ok,
        "total": total,
        "errors": errors,
    }


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


def wait_for_quiet(limit, max_wait):
    """Waits until the 1-minute load average is below `limit` (other work on a shared
    machine skews every figure), at most `max_wait` seconds; returns the load averages."""
    deadline = time.time() + max_wait
    while os.getloadavg()[0] >= limit and time.time() < deadline:
        log(f"load average {os.getloadavg()[0]:.2f} >= {limit}: waiting (until {time.strftime('%H:%M:%S', time.localtime(deadline))} at most)")
        time.sleep(15)
    return os.getloadavg()


def check_ports_free(wait=0):
    """A listener left on one of the ports (a previous run, another checkout's benchmark)
    would be measured instead of the system: waits up to `wait` seconds for them to close."""
    deadline = time.time() + wait
    while True:
        busy = []
        for name, port in PORTS.items():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    busy.append(f"{name} ({port})")
            except OSError:
                pass
        if not busy:
            return
        if time.time() >= deadline:
            raise RuntimeError("ports in use (another benchmark, or a previous run left something behind; "
                               "AZGATE_BENCH_PORT_BASE moves them): " + ", ".join(busy))
        log("ports in use, waiting: " + ", ".join(busy))
        time.sleep(15)


class Systems:
    """Starts a system as configured for a scenario (peers.write_configs)."""

    def __init__(self, binary, before_bin, commands, out):
        self.binary, self.before_bin, self.commands, self.out = binary, before_bin, commands, out

    def start(self, system, scenario):
        if system == "direct":
            return None
        argv, port = self.commands[scenario.name]["azgate" if system == "azgate-before" else system]
        if system in ("azgate", "azgate-token"):
            argv = [str(self.binary)] + argv[1:]
        elif system == "azgate-before":
            # An earlier build (--before-bin), same config as `azgate`, for before/after rows.
            argv = [self.before_bin] + argv[1:]
        return Proc(f"{system}-{scenario.name}", argv, port, PROXY_CPU, self.out)


def measure(proc, target, mode, args):
    """One throughput run at fixed concurrency; the proxy's CPU time per answered request."""
    cpu0 = proc.cpu_split() if proc else None
    ticks0 = cpu_ticks()
    r = oha(target, "-z", f"{args.seconds}s", "-c", str(args.connections), *MODES[mode])
    stolen = steal_pct(ticks0, cpu_ticks())
    cpu1 = proc.cpu_split() if proc else None
    answered = r["total"]

    def per_request(seconds):
        return None if proc is None or answered == 0 else seconds / answered * 1e6

    user, kernel = (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]) if proc else (0, 0)

    return {
        "rps": r["rps"],
        "p50": r["p50"],
        "p99": r["p99"],
        "ok": r["ok"],
        "total": answered,
        "errors": r["errors"],
        "cpu_us": per_request(user + kernel),
        # The split shows what a userland change can move: the kernel's loopback TCP work
        # is most of a proxy's CPU here (bench/README.md, "Third round of changes").
        "user_us": per_request(user),
        "kernel_us": per_request(kernel),
        "steal_pct": stolen,
        "peak_rss_mib": None if proc is None else proc.memory_kib("VmHWM") / 1024,
    }


def full(args, out):
    global TLS_CA
    install()
    binary = build()
    data = {"load_wait": args.wait_load}
    wait_until = time.time() + args.wait_max
    check_ports_free(args.wait_max if args.wait_load else 0)
    data["load_start"] = wait_for_quiet(args.wait_load, wait_until - time.time()) if args.wait_load else os.getloadavg()
    log("load average at start: " + " ".join(f"{v:.2f}" for v in data["load_start"]))
    started = time.time()
    certs = make_certs(out / "certs")
    TLS_CA = certs.ca
    scenarios = [SCENARIOS[name] for name in args.scenarios.split(",")]
    modes = args.modes.split(",")
    extras = not args.quick and any(s.name == "plain" for s in scenarios)
    if extras:
        with open(out / "1g.bin", "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(1024):
                f.write(chunk)
    (out / "conf").mkdir(exist_ok=True)
    (out / "conf" / "nginx-upstream.conf").write_text(nginx_upstream_conf(out, certs))
    commands = {s.name: write_configs(out, s, certs) for s in scenarios}
    systems = Systems(binary, args.before_bin, commands, out)

    def systems_of(scenario):
        return args.systems.split(",") if args.systems else list(scenario.systems)

    upstream = Proc("upstream", ["nginx", "-c", str(out / "conf" / "nginx-upstream.conf")], PORTS["upstream"], LOAD_CPU, out)
    token = None
    try:
        for port in ("upstream-tls", "upstream-h2"):
            wait_port(PORTS[port])
        token = Proc("token", [sys.executable, str(ROOT / "bench" / "mock_token.py"), str(PORTS["token"])], PORTS["token"], LOAD_CPU, out)
        # Pass 1: throughput at fixed concurrency and CPU per request, per scenario, client
        # mode and system. Scenarios and systems take turns, `--repeat` rounds; medians are
        # reported, since a shared machine's speed drifts over minutes.
        runs = {}
        data["round_loads"] = []
        for round_no in range(args.repeat):
            data["round_loads"].append(os.getloadavg()[0])
            for scenario in scenarios:
                for system in systems_of(scenario):
                    proc = systems.start(system, scenario)
                    try:
                        target = url(system, scenario)
                        # Warm-up: pools, token cache, TLS sessions.
                        oha(target, "-z", f"{args.warmup}s", "-c", str(args.connections))
                        for mode in modes:
                            if mode == "close" and system == "azgate-token":
                                continue  # the same connection handling as `azgate`; saves a run
                            r = measure(proc, target, mode, args)
                            if scenario.name == "plain" and mode == "keep-alive":
                                single = oha(target, "-z", f"{max(3, args.seconds // 2)}s", "-c", "1")
                                r["single_p50"] = single["p50"]
                            runs.setdefault((scenario.name, mode, system), []).append(r)
                            cpu = "–" if r["cpu_us"] is None else f"{r['cpu_us']:.1f}"
                            log(f"round {round_no + 1}: {scenario.name} {mode} {system}: {r['rps']:.0f} req/s, "
                                f"CPU {cpu} µs/req, steal {r['steal_pct']:.0f}%")
                    finally:
                        if proc:
                            proc.stop()
        data["runs"] = runs
        data["results"] = {
            key: dict({field: median([r.get(field) for r in rounds]) for field in rounds[0]},
                      rounds_rps=[round(r["rps"]) for r in rounds],
                      rounds_cpu=[None if r["cpu_us"] is None else round(r["cpu_us"], 1) for r in rounds],
                      rounds_steal=[round(r["steal_pct"]) for r in rounds])
            for key, rounds in runs.items()
        }
        if args.quick:
            return data
        # Pass 2: latency at one fixed rate per scenario, below every proxy's saturation:
        # the main h2 scenario and the plain one. Interleaved rounds too: one system
        # falling behind for a moment (another process on its CPU) queues for hundreds of
        # milliseconds, which a single pass would report as its p99.
        fixed = {}
        rates = {}
        for scenario in scenarios:
            if scenario.name in ("https-h2", "plain") and "keep-alive" in modes:
                names = systems_of(scenario)
                slowest = min(data["results"][(scenario.name, "keep-alive", s)]["rps"] for s in names if s != "direct")
                rates[scenario.name] = (scenario, names, max(1, int(slowest * args.load_factor)))
        for _ in range(args.repeat):
            for scenario, names, rate in rates.values():
                for system in names:
                    proc = systems.start(system, scenario)
                    try:
                        target = url(system, scenario)
                        oha(target, "-z", f"{args.warmup}s", "-c", str(args.connections))
                        lat = oha(target, "-z", f"{args.seconds}s", "-c", str(args.connections), "-q", str(rate), "--latency-correction")
                        fixed.setdefault((scenario.name, system), []).append(dict(lat, rate=rate))
                        log(f"fixed rate {rate}/s: {scenario.name} {system}: p99 {fmt_ms(lat['p99'])} ms")
                    finally:
                        if proc:
                            proc.stop()
        data["fixed"] = {
            key: dict({field: median([r[field] for r in rounds]) for field in ("p50", "p99", "p999", "ok", "total", "errors")},
                      rate=rounds[0]["rate"], rounds_p99=[r["p99"] for r in rounds])
            for key, rounds in fixed.items()
        }
        if extras:
            data["extra"] = azgate_alone(args, out, systems)
    finally:
        if token:
            token.stop()
        upstream.stop()
    data["minutes"] = (time.time() - started) / 60
    return data


def azgate_alone(args, out, systems):
    """Plain scenario, azgate only: idle RSS, streaming, idle connections, cold burst."""
    extra = {}
    plain = SCENARIOS["plain"]
    proc = systems.start("azgate", plain)
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
        # What the process holds right before: the transfers above leave memory with the
        # allocator, and the connections' first requests fill the upstream pool.
        extra["before_idle_conns_rss_mib"] = proc.memory_kib("VmRSS") / 1024
        loop, writers = idle_connections(PORTS["azgate"], args.idle_connections)
        try:
            time.sleep(2)
            extra["idle_conns"] = len(writers)
            extra["idle_conns_rss_mib"] = proc.memory_kib("VmRSS") / 1024
        finally:
            for w in writers:
                w.close()
            loop.close()
    finally:
        proc.stop()
    before = int(run(["curl", "-s", f"http://127.0.0.1:{PORTS['token']}/count"]).stdout)
    proc = systems.start("azgate-token", plain)
    try:
        burst = oha(url("azgate-token", plain), "-n", "1000", "-c", "1000")
        after = int(run(["curl", "-s", f"http://127.0.0.1:{PORTS['token']}/count"]).stdout)
        extra["burst"] = {"ok": burst["ok"], "total": burst["total"], "token_calls": after - before}
    finally:
        proc.stop()
    return extra


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
        "openssl": first_line(["openssl", "version"]),
        "rustc": first_line(["rustc", "--version"]),
    }


# ---------------------------------------------------------------------------
# smoke mode: azgate in front of in-process Python upstreams, a few requests


class SmokeUpstream(http.server.BaseHTTPRequestHandler):
    """Answers with the Authorization header it received."""

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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smoke_one(binary, conf, gw_url, requests, context=None):
    """Starts azgate with `conf`, sends `requests` GETs, checks the injected bearer."""
    port = int(gw_url.split(":")[2].split("/")[0])
    proc = subprocess.Popen([str(binary), "serve", "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        started = time.time()
        for _ in range(requests):
            with urllib.request.urlopen(gw_url, context=context, timeout=10) as r:
                seen = json.loads(r.read())
                assert seen["authorization"] == BEARER, seen
        return time.time() - started
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def smoke(out):
    binary = ROOT / "target" / "debug" / "azgate"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--quiet"], check=True, cwd=ROOT)
    servers = []
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SmokeUpstream)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        gw_port = free_port()
        plain = Scenario("smoke", "smoke", "http", False, ("azgate",))
        conf = out / "azgate-smoke.toml"
        conf.write_text(azgate_conf(gw_port, STATIC_CREDENTIAL, plain, upstream_port=server.server_address[1]))
        took = smoke_one(binary, conf, f"http://127.0.0.1:{gw_port}/up/x", 200)
        print(f"smoke: 200 requests through azgate in {took:.2f} s, bearer injected")

        if not have("openssl"):
            print("smoke: HTTPS part skipped: no openssl to make certificates")
            return
        # The HTTPS shape: certificates made as the full run makes them, an HTTPS upstream
        # trusted through the route's `ca_file`, and azgate's own listener on HTTPS.
        certs = make_certs(out / "certs")
        tls_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SmokeUpstream)
        servers.append(tls_server)
        upstream_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        upstream_ctx.load_cert_chain(certs.cert, certs.key)
        tls_server.socket = upstream_ctx.wrap_socket(tls_server.socket, server_side=True)
        threading.Thread(target=tls_server.serve_forever, daemon=True).start()
        gw_port = free_port()
        tls = Scenario("smoke-tls", "smoke", "https-h1", True, ("azgate",))
        conf = out / "azgate-smoke-tls.toml"
        conf.write_text(azgate_conf(gw_port, STATIC_CREDENTIAL, tls, certs, upstream_port=tls_server.server_address[1]))
        took = smoke_one(binary, conf, f"https://127.0.0.1:{gw_port}/up/x", 50, ssl.create_default_context(cafile=certs.ca))
        print(f"smoke: 50 requests over HTTPS through azgate to an HTTPS upstream (ca_file) in {took:.2f} s, bearer injected")
    finally:
        for server in servers:
            server.shutdown()


def on_signal(signum, _frame):
    # Unwinds through every `finally`, which stops what was started.
    raise SystemExit(128 + signum)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few seconds, no peers")
    parser.add_argument("--seconds", type=int, default=8, help="length of each measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before measuring, per system and round")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--load-factor", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the throughput pass (medians are reported)")
    parser.add_argument("--quick", action="store_true", help="throughput pass only (for iterating on optimisations)")
    parser.add_argument("--before-bin", help="an earlier azgate binary, run as system `azgate-before`")
    parser.add_argument("--systems", help="comma-separated subset of direct,azgate,azgate-before,azgate-token,nginx,haproxy "
                        "(default: each scenario's own)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--modes", default=",".join(MODES), help="client modes: keep-alive, close (a new connection per request)")
    parser.add_argument("--wait-load", type=float, help="first wait until the 1-minute load average is below this")
    parser.add_argument("--wait-max", type=int, default=600, help="seconds to wait for --wait-load at most")
    args = parser.parse_args()
    for name in args.scenarios.split(","):
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}")
    for mode in args.modes.split(","):
        if mode not in MODES:
            parser.error(f"unknown client mode {mode!r}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    out = ROOT / "bench" / "out" / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        smoke(out)
        return
    data = full(args, out)
    text = report.write(data, args, out, versions(ROOT / "target" / "release" / "azgate"), COMMANDS)
    print(text)
    log(f"written to {out / 'results.md'}")


if __name__ == "__main__":
    main()
