#!/usr/bin/python3
"""Loss, delay and reordering of a network namespace's outgoing packets, for kernels without
netem (tests/support/lan.rs starts it when `tc qdisc add ... netem` is refused).

An iptables rule sends the packets to NFQUEUE QUEUE; this program holds each one for
DELAY +- JITTER ms before accepting it (a later packet with a shorter hold overtakes an
earlier one), lets a REORDER share through at once (as netem's reorder does), and drops a
LOSS share. Each line on stdin sets `LOSS DELAY JITTER REORDER` (shares from 0 to 1,
milliseconds); EOF on stdin ends it. Prints `ready` once it is bound to the queue.

Usage: impair.py QUEUE SEED
"""
import heapq
import random
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
SUBSYS_QUEUE = 3
MSG_PACKET, MSG_VERDICT, MSG_CONFIG = 0, 1, 2
CFG_CMD, CFG_PARAMS, CFG_FLAGS, CFG_MASK = 1, 2, 5, 4
CMD_BIND, COPY_META, FAIL_OPEN = 1, 1, 1
ATTR_PACKET_HDR, ATTR_VERDICT_HDR = 1, 2
NF_DROP, NF_ACCEPT = 0, 1

queue = int(sys.argv[1])
rng = random.Random(int(sys.argv[2]))
loss = delay = jitter = reorder = 0.0
sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
sock.bind((0, 0))
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
seq = 0


def attr(kind, data):
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + b"\0" * (-n % 4)


def send(msg, payload):
    global seq
    seq += 1
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + payload
    head = struct.pack("=IHHII", 16 + len(body), (SUBSYS_QUEUE << 8) | msg, 1, seq, 0)
    sock.send(head + body)


def verdict(packet, accept):
    send(MSG_VERDICT, attr(ATTR_VERDICT_HDR, struct.pack("!II", accept, packet)))


send(MSG_CONFIG, attr(CFG_CMD, struct.pack("!BBH", CMD_BIND, 0, 0)))
send(
    MSG_CONFIG,
    attr(CFG_PARAMS, struct.pack("!IB", 0, COPY_META))
    + attr(CFG_FLAGS, struct.pack("!I", FAIL_OPEN))
    + attr(CFG_MASK, struct.pack("!I", FAIL_OPEN)),
)
print("ready", flush=True)

held = []  # (release time, packet id)
while True:
    now = time.monotonic()
    while held and held[0][0] <= now:
        verdict(heapq.heappop(held)[1], NF_ACCEPT)
    wait = max(0.0, held[0][0] - now) if held else 1.0
    ready, _, _ = select.select([sock, sys.stdin], [], [], wait)
    if sys.stdin in ready:
        line = sys.stdin.readline()
        if not line:
            break
        loss, delay, jitter, reorder = (float(x) for x in line.split())
    if sock not in ready:
        continue
    data = sock.recv(1 << 16)
    off = 0
    while off + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, off)
        if length < 16:
            break
        if kind == (SUBSYS_QUEUE << 8) | MSG_PACKET:
            at = off + 20
            while at + 4 <= off + length:
                alen, atype = struct.unpack_from("=HH", data, at)
                if alen < 4:
                    break
                if atype & 0x3FFF == ATTR_PACKET_HDR:
                    (packet,) = struct.unpack_from("!I", data, at + 4)
                    if rng.random() < loss:
                        verdict(packet, NF_DROP)
                    elif delay <= 0 or rng.random() < reorder:
                        verdict(packet, NF_ACCEPT)
                    else:
                        hold = max(0.0, delay + rng.uniform(-jitter, jitter)) / 1000
                        heapq.heappush(held, (time.monotonic() + hold, packet))
                at += (alen + 3) & ~3
        off += (length + 3) & ~3
# Whatever is still held goes out: the namespace is being torn down or healed.
for _, packet in held:
    verdict(packet, NF_ACCEPT)
