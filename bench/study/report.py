#!/usr/bin/env python3
"""bench/study's report: Table 5.1 from the guest's results.

Reads the results logs of bench/study/guest.sh (one per boot), takes the
median of every figure over the boots, and writes OUT.txt (the table, the
cross-checks, the targets and, where one is missed, the pages that were not
shared), OUT.json (every figure), OUT.svg (cid-analyze's chart of the
snapshots, from the first boot) and OUT.snap/ID.json (those snapshots).
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

CONFIGS = [("stock", "stock"), ("nm", "named merging"), ("ksm", "KSM"), ("nmksm", "NM + KSM")]
SCEN = {"ts": "terminal", "zi": "zero-install", "ct": "containers"}
PAGE_MIB = 4096 / 1048576


def parse(path):
    """One boot: ({id: {"res": {...}, "json": {...}, "unshared": [...], "why": {...}, "errors": [...]}},
    [(uptime, what), ...] from the PHASE lines)."""
    ids = {}
    phases = []

    def get(i):
        return ids.setdefault(i, {"res": {}, "json": None, "unshared": [], "why": {}, "errors": []})

    block = None
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if block is not None:
                if line == "END-JSON " + block[0]:
                    try:
                        get(block[0])["json"] = json.loads("\n".join(block[1]))
                    except ValueError as e:
                        get(block[0])["errors"].append("cid-analyze JSON unreadable: %s" % e)
                    block = None
                else:
                    block[1].append(line)
                continue
            w = line.split(" ", 3)
            if w[0] == "BEGIN-JSON" and len(w) == 2:
                block = (w[1], [])
            elif w[0] == "RESULT" and len(w) == 4:
                get(w[1])["res"][w[2]] = w[3]
            elif w[0] == "UNSHARED" and len(w) >= 3:
                get(w[1])["unshared"].append(line.split(" ", 2)[2])
            elif w[0] == "UNSHARED-WHY" and len(w) == 4:
                get(w[1])["why"][w[2]] = w[3]
            elif w[0] == "STUDY-ERROR" and len(w) >= 2:
                get(w[1])["errors"].append(line.split(" ", 2)[2] if len(w) > 2 else "")
            elif w[0] == "PHASE" and len(w) >= 3:
                try:
                    phases.append((float(w[1]), line.split(" ", 2)[2]))
                except ValueError:
                    pass
    return ids, phases


def one_user_from_groups(r):
    """Where a boot measured no user alone (make demo): user 1's processes in
    its zero-install stock snapshot with the most users, as cid-analyze
    --groups computed them (over those processes alone).  Returns (source id,
    entry) or None."""
    if any(r.get(i, {}).get("json") for i in ("ts-1-stock", "zi-1-stock")):
        return None
    cands = sorted((int(i.split("-")[1]), i) for i in r
                   if i.startswith("zi-") and i.endswith("-stock") and r[i]["json"])
    if not cands:
        return None
    src = cands[-1][1]
    for g in r[src]["json"].get("groups", []):
        if g.get("kind") == "cgroup" and g.get("name", "").rstrip("/").endswith("/u1") and "figures" in g:
            return src, {"res": {}, "json": {"label": "1 user (user 1 of %s)" % src, "figures": g["figures"]},
                         "unshared": [], "why": {}, "errors": []}
    return None


def figures(entry):
    """The numbers of one measurement: cid-analyze's figures, then the guest's."""
    out = {}
    j = entry.get("json")
    if j and "figures" in j:
        f = j["figures"]
        for k in ("no_sharing", "mmap_fork", "ksm_shared", "cbps_shared", "nm_oracle", "nm_achieved",
                  "nm_baseline", "nm_oracle_sharings", "anon_frames", "named_frames", "zero_frames",
                  "ksm_frames", "rss_pages", "uss_pages", "processes"):
            if k in f:
                out[k] = f[k]
        for t, b in f.get("by_type", {}).items():
            for k, v in b.items():
                out["%s_%s" % (t, k)] = v
        if "snapshot" in j:
            out["stopped_seconds"] = j["snapshot"].get("stopped_seconds")
    for k, v in entry["res"].items():
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


def explain(query):
    """cidctl query --json of a file whose pages were not shared, in a few words."""
    if not query:
        return ""
    try:
        f = json.loads(query[query.index("{"):])["files"][0]
    except (ValueError, KeyError, IndexError):
        return "(query: %s)" % query[:120]
    if "error" in f:
        return "(query failed: %s)" % f["error"]
    if not f.get("tagged"):
        return "(not tagged)"
    return "(tagged; content_pages %s, content_users %s, tagged_inodes %s)" % (
        f.get("content_pages"), f.get("content_users"), f.get("tagged_inodes"))


def median_figures(runs, i):
    vals = {}
    for r in runs:
        if i in r:
            for k, v in figures(r[i]).items():
                if v is not None:
                    vals.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in vals.items()}, max((len(v) for v in vals.values()), default=0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--analyze", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", default="study")
    ap.add_argument("--series", default="")
    ap.add_argument("--tree", default="")
    ap.add_argument("--accel", default="")
    ap.add_argument("results", nargs="+")
    a = ap.parse_args()

    parsed = [parse(p) for p in a.results]
    runs = [r for r, _ in parsed]
    derived = None
    for r in runs:
        one = one_user_from_groups(r)
        if one:
            derived = one[0]
            r["zi-1-stock"] = one[1]
    ids = sorted({i for r in runs for i in r if i not in ("setup", "tag")})
    med = {}
    nruns = {}
    for i in ids:
        med[i], nruns[i] = median_figures(runs, i)
    setup = runs[0].get("setup", {"res": {}})["res"]
    tag = runs[0].get("tag", {"res": {}})["res"]
    measured = [i for i in ids if "mmap_fork" in med[i]]
    users = max([int(i.split("-")[1]) for i in measured] or [1])
    scen = [s for s in ("ts", "zi", "ct") if any(i.startswith(s + "-") for i in measured)]

    def fig(sc, n, conf, key):
        cands = [f"{sc}-{n}-{conf}"]
        if n == 1:  # one user of one tree: terminal server and zero-install are the same
            cands += [f"ts-1-{conf}", f"zi-1-{conf}"]
        for c in cands:
            if c in med and key in med[c]:
                return med[c][key]
        return None

    base_id = "ts-1-stock" if "ts-1-stock" in measured else "zi-1-stock"
    base = med.get(base_id, {}).get("mmap_fork")
    if not base:
        sys.exit("study report: no one-user stock measurement (%s) to relate to; see the results logs" % base_id)
    columns = [("1 user", "ts" if "ts" in scen else scen[0], 1)]
    for n in range(2, users + 1):
        for s in scen:
            columns.append((f"{n} {SCEN[s]}", s, n))
    if a.mode == "demo":
        columns = [("1 user", "zi", 1), (f"{users} users zero-install", "zi", users)]

    def rel(v):
        return "-" if v is None else "%.2f" % (v / base)

    lines = []
    p = lines.append
    title = "bench/study: Table 5.1 in real frames" if a.mode == "study" else "make demo: zero-install, the short form of bench/study"
    p("# " + title)
    p("date:    " + datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    p("kernel:  %s (%s)" % (setup.get("kernel", "?"), a.series))
    p("guest:   %s, %s vCPUs, %d MiB; the trees on ext4 (virtio-blk), read-only" % (
        a.accel, setup.get("cpus", "?"), int(float(setup.get("mem_total_kB", 0))) // 1024))
    p("tree:    Debian 12: %s" % a.tree)
    if setup.get("work") == "small":
        p("users:   python3 (31 stdlib modules, 2000 records, their JSON, sqlite, 1 MiB of bytes), perl (core")
        p("         modules, a hash of 2000 keys), a bash loop, coreutils sleep, redis-server (unix socket),")
        p("         nginx (master + worker), each chrooted into its user's own copy of the tree and kept alive;")
        p("         measured once every process said it was ready")
    else:
        p("users:   python3 (about 100 stdlib modules, a heap of records, JSON, sqlite), perl (core modules,")
        p("         a hash), a bash loop, coreutils sleep, redis-server (unix socket), nginx (master + worker),")
        p("         each chrooted into its user's tree; measured once every process said it was ready")
    chained = [i for i in ids if med[i].get("ksm_prctl_no_scan")]
    if chained:
        p("         KSM: the same processes as stock (started with PR_SET_MEMORY_MERGE, ksmd off while stock")
        p("         was measured), measured again after ksmd's full scans")
    if derived:
        p("1 user:  user 1's processes in the %s snapshot (cid-analyze --groups: its figures over them" % derived)
        p("         alone), not a boot of its own")
    p("runs:    %d boot(s); every figure is the median over the boots that measured it" % len(runs))
    p("")
    p("Frames kept, relative to 1 user stock mmap/fork (%d pages, %.1f MiB), cid-analyze over all the" % (
        base, base * PAGE_MIB))
    p("users' processes.  'measured' rows are the distinct frames the processes map in that")
    p("configuration (mmap/fork); the others are cid-analyze's oracles on the stock snapshot.")
    w = max(14, max(len(c[0]) for c in columns) + 1)
    p("%-36s" % "" + "".join("%*s" % (w, c[0]) for c in columns))

    def row(label, conf, key, note=None):
        vals = []
        for _, s, n in columns:
            if s == "ts" and conf in ("nm", "nmksm") and n > 1:
                vals.append("(stock)" if conf == "nm" else "(KSM)")
                continue
            vals.append(rel(fig(s, n, conf, key)))
        if any(v not in ("-",) for v in vals):
            p("%-36s" % label + "".join("%*s" % (w, v) for v in vals))

    row("no sharing", "stock", "no_sharing")
    for conf, name in CONFIGS:
        row(f"mmap/fork measured: {name}", conf, "mmap_fork")
    row("KSM hint all (oracle)", "stock", "ksm_shared")
    row("full CBPS (oracle)", "stock", "cbps_shared")
    row("named merging oracle", "stock", "nm_oracle")
    if any(s == "ts" for _, s, _ in columns):
        p("(terminal server: one tree, nothing for named merging to tag, so its rows are stock's and KSM's)")
    p("")
    p("Named pages (page-cache frames the processes map), in pages:")
    p("%-36s" % "" + "".join("%*s" % (w, c[0]) for c in columns))

    def absrow(label, conf, key, scale=1.0, fmt="%d"):
        vals = []
        for _, s, n in columns:
            v = fig(s, n, conf, key)
            vals.append("-" if v is None else fmt % (v * scale))
        if any(v != "-" for v in vals):
            p("%-36s" % label + "".join("%*s" % (w, v) for v in vals))

    for conf, name in CONFIGS:
        absrow(f"named frames: {name}", conf, "named_frames")
    absrow("named merging oracle (named)", "stock", "named_nm_oracle")
    absrow("NM achieved (frames shared now)", "nm", "nm_achieved")
    absrow("NM oracle sharings", "nm", "nm_oracle_sharings")
    p("")
    p("Cross-check, MiB (growth of /proc/meminfo Cached and AnonPages from a dropped cache to the")
    p("measurement, and the users' memory cgroup; Cached also holds what was read() and not mapped):")
    p("%-36s" % "" + "".join("%*s" % (w, c[0]) for c in columns))
    for conf, name in CONFIGS:
        absrow(f"Cached: {name}", conf, "cached_kB", 1 / 1024, "%.1f")
    for conf, name in CONFIGS:
        absrow(f"AnonPages: {name}", conf, "anon_kB", 1 / 1024, "%.1f")
    for conf, name in CONFIGS:
        absrow(f"memcg memory.current: {name}", conf, "memcg_bytes", 1 / 1048576, "%.1f")
    for conf, name in CONFIGS:
        absrow(f"cid-analyze frames (MiB): {name}", conf, "mmap_fork", PAGE_MIB, "%.1f")
    p("")
    p("Time in the guest (s): users ready, ksmd's scans, cid-analyze (median):")
    for conf, name in CONFIGS:
        absrow(f"ready: {name}", conf, "ready_seconds", 1, "%.0f")
    for conf, name in CONFIGS[2:]:
        absrow(f"ksmd {os.environ.get('CID_STUDY_KSM_SCANS', '2')} full scans: {name}", conf, "ksm_seconds", 1, "%.0f")
    absrow("cid-analyze: stock", "stock", "analyze_seconds", 1, "%.1f")
    if tag and setup.get("tag_mode") == "mapped":
        p("tagging: the %s files the users map, in each of the %s copies (%.1f MiB; cidctl tag, the kernel" % (
            tag.get("files_per_copy", "?"), setup.get("copies", "?"), float(tag.get("bytes", 0)) / 1048576))
        p("         hashing every file): %ss beside ksmd and cid-analyze, then %ss more waited for; %s tagged, %s" % (
            tag.get("tag_seconds", "?"), tag.get("tag_wait_seconds", "?"), tag.get("tagged_files", "?"),
            tag.get("failed_files", "?")) + " failed; tagged inodes %s, contents %s" % (
            tag.get("tagged_inodes", "?"), tag.get("contents", "?")))
    elif tag:
        p("tagging (%s copies, in the guest): cidctl scan %ss, cidctl tag --dups %ss; tagged inodes %s, contents %s" % (
            setup.get("copies", "?"), tag.get("scan_seconds", "?"), tag.get("tag_seconds", "?"),
            tag.get("tagged_inodes", "?"), tag.get("contents", "?")))
    if any(med[i].get("tagging_meanwhile") for i in ids):
        p("(Cached and AnonPages are left out where tagging ran meanwhile: its reads fill the page cache)")
    ph = parsed[0][1]
    if ph:
        p("Guest timeline, run 1 (seconds since the guest booted):")
        for t, what in ph:
            p("  %7.1f  %s" % (t, what))

    # Targets.
    N = users
    targets = []

    def target(name, value, limit, ok, detail, missed_id=None):
        targets.append({"target": name, "value": value, "limit": limit, "met": ok, "detail": detail,
                        "id": missed_id})

    zi_nm = fig("zi", N, "nm", "named_frames")
    ts_st = fig("ts", N, "stock", "named_frames")
    if zi_nm is not None and ts_st:
        r = zi_nm / ts_st
        target(f"zero-install with named merging within 5% of terminal server, N = {N}, named pages",
               r, 1.05, r <= 1.05, f"{zi_nm:.0f} against {ts_st:.0f} named frames ({r:.3f}x)", f"zi-{N}-nm")
    ach = fig("zi", N, "nm", "nm_achieved")
    ors = fig("zi", N, "nm", "nm_oracle_sharings")
    if ach is not None and ors:
        r = ach / ors
        target(f"named merging achieves >= 95% of the named-page oracle, zero-install N = {N}",
               r, 0.95, r >= 0.95, f"{ach:.0f} of {ors:.0f} frames the oracle saves ({100 * r:.1f}%)", f"zi-{N}-nm")
    both = fig("zi", N, "nmksm", "mmap_fork")
    cbps = fig("zi", N, "nmksm", "cbps_shared")
    if both is not None and cbps:
        r = both / cbps
        gap = []
        for t in ("anonymous", "named", "mixed"):
            m = fig("zi", N, "nmksm", f"{t}_mmap_fork")
            c = fig("zi", N, "nmksm", f"{t}_cbps_shared")
            if m is not None and c is not None:
                gap.append(f"{t} {m:.0f} against {c:.0f}")
        target(f"named merging + KSM within 10% of full CBPS, zero-install N = {N}",
               r, 1.10, r <= 1.10, f"{both:.0f} frames against {cbps:.0f} ({r:.3f}x; by content type: {', '.join(gap)})",
               f"zi-{N}-nmksm")
    p("")
    p("Targets:")
    if not targets:
        p("  (none measurable in this run)")
    for t in targets:
        p("  %s  %s: %s" % ("MET   " if t["met"] else "MISSED", t["target"], t["detail"]))
    # Where a target is missed (and for the named-merging runs anyway): the
    # file pages different users still hold in frames of their own.
    shown = set()
    for t in targets:
        i = t["id"]
        if not i or i in shown:
            continue
        shown.add(i)
        un = runs[0].get(i, {}).get("unshared", [])
        if not un:
            continue
        total = [u for u in un if u.startswith("total ")]
        p("")
        p(f"File pages users of {i} still keep in frames of their own (study-unshared, run 1): "
          + (total[0] if total else ""))
        for u in [u for u in un if u.startswith("file ")][:15]:
            parts = u.split()
            why = explain(runs[0][i]["why"].get(parts[1], ""))
            p("  " + u + ("  " + why if why else ""))
    st, km, nm, orc = (fig("zi", N, c, k) for c, k in
                       (("stock", "mmap_fork"), ("ksm", "mmap_fork"), ("nm", "mmap_fork"), ("stock", "nm_oracle")))
    if st and nm:
        p("")
        p(f"What it means: {N} users running the same programs, each from their own copy of Debian, kept "
          f"{st * PAGE_MIB:.0f} MiB of frames ({st / base:.2f}x one user) on the stock kernel"
          + (f", {km * PAGE_MIB:.0f} MiB ({km / base:.2f}x) with KSM merging their anonymous memory" if km else "")
          + f", and {nm * PAGE_MIB:.0f} MiB ({nm / base:.2f}x) with named merging, where identical files share "
          f"one set of page-cache frames"
          + (f" (the named-merging oracle, every identical file page once: {orc / base:.2f}x)." if orc else "."))
    for i in ids:
        for r_i, r in enumerate(runs):
            for e in r.get(i, {}).get("errors", []):
                p(f"error (run {r_i + 1}) {i}: {e}")

    # Chart from the first boot's snapshots.
    snapdir = a.out + ".snap"
    os.makedirs(snapdir, exist_ok=True)
    order = []
    for _, s, n in columns:
        confs = ["stock"] if n == 1 or s == "ts" else ["stock", "nm", "ksm", "nmksm"]
        for conf in confs:
            cands = [f"ts-1-{conf}", f"zi-1-{conf}"] if n == 1 else [f"{s}-{n}-{conf}"]
            i = next((c for c in cands if c in runs[0] and runs[0][c]["json"]), None)
            if i and i not in order:
                order.append(i)
    paths = []
    for i in order:
        j = dict(runs[0][i]["json"])
        sc, n, conf = i.split("-")
        j["label"] = f"{n} {SCEN[sc]} {dict(CONFIGS)[conf]}" if n != "1" else f"1 user {dict(CONFIGS)[conf]}"
        path = os.path.join(snapdir, i + ".json")
        with open(path, "w") as f:
            json.dump(j, f)
        paths.append(path)
    chart = None
    if paths:
        c = subprocess.run([a.analyze, "chart", a.out + ".svg"] + paths, capture_output=True, text=True)
        if c.returncode == 0:
            chart = a.out + ".svg"
        else:
            p("chart: cid-analyze chart failed: " + c.stderr.strip())
    p("")
    p("chart: %s" % (chart or "none"))

    with open(a.out + ".txt", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(a.out + ".json", "w") as f:
        json.dump({"mode": a.mode, "kernel": setup.get("kernel"), "series": a.series, "tree": a.tree,
                   "accel": a.accel, "runs": len(runs), "base": {"id": base_id, "mmap_fork_pages": base},
                   "setup": setup, "tag": tag, "measurements": {i: {"runs": nruns[i], "median": med[i]} for i in ids},
                   "targets": targets, "chart": chart,
                   "unshared": {i: runs[0][i]["unshared"] for i in ids if runs[0].get(i, {}).get("unshared")}},
                  f, indent=1, sort_keys=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
