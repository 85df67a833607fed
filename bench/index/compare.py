#!/usr/bin/env python3
"""Times cidctl and rmlint/jdupes/rdfind/fdupes on the same trees, cold and
warm, and checks their duplicate groups against cidctl's.  Run by run.sh."""
import argparse
import json
import statistics
import os
import stat
import subprocess
import sys
import time


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def groups_blank_separated(text):
    groups, cur = [], []
    for line in text.split(b"\n"):
        if line.strip():
            cur.append(line)
        elif cur:
            groups.append(cur)
            cur = []
    if cur:
        groups.append(cur)
    return groups


def tool_cmds(name, dirs, work):
    out = os.path.join(work, name + ".out")
    if name == "fdupes":
        return ["fdupes", "-r", "-q", "-n"] + dirs, out, "stdout"
    if name == "jdupes":
        return ["jdupes", "-r", "-q"] + dirs, out, "stdout"
    if name == "rdfind":
        return ["rdfind", "-outputname", out, "-makeresultsfile", "true"] + dirs, out, "file"
    if name == "rmlint":
        return ["rmlint", "-T", "df", "-r", "-F", "-o", "json:" + out] + dirs, out, "file"
    raise ValueError(name)


def parse(name, raw):
    if name in ("fdupes", "jdupes"):
        return [[os.fsdecode(p) for p in g] for g in groups_blank_separated(raw)]
    if name == "rdfind":
        by_id = {}
        for line in raw.split(b"\n"):
            if not line or line.startswith(b"#"):
                continue
            f = line.split(b" ", 7)
            by_id.setdefault(abs(int(f[1])), []).append(os.fsdecode(f[7]))
        return list(by_id.values())
    if name == "rmlint":
        by_sum = {}
        for e in json.loads(raw.decode("utf-8", "surrogateescape")):
            key = e.get("checksum") or e.get("digest")
            if e.get("type") == "duplicate_file" and key:
                by_sum.setdefault(key, []).append(e["path"])
        return list(by_sum.values())
    raise ValueError(name)


def as_inode_groups(groups):
    """Each group as the set of distinct inodes of regular, non-empty files;
    groups of one inode (hardlinks only) are dropped."""
    out = set()
    for g in groups:
        inodes = set()
        for p in g:
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size > 0:
                inodes.add((st.st_dev, st.st_ino))
        if len(inodes) > 1:
            out.add(frozenset(inodes))
    return out


