# sbx doctor --leaks: the target host. Runs as root in a container on the doctor's internal
# network and records every packet that reaches it from the sandbox: TCP (v4 and v6), UDP,
# DNS questions (it is also the session's upstream resolver) and ICMP echo requests.
import socket, struct, sys, threading

def log(*a):
    print(*a, flush=True)

def qname(msg):
    i, labels = 12, []
    while i < len(msg) and msg[i]:
        n = msg[i]; labels.append(msg[i + 1:i + 1 + n].decode(errors="replace")); i += n + 1
    return ".".join(labels), i + 5

def answer(msg):
    name, end = qname(msg)
    log("dns", name)
    qtype = struct.unpack(">H", msg[end - 4:end - 2])[0] if end <= len(msg) else 0
    ok = name.endswith("upstream-ok.doctor.test") and qtype == 1
    flags = 0x8180 if ok else 0x8183
    head = msg[:2] + struct.pack(">HHHHH", flags, 1, 1 if ok else 0, 0, 0)
    body = msg[12:end]
    if ok:
        body += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 0, 4) + bytes([10, 0, 0, 7])
    return head + body

def tcp(fam, port, http=False):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port)); s.listen(16)
    while True:
        c, peer = s.accept()
        log("tcp", port, peer[0])
        if http:
            c.recv(4096)
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nsbx-doctor-ok")
        elif port == 53:
            data = c.recv(4096)
            if len(data) > 2:
                r = answer(data[2:]); c.sendall(struct.pack(">H", len(r)) + r)
        c.close()

def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(4096)
        if port == 53:
            s.sendto(answer(data), peer)
        else:
            log("udp", port, peer[0])

def icmp():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    while True:
        data, peer = s.recvfrom(4096)
        ihl = (data[0] & 0x0f) * 4
        if len(data) > ihl and data[ihl] == 8:
            log("icmp", peer[0])

jobs = [(tcp, (socket.AF_INET, 8080)), (tcp, (socket.AF_INET, 80, True)), (tcp, (socket.AF_INET, 53)),
        (udp, (5353,)), (udp, (53,)), (icmp, ())]
if socket.has_ipv6:
    jobs.append((tcp, (socket.AF_INET6, 8080)))
for f, a in jobs:
    threading.Thread(target=f, args=a, daemon=True).start()
log("ready")
threading.Event().wait()
