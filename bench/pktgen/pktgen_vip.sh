#!/bin/sh
# Direct-return traffic towards a VIP with the kernel's pktgen, from a traffic host (not the
# load balancer): UDP to VIP:PORT, addressed to the balancer's MAC as a router would send
# it, from a range of source addresses and ports so that many flows reach the balancer
# and its NIC's RSS spreads them over queues. One pktgen thread per CPU listed, each on its
# own TX queue. See README.md in this directory.
set -eu

usage() {
    cat <<USAGE
usage: $0 -i DEV -d VIP -m LB_MAC [options]
  -i DEV        interface that reaches the balancer
  -d VIP        destination address (the VIP; a UDP VIP, pktgen sends UDP only)
  -m LB_MAC     the balancer's MAC on that link (ip neigh show VIP on the router)
  -p PORT       destination port (default 80)
  -c CPUS       CPUs to run pktgen threads on, e.g. "0 1 2 3" (default: 0)
  -s SIZE       frame size without FCS (default 60: the smallest, the hardest case)
  -n COUNT      frames per thread, 0 = until Ctrl-C (default 10000000)
  -S SRC_MIN    first source address (default 198.18.0.1, benchmarking range, RFC 2544)
  -E SRC_MAX    last source address (default 198.18.0.255)
  -P SPORTS     source ports MIN-MAX (default 1024-65535)
  -b BURST      send each built frame BURST times in one driver call (default 1: pktgen's
                burst repeats the same frame, so like -k it is faster but repeats each flow)
  -r RATE       per-thread rate limit in pps (default 0: as fast as possible)
  -k CLONE      send each built frame CLONE+1 times (default 0: a new flow every frame;
                more is faster but repeats each flow)
USAGE
    exit 2
}

DEV= VIP= MAC= PORT=80 CPUS=0 SIZE=60 COUNT=10000000
SRC_MIN=198.18.0.1 SRC_MAX=198.18.0.255 SPORTS=1024-65535 BURST=1 RATE=0 CLONE=0
while getopts i:d:m:p:c:s:n:S:E:P:b:r:k:h opt; do
    case $opt in
    i) DEV=$OPTARG ;; d) VIP=$OPTARG ;; m) MAC=$OPTARG ;; p) PORT=$OPTARG ;;
    c) CPUS=$OPTARG ;; s) SIZE=$OPTARG ;; n) COUNT=$OPTARG ;; S) SRC_MIN=$OPTARG ;;
    E) SRC_MAX=$OPTARG ;; P) SPORTS=$OPTARG ;; b) BURST=$OPTARG ;; r) RATE=$OPTARG ;;
    k) CLONE=$OPTARG ;; *) usage ;;
    esac
done
[ -n "$DEV" ] && [ -n "$VIP" ] && [ -n "$MAC" ] || usage
[ "$(id -u)" = 0 ] || { echo "$0: run as root (pktgen is configured through /proc)" >&2; exit 1; }
SPORT_MIN=${SPORTS%-*} SPORT_MAX=${SPORTS#*-}

modprobe pktgen 2>/dev/null || true
[ -w /proc/net/pktgen/pgctrl ] || {
    echo "$0: /proc/net/pktgen missing: this kernel has no pktgen (CONFIG_NET_PKTGEN)" >&2
    exit 1
}

# Writes a pktgen command and fails loudly if pktgen refused it (it says so in the file).
pg() {
    file=$1; shift
    echo "$*" > "$file"
    if ! grep -q "^Result: OK" "$file"; then
        echo "$0: pktgen refused '$*' in $file: $(grep '^Result' "$file")" >&2
        exit 1
    fi
}

stop() { echo stop > /proc/net/pktgen/pgctrl 2>/dev/null || true; }
trap stop INT TERM

for cpu in $CPUS; do
    pg /proc/net/pktgen/kpktgend_"$cpu" rem_device_all
done
queue=0
for cpu in $CPUS; do
    d=/proc/net/pktgen/$DEV@$cpu
    pg /proc/net/pktgen/kpktgend_"$cpu" "add_device $DEV@$cpu"
    pg "$d" "count $COUNT"
    pg "$d" "clone_skb $CLONE"
    pg "$d" "pkt_size $SIZE"
    pg "$d" "burst $BURST"
    if [ "$RATE" != 0 ]; then pg "$d" "ratep $RATE"; else pg "$d" "delay 0"; fi
    pg "$d" "dst_mac $MAC"
    pg "$d" "dst_min $VIP"
    pg "$d" "dst_max $VIP"
    pg "$d" "src_min $SRC_MIN"
    pg "$d" "src_max $SRC_MAX"
    pg "$d" "udp_dst_min $PORT"
    pg "$d" "udp_dst_max $PORT"
    pg "$d" "udp_src_min $SPORT_MIN"
    pg "$d" "udp_src_max $SPORT_MAX"
    pg "$d" "flag IPSRC_RND"
    pg "$d" "flag UDPSRC_RND"
    pg "$d" "flag NO_TIMESTAMP"
    # Each thread on a queue of its own: no TX lock shared between CPUs.
    pg "$d" "queue_map_min $queue"
    pg "$d" "queue_map_max $queue"
    queue=$((queue + 1))
done

echo "pktgen: $DEV -> $VIP:$PORT/udp via $MAC, sources $SRC_MIN-$SRC_MAX ports $SPORT_MIN-$SPORT_MAX, $SIZE-byte frames, CPUs: $CPUS"
echo start > /proc/net/pktgen/pgctrl || true

total=0
for cpu in $CPUS; do
    line=$(grep -A2 '^Result' /proc/net/pktgen/"$DEV@$cpu" | tr '\n' ' ')
    echo "cpu $cpu: $line"
    pps=$(echo "$line" | sed -n 's/.* \([0-9][0-9]*\)pps.*/\1/p')
    total=$((total + ${pps:-0}))
done
echo "sent: $total pps in total"
