#!/usr/bin/env bash
# The domain watch at scale: NAMES names (default 10,000) with ADDRS
# addresses each (default 1), served by dnsmasq on a loopback port; one
# `watch --once` round over all of them, located from the real data in
# data/ (file mode), timed, with the process's peak resident memory.
#
#   scripts/bench-watch.sh                 # 10,000 names, 1 address each
#   NAMES=1000 ADDRS=4 scripts/bench-watch.sh
#   ROUNDS=3 scripts/bench-watch.sh        # the first round, then unchanged rounds
#   LOCATE=server scripts/bench-watch.sh   # located by a server (serve --data
#                                          # data) over Thrift: the watch's own memory
set -euo pipefail
. "$(dirname "$0")/lib.sh"

command -v dnsmasq >/dev/null || { apt-get update -qq && apt-get install -y -qq dnsmasq-base >/dev/null; }
xm_build
xm_need_data
names=${NAMES:-10000}
addrs=${ADDRS:-1}
rounds=${ROUNDS:-1}
port=$(xm_free_port)

# Addresses drawn from the real tables' neighbourhoods: China and abroad.
python3 - "$names" "$addrs" "$XM_WORK" "$port" <<'PY'
import random, sys
names, addrs, work, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
random.seed(30)
prefixes = [(36,), (58,), (59,), (60,), (61,), (101,), (106,), (110,), (111,), (112,), (113,), (114,),
            (115,), (116,), (117,), (118,), (119,), (120,), (121,), (122,), (123,), (124,), (125,),
            (180,), (182,), (183,), (202,), (210,), (211,), (218,), (219,), (220,), (221,), (222,),
            (8,), (13,), (23,), (31,), (52,), (64,), (77,), (89,), (104,), (151,), (172,), (185,), (203,)]
with open(f"{work}/hosts", "w") as hosts, open(f"{work}/watch.toml", "w") as config:
    config.write(f'[resolver]\nnameservers = ["127.0.0.1:{port}"]\nconcurrency = 256\n\n')
    for i in range(names):
        name = f"name{i}.watch.bench"
        for _ in range(addrs):
            first = random.choice(prefixes)[0]
            ip = f"{first}.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
            hosts.write(f"{ip} {name}\n")
        config.write(f'[[domains]]\nname = "{name}"\n')
PY

dnsmasq --keep-in-foreground --no-resolv --no-hosts --user=root --bind-interfaces \
  --listen-address=127.0.0.1 --port="$port" --addn-hosts="$XM_WORK/hosts" \
  --local=/watch.bench/ --cache-size=10000 --log-facility=/dev/null &
xm_pids+=($!)
sleep 1

locate=(--data data)
if [ "${LOCATE:-files}" = server ]; then
  thrift=$(xm_free_port)
  xm_serve serve --data data --addr "127.0.0.1:$thrift" --http-addr "127.0.0.1:$(xm_free_port)"
  locate=(--addr "127.0.0.1:$thrift")
fi

echo "names=$names addresses/name=$addrs dnsmasq on 127.0.0.1:$port, located with ${locate[*]}"
for round in $(seq 1 "$rounds"); do
  set +e
  ${WRAP:-} /usr/bin/time -f "round $round: %e s wall, %U s user, %S s system, peak RSS %M KB" \
    "$bin" watch --once --config "$XM_WORK/watch.toml" --state "$XM_WORK/state.json" "${locate[@]}" >"$XM_WORK/out" 2>"$XM_WORK/err"
  code=$?
  set -e
  grep -h "^round \|round done" "$XM_WORK/err" | sed 's/.*INFO xm_ip_service::watch::runner: //' || true
  echo "exit $code, $(grep -c '^name' "$XM_WORK/out" || true) changes printed, state file $(du -k "$XM_WORK/state.json" | cut -f1) KB"
  grep -v "^round \|INFO\|status 3" "$XM_WORK/err" | head -5 || true
done
