#!/usr/bin/env bash
# A private network for an ensemble whose members can be partitioned: member i runs in its own
# network namespace rb-TAG-i with the address SUBNET.i, all namespaces hang off one bridge
# rbTAGbr whose host side is SUBNET.254 (clients, 4lw and health checks come from there).
#
#   bench/net.sh up TAG N SUBNET          e.g. up r 3 10.231.1   (namespaces, veths, bridge)
#   bench/net.sh down TAG N               remove them
#   bench/net.sh partition TAG I SUBNET   member I drops every packet to/from the other members
#   bench/net.sh heal TAG I               member I talks to the other members again
#   bench/net.sh exec TAG I CMD…          run CMD inside member I's namespace
#
# "Partition" means: inside member I's namespace, iptables drops all IPv4 packets from or to
# SUBNET.0/24 except SUBNET.254 (the host side). Established peer connections stall (no RST),
# new ones cannot be made; clients can still reach member I. Needs root, iproute2 and iptables.
# Why namespaces and not per-member loopback addresses: Apache ZooKeeper 3.8 does not bind its
# outgoing quorum/election sockets (QuorumCnxManager.initiateConnection, Learner.sockConnect), so
# on loopback every peer connection comes from 127.0.0.1 and cannot be told apart by address.
set -euo pipefail
cmd=${1:-}; shift || true
tag=${1:?TAG}; shift
case "$tag" in *[!a-z0-9]*|?????*) echo "TAG must be 1-4 of [a-z0-9]" >&2; exit 2 ;; esac
ns() { echo "rb-$tag-$1"; }
br="rb${tag}br"
case "$cmd" in
  up)
    n=$1 subnet=$2
    ip link show "$br" >/dev/null 2>&1 && { echo "net $tag is already up (bench/net.sh down $tag $n)" >&2; exit 1; }
    trap '"$0" down "$tag" "$n"' ERR   # a half-made net is removed
    ip link add "$br" type bridge
    ip addr add "$subnet.254/24" dev "$br"
    ip link set "$br" up
    for i in $(seq 1 "$n"); do
      ip netns add "$(ns "$i")"
      ip netns exec "$(ns "$i")" ip link set lo up
      ip link add "rb${tag}${i}h" type veth peer name "rb${tag}${i}m"
      ip link set "rb${tag}${i}m" netns "$(ns "$i")"
      ip netns exec "$(ns "$i")" ip addr add "$subnet.$i/24" dev "rb${tag}${i}m"
      ip netns exec "$(ns "$i")" ip link set "rb${tag}${i}m" up
      ip link set "rb${tag}${i}h" master "$br"
      ip link set "rb${tag}${i}h" up
    done
    ;;
  down)
    n=$1
    # Deleting the host end of a veth removes both ends at once; a namespace alone is torn down
    # by the kernel asynchronously, and its veth would still be there for the next `up`.
    for i in $(seq 1 "$n"); do
      ip link del "rb${tag}${i}h" 2>/dev/null || true
      ip netns del "$(ns "$i")" 2>/dev/null || true
    done
    ip link del "$br" 2>/dev/null || true
    ;;
  partition)
    i=$1 subnet=$2
    for chain in INPUT OUTPUT; do
      dir=-s; [ "$chain" = OUTPUT ] && dir=-d
      io=-i; [ "$chain" = OUTPUT ] && io=-o
      ip netns exec "$(ns "$i")" iptables -A "$chain" "$io" lo -j ACCEPT
      ip netns exec "$(ns "$i")" iptables -A "$chain" "$dir" "$subnet.254" -j ACCEPT
      ip netns exec "$(ns "$i")" iptables -A "$chain" "$dir" "$subnet.0/24" -j DROP
    done
    ;;
  heal)
    i=$1
    ip netns exec "$(ns "$i")" iptables -F INPUT
    ip netns exec "$(ns "$i")" iptables -F OUTPUT
    ;;
  exec)
    i=$1; shift
    exec ip netns exec "$(ns "$i")" "$@"
    ;;
  *) echo "usage: $0 up TAG N SUBNET | down TAG N | partition TAG I SUBNET | heal TAG I | exec TAG I CMD…" >&2; exit 2 ;;
esac
