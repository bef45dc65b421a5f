"""netns_proxy.py NETNS PORT...: the only way out of a compute's network
namespace.

For each PORT it listens on 127.0.0.1:PORT inside /run/netns/NETNS and
forwards every connection to 127.0.0.1:PORT in the lab's own namespace
(RabbitMQ, placement, glance, the neutron stub). The link is cut with
SIGSTOP: connections stay open and bytes go nowhere, as with a pulled
cable (no reset, no refusal); SIGCONT mends it.

A PORT written udp:PORT forwards UDP datagrams the same way (a
controller's IPMI requests to the BMCs): one upstream socket per client
address, answers sent back to that client.
"""
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _close(*socks):
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


def _pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _close(src, dst)


def _serve(listener, port):
    while True:
        conn, _ = listener.accept()
        try:
            up = socket.create_connection(("127.0.0.1", port))
        except OSError:
            conn.close()
            continue
        for a, b in ((conn, up), (up, conn)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _serve_udp(sock, port):
    """Relays datagrams from clients inside the namespace to 127.0.0.1:port
    outside, and the answers back. Upstream sockets are made here, in a
    thread of the lab's own namespace."""
    ups = {}

    def back(up, client):
        try:
            while True:
                data = up.recv(65536)
                sock.sendto(data, client)
        except OSError:
            pass

    while True:
        data, client = sock.recvfrom(65536)
        up = ups.get(client)
        if up is None:
            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            up.connect(("127.0.0.1", port))
            ups[client] = up
            threading.Thread(target=back, args=(up, client), daemon=True).start()
        try:
            up.send(data)
        except OSError:
            pass


def main():
    ns, specs = sys.argv[1], sys.argv[2:]
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open("/run/netns/" + ns, os.O_RDONLY)
    # setns moves only the calling thread: do it before any thread starts.
    _setns(target)
    listeners = []
    for spec in specs:
        if spec.startswith("udp:"):
            port = int(spec[4:])
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", port))
            listeners.append((_serve_udp, s, port))
            continue
        port = int(spec)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(128)
        listeners.append((_serve, s, port))
    _setns(home)
    os.close(home)
    os.close(target)
    print("forwarding %s from netns %s" % (",".join(specs), ns), flush=True)
    threads = [threading.Thread(target=fn, args=(s, port), daemon=True) for fn, s, port in listeners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
