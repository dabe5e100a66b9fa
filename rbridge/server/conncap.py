"""A cap on each client address's connections, for the granian front (gateway process, Linux).

granian accepts connections up to its backpressure (16 384) and never closes an idle one; it
gives the app no hook when one is accepted, and the WSGI environ has the peer's address but not
its port, so a request cannot be matched to its connection. One address holding 16 384 idle
connections got every later client refused, /healthz included (issue 12, item 6).

ConnectionSweeper is a daemon thread of the gateway process: granian's accept loop runs there,
so the listening and accepted sockets are this process's descriptors. Every INTERVAL seconds it
reads /proc/net/tcp and /proc/net/tcp6 and counts, by remote address, the accepted connections
to --port (states 01 ESTABLISHED and 08 CLOSE_WAIT, which hold a descriptor; a connection not
yet accepted has no inode and is not counted). Only when an address outside --trusted-proxies holds more than
--max-connections-per-client does it map socket inodes to descriptors (/proc/self/fd) and shut
the excess down: shutdown(SHUT_RDWR) on a dup of granian's descriptor, after checking that the
dup is still the same socket (granian may have closed the number and reused it). granian reads
end of file, closes its own descriptor and ends the connection's task; the client gets FIN. The
descriptor granian holds is never closed here.

Which ones: TCP_INFO tells how long each has been silent. A connection on which data moved in
the last RECENT_MS is left alone (a request may be arriving or being answered); of the rest,
first those between requests (nothing received yet, or the last request answered), then the
others, each longest silent first.

Without /proc/net/tcp (not Linux) the cap is off, and the log says so once. Not bounded here:
many addresses (an IPv6 prefix), connections sending a byte a second (the header timeout cuts
those after 10 s), bodies sent slowly (not timed out: docs/security.md).
"""

from __future__ import annotations

import collections
import functools
import ipaddress
import logging
import os
import re
import socket
import stat
import struct
import threading
import time
from typing import NamedTuple

from rbridge.server.guard import TrustedPeers

log = logging.getLogger("bridge.server")

INTERVAL = 1.0          # seconds between sweeps
RECENT_MS = 1000        # data moved on a connection this recently: it is not closed
LOG_EVERY = 60.0        # seconds between warnings about one address
TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
# struct tcp_info (linux/tcp.h) up to tcpi_bytes_received (Linux 4.1): 8 one-byte fields, 24 u32
# (tcpi_rto ... tcpi_total_retrans), 4 u64 (pacing_rate, max_pacing_rate, bytes_acked, bytes_received)
_TCP_INFO = struct.Struct("=8B24I4Q")
_UNACKED, _LAST_DATA_SENT, _LAST_DATA_RECV, _BYTES_RECEIVED = 8 + 4, 8 + 9, 8 + 11, 8 + 24 + 3


class Conn(NamedTuple):
    fd: int
    inode: int
    last_recv_ms: int     # since data last arrived (since the connection began, if none did)
    last_sent_ms: int     # since data was last sent
    unacked: int          # segments sent and not yet acknowledged
    bytes_received: int

    @property
    def between_requests(self) -> bool:
        """Nothing received yet, or an answer sent (and acknowledged) since the last request."""
        return self.bytes_received == 0 or (self.last_sent_ms < self.last_recv_ms and not self.unacked)


def parse_table(text: str, port: int) -> list[tuple[str, int]]:
    """(remote address, socket inode) of each accepted connection to local `port`, from the text
    of /proc/net/tcp or /proc/net/tcp6. The kernel prints an address as 32-bit words in the host's
    byte order (on x86 127.0.0.1 is 0100007F) and ports in hex; an IPv4 address mapped into IPv6
    (::ffff:a.b.c.d, a dual-stack listener) is given as the IPv4 address. One regular expression
    over the whole text (splitting each line in Python took twice as long)."""
    row = _ROW.get(port)
    if row is None:
        row = _ROW[port] = re.compile(_ROW_PATTERN % port)
    return [(_address(remote), int(inode)) for remote, inode in row.findall(text) if inode != "0"]


# local_address's port, then rem_address st tx:rx tr:when retrnsmt uid timeout inode (0: not yet
# accepted). Starting with the port, a literal, lets the search skip ahead; only a port field is
# ":" and 4 hex digits, and a remote port is followed by the state, not by an address.
_ROW_PATTERN = r":%04X ([0-9A-F]{8}|[0-9A-F]{32}):[0-9A-F]{4} 0[18] \S+ \S+ \S+ +\d+ +\d+ (\d+)"
_ROW: dict[int, re.Pattern] = {}


@functools.lru_cache(maxsize=4096)
def _address(words: str) -> str:
    packed = b"".join(struct.pack("=I", int(words[i:i + 8], 16)) for i in range(0, len(words), 8))
    if len(packed) == 4:
        return str(ipaddress.IPv4Address(packed))
    ip = ipaddress.IPv6Address(packed)
    return str(ip.ipv4_mapped or ip)


