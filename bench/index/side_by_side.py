#!/usr/bin/env python3
"""Runs commands alternately and prints each one's median wall and CPU time
(user + system of its processes): side-by-side ratios on a shared machine.

  side_by_side.py ROUNDS 'LABEL=COMMAND' ['LABEL=COMMAND' ...]

A COMMAND may be 'PREP;;COMMAND': PREP runs untimed before each run (for
example removing the index a first scan writes).  Example, warm:

  side_by_side.py 5 'cidctl=rm -f /tmp/i.db*;;cidctl scan --quiet --index /tmp/i.db A B C &&
      cidctl dups --json --index /tmp/i.db' 'jdupes=jdupes -r -q A B C'
"""
import os
import statistics
import subprocess
import sys
import time


def main():
    if len(sys.argv) < 3 or "=" not in sys.argv[2]:
        sys.exit(__doc__)
    rounds = int(sys.argv[1])
    cmds = [a.split("=", 1) for a in sys.argv[2:]]
    res = {label: ([], []) for label, _ in cmds}
    print("load before:", open("/proc/loadavg").read().strip())
    for _ in range(rounds):
        for label, cmd in cmds:
            prep, _, timed = cmd.rpartition(";;")
            if prep:
                subprocess.run(prep, shell=True, check=True, stdout=subprocess.DEVNULL)
            t0, r0 = time.monotonic(), os.times()
            subprocess.run(timed, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            r1, t1 = os.times(), time.monotonic()
            res[label][0].append(t1 - t0)
            res[label][1].append(r1.children_user - r0.children_user + r1.children_system - r0.children_system)
    print("load after: ", open("/proc/loadavg").read().strip())
    for label, (wall, cpu) in res.items():
        print("%-10s wall med %.3f  cpu med %.3f   wall %s  cpu %s" % (
            label, statistics.median(wall), statistics.median(cpu),
            " ".join("%.2f" % x for x in wall), " ".join("%.2f" % x for x in cpu)))


if __name__ == "__main__":
    main()
