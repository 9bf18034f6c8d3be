#!/usr/bin/env python3
"""Turns bench/run.sh's raw runs (one JSON object per line) into results.json and a markdown table.

Each figure is reported per proxy as the median of its runs with min and max, both absolute (per second of wall
clock) and per second of the proxy's own CPU time. Ratios Portcullis/NGINX and Portcullis/HAProxy are medians of the
per-round paired ratios (runs of one round were taken back to back).
"""

import argparse
import json
import statistics
from collections import defaultdict

FIGURES = {
    "full_ecdsa": "(1) full mTLS handshakes + 1 GET, TLS 1.3, ECDSA P-256",
    "full_rsa": "(1b) full mTLS handshakes + 1 GET, TLS 1.3, RSA-2048",
    "resumed": "(2) resumed handshakes + 1 GET, TLS 1.3",
    "h1": "(3) keep-alive HTTP/1.1 requests",
    "h2": "(4) keep-alive HTTP/2 requests",
    "grpc": "(5) gRPC unary calls, keep-alive HTTP/2",
}
CROSSCHECK = {
    "oha_h1": "oha, keep-alive HTTP/1.1 (≈ figure 3)",
    "oha_h2": "oha, keep-alive HTTP/2 (≈ figure 4)",
    "stime_new": "openssl s_time -new -tls1_3, full handshakes + 1 GET, no SNI (≈ figure 1; client-bound: a lower bound)",
}
PROXIES = ["portcullis", "nginx", "haproxy"]


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(s, digits=0, scale=1.0):
    if not s:
        return "—"
    f = f"{{:,.{digits}f}}"
    if s["n"] == 1:
        return f.format(s["median"] * scale)
    return f"{f.format(s['median'] * scale)} ({f.format(s['min'] * scale)}–{f.format(s['max'] * scale)})"


def server_sum(rs, key):
    values = [r.get(key) for r in rs]
    if not values or any(v is None for v in values):
        return None
    return int(sum(values))


def server_text(s):
    full, resumed = s.get("server_handshakes_full"), s.get("server_handshakes_resumed")
    if full is None or resumed is None:
        return "n/a"
    return f"{full:,} / {resumed:,}"


def per_cpu(run):
    cpu = run.get("proxy_cpu_s") or 0
    return run.get("requests", 0) / cpu if cpu > 0 else None


