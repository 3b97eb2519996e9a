#!/usr/bin/env python3
"""Phase medians of the benchmark's lifecycle rows, per shim, from kernel events.

Reads `perf script -F tid,time,event,trace` output of a recording made with
scripts/lifecycle-phases.sh (scheduler exec/exit/fork events and a few system
call entries), finds every lifecycle both shims ran (`start` forked by
containerd, its daemon, the daemon's runtime create, start and delete, the
`delete` action) and prints the median of each phase for column A (the binary
named containerd-shim-runc-v2: the stock shim, or BASELINE_SHIM) and column B
(containerd-shim-example-v2). Times are in milliseconds.
"""
import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(r'\s*(\d+)\s+([\d.]+):\s+(?:sched|syscalls):(\w+):\s+(.*)')


def load(path):
    events = []
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if m:
                events.append((float(m.group(2)) * 1000, int(m.group(1)), m.group(3), m.group(4)))
    return events


def main(path):
    events = load(path)
    parent, image = {}, {}
    execs, group_exits, calls = [], {}, []
    for t, tid, kind, rest in events:
        if kind == 'sched_process_fork':
            m = re.search(r'pid=(\d+) child_comm=\S+ child_pid=(\d+)', rest)
            parent[int(m.group(2))] = int(m.group(1))
        elif kind == 'sched_process_exec':
            name = re.search(r'filename=(\S+)', rest).group(1)
            execs.append((t, tid, name))
            image[tid] = name
        elif kind == 'sched_process_exit' and 'group_dead=true' in rest:
            group_exits[int(re.search(r'pid=(\d+)', rest).group(1))] = t
        elif kind.startswith('sys_'):
            calls.append((t, tid, kind, rest))

    def process(tid):
        # A thread's process is the nearest ancestor (or itself) that executed a program.
        for _ in range(64):
            if tid in image or tid not in parent:
                return tid
            tid = parent[tid]
        return tid

    exited = {process(tid): t for tid, t in group_exits.items()}

    def column(name):
        if name.endswith('containerd-shim-runc-v2'):
            return 'A'
        if name.endswith('containerd-shim-example-v2'):
            return 'B'
        return None

    def by_containerd(pid):
        return image.get(process(parent.get(pid, 0)), '').endswith('containerd')

    def children(pid, after):
        return [e for e in execs if e[0] > after and process(parent.get(e[1], 0)) == pid]

    rows = defaultdict(lambda: defaultdict(list))
    for t, pid, name in execs:
        col = column(name)
        if col is None or not by_containerd(pid):
            continue
        daemons = [e for e in children(pid, t) if column(e[2]) == col]
        if not daemons:
            continue  # the delete action, or a start that found its group's daemon
        dt, dpid, _ = daemons[0]
        runc = [e for e in children(dpid, dt) if e[2].endswith(('/runc', '/crun'))]
        inits = [e for e in execs if e[0] > dt and e[2].endswith('/true')]
        deletes = [e for e in execs if len(runc) >= 3 and e[0] > runc[2][0] and column(e[2]) == col and by_containerd(e[1])]
        if len(runc) < 3 or not inits or not deletes:
            continue
        create, start, delete = runc[0], runc[1], runc[2]
        r = rows[col]
        r['start: exec -> exit'].append(exited.get(pid, 0) - t)
        r['start exec -> daemon exec'].append(dt - t)
        r['daemon exec -> runtime create exec'].append(create[0] - dt)
        r['runtime create'].append(exited.get(create[1], 0) - create[0])
        r['runtime create exit -> runtime start exec'].append(start[0] - exited.get(create[1], 0))
        r['runtime start'].append(exited.get(start[1], 0) - start[0])
        r['init exit -> runtime delete exec'].append(delete[0] - exited.get(inits[0][1], 0))
        r['runtime delete'].append(exited.get(delete[1], 0) - delete[0])
        r['runtime delete exit -> daemon exit'].append(exited.get(dpid, 0) - exited.get(delete[1], 0))
        r['daemon exit -> delete action exec'].append(deletes[0][0] - exited.get(dpid, 0))
        r['delete action: exec -> exit'].append(exited.get(deletes[0][1], 0) - deletes[0][0])
        r['start exec -> delete action exit'].append(exited.get(deletes[0][1], 0) - t)

        def first(kind, who, after, ok=lambda rest: True):
            for c in calls:
                if c[0] > after and c[2] == kind and who(process(c[1])) and ok(c[3]):
                    return c[0]
            return None
        sx = exited.get(pid, 0)
        dial = first('sys_enter_connect', lambda p: image.get(p, '').endswith('containerd'), sx)
        accept = first('sys_exit_accept4', lambda p: p == dpid, dt, lambda rest: not rest.strip().startswith('0xffff'))
        mount = first('sys_enter_mount', lambda p: p == dpid, dt)
        umount = first('sys_enter_umount', lambda p: p == dpid, exited.get(delete[1], 0))
        if None not in (dial, accept, mount, umount):
            r['  containerd dials -> daemon accepts'].append(accept - dial)
            r['  daemon exec -> daemon accepts'].append(accept - dt)
            r['  accept -> rootfs mount'].append(mount - accept)
            r['  rootfs mount -> runtime create exec'].append(create[0] - mount)
            r['  runtime delete exit -> rootfs unmount'].append(umount - exited.get(delete[1], 0))

    print('| phase (median, ms) | A | B | lifecycles A / B |')
    print('|---|---|---|---|')
    for key in rows['B']:
        a, b = rows['A'][key], rows['B'][key]
        med = lambda v: f'{statistics.median(v):.2f}' if v else '–'
        print(f'| {key} | {med(a)} | {med(b)} | {len(a)} / {len(b)} |')


if __name__ == '__main__':
    main(sys.argv[1])
