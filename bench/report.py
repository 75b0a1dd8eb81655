"""Writes bench/run.py's results file: CPU per request against the issue's goals first,
then every scenario's figures, the fixed-rate latency, the per-round figures, azgate's
own measurements and the exact commands."""
import datetime
import os
import pathlib
import platform

from peers import SCENARIOS

# Issue 17's goals for azgate's CPU per request, keep-alive clients: (peer, largest ratio).
GOALS = {
    "https-h2": [("haproxy", 0.9), ("nginx", 0.8)],
    "https-h1": [("nginx", 1.0)],
    "plain": [("nginx", 1.5)],
}
NAMES = {"nginx": "nginx", "haproxy": "HAProxy"}
MODE_NAMES = {"keep-alive": "keep-alive", "close": "new connection per request"}


def num(value, spec):
    return "–" if value is None else format(value, spec)


def ms(seconds):
    return "–" if seconds is None else f"{seconds * 1000:.2f}"


def ratio(results, scenario, mode, peer):
    a = results.get((scenario, mode, "azgate"), {}).get("cpu_us")
    b = results.get((scenario, mode, peer), {}).get("cpu_us")
    return None if a is None or b is None or b == 0 else a / b


def headline(results, scenarios, modes):
    """azgate's CPU per request against nginx's and HAProxy's, and the goals."""
    lines = [
        "| scenario | clients | azgate µs | nginx µs | HAProxy µs | azgate / nginx | azgate / HAProxy | goal | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in scenarios:
        for mode in modes:
            if (scenario, mode, "azgate") not in results:
                continue
            cpu = {s: results.get((scenario, mode, s), {}).get("cpu_us") for s in ("azgate", "nginx", "haproxy")}
            goals = GOALS.get(scenario, []) if mode == "keep-alive" else []
            goal_text = ", ".join(f"≤ {limit:.1f}× {NAMES[peer]}" for peer, limit in goals) or "–"
            verdicts = [ratio(results, scenario, mode, peer) for peer, _ in goals]
            if not goals:
                met = "–"
            elif any(v is None for v in verdicts):
                met = "not measured"
            else:
                met = "yes" if all(v <= limit for v, (_, limit) in zip(verdicts, goals)) else "**no**"
            lines.append(
                f"| {SCENARIOS[scenario].title} | {MODE_NAMES[mode]} | {num(cpu['azgate'], '.1f')} | {num(cpu['nginx'], '.1f')} "
                f"| {num(cpu['haproxy'], '.1f')} | {num(ratio(results, scenario, mode, 'nginx'), '.2f')} "
                f"| {num(ratio(results, scenario, mode, 'haproxy'), '.2f')} | {goal_text} | {met} |"
            )
    return lines


def per_system(results, scenarios, modes):
    lines = [
        "| scenario | clients | system | req/s | p50 ms | p99 ms | CPU µs / req | user / kernel µs | peak RSS MiB | non-2xx, errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in scenarios:
        for mode in modes:
            for (s, m, system), r in results.items():
                if (s, m) != (scenario, mode):
                    continue
                bad = f"{r['total'] - r['ok']:.0f}, {r['errors']:.0f}"
                lines.append(
                    f"| {scenario} | {mode} | {system} | {r['rps']:.0f} | {ms(r['p50'])} | {ms(r['p99'])} "
                    f"| {num(r['cpu_us'], '.1f')} | {num(r.get('user_us'), '.1f')} / {num(r.get('kernel_us'), '.1f')} "
                    f"| {num(r['peak_rss_mib'], '.1f')} | {bad} |"
                )
    return lines


def fixed_rate(fixed):
    lines = [
        "| scenario | system | rate /s | p50 ms | p99 ms | p99.9 ms | p99 per round ms | non-2xx, errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (scenario, system), r in fixed.items():
        rounds = ", ".join(ms(v) for v in r["rounds_p99"])
        lines.append(
            f"| {scenario} | {system} | {r['rate']} | {ms(r['p50'])} | {ms(r['p99'])} | {ms(r['p999'])} | {rounds} "
            f"| {r['total'] - r['ok']:.0f}, {r['errors']:.0f} |"
        )
    for scenario in dict.fromkeys(s for s, _ in fixed):
        a, n = fixed.get((scenario, "azgate")), fixed.get((scenario, "nginx"))
        if a and n and a["p99"] is not None and n["p99"] is not None:
            verdict = "met" if a["p99"] <= n["p99"] else "**not met**"
            lines.append(f"\n{scenario}: goal p99 ≤ nginx's at the fixed rate: {verdict} "
                         f"(azgate {ms(a['p99'])} ms, nginx {ms(n['p99'])} ms).")
    return lines


def machine():
    cpu = platform.processor() or "unknown"
    try:
        cpu = [line.split(":", 1)[1].strip() for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
               if line.startswith("model name")][0]
    except (OSError, IndexError):
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}"


def write(data, args, out, versions, commands):
    results = data["results"]
    scenarios = args.scenarios.split(",")
    modes = args.modes.split(",")
    load = " / ".join(f"{v:.2f}" for v in data["load_start"])
    waited = f" (the run first waited for a 1-minute load below {data['load_wait']})" if data.get("load_wait") else ""
    lines = [
        f"# azgate benchmark — {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"Machine: {machine()}. Proxies pinned to CPU 0 (one worker/thread each); upstream (nginx, "
        "1 worker) and load generator (oha) on CPU 1.",
        "",
        f"Load average at start (1/5/15 min): {load}{waited}; 1-minute load at the start of each round: "
        + ", ".join(f"{v:.2f}" for v in data["round_loads"]) + ".",
        "",
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()),
        "",
        f"Each system, scenario and client mode: {args.connections} client connections for {args.seconds} s "
        f"after a {args.warmup} s keep-alive warm-up; {args.repeat} interleaved rounds, medians reported. "
        "CPU µs per request: the proxy's utime + stime from /proc over the run, per answered request. "
        "p50/p99 are at saturation (fixed concurrency); the fixed-rate table below is the latency comparison.",
        "",
        "## CPU per request against the goals (issue 17)",
        "",
        *headline(results, scenarios, modes),
        "",
        "## Every system",
        "",
        *per_system(results, scenarios, modes),
    ]
    if data.get("fixed"):
        lines += ["", f"## Latency at a fixed rate ({args.load_factor:.0%} of the slowest proxy's keep-alive throughput, "
                  f"oha `-q RATE --latency-correction`; medians of {args.repeat} interleaved rounds)", "",
                  *fixed_rate(data["fixed"])]
    lines += ["", "## Per round", "",
              "req/s, CPU µs per request and the highest share of CPU time stolen by the hypervisor on either CPU:", ""]
    for (scenario, mode, system), r in results.items():
        rounds = ", ".join(f"{rps} ({num(cpu, '.1f')} µs, {st}% steal)"
                           for rps, cpu, st in zip(r["rounds_rps"], r["rounds_cpu"], r["rounds_steal"]))
        lines.append(f"- {scenario} / {mode} / {system}: {rounds}")
    plain = {system: r for (s, m, system), r in results.items() if (s, m) == ("plain", "keep-alive")}
    if "direct" in plain and plain["direct"].get("single_p50") is not None:
        direct = plain["direct"]["single_p50"]
        lines += ["", "Added latency at one keep-alive connection, plain scenario (p50 minus direct's): "
                  + ", ".join(f"{system} {(r['single_p50'] - direct) * 1e6:.0f} µs"
                              for system, r in plain.items() if system != "direct" and r.get("single_p50") is not None)
                  + f" (direct's p50 {ms(direct)} ms)."]
    extra = data.get("extra")
    if extra:
        lines += ["", "## azgate alone (plain scenario)", "", f"- idle RSS after start: {extra['idle_rss_mib']:.1f} MiB"]
        for name in ["download", "upload"]:
            e = extra[name]
            lines.append(
                f"- 1 GiB {name}: {e['azgate_mib_s']:.0f} MiB/s through azgate vs {e['direct_mib_s']:.0f} MiB/s direct "
                f"(median of the turns' ratios {e['ratio']:.0%}, per turn {e['ratios']}), status {e['code']}, all bytes: {e['bytes_ok']}"
            )
        lines += [
            f"- peak RSS while streaming 1 GiB each way: {extra['stream_peak_rss_mib']:.1f} MiB",
            f"- {extra['idle_conns']} idle keep-alive connections: RSS {extra['idle_conns_rss_mib']:.1f} MiB "
            f"({(extra['idle_conns_rss_mib'] - extra['idle_rss_mib']) * 1024 / max(1, extra['idle_conns']):.1f} KiB each above idle"
            f", {(extra['idle_conns_rss_mib'] - extra['before_idle_conns_rss_mib']) * 1024 / max(1, extra['idle_conns']):.1f} "
            f"above the {extra['before_idle_conns_rss_mib']:.1f} MiB just before them, after the transfers; "
            "bench/idle_memory.py measures an idle connection alone)",
            f"- cold burst of {extra['burst']['total']} concurrent requests ({extra['burst']['ok']} answered 2xx): "
            f"{extra['burst']['token_calls']} token-endpoint call(s)",
        ]
    if data.get("minutes") is not None:
        lines += ["", f"Measuring took {data['minutes']:.1f} minutes."]
    lines += ["", "Commands (in order):", "", "```", *commands, "```", "",
              f"Configs: {out}/conf/ (nginx-upstream.conf, nginx-proxy-SCENARIO.conf, haproxy-SCENARIO.cfg, "
              f"azgate-*-SCENARIO.toml); certificates: {out}/certs/."]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text