def us_per_request(run, key):
    """The proxy's user (key proxy_user_s) or kernel (proxy_sys_s) CPU time per request, in µs; None for runs
    recorded before the two were kept apart."""
    t, n = run.get(key), run.get("requests", 0)
    return t * 1e6 / n if t is not None and n > 0 else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("json_out")
    ap.add_argument("md_out")
    ap.add_argument("--meta", default="{}")
    ap.add_argument("--config", default="{}")
    ap.add_argument("--crosscheck", default=None, help="crosscheck.jsonl from CROSSCHECK=1 (optional)")
    args = ap.parse_args()

    runs = [json.loads(line) for line in open(args.runs) if line.strip()]
    cross_runs = []
    if args.crosscheck:
        try:
            cross_runs = [json.loads(line) for line in open(args.crosscheck) if line.strip()]
        except FileNotFoundError:
            pass
    meta, config = json.loads(args.meta), json.loads(args.config)

    by = defaultdict(list)  # (figure, proxy) -> runs
    for r in runs:
        by[(r["figure"], r["proxy"])].append(r)

    summary = {}
    for (fig, proxy), rs in sorted(by.items()):
        if fig == "idle":
            summary.setdefault(fig, {})[proxy] = {
                "opened": rs[0].get("opened"),
                "alive_after_hold": rs[0].get("alive_after_hold"),
                "rss_before_kib": rs[0].get("rss_before_kib"),
                "rss_after_kib": rs[0].get("rss_after_kib"),
                "rss_per_conn_kib": rs[0].get("rss_per_conn_kib"),
                "errors": rs[0].get("errors"),
            }
            continue
        summary.setdefault(fig, {})[proxy] = {
            "rps": stats([r.get("rps") for r in rs]),
            "per_proxy_cpu_s": stats([per_cpu(r) for r in rs]),
            "proxy_cpu_s": stats([r.get("proxy_cpu_s") for r in rs]),
            "user_us_per_request": stats([us_per_request(r, "proxy_user_s") for r in rs]),
            "kernel_us_per_request": stats([us_per_request(r, "proxy_sys_s") for r in rs]),
            "p50_ms": stats([r.get("p50_ms") for r in rs]),
            "p99_ms": stats([r.get("p99_ms") for r in rs]),
            "requests": sum(r.get("requests", 0) for r in rs),
            "errors": sum(r.get("errors", 0) for r in rs),
            "non_2xx": sum(r.get("non_2xx", 0) for r in rs),
            "handshakes_full": sum(r.get("handshakes_full", 0) for r in rs),
            "handshakes_resumed": sum(r.get("handshakes_resumed", 0) for r in rs),
            "grpc_failures": sum(r.get("grpc_failures", 0) for r in rs),
            # The proxy's own count (Portcullis' /metrics, HAProxy's stats socket); None where it has none.
            "server_handshakes_full": server_sum(rs, "server_handshakes_full"),
            "server_handshakes_resumed": server_sum(rs, "server_handshakes_resumed"),
        }

    # Paired ratios per round.
    ratios = {}
    for fig in FIGURES:
        for peer in ("nginx", "haproxy"):
            pairs_abs, pairs_cpu, pairs_p99 = [], [], []
            pc = {r["round"]: r for r in by.get((fig, "portcullis"), [])}
            for r in by.get((fig, peer), []):
                mine = pc.get(r["round"])
                if not mine:
                    continue
                if r.get("rps"):
                    pairs_abs.append(mine.get("rps", 0) / r["rps"])
                a, b = per_cpu(mine), per_cpu(r)
                if a and b:
                    pairs_cpu.append(a / b)
                if r.get("p99_ms"):
                    pairs_p99.append(mine.get("p99_ms", 0) / r["p99_ms"])
            if pairs_abs or pairs_cpu:
                ratios.setdefault(fig, {})[f"portcullis/{peer}"] = {
                    "per_second": stats(pairs_abs),
                    "per_proxy_cpu_s": stats(pairs_cpu),
                    "p99": stats(pairs_p99),
                }
    if "idle" in summary and "portcullis" in summary["idle"]:
        mine = summary["idle"]["portcullis"].get("rss_per_conn_kib")
        for peer in ("nginx", "haproxy"):
            theirs = summary["idle"].get(peer, {}).get("rss_per_conn_kib")
            if mine is not None and theirs:
                ratios.setdefault("idle", {})[f"portcullis/{peer}"] = {"memory_per_conn": mine / theirs}

    cross = defaultdict(dict)  # tool figure -> proxy -> summary
    cross_by = defaultdict(list)
    for r in cross_runs:
        cross_by[(r["figure"], r["proxy"])].append(r)
    for (fig, proxy), rs in sorted(cross_by.items()):
        ours = summary.get(rs[0].get("compare_with"), {}).get(proxy)
        c = {
            "tool": rs[0].get("tool"),
            "compare_with": rs[0].get("compare_with"),
            "rps": stats([r.get("rps") for r in rs]),
            "per_proxy_cpu_s": stats([per_cpu(r) for r in rs]),
            "p50_ms": stats([r.get("p50_ms") for r in rs]),
            "p99_ms": stats([r.get("p99_ms") for r in rs]),
            "errors": sum(r.get("errors", 0) or 0 for r in rs),
            "probe_status_line": rs[-1].get("probe_status_line"),
            "server_handshakes_full": server_sum(rs, "server_handshakes_full"),
            "server_handshakes_resumed": server_sum(rs, "server_handshakes_resumed"),
        }
        if ours and ours["rps"] and c["rps"]:
            c["vs_loadgen_per_second"] = c["rps"]["median"] / ours["rps"]["median"]
        if ours and ours["per_proxy_cpu_s"] and c["per_proxy_cpu_s"]:
            c["vs_loadgen_per_proxy_cpu_s"] = c["per_proxy_cpu_s"]["median"] / ours["per_proxy_cpu_s"]["median"]
        cross[fig][proxy] = c

    result = {"meta": meta, "config": config, "summary": summary, "ratios": ratios, "runs": runs}
    if cross_runs:
        result["crosscheck"] = {"summary": cross, "runs": cross_runs}
    with open(args.json_out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    md = []
    quick = config.get("quick") == "1"
    md.append("# Portcullis vs NGINX vs HAProxy under mTLS")
    md.append("")
    if quick:
        md.append("**QUICK mode: one short run per figure — smoke test, not a measurement.**")
        md.append("")
    md.append(
        f"Machine: {meta.get('cpu', '?')}, {meta.get('nproc', '?')} CPUs, kernel {meta.get('kernel', '?')}. "
        f"Versions: {meta.get('portcullis', '?')}; {meta.get('nginx', '?')}; {meta.get('haproxy', '?')}; "
        f"{meta.get('openssl', '?')}."
    )
    md.append(
        f"Runs per figure: {config.get('runs')} × {config.get('duration_s')} s, proxies interleaved within each round. "
        f"Each proxy: one worker / thread, pinned to core {config.get('proxy_cpu')} (Portcullis: one edge thread, "
        f"as `--edge-threads` defaults to the CPUs in the affinity mask, plus its idle control-plane threads); load "
        f"generator and origin on core {config.get('load_cpu')}. Client key exchange: {config.get('kx')}; "
        f"handshake figures use {config.get('handshake_loops')} concurrent loops; keep-alive figures "
        f"{config.get('keepalive_connections')} connections. Access logs off everywhere."
    )
    md.append("")
    md.append("Cells: median (min–max). *per proxy CPU-s* = requests ÷ the proxy's own utime+stime during the run. "
              "*µs per request, user + kernel* = the proxy's utime and stime ÷ requests (medians): the kernel's part "
              "is mostly loopback TCP (a send runs the receiving socket's side too), the user part is the proxy's "
              "own code, TLS included.")
    md.append("")
    md.append("*proxy saw full / resumed* = the proxy's own count of successful handshakes during the runs "
              "(Portcullis: `portcullis_handshakes_total` and `portcullis_handshakes_resumed_total` on /metrics; "
              "HAProxy: the frontend's `ssl_sess` / `ssl_reused_sess` in `show stat`; NGINX has no counter: n/a), "
              "less the resumed figure's priming handshakes.")
    md.append("")
    md.append("| figure | proxy | per second | per proxy CPU-s | µs per request, user + kernel | proxy CPU used | p50 ms | p99 ms | errors | handshakes full / resumed | proxy saw full / resumed |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|")
    order = list(FIGURES) + sorted(f for f in summary if f.startswith("rules_"))
    for fig in order:
        if fig not in summary:
            continue
        name = FIGURES.get(fig) or f"(7) Portcullis with {fig.split('_', 1)[1]} rule(s), keep-alive HTTP/1.1"
        for proxy in PROXIES:
            s = summary[fig].get(proxy)
            if not s:
                continue
            cpu_share = None
            if s["proxy_cpu_s"] and config.get("duration_s"):
                cpu_share = s["proxy_cpu_s"]["median"] / float(config["duration_s"])
            non_2xx = f" (+{s['non_2xx']} non-2xx)" if s["non_2xx"] else ""
            if s.get("grpc_failures"):
                non_2xx += f" (+{s['grpc_failures']} gRPC failures)"
            share = "—" if cpu_share is None else f"{cpu_share:.0%} of a core"
            split = "—"
            if s["user_us_per_request"] and s["kernel_us_per_request"]:
                split = (f"{s['user_us_per_request']['median']:.1f} + "
                         f"{s['kernel_us_per_request']['median']:.1f}")
            md.append(
                f"| {name} | {proxy} | {fmt(s['rps'])} | {fmt(s['per_proxy_cpu_s'])} | {split} | "
                f"{share} | {fmt(s['p50_ms'], 2)} | "
                f"{fmt(s['p99_ms'], 2)} | {s['errors']}{non_2xx} | "
                f"{s['handshakes_full']:,} / {s['handshakes_resumed']:,} | {server_text(s)} |"
            )
    if "idle" in summary:
        md.append("")
        md.append("| (6) idle mTLS connections | opened | alive after hold | RSS before → after (KiB) | KiB per connection |")
        md.append("|---|---|---|---|---|")
        for proxy in PROXIES:
            s = summary["idle"].get(proxy)
            if not s:
                continue
            per = s.get("rss_per_conn_kib")
            per_text = "—" if per is None else f"{per:.1f}"
            md.append(
                f"| {proxy} | {s.get('opened')} | {s.get('alive_after_hold')} | {s.get('rss_before_kib')} → "
                f"{s.get('rss_after_kib')} | {per_text} |"
            )
    if ratios:
        md.append("")
        md.append("Ratios, Portcullis ÷ peer (median of per-round paired ratios; > 1 is better for Portcullis, except "
                  "p99 and memory where < 1 is better):")
        md.append("")
        md.append("| figure | vs | per second | per proxy CPU-s | p99 |")
        md.append("|---|---|---|---|---|")
        for fig in list(FIGURES) + ["idle"]:
            for key, r in ratios.get(fig, {}).items():
                peer = key.split("/")[1]
                if fig == "idle":
                    md.append(f"| (6) memory per idle connection | {peer} | — | — | — (memory {r['memory_per_conn']:.2f}×) |")
                    continue
                md.append(
                    f"| {FIGURES[fig]} | {peer} | {fmt(r['per_second'], 2)} | {fmt(r['per_proxy_cpu_s'], 2)} | "
                    f"{fmt(r['p99'], 2)} |"
                )
    if cross:
        md.append("")
        md.append("Cross-checks (CROSSCHECK=1): other clients against the same proxies, same core split; *vs loadgen* = "
                  "this tool's median ÷ the load generator's median on the matching figure, per second and per proxy "
                  "CPU-second.")
        md.append("")
        md.append("| tool and figure | proxy | per second | per proxy CPU-s | p50 ms | p99 ms | errors | proxy saw full / resumed | vs loadgen (per s; per CPU-s) |")
        md.append("|---|---|---|---|---|---|---|---|---|")
        for fig in CROSSCHECK:
            for proxy in PROXIES:
                c = cross.get(fig, {}).get(proxy)
                if not c:
                    continue
                vs = "—"
                answer = f" (answer: {c['probe_status_line']})" if c.get("probe_status_line") else ""
                if c.get("vs_loadgen_per_second") is not None:
                    vs = f"{c['vs_loadgen_per_second']:.2f}"
                    if c.get("vs_loadgen_per_proxy_cpu_s") is not None:
                        vs += f"; {c['vs_loadgen_per_proxy_cpu_s']:.2f}"
                md.append(
                    f"| {CROSSCHECK[fig]} | {proxy} | {fmt(c['rps'])} | {fmt(c['per_proxy_cpu_s'])} | "
                    f"{fmt(c['p50_ms'], 2)} | {fmt(c['p99_ms'], 2)} | {c['errors']}{answer} | {server_text(c)} | {vs} |"
                )
    rules = [f for f in summary if f.startswith("rules_") and "portcullis" in summary[f]]
    if len(rules) == 2:
        one = summary.get("rules_1", {}).get("portcullis")
        many = next((summary[f]["portcullis"] for f in rules if f != "rules_1"), None)
        if one and many and one["per_proxy_cpu_s"] and many["per_proxy_cpu_s"]:
            a, b = one["per_proxy_cpu_s"]["median"], many["per_proxy_cpu_s"]["median"]
            md.append("")
            md.append(
                f"(7) Cost of rules: {b / a:.2f}× the requests per proxy CPU-second with many rules as with one "
                f"(≈ {(1 / b - 1 / a) * 1e6:.1f} µs more CPU per request)."
            )
    md.append("")
    with open(args.md_out, "w") as f:
        f.write("\n".join(md))


if __name__ == "__main__":
    main()
