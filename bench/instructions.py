#!/usr/bin/env python3
"""Userland instructions per proxied request, counted by valgrind's callgrind.

    python3 bench/instructions.py                              # this tree's release build
    python3 bench/instructions.py before=/tmp/old-azgate after=target/release/azgate
    python3 bench/instructions.py --peers                      # and nginx, HAProxy
    python3 bench/instructions.py --token                      # and the token credential path
    python3 bench/instructions.py --shape https-h2 --peers     # HTTPS upstream offering h2 (Azure's shape)

Throughput on a shared 2-core VM drifts by ±25% over minutes, which hides optimisations
worth a few percent. Instruction counts do not drift: each build proxies the same requests
to the same nginx upstream under callgrind, counters are zeroed after a warm-up, and the
instructions of the measured requests are divided by their number. Kernel time (the
loopback TCP path) is not counted; it is the same for every build. `--shape` picks one of
bench/run.py's scenarios (bench/peers.py): plain HTTP/1.1 by default, or HTTPS upstreams
(HTTP/1.1, h2 by ALPN) and an HTTPS listener, with certificates made for the run;
`--mode close` opens a new client connection per request.
Writes bench/out/<time>/instructions.md and keeps the callgrind files for
`callgrind_annotate --inclusive=yes`.
"""
import argparse
import datetime
import pathlib
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (the benchmark driver: peer configs, Proc, oha)


def install_valgrind():
    if shutil.which("valgrind") is None:
        bench.log("installing valgrind from Debian")
        sudo = [] if bench.os.geteuid() == 0 else ["sudo"]
        bench.run(sudo + ["apt-get", "update", "-qq"])
        bench.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "valgrind"])


