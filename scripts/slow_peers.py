"""Slow peers for the hostile-load scripts (bench-slow-senders.sh, soak.sh,
bench-nonreaders.sh, bench-http-nonreaders.sh): connections that send the
first part of a large message, then nothing, and are opened again when the
server closes them; connections that send and never read; and a
well-behaved client to measure beside them. Loopback only."""
import select
import socket
import struct
import time


def partial_frame(strings, size=1_600, share=0.9):
    """The first `share` of a framed, strict-binary queryGeoInfoByIP of
    `strings` inputs of `size` bytes each."""
    name = b"queryGeoInfoByIP"
    ips = b"".join(struct.pack(">I", size) + b"x" * size for _ in range(strings))
    args = bytes([15]) + struct.pack(">h", 1) + bytes([11]) + struct.pack(">i", strings) + ips + b"\x00"
    body = struct.pack(">I", 0x80010001) + struct.pack(">I", len(name)) + name + struct.pack(">i", 1) + args
    frame = struct.pack(">I", len(body)) + body
    return memoryview(frame)[: int(len(frame) * share)]


def partial_body(length=1 << 20, share=0.95):
    """An HTTP POST of a `length`-byte JSON batch body, cut after `share` of the body."""
    head = (f"POST /api/ip_query HTTP/1.1\r\nHost: slow-peers\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()
    body = b'{"ips": [' + b" " * (length - 11) + b"]}"
    return memoryview(head + body)[: len(head) + int(length * share)]


def closed_by_peer(s):
    """Whether the server closed `s`, without reading what it sent."""
    poller = select.poll()
    poller.register(s, select.POLLRDHUP)
    return any(events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


def batch_post(addresses, seed=5):
    """An HTTP POST of a batch of `addresses` random public IPv4 addresses."""
    import json
    import random
    rng = random.Random(seed)
    ips = ["%d.%d.%d.%d" % (rng.randint(1, 223), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))
           for _ in range(addresses)]
    body = json.dumps({"ips": ips}).encode()
    head = (f"POST /api/ip_query HTTP/1.1\r\nHost: slow-peers\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return memoryview(head + body)


class Holders:
    """`count` connections to `addr` that each send `part`, then hold:
    reading what the server sends a little at a time, or, with `read`
    false, never reading it."""

    def __init__(self, addr, part, count, read=True):
        self.addr, self.part, self.read, self.opened = addr, part, read, 0
        self.conns = [None] * count

    def step(self):
        """Opens what is closed, sends a little more on each, and notices
        the connections the server closed. Never blocks for long."""
        for i, conn in enumerate(self.conns):
            if conn is None:
                try:
                    s = socket.create_connection(self.addr, timeout=1)
                    s.setblocking(False)
                    self.conns[i] = [s, 0]
                    self.opened += 1
                except OSError:
                    pass
                continue
            s, sent = conn
            try:
                if sent < len(self.part):
                    conn[1] += s.send(self.part[sent:sent + 262144])
                elif self.read and s.recv(4096) == b"":
                    raise ConnectionResetError
                elif not self.read and closed_by_peer(s):
                    raise ConnectionResetError
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                s.close()
                self.conns[i] = None

    def close(self):
        for conn in self.conns:
            if conn:
                conn[0].close()


def never_read(port, payload, clients, duration, repeat=True):
    """`clients` connections to `port` that send `payload` (again and again,
    or once if not `repeat`) for `duration` seconds, as fast as the server
    takes it, and never read."""
    socks = []
    for _ in range(clients):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        socks.append([s, 0])
    payload = memoryview(payload)
    end = time.time() + duration
    while time.time() < end:
        for conn in socks:
            s, sent = conn
            if sent == len(payload):
                if not repeat:
                    continue
                sent = 0
            try:
                conn[1] = sent + s.send(payload[sent:])
            except (BlockingIOError, OSError):
                pass
        time.sleep(0.01)
    for s, _ in socks:
        s.close()


def polite_gets(port, duration, every=0.05):
    """Single-address GETs on fresh connections every `every` seconds for
    `duration` seconds, as a well-behaved client beside hostile ones;
    prints how they fared."""
    import urllib.request
    took, failed, slow_at = [], 0, []
    begun = time.perf_counter()
    end = time.time() + duration
    while time.time() < end:
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/ip_query?ip=183.62.57.1", timeout=20) as r:
                r.read()
                ok = r.status == 200
        except OSError as e:
            ok = False
            if failed < 3:
                print("well-behaved client failed:", e)
        if ok:
            took.append((time.perf_counter() - started) * 1000)
            if took[-1] > 10:
                slow_at.append(started - begun)
        else:
            failed += 1
        time.sleep(every)
    took.sort()
    at = lambda q: took[min(len(took) - 1, int(q * len(took)))] if took else float("nan")
    print(f"well-behaved client: {len(took)} answers, {failed} failed; "
          f"p50 {at(0.5):.1f} ms, p99 {at(0.99):.1f} ms, slowest {took[-1] if took else float('nan'):.0f} ms; "
          f"{len(slow_at)} over 10 ms, asked at {', '.join('%.1f' % t for t in slow_at) or '-'} s")
