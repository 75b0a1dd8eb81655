#!/usr/bin/env python3
"""What tracing costs a request, and what a collector that never answers costs it.

    python3 bench/tracing.py            # about 3 minutes; results in bench/out/<time>-tracing/
    python3 bench/tracing.py --smoke    # a few seconds: proves the script works

One azgate binary, the plain loopback scenario of run.py (an nginx upstream, a static
bearer injected), in three set-ups that take turns in interleaved rounds:

- `off`: no `[telemetry]`, no OTEL_* variable: no spans at all;
- `collector`: every request traced (`sample_ratio = 1.0`) and exported to a collector
  on 127.0.0.1 that answers each export at once with 200 and an empty
  ExportTraceServiceResponse;
- `hung`: the same, to a collector that accepts connections and never reads or answers.

Load is fixed-rate (below saturation, so latency is the proxy's, not a queue's): the same
rate for each set-up, CPU µs per request of azgate from /proc, p50/p99 from oha. After
each `hung` round azgate's `azgate_otlp_export_failures_total` is read from its admin
listener. Proxies on CPU 0, upstream and load on CPU 1, as in run.py.
"""
import argparse
import datetime
import http.server
import pathlib
import socket
import sys
import threading
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import peers  # noqa: E402
import run as bench  # noqa: E402

ROOT = bench.ROOT
ADMIN_PORT = peers.BASE + 40
COLLECTOR_PORT = peers.BASE + 41
HUNG_PORT = peers.BASE + 42
SETUPS = ("off", "collector", "hung")


class Collector(http.server.BaseHTTPRequestHandler):
    """Takes an OTLP/HTTP export and answers an empty ExportTraceServiceResponse."""

    protocol_version = "HTTP/1.1"
    exports = 0

    def log_message(self, *a):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        Collector.exports += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()


def hung_collector(stop):
    """Accepts connections and holds them without reading or answering."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", HUNG_PORT))
    server.listen(64)
    server.settimeout(0.2)
    held = []
    while not stop.is_set():
        try:
            conn, _ = server.accept()
            held.append(conn)
        except socket.timeout:
            pass
    for conn in held:
        conn.close()
    server.close()


def config(setup):
    base = peers.azgate_conf(peers.PORTS["azgate"], peers.STATIC_CREDENTIAL)
    base = base.replace('[admin]\nlisten = ""', f'[admin]\nlisten = "127.0.0.1:{ADMIN_PORT}"')
    if setup == "off":
        return base
    port = COLLECTOR_PORT if setup == "collector" else HUNG_PORT
    return base + f"""
[telemetry]
otlp_endpoint = "http://127.0.0.1:{port}"
sample_ratio = 1.0
"""


def export_failures():
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("azgate_otlp_export_failures_total"):
                return float(line.split()[-1])
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=2000, help="requests per second, fixed")
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--bin", help="an azgate binary (default: build with cargo --release)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.seconds, args.rate = 1, 2, 200

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "out" / f"{stamp}-tracing"
    (out / "conf").mkdir(parents=True, exist_ok=True)
    bench.install()
    binary = args.bin or (str(ROOT / "target" / "debug" / "azgate") if args.smoke else bench.build())
    bench.check_ports_free()

    stop = threading.Event()
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", COLLECTOR_PORT), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    hung = threading.Thread(target=hung_collector, args=(stop,), daemon=True)
    hung.start()
    upstream_conf = out / "conf" / "nginx-upstream.conf"
    upstream_conf.write_text(peers.nginx_upstream_conf(out))
    upstream = bench.Proc("upstream", ["nginx", "-c", str(upstream_conf)], peers.PORTS["upstream"], bench.LOAD_CPU, out)
    results = {setup: [] for setup in SETUPS}
    failures = []
    try:
        for round_no in range(args.rounds):
            for setup in SETUPS:
                path = out / "conf" / f"azgate-{setup}.toml"
                path.write_text(config(setup))
                proc = bench.Proc(f"azgate-{setup}-{round_no}", [binary, "serve", "-c", str(path)],
                                  peers.PORTS["azgate"], bench.PROXY_CPU, out)
                try:
                    target = peers.url("azgate", path="/up/")
                    bench.oha(target, "-n", "200", "-c", "8")  # warm-up: connections, pools
                    cpu_before = proc.cpu_seconds()
                    figures = bench.oha(target, "-q", str(args.rate), "-z", f"{args.seconds}s", "-c", "16")
                    cpu = proc.cpu_seconds() - cpu_before
                    figures["cpu_us"] = cpu / figures["total"] * 1e6 if figures["total"] else None
                    results[setup].append(figures)
                    if setup == "hung":
                        failures.append(export_failures())
                    bench.log(f"round {round_no} {setup}: p50 {bench.fmt_ms(figures['p50'])} "
                              f"p99 {bench.fmt_ms(figures['p99'])} ok {figures['ok']}/{figures['total']} "
                              f"cpu {figures['cpu_us']:.1f} µs/req")
                finally:
                    proc.stop()
    finally:
        stop.set()
        collector.shutdown()
        upstream.stop()
        hung.join(timeout=5)

    lines = [
        f"# Tracing cost — {stamp}",
        "",
        f"Command: `python3 bench/tracing.py {' '.join(sys.argv[1:])}`; binary {binary};",
        f"{args.rounds} interleaved rounds, {args.rate} requests/s fixed for {args.seconds} s, 16 connections.",
        "",
        "| set-up | 2xx / sent | p50 ms (rounds) | p99 ms (rounds) | p99 median ms | CPU µs / request median |",
        "|---|---|---|---|---|---|",
    ]
    for setup in SETUPS:
        rows = results[setup]
        ok = sum(r["ok"] for r in rows)
        total = sum(r["total"] for r in rows)
        p50s = ", ".join(bench.fmt_ms(r["p50"]) for r in rows)
        p99s = ", ".join(bench.fmt_ms(r["p99"]) for r in rows)
        p99 = bench.median([r["p99"] for r in rows if r["p99"] is not None])
        cpu = bench.median([r["cpu_us"] for r in rows if r["cpu_us"] is not None])
        lines.append(f"| {setup} | {ok} / {total} | {p50s} | {p99s} | {bench.fmt_ms(p99)} | {cpu:.1f} |")
    lines += [
        "",
        f"Exports the answering collector took: {Collector.exports}. "
        f"`azgate_otlp_export_failures_total` after each `hung` round: {failures}.",
    ]
    (out / "tracing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    bench.log(f"written to {out / 'tracing.md'}")


if __name__ == "__main__":
    main()
