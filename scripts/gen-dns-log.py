#!/usr/bin/env python3
"""Writes N lines shaped like a BIND query log (print-category yes) to
stdout, the client address (field 6, with its #port) drawn at random:
85% IPv4 uniformly over the public space (the qqwry data covers all of it), 10% IPv6 in
Chinese carriers' 240e::/20 and others' 2001:4860::/32, 5% garbage.
Usage: gen-dns-log.py N [SEED]"""
import random
import sys

n = int(sys.argv[1])
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
names = ["example.com", "www.qq.com", "api.weixin.qq.com", "www.baidu.com", "cdn.jsdelivr.net"]
out = sys.stdout
for i in range(n):
    r = rng.random()
    if r < 0.85:
        ip = "%d.%d.%d.%d" % (rng.randint(1, 223), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))
        client = "%s#%d" % (ip, rng.randint(1024, 65535))
    elif r < 0.95:
        prefix = rng.choice(["240e:%x" % rng.randint(0, 0xfff), "2001:4860"])
        client = "%s::%x#%d" % (prefix, rng.randint(1, 0xffff), rng.randint(1024, 65535))
    else:
        client = rng.choice(["-", "localhost#53", "999.1.1.1#53", "1.2.3#53"])
    name = rng.choice(names)
    out.write(
        "04-Dec-2026 04:%02d:%02d.%03d queries: client @0x7f3a5c%03x %s (%s): query: %s IN A +E(0) (10.0.0.53)\n"
        % (i // 60000 % 60, i // 1000 % 60, i % 1000, i % 4096, client, name, name)
    )
