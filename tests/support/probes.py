# Probes the integration tests run inside the sandbox (python3 -c, with the test's own lines
# appended). Each returns a short word the tests compare: "open", an errno name, "answered",
# "nxdomain", a DNS rcode, or "error".
import errno, socket, struct, sys, time, urllib.request

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