def first_line(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "not found"


def totals(dump):
    """The `totals:` (or `summary:`) line of a callgrind file: instructions executed."""
    for line in dump.read_text().splitlines():
        match = re.match(r"^(?:totals|summary):\s+(\d+)", line)
        if match:
            return int(match.group(1))
    raise RuntimeError(f"no totals in {dump}")


def measure(label, cmd, system, out, warmup, requests, connections, scenario, mode):
    prefix = out / f"callgrind.{label}"
    cmd = ["valgrind", "--tool=callgrind", "--quiet", f"--callgrind-out-file={prefix}.%p", *cmd]
    bench.COMMANDS.append("taskset -c " + bench.PROXY_CPU + " " + " ".join(cmd))
    proc = bench.Proc(label, cmd, bench.PORTS[system], bench.PROXY_CPU, out)
    try:
        target = bench.url(system, scenario)
        first = bench.oha(target, "-n", str(warmup), "-c", str(connections), *bench.MODES[mode], timeout=600)
        if first["ok"] != warmup:
            raise RuntimeError(f"{label}: warm-up got {first['ok']} of {warmup} answers")
        pid = proc.proc.pid
        bench.run(["callgrind_control", "--zero", str(pid)])
        bench.COMMANDS.append(f"callgrind_control --zero {pid}")
        measured = bench.oha(target, "-n", str(requests), "-c", str(connections), *bench.MODES[mode], timeout=1200)
        if measured["ok"] != requests:
            raise RuntimeError(f"{label}: got {measured['ok']} of {requests} answers")
        before = set(out.glob(f"callgrind.{label}.*"))
        bench.run(["callgrind_control", "--dump", str(pid)])
        bench.COMMANDS.append(f"callgrind_control --dump {pid}")
        deadline = time.time() + 30
        while time.time() < deadline:
            dumps = [d for d in out.glob(f"callgrind.{label}.*") if d not in before and d.stat().st_size > 0]
            if dumps:
                time.sleep(0.5)  # let the dump finish writing
                return totals(dumps[0]) / requests, dumps[0]
            time.sleep(0.2)
        raise RuntimeError(f"{label}: callgrind wrote no dump")
    finally:
        proc.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builds", nargs="*", help="label=path-to-azgate (default: this tree's release build)")
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--peers", action="store_true", help="also count nginx and HAProxy doing the same job")
    parser.add_argument("--token", action="store_true",
                        help="also count the first build with a client_secret credential (warm cache, mock token endpoint)")
    parser.add_argument("--shape", choices=list(bench.SCENARIOS), default="plain",
                        help="the scenario of bench/run.py to count (default: plain HTTP/1.1)")
    parser.add_argument("--mode", choices=list(bench.MODES), default="keep-alive",
                        help="client connections: keep-alive, or close (a new one per request)")
    args = parser.parse_args()
    scenario = bench.SCENARIOS[args.shape]

    bench.install()
    install_valgrind()
    bench.check_ports_free()
    builds = [b.split("=", 1) for b in args.builds] or [["this-tree", str(bench.build())]]
    out = bench.ROOT / "bench" / "out" / ("instructions-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    (out / "conf").mkdir(parents=True, exist_ok=True)
    certs = bench.make_certs(out / "certs")
    bench.TLS_CA = certs.ca
    (out / "conf" / "nginx-upstream.conf").write_text(bench.nginx_upstream_conf(out, certs))
    conf = out / "conf" / "azgate-static.toml"
    conf.write_text(bench.azgate_conf(bench.PORTS["azgate"], bench.STATIC_CREDENTIAL, scenario, certs))
    runs = [(label, [binary, "serve", "-c", str(conf)], "azgate") for label, binary in builds]
    if args.token:
        token_conf = out / "conf" / "azgate-token.toml"
        token_conf.write_text(bench.azgate_conf(bench.PORTS["azgate-token"], bench.TOKEN_CREDENTIAL, scenario, certs))
        runs.append((builds[0][0] + "-token", [builds[0][1], "serve", "-c", str(token_conf)], "azgate-token"))
    if args.peers:
        # One process that serves (no master), so callgrind sees the worker's instructions.
        nginx_conf = out / "conf" / "nginx-proxy.conf"
        nginx_conf.write_text("master_process off;\n" + bench.nginx_proxy_conf(out, scenario, certs))
        haproxy_conf = out / "conf" / "haproxy.cfg"
        haproxy_conf.write_text(bench.haproxy_conf(out, scenario, certs))
        runs.append(("nginx", ["nginx", "-c", str(nginx_conf)], "nginx"))
        runs.append(("haproxy", ["haproxy", "-db", "-f", str(haproxy_conf)], "haproxy"))

    upstream = bench.Proc("upstream", ["nginx", "-c", str(out / "conf" / "nginx-upstream.conf")],
                          bench.PORTS["upstream"], bench.LOAD_CPU, out)
    token = None
    if args.token:
        token = bench.Proc("token", [sys.executable, str(bench.ROOT / "bench" / "mock_token.py"), str(bench.PORTS["token"])],
                           bench.PORTS["token"], bench.LOAD_CPU, out)
    rows = []
    try:
        for label, cmd, system in runs:
            per_request, dump = measure(label, cmd, system, out, args.warmup, args.requests, args.connections, scenario, args.mode)
            bench.log(f"{label}: {per_request:,.0f} instructions per request")
            rows.append((label, cmd[0], per_request, dump))
    finally:
        upstream.stop()
        if token:
            token.stop()

    base = rows[0][2]
    lines = [
        f"# Instructions per request ({datetime.date.today()})",
        "",
        f"Shape: {scenario.title} (`--shape {scenario.name}`); clients: {args.mode}.",
        "",
        f"valgrind {first_line(['valgrind', '--version'])}; {args.requests} requests over "
        f"{args.connections} client connections ({args.mode}) after {args.warmup} warm-up requests; "
        "azgate with a `static` credential (`-token`: a `client_secret` credential from a warm cache), "
        "nginx upstream; userland instructions of the proxy process.",
        "",
        "| build | instructions / request | vs first |",
        "|---|---|---|",
    ]
    for label, _binary, per_request, _dump in rows:
        lines.append(f"| {label} | {per_request:,.0f} | {per_request / base - 1:+.1%} |")
    lines += ["", "Commands:", ""]
    lines += [f"    {c}" for c in bench.COMMANDS]
    lines += ["", "Callgrind files (for `callgrind_annotate --inclusive=yes FILE`):", ""]
    lines += [f"    {label}: {dump}" for label, _b, _p, dump in rows]
    text = "\n".join(lines) + "\n"
    (out / "instructions.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
