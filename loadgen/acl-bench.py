#!/usr/bin/env python3
"""ACL off vs on in the same run (README "ACL", Cost): two `ringmq standalone` (one shard,
pinned to core 0), one with aclEnable=true; `loadgen produce` on core 1 alternates between them.
Per run: msgs/s, broker CPU µs per message (utime+stime over the run / messages sent in warm-up
and measured time), loadgen CPU µs per message (rusage). Usage: BIN=target/release
loadgen/acl-bench.py [rounds]; WORK is removed and recreated."""
import json, os, resource, statistics, subprocess, sys, time
BIN = os.environ.get("BIN", "target/release")
B = os.environ.get("WORK", "/tmp/ringmq-acl-bench")
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 6
subprocess.run(["rm", "-rf", f"{B}/a", f"{B}/b"]); os.makedirs(f"{B}/a"); os.makedirs(f"{B}/b")
open(f"{B}/acl.yml", "w").write("accounts:\n  - accessKey: benchAK1\n    secretKey: benchSK1\n    defaultTopicPerm: PUB|SUB\n    defaultGroupPerm: PUB|SUB\n")
open(f"{B}/a/broker.properties", "w").write("brokerName=bench-off\nlistenPort=21911\nshardCount=1\nbrokerIP1=127.0.0.1\n")
open(f"{B}/b/broker.properties", "w").write(f"brokerName=bench-on\nlistenPort=31911\nshardCount=1\nbrokerIP1=127.0.0.1\naclEnable=true\naclPlainFile={B}/acl.yml\n")
procs = {}
for name, ns in (("a", 21876), ("b", 31876)):
    log = open(f"{B}/{name}/out.log", "w")
    procs[name] = subprocess.Popen(["taskset", "-c", "0", f"{BIN}/ringmq", "standalone", "-c", f"{B}/{name}/broker.properties",
                                    "--store", f"{B}/{name}/store", "--namesrv-port", str(ns)], stdout=log, stderr=subprocess.STDOUT)
try:
    for _ in range(100):
        if all("standalone:" in open(f"{B}/{n}/out.log").read() for n in procs): break
        time.sleep(0.2)
    tick = os.sysconf("SC_CLK_TCK")
    def cpu(pid):
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / tick
    results = {"off": [], "on": []}
    for r in range(ROUNDS):
        for mode, name, ns, extra in (("off", "a", 21876, []), ("on", "b", 31876, ["--access-key", "benchAK1", "--secret-key", "benchSK1"])):
            c0 = cpu(procs[name].pid); u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(["taskset", "-c", "1", f"{BIN}/loadgen", "produce", "-n", f"127.0.0.1:{ns}", "-t", "AclBench", "-s", "128",
                            "-w", "64", "--duration", "5", "--warmup", "1", "--cpus", "1", "-q", "--json", f"{B}/{mode}{r}.json"] + extra,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            c1 = cpu(procs[name].pid); u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            rep = json.load(open(f"{B}/{mode}{r}.json"))
            tps = rep["throughput_messages_per_second"]
            msgs = tps * 6  # warm-up + measured seconds at the measured rate
            lg = (u1.ru_utime + u1.ru_stime) - (u0.ru_utime + u0.ru_stime)
            row = (tps, (c1 - c0) / msgs * 1e6, lg / msgs * 1e6, rep.get("send_failures", rep.get("failed", 0)))
            results[mode].append(row)
            print(f"{mode} round {r}: {tps:,.0f} msgs/s, broker {row[1]:.2f} µs/msg, loadgen {row[2]:.2f} µs/msg", flush=True)
    for mode in ("off", "on"):
        rows = results[mode]
        print(f"{mode}: median {statistics.median(r[0] for r in rows):,.0f} msgs/s, broker {statistics.median(r[1] for r in rows):.2f} µs/msg, loadgen {statistics.median(r[2] for r in rows):.2f} µs/msg")
finally:
    for p in procs.values(): p.terminate()
    for p in procs.values(): p.wait()
