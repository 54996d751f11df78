#!/usr/bin/env python3
"""A slow link between two sites of the virtual cluster: forwards Ethernet frames between two TAP
devices, holding each one for a fixed one-way delay and pacing each direction to a bandwidth cap
(frames wait their turn to be "on the wire", then fly for the delay), as a WAN link between two
LANs would. The kernel here has no netem qdisc, hence this process.

    delaylink.py --tap-a tA --tap-b tB --delay-ms 10 --rate-mbit 200 [--queue-kib 2048]

The TAP devices must exist (ip tuntap add dev tA mode tap) in the network namespace this runs
in; each is attached to its site's bridge by the caller. Frames that arrive while the direction's
queue holds more than --queue-kib are dropped (a router's buffer); TCP sees a lossy link, not an
unbounded one. SIGTERM or SIGINT ends it. Standard library only.
"""
import argparse
import collections
import fcntl
import os
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


class Direction:
    """Frames from one TAP to the other: FIFO, each with the time it may leave."""

    def __init__(self, src, dst, delay, rate_bps, queue_bytes):
        self.src, self.dst = src, dst
        self.delay, self.rate, self.limit = delay, rate_bps, queue_bytes
        self.q = collections.deque()  # (due, frame)
        self.queued = 0
        self.wire_free = 0.0  # when the last accepted frame finishes serialising
        self.dropped = 0

    def accept(self, frame, now):
        if self.queued + len(frame) > self.limit:
            self.dropped += 1
            return
        start = max(now, self.wire_free)
        self.wire_free = start + len(frame) * 8 / self.rate if self.rate > 0 else start
        self.q.append((self.wire_free + self.delay, frame))
        self.queued += len(frame)

    def flush(self, now):
        while self.q and self.q[0][0] <= now:
            _, frame = self.q.popleft()
            self.queued -= len(frame)
            try:
                os.write(self.dst, frame)
            except (BlockingIOError, OSError):
                self.dropped += 1  # the far side is down or full: the frame is lost

    def next_due(self):
        return self.q[0][0] if self.q else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tap-a", required=True)
    ap.add_argument("--tap-b", required=True)
    ap.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay added to every frame")
    ap.add_argument("--rate-mbit", type=float, default=0.0, help="bandwidth cap per direction (0: none)")
    ap.add_argument("--queue-kib", type=int, default=2048, help="bytes a direction may hold before dropping")
    a = ap.parse_args()
    if a.delay_ms < 0 or a.delay_ms > 10000:
        sys.exit(f"delaylink: --delay-ms {a.delay_ms} is outside 0..10000")
    fa, fb = open_tap(a.tap_a), open_tap(a.tap_b)
    delay, rate, limit = a.delay_ms / 1000.0, a.rate_mbit * 1e6, a.queue_kib * 1024
    ab = Direction(fa, fb, delay, rate, limit)
    ba = Direction(fb, fa, delay, rate, limit)
    by_src = {fa: ab, fb: ba}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print(f"delaylink: {a.tap_a} <-> {a.tap_b}, {a.delay_ms} ms one way, "
          f"{a.rate_mbit or 'unlimited'} Mbit/s", flush=True)
    while not stop:
        now = time.monotonic()
        dues = [d for d in (ab.next_due(), ba.next_due()) if d is not None]
        timeout = max(0.0, min(dues) - now) if dues else 0.5
        try:
            ready, _, _ = select.select([fa, fb], [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd in ready:
            d = by_src[fd]
            for _ in range(64):  # drain what is there, bounded so the other side gets its turn
                try:
                    frame = os.read(fd, 65536)
                except (BlockingIOError, OSError):
                    break
                if not frame:
                    break
                d.accept(frame, now)
        now = time.monotonic()
        ab.flush(now)
        ba.flush(now)
    print(f"delaylink: stopped ({ab.dropped + ba.dropped} frames dropped)", flush=True)


if __name__ == "__main__":
    main()
