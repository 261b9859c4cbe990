"""What the batch benchmarks (scripts/bench-bcc, scripts/bench-libbpf-tools) share: one
`bpf-migrate verify --format json` command over a directory of tools, timed, its peak memory
(bpf-migrate and all its children, qemu included) sampled, and its per-tool report."""
import json, os, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/bpf-migrate")


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--workspace"], cwd=ROOT, check=True)


def tree_rss_kib(pid):
    """RSS of pid and all its descendants, in KiB."""
    total, stack, children = 0, [pid], {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except OSError:
                pass
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += sum(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        except OSError:
            pass
        stack.extend(children.get(p, []))
    return total


def timed(cmd):
    """Runs `cmd` (with --format json): its JSON lines, wall time in seconds, and peak memory
    in KiB of it and all its children (qemu) together; exits when it could not run."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_kib(proc.pid))
            time.sleep(0.2)

    th = threading.Thread(target=sample)
    th.start()
    out, err = proc.communicate()
    th.join()
    wall = time.monotonic() - t0
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    if not lines or proc.returncode == 2:
        sys.exit(f"{' '.join(cmd)} could not run ({proc.returncode}): {err}\n{out}")
    return lines, wall, peak[0]


def verify(cmd, shown, what, count):
    """Runs `cmd` (a verify with --format json; `shown` is how to say it), then prints per program its verdict, the
    lines its tool printed during the workload, how long each instance took to wait for
    events, and why when not equivalent; then the verdicts, wall time and peak memory
    (returned, in KiB)."""
    lines, wall, peak = timed(cmd)
    progs = {l["program"]: l for l in lines if l["type"] == "program"}
    runs = {l["program"]: l for l in lines if l["type"] == "tool"}
    maps = {}
    for l in lines:
        if l["type"] == "map" and l.get("finding"):
            maps.setdefault(l["program"], []).append(f"map {l['map']}: {l['finding']}")
    print(f"{count} {what}, one command: {shown}")
    print(f"{'tool':<22} {'verdict':<13} {'lines':>5}  ready after (s): original, second run, migrated")
    counts = {}
    for p in sorted(progs):
        v = progs[p]["verdict"]
        counts[v] = counts.get(v, 0) + 1
        t = runs.get(p, {})
        r = t.get("ready_ms", {})
        secs = ", ".join("-" if r.get(k) is None else f"{r[k] / 1000:.1f}"
                         for k in ("original", "second_run", "migrated"))
        n = t.get("lines", {}).get("original", "-")
        print(f"{os.path.basename(p):<22} {v:<13} {n:>5}  {secs}")
        if v != "equivalent":
            why = "; ".join(
                ([t["finding"]] if t.get("finding") else [])
                + maps.get(p, [])
                + progs[p].get("problems", [])
            )[:300]
            print(f"{'':<22} {why}")
    print(f"verdicts: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}")
    print(f"wall time: {wall:.0f} s for {count} tools, {wall / max(count, 1):.0f} s a tool")
    print(f"peak memory, bpf-migrate + qemu: {peak / 1024:.0f} MiB")
    return peak
