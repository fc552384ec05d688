# Probes the integration tests run inside the sandbox (python3 -c, with the test's own lines
# appended). Each returns a short word the tests compare: "open", an errno name, "answered",
# "nxdomain", a DNS rcode, or "error".
import errno, os, socket, struct, sys, time, urllib.request

def _err(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    return errno.errorcode.get(getattr(e, "errno", None) or 0, type(e).__name__)

def tcp(host, port, v6=False):
    """Connects; returns (result, seconds)."""
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    t = time.time()
    try:
        s.connect((host, port)); return "open", time.time() - t
    except OSError as e:
        return _err(e), time.time() - t

def http(url):
    try:
        return urllib.request.urlopen(url, timeout=5).read().decode().strip()
    except Exception:
        return "error"

def resolve(name):
    try:
        return socket.gethostbyname(name)
    except OSError:
        return "nxdomain"

def dns_query(name, qtype=1):
    q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    for l in name.split("."):
        q += bytes([len(l)]) + l.encode()
    return q + b"\x00" + struct.pack(">HH", qtype, 1)

def _udp(server, name, qtype):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    s.sendto(dns_query(name, qtype), (server, 53))
    return s.recv(4096)

def _tcp(server, name, qtype):
    s = socket.socket(); s.settimeout(3)
    s.connect((server, 53)); q = dns_query(name, qtype)
    s.sendall(struct.pack(">H", len(q)) + q)
    s.recv(2)
    return s.recv(4096)

def dns_udp(server, name, qtype=1):
    """Whether a server answers over UDP: "answered" or why not."""
    try:
        _udp(server, name, qtype); return "answered"
    except OSError as e:
        return _err(e)

def dns_tcp(server, name, qtype=1):
    try:
        _tcp(server, name, qtype); return "answered"
    except OSError as e:
        return _err(e)

def rcode_udp(server, name, qtype=1):
    """The answer's rcode (3 is NXDOMAIN), or "error"."""
    try:
        return _udp(server, name, qtype)[3] & 0x0f
    except OSError:
        return "error"

def rcode_tcp(server, name, qtype=1):
    try:
        return _tcp(server, name, qtype)[3] & 0x0f
    except OSError:
        return "error"

def bind(addr, port, kind="udp", reuse=False):
    """Binds a socket (kept open for the process's life); "bound" or why not."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    if reuse:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind((addr, port))
        _kept.append(s)
        return "bound"
    except OSError as e:
        return _err(e)

_kept = []

def send_from(src, dst, port):
    """Sends one UDP datagram from `src` (an address, any port); "sent" or why not."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((src, 0))
        s.sendto(b"x", (dst, port))
        return "sent"
    except OSError as e:
        return _err(e)

def dns_answer(query, ip):
    """A reply to `query` saying its name is at `ip`."""
    qid = query[:2]
    end = 12
    while query[end] != 0:
        end += query[end] + 1
    question = query[12:end + 5]
    head = qid + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0)
    answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(ip)
    return head + question + answer

def spoof_upstream(name, fake_ip):
    """The upstream-spoofing attack: take the engine resolver's address and port, pre-create
    conntrack entries toward every port the filter may query from, then answer the filter's
    upstream query for `name` with `fake_ip`. Returns how far it got."""
    import threading
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.11", 53))
    except OSError as e:
        return "bind " + _err(e)
    s.setblocking(False)
    for p in range(1024, 65536):
        try:
            s.sendto(b"x", ("127.0.0.1", p))
        except OSError:
            pass
    result = {}
    t = threading.Thread(target=lambda: result.update(ip=resolve(name)))
    t.start()
    s.settimeout(5)
    answered = "no query came"
    try:
        while True:
            q, peer = s.recvfrom(4096)
            if len(q) > 12 and q[2] & 0x80 == 0:
                s.sendto(dns_answer(q, fake_ip), peer)
                answered = "answered"
                break
    except OSError:
        pass
    t.join()
    return "%s %s" % (answered, result.get("ip"))

def resolver_ports():
    """The ports the engine's resolver really listens on (127.0.0.11, behind its DNAT), from the
    namespace's socket tables: [(kind, port)]."""
    out = []
    for kind in ("udp", "tcp"):
        for line in open("/proc/net/" + kind).read().splitlines()[1:]:
            local = line.split()[1]
            addr, port = local.split(":")
            if addr == "0B00007F":
                out.append((kind, int(port, 16)))
    return out

def keyctl(op, arg):
    """A raw keyctl(2) call: "ok" or the errno name."""
    import ctypes, platform
    nr = {"x86_64": 250, "aarch64": 219}.get(platform.machine())
    if nr is None:
        return "unknown-arch"
    libc = ctypes.CDLL(None, use_errno=True)
    r = libc.syscall(nr, ctypes.c_long(op), ctypes.c_long(arg), ctypes.c_long(0))
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