def choose(conns: list[Conn], excess: int) -> list[Conn]:
    """The at most `excess` connections to close: none with data in the last RECENT_MS; those
    between requests first, then the others, each longest silent first."""
    quiet = [c for c in conns if c.last_recv_ms >= RECENT_MS and c.last_sent_ms >= RECENT_MS]
    quiet.sort(key=lambda c: (not c.between_requests, -c.last_recv_ms))
    return quiet[:max(0, excess)]


class ConnectionSweeper:
    """Closes the idlest connections of each address over the cap, every INTERVAL s (see above).
    `closed`: a Prometheus counter of the connections closed (or None)."""

    def __init__(self, port: int, cap: int, trusted: TrustedPeers, closed=None, tables: tuple = TABLES):
        self.port, self.cap, self.trusted, self.closed, self.tables = port, cap, trusted, closed, tables
        self._logged: dict[str, list] = {}     # address -> [when last logged, closed since]
        self._failed_at = -LOG_EVERY

    def start(self) -> bool:
        """Start the thread, unless the cap is off or this system has no /proc/net/tcp."""
        if self.cap <= 0:
            return False
        if not os.access(self.tables[0], os.R_OK) or not os.path.isdir("/proc/self/fd"):
            log.warning("%s is not readable (not Linux?): --max-connections-per-client is off", self.tables[0])
            return False
        threading.Thread(target=self._run, name="conncap", daemon=True).start()
        log.info("at most %d connections per client address (--max-connections-per-client): the "
                 "idlest beyond are closed", self.cap)
        return True

    def _run(self) -> None:
        while True:
            time.sleep(INTERVAL)
            try:
                self.sweep()
            except Exception:      # a bug here must not end the cap silently, nor flood the log
                now = time.monotonic()
                if now - self._failed_at >= LOG_EVERY:
                    self._failed_at = now
                    log.exception("connection sweep failed (logged at most once a minute)")

    def sweep(self) -> int:
        """One pass: the number of connections shut down."""
        now = time.monotonic()
        self._flush_log(now)
        by_address: dict[str, list[int]] = collections.defaultdict(list)
        for table in self.tables:
            try:
                with open(table) as f:
                    text = f.read()
            except OSError:
                continue
            for address, inode in parse_table(text, self.port):
                by_address[address].append(inode)
        over = {a: inodes for a, inodes in by_address.items() if len(inodes) > self.cap and a not in self.trusted}
        if not over:
            return 0
        fds = our_sockets()
        total = 0
        for address, inodes in over.items():
            held = [c for c in (_conn(fds[i], i) for i in inodes if i in fds) if c is not None]
            n = sum(_shut_down(c) for c in choose(held, len(held) - self.cap))
            if n:
                total += n
                self._report(address, n, now)
        if total and self.closed is not None:
            self.closed.inc(total)
        return total

    def _report(self, address: str, n: int, now: float) -> None:
        entry = self._logged.setdefault(address, [now - LOG_EVERY, 0])
        entry[1] += n
        self._flush_log(now, address)

    def _flush_log(self, now: float, only: str | None = None) -> None:
        """Log what was closed from each address since its last warning, at most once a minute;
        forget the addresses with nothing to say for a minute."""
        for address in [only] if only else list(self._logged):
            when, count = self._logged[address]
            if now - when < LOG_EVERY:
                continue
            if not count:
                del self._logged[address]
                continue
            log.warning("closed %d idle connection(s) from %s: over --max-connections-per-client %d "
                        "(logged at most once a minute per address)", count, address, self.cap,
                        extra={"fields": {"event": "connections_closed", "client": address, "closed": count}})
            self._logged[address] = [now, 0]


def our_sockets() -> dict[int, int]:
    """inode -> descriptor of each socket this process holds (/proc/self/fd/N -> "socket:[inode]")."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink("/proc/self/fd/" + name)
        except OSError:
            continue
        if link.startswith("socket:["):
            out[int(link[8:-1])] = int(name)
    return out


def _dup(fd: int, inode: int) -> socket.socket | None:
    """A socket object on a dup of `fd` if it is still the socket `inode`; closing it closes the dup only."""
    try:
        dup = os.dup(fd)
    except OSError:
        return None
    try:
        st = os.fstat(dup)
        if stat.S_ISSOCK(st.st_mode) and st.st_ino == inode:
            return socket.socket(fileno=dup)
    except OSError:
        pass
    os.close(dup)
    return None


def _conn(fd: int, inode: int) -> Conn | None:
    sock = _dup(fd, inode)
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
    except OSError:
        return None
    finally:
        sock.close()
    info = _TCP_INFO.unpack(raw.ljust(_TCP_INFO.size, b"\0"))
    return Conn(fd, inode, info[_LAST_DATA_RECV], info[_LAST_DATA_SENT], info[_UNACKED], info[_BYTES_RECEIVED])


def _shut_down(conn: Conn) -> bool:
    sock = _dup(conn.fd, conn.inode)
    if sock is None:
        return False
    try:
        sock.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False
    finally:
        sock.close()