def run(cmd, timeout, stdout_file=None):
    t0 = time.monotonic()
    r0 = os.times()
    with open(stdout_file or os.devnull, "wb") as so:
        try:
            p = subprocess.run(cmd, stdout=so, stderr=subprocess.DEVNULL, timeout=timeout)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    r1 = os.times()
    cpu = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
    return time.monotonic() - t0, cpu, rc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cidctl", required=True)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tree", action="append", required=True)
    ap.add_argument("--source", default="")
    ap.add_argument("--rounds", type=int, default=3, help="warm runs of each tool, alternating (median)")
    a = ap.parse_args()
    load_before = open("/proc/loadavg").read().strip()
    tools = ["cidctl", "rmlint", "jdupes", "rdfind", "fdupes"]
    results = []
    lines = []
    for spec in a.tree:
        tname, dirs = spec.split("=", 1)
        dirs = dirs.split(":")
        nfiles = sum(len(fs) for d in dirs for _, _, fs in os.walk(d))
        nbytes = 0
        for d in dirs:
            for root, _, fs in os.walk(d):
                for f in fs:
                    try:
                        st = os.lstat(os.path.join(root, f))
                        if stat.S_ISREG(st.st_mode):
                            nbytes += st.st_size
                    except OSError:
                        pass
        lines.append("tree %s: %s; %d names, %.2f GB of regular files" % (tname, " ".join(dirs), nfiles, nbytes / 1e9))
        ref = None
        # cold: one run each after drop_caches; warm: --rounds runs each,
        # alternating, the median kept; again: cidctl's scan of the same
        # tree into the index a warm run left (what a host's next run
        # costs), against the others' warm median (they keep nothing).
        rounds = [("cold", t) for t in tools] + [("warm", t) for _ in range(a.rounds) for t in tools]
        rounds.append(("again", "cidctl"))
        runs = {}
        for mode, tool in rounds:
                if tool == "cidctl":
                    db = os.path.join(a.work, "cid-%s-%s.db" % (tname, "warm" if mode == "again" else mode))
                    for suffix in ("", "-wal", "-shm") if mode != "again" else ():
                        if os.path.exists(db + suffix):
                            os.unlink(db + suffix)
                    if mode == "cold":
                        drop_caches()
                    t_scan, c_scan, rc1 = run([a.cidctl, "scan", "--quiet", "--index", db] + dirs, a.timeout)
                    dups = os.path.join(a.work, "cid-%s-%s.json" % (tname, mode))
                    t_dups, c_dups, rc2 = run([a.cidctl, "dups", "--json", "--index", db], a.timeout, dups)
                    wall, cpu, rc = t_scan + t_dups, c_scan + c_dups, rc1 if rc1 not in (0, 3) else rc2
                    groups = None
                    if rc == 0:
                        j = json.load(open(dups, "rb"))
                        groups = as_inode_groups([[p for i in g["inodes"] for p in i["paths"]] for g in j["groups"]])
                    if groups is None:
                        check = "no output"
                    elif mode == "again":
                        check = "groups equal a fresh index's (%d)" % len(ref) if groups == ref else \
                            "DIFFER from a fresh index's: %d groups" % len(groups)
                    else:
                        ref = groups
                        check = "reference"
                else:
                    cmd, out, kind = tool_cmds(tool, dirs, a.work)
                    if os.path.exists(out):
                        os.unlink(out)
                    if mode == "cold":
                        drop_caches()
                    wall, cpu, rc = run(cmd, a.timeout, out if kind == "stdout" else None)
                    check = "not checked"
                    if rc != "timeout" and os.path.exists(out):
                        groups = as_inode_groups(parse(tool, open(out, "rb").read()))
                        if ref is None:
                            check = "no reference"
                        elif groups == ref:
                            check = "groups equal cidctl's (%d)" % len(ref)
                        else:
                            check = "DIFFER: %d groups, %d only theirs, %d only cidctl's" % (
                                len(groups), len(groups - ref), len(ref - groups))
                runs.setdefault((mode, tool), []).append((wall, cpu, rc, check))
                print("  %-5s %-7s %8.2f s wall %8.2f s CPU  exit %-7s %s" % (mode, tool, wall, cpu, rc, check), flush=True)
        for (mode, tool), rs in runs.items():
            walls = sorted(r[0] for r in rs)
            med = statistics.median(walls)
            cpu = statistics.median(r[1] for r in rs)
            rc = next((r[2] for r in rs if r[2] != 0), 0)
            check = next((r[3] for r in rs if r[3].startswith(("DIFFER", "no "))), rs[0][3])
            results.append({"tree": tname, "mode": mode, "tool": tool, "wall_s": round(med, 3), "cpu_s": round(cpu, 3),
                            "exit": rc, "check": check, "runs_wall_s": [round(w, 3) for w in walls]})
            many = "  (median of %s)" % " ".join("%.2f" % w for w in walls) if len(rs) > 1 else ""
            lines.append("  %-5s %-7s %8.2f s wall %8.2f s CPU  exit %-7s %s%s" % (mode, tool, med, cpu, rc, check, many))
        for mode in ("cold", "warm", "again"):
            rows = [r for r in results if r["tree"] == tname and r["mode"] == mode]
            mine = [r for r in rows if r["tool"] == "cidctl"][0]["wall_s"]
            peers_mode = "warm" if mode == "again" else mode
            others = [r for r in results if r["tree"] == tname and r["mode"] == peers_mode and r["tool"] != "cidctl"
                      and r["exit"] != "timeout"]
            if others:
                best = min(others, key=lambda r: r["wall_s"])
                lines.append("  %s %s: cidctl %.2f s; fastest other %s %.2f s; cidctl is %.2fx its speed%s" % (
                    tname, mode, mine, best["tool"], best["wall_s"], best["wall_s"] / mine if mine else 0,
                    "" if mine < best["wall_s"] else "  (NOT faster)"))
    head = ["bench/index: cidctl (scan into a fresh index + dups --json) against rmlint, jdupes, rdfind, fdupes",
            "date %s, %d cores, load average before: %s, after: %s" % (
                time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count(), load_before,
                open("/proc/loadavg").read().strip()),
            "versions: " + "; ".join(
                subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}", t], capture_output=True,
                               text=True).stdout for t in ("rmlint", "jdupes", "rdfind", "fdupes")),
            "cold: page cache dropped before each run (echo 3 > /proc/sys/vm/drop_caches); warm: right after the cold runs,",
            "  %d rounds of every tool alternating, medians; again: cidctl scan of the same trees into the index its" % a.rounds,
            "  last warm run left (nothing changed) + dups, against the others' warm medians (they keep no state)",
            "commands: cidctl scan --quiet --index NEW DIRS + cidctl dups --json; rmlint -T df -r -F -o json:F DIRS;",
            "  jdupes -r -q DIRS; rdfind -makeresultsfile true DIRS; fdupes -r -q -n DIRS",
            "check: each tool's groups as sets of inodes (regular files >= 1 byte, groups of 2+ inodes) against cidctl's"]
    text = "\n".join(head + lines) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(results, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
