#!/usr/bin/env python3
"""Where a proxy's CPU time goes, from `perf record -e cpu-clock -g` profiles (run.sh with PROFILE=1).

For each profile WORK/perf/FIGURE.PROXY.ROUND.data it reads `perf script` and splits the samples into:
- the kernel, by the system call that was running (a send on loopback also runs the receiving side's TCP stack and
  wakes the peer, so sends weigh the most), plus interrupts and page faults;
- user space, by the code the sample landed in: the Rust crate for Portcullis' own symbols, else the shared object
  (libssl, libcrypto, libc, the nginx or haproxy binary);
- the hottest user-space functions.
With the runs' request counts and CPU times (runs.jsonl), each share is also given in µs per request.

It says nothing about why a function is slow; read the profile itself for that (`perf report -i FILE`).

    bench/perfsplit.py WORK/perf WORK/runs.jsonl > WORK/perf/summary.md
"""

import collections
import json
import os
import re
import subprocess
import sys

SYSCALL_FRAME = re.compile(
    r"^(__sys_sendto|__sys_sendmsg|do_writev|ksys_write|__sys_recvfrom|__sys_recvmsg|do_readv|ksys_read|"
    r"do_epoll_wait|do_epoll_ctl|__x64_sys_\w+|__do_sys_\w+)$"
)
NAMES = {
    "__sys_sendto": "send / sendto",
    "__sys_sendmsg": "sendmsg",
    "do_writev": "writev",
    "ksys_write": "write",
    "__sys_recvfrom": "recv / recvfrom",
    "__sys_recvmsg": "recvmsg",
    "do_readv": "readv",
    "ksys_read": "read",
    "do_epoll_wait": "epoll_wait",
    "do_epoll_ctl": "epoll_ctl",
}
RUST_PATH = re.compile(r"^<*(?:&(?:mut )?)?([A-Za-z_][A-Za-z0-9_]*)::")


def samples(path):
    """Yields (dso-of-leaf, [(symbol, dso), ...] leaf first) for each sample of a perf.data file."""
    out = subprocess.run(
        ["perf", "script", "-i", path, "-F", "ip,sym,dso"],
        capture_output=True, text=True, errors="replace", check=False,
    ).stdout
    frames = []
    for line in out.splitlines():
        line = line.strip()
        if not line:
            if frames:
                yield frames
            frames = []
            continue
        # "ffffffff81e3f9a7 kfree_skbmem ([kernel.kallsyms])"
        m = re.match(r"^[0-9a-f]+ (.*?)(?: \((.*)\))?$", line)
        if m:
            frames.append((m.group(1), m.group(2) or ""))
    if frames:
        yield frames


def kernel_bucket(frames):
    for sym, _ in frames:
        if SYSCALL_FRAME.match(sym):
            name = NAMES.get(sym) or re.sub(r"^__(x64|do)_sys_", "", sym)
            return f"kernel: {name}"
    for sym, _ in frames:
        if sym.startswith("asm_exc_page_fault"):
            return "kernel: page faults"
        if sym.startswith("asm_"):
            return "kernel: interrupts"
    return "kernel: other"


def user_bucket(frames):
    sym, dso = frames[0]
    base = os.path.basename(dso)
    if base in ("portcullis", "loadgen"):
        if sym.startswith(("mi_", "_mi_")):
            return "user: mimalloc (allocator)"
        # Inlined generics (memcpy, allocation) are charged to the first caller that names a crate.
        for s, d in frames:
            m = RUST_PATH.match(s)
            if m and m.group(1) not in ("core", "alloc", "std"):
                return f"user: {m.group(1)}"
        # Generic code whose frames name no crate: polls of boxed futures, most of them.
        return f"user: {base} (generic code)"
    return f"user: {base or '?'}"


def analyse(path):
    buckets = collections.Counter()
    leaves = collections.Counter()
    total = 0
    for frames in samples(path):
        total += 1
        sym, dso = frames[0]
        if "kernel.kallsyms" in dso or dso.startswith("[kernel"):
            buckets[kernel_bucket(frames)] += 1
        else:
            buckets[user_bucket(frames)] += 1
            leaves[f"{sym[:100]} ({os.path.basename(dso)})"] += 1
    return total, buckets, leaves


def main():
    perf_dir, runs_file = sys.argv[1], sys.argv[2]
    runs = {}
    for line in open(runs_file):
        if line.strip():
            r = json.loads(line)
            if "proxy" in r and "round" in r:
                runs[(r.get("figure"), r["proxy"], r["round"])] = r
    files = sorted(f for f in os.listdir(perf_dir) if f.endswith(".data"))
    print("# Where each proxy's CPU time goes (perf, cpu-clock samples)\n")
    print("Shares of the samples in each profile; µs per request = share × the proxy's CPU time in that run ÷ its "
          "requests (the sampling itself adds a little to every proxy).\n")
    for f in files:
        fig, proxy, rnd = f[: -len(".data")].split(".")
        total, buckets, leaves = analyse(os.path.join(perf_dir, f))
        if total == 0:
            print(f"## {fig}, {proxy}, round {rnd}: no samples\n")
            continue
        run = runs.get((fig, proxy, int(rnd)), {})
        n, cpu = run.get("requests") or 0, run.get("proxy_cpu_s") or 0
        us = cpu * 1e6 / n if n and cpu else None
        kernel = sum(v for k, v in buckets.items() if k.startswith("kernel"))
        head = f"## {fig}, {proxy}, round {rnd}: {total:,} samples, kernel {kernel / total:.0%}"
        if us is not None:
            head += f", {us:.1f} µs of CPU per request"
        print(head + "\n")
        print("| where | share | µs per request |")
        print("|---|---|---|")
        for k, v in sorted(buckets.items(), key=lambda kv: -kv[1]):
            if v / total < 0.005:
                continue
            per = "—" if us is None else f"{us * v / total:.2f}"
            print(f"| {k} | {v / total:.1%} | {per} |")
        print("\nHottest user-space functions (self time):\n")
        for k, v in leaves.most_common(12):
            print(f"- {v / total:.1%} {k}")
        print()


if __name__ == "__main__":
    main()
