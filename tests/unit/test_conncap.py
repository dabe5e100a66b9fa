"""The connection cap's parts (rbridge/server/conncap.py): reading /proc/net/tcp, choosing the
idlest, and one sweep over real sockets held by this process (no server, no R; Linux only)."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from rbridge.server import conncap
from rbridge.server.guard import TrustedPeers

# Real lines (x86, Linux 6.18): a listener on 127.0.0.1:18901 (0x49D5) and a dual-stack one on
# [::]:18902 (0x49D6). On 18901: an accepted connection from 127.0.0.5 (inode 59309), one not yet
# accepted (inode 0), the client sides (remote port 49D5) and a TIME_WAIT (06). On 18902: one from
# ::1 (59311), one from 127.0.0.5 seen as ::ffff:127.0.0.5 (59313).
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   1: 0100007F:49D5 00000000:0000 0A 00000000:00000001 00:00000000 00000000     0        0 59306 2 0000000007771db8 100 0 0 10 0
   3: 0100007F:49D5 0100007F:B8FC 01 00000000:00000000 00:00000000 00000000     0        0 0 1 00000000844c7fc1 20 0 0 10 -1
   8: 0100007F:82B0 0100007F:49D6 06 00000000:00000000 03:0000152A 00000000     0        0 0 3 000000000e26bca9
  11: 0500007F:AF81 0100007F:49D6 01 00000000:00000000 00:00000000 00000000     0        0 59312 2 0000000079d866bf 20 0 0 10 -1
  12: 0100007F:B8FC 0100007F:49D5 01 00000000:00000000 00:00000000 00000000     0        0 59314 2 000000009a3a0af0 20 0 0 10 -1
  14: 0100007F:49D5 0500007F:AF89 01 00000000:00000000 00:00000000 00000000     0        0 59309 1 000000009abd5de7 20 0 0 10 -1
  15: 0500007F:AF89 0100007F:49D5 01 00000000:00000000 00:00000000 00000000     0        0 59308 2 00000000b8876571 20 0 0 10 -1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:49D6 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 59307 1 000000008fbace31 100 0 0 10 0
   1: 00000000000000000000000001000000:49D6 00000000000000000000000001000000:AE02 01 00000000:00000000 00:00000000 00000000     0        0 59311 1 000000008826a74f 20 0 0 10 -1
   2: 0000000000000000FFFF00000100007F:49D6 0000000000000000FFFF00000500007F:AF81 01 00000000:00000000 00:00000000 00000000     0        0 59313 1 00000000c1179ef1 20 0 0 10 -1
   3: 00000000000000000000000001000000:A390 00000000000000000000000001000000:49D6 06 00000000:00000000 03:0000152A 00000000     0        0 0 3 00000000ee7f147f
   4: 00000000000000000000000001000000:AE02 00000000000000000000000001000000:49D6 01 00000000:00000000 00:00000000 00000000     0        0 59310 2 00000000f9f23e68 20 0 0 10 -1
"""
little_endian = pytest.mark.skipif(sys.byteorder != "little", reason="the fixture lines are an x86 kernel's")


@little_endian
def test_accepted_connections_to_the_port_are_read_by_remote_address():
    assert conncap.parse_table(TCP, 18901) == [("127.0.0.5", 59309)]
    assert conncap.parse_table(TCP6, 18902) == [("::1", 59311), ("127.0.0.5", 59313)]
    assert conncap.parse_table(TCP, 18902) == []          # only client sides and a TIME_WAIT
    assert conncap.parse_table(TCP6, 18901) == []


def conn(recv, sent=10_000, unacked=0, received=100, fd=0):
    return conncap.Conn(fd, fd, recv, sent, unacked, received)


def test_the_idlest_are_chosen_and_recent_ones_never():
    fresh = conn(5_000, received=0, fd=1)            # accepted 5 s ago, nothing sent
    answered = conn(3_000, sent=2_900, fd=2)         # last request answered
    waiting = conn(9_000, fd=3)                      # a request received 9 s ago, no answer yet
    sending = conn(9_500, sent=2_000, unacked=3, fd=4)   # its answer still going out
    recent = conn(500, received=0, fd=5)
    just_sent = conn(8_000, sent=200, fd=6)
    everyone = [recent, waiting, answered, fresh, sending, just_sent]
    assert conncap.choose(everyone, 2) == [fresh, answered]
    assert conncap.choose(everyone, 10) == [fresh, answered, sending, waiting]
    assert conncap.choose(everyone, 0) == conncap.choose(everyone, -3) == []


def test_a_sweep_shuts_down_the_excess_of_an_address_and_spares_trusted_ones(caplog):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    clients, accepted = [], []
    try:
        for source in ["127.0.0.1"] * 10 + ["127.0.0.3"] * 6:
            c = socket.socket()
            c.bind((source, 0))
            c.connect(("127.0.0.1", port))
            clients.append(c)
            accepted.append(listener.accept()[0])
        clients[0].sendall(b"GET / HTTP/1.1\r\n")              # received, never answered
        sweeper = conncap.ConnectionSweeper(port, 4, TrustedPeers(("127.0.0.3",)))
        assert sweeper.sweep() == 0                          # all of them had data in the last second
        time.sleep(conncap.RECENT_MS / 1000 + 0.2)
        clients[1].sendall(b"G")                             # this one is active
        assert sweeper.sweep() == 6                          # 10 - 4, of the 8 that never sent
        closed = []
        for c in clients:
            c.settimeout(0.2)
            try:
                closed.append(c.recv(10) == b"")
            except socket.timeout:
                closed.append(False)
        assert closed[:2] == [False, False] and sum(closed[2:10]) == 6 and not any(closed[10:]), closed
        assert sweeper.sweep() == 0
        [record] = [r for r in caplog.records if "max-connections-per-client" in r.getMessage()]
        assert "closed 6 idle connection(s) from 127.0.0.1" in record.getMessage()
    finally:
        for s in clients + accepted + [listener]:
            s.close()


def test_without_proc_net_tcp_the_cap_is_off_and_says_so(tmp_path, caplog):
    sweeper = conncap.ConnectionSweeper(8000, 4, TrustedPeers(()), tables=(str(tmp_path / "tcp"),))
    assert sweeper.start() is False
    assert "--max-connections-per-client is off" in caplog.text
    assert conncap.ConnectionSweeper(8000, 0, TrustedPeers(())).start() is False   # 0: off, silently
