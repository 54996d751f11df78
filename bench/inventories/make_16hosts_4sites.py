#!/usr/bin/env python3
"""Writes 16hosts-4sites.json: the inventory of a cluster not at hand, for ranklm plan --explain
on paper (docs/PERFORMANCE.md, "Placement on paper: a 70B model over 16 hosts in 4 sites").

16 dual-socket hosts (one rank per socket: 32 cores, 128 GiB, 80 GB/s read, 1000 G multiply-adds/s),
4 per site; 25 GbE inside a site (20 us, 2.5 GB/s), shared memory inside a host (1 us, 20 GB/s);
the sites in a line A - B - C - D with 2, 4 and 3 ms between neighbours (10 Gb/s links). The
ranks are listed host by host but the hosts site by site interleaved (a0 b0 c0 d0 a1 ...), as a
hostfile written without the network in mind would give.

    python3 bench/inventories/make_16hosts_4sites.py > bench/inventories/16hosts-4sites.json
"""
import itertools
import json

sites = "abcd"
hosts = [f"{s}{i}" for i in range(4) for s in sites]  # a0 b0 c0 d0 a1 ...
ranks = []
for h in hosts:
    for _ in range(2):
        ranks.append({"rank": len(ranks), "host": h, "cores": 32, "numa_nodes": 1, "memory_bytes": 128 << 30,
                      "gpus": 0, "speed_gbps": 80.0, "compute_gmacs": 1000.0})
wan_ms = {("a", "b"): 2, ("b", "c"): 4, ("c", "d"): 3, ("a", "c"): 6, ("b", "d"): 7, ("a", "d"): 9}
links = []
for x, y in itertools.combinations_with_replacement(sorted(hosts), 2):
    if x == y:
        lat, bw = 1.0, 20.0
    elif x[0] == y[0]:
        lat, bw = 20.0, 2.5
    else:
        lat, bw = wan_ms[(x[0], y[0])] * 1000.0, 1.25
    links.append({"hosts": [x, y], "latency_us": lat, "bandwidth_gbps": bw})
print(json.dumps({"format": "ranklm-inventory", "version": 1, "ranks": ranks, "links": links}, indent=1))
