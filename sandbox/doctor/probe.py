# sbx doctor --leaks: the probe. Runs inside a real session, as the agent, and tries every way
# out; prints one JSON line per channel. The doctor judges from the target's record and the
# firewall's log, not from this script's word alone.
import json, socket, struct, sys, urllib.request

cfg = json.loads(sys.argv[1])
def out(row, result):
    print(json.dumps({"row": row, "result": str(result)}), flush=True)

def err(e):
    import errno
    return errno.errorcode.get(getattr(e, "errno", None) or 0, type(e).__name__)

def tcp(host, port, fam=socket.AF_INET):
    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(3)
    try:
        s.connect((host, port)); return "open"
    except Exception as e:
        return err(e)

def query(name):
    q = struct.pack(">HHHHHH", 0x5b5b, 0x0100, 1, 0, 0, 0)
    for l in name.split("."):
        q += bytes([len(l)]) + l.encode()
    return q + b"\x00\x00\x01\x00\x01"

def dns_udp(server, name):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    try:
        s.sendto(query(name), (server, 53)); s.recv(512); return "answered"
    except Exception as e:
        return err(e)

def dns_tcp(server, name):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((server, 53)); q = query(name); s.sendall(struct.pack(">H", len(q)) + q)
        s.recv(512); return "answered"
    except Exception as e:
        return err(e)

def resolve(name):
    try:
        return socket.gethostbyname(name)
    except OSError:
        return "nxdomain"

t4, tag = cfg["target4"], cfg["tag"]
out("tcp", tcp(t4, 8080))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.sendto(b"sbx-doctor", (t4, 5353)); u.sendto(b"sbx-doctor", (t4, 5353)); out("udp", "sent")
except Exception as e:
    out("udp", err(e))
if cfg.get("target6"):
    out("ipv6", tcp(cfg["target6"], 8080, socket.AF_INET6))
out("dns-udp", dns_udp(t4, "leak-direct-udp-%s.example" % tag))
out("dns-tcp", dns_tcp(t4, "leak-direct-tcp-%s.example" % tag))
out("dns-name", resolve("leak-name-%s.example" % tag))
try:
    p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); p.settimeout(2)
    p.sendto(struct.pack(">BBHHH", 8, 0, 0, 0x5b, 1) + b"sbx-doctor", (t4, 0))
    p.recv(512); out("icmp", "reply")
except Exception as e:
    out("icmp", err(e))
out("gateway", tcp(cfg["gateway"], 80))
out("private", tcp(cfg["private"], 80))
out("metadata", tcp("169.254.169.254", 80))
try:
    out("allowed", urllib.request.urlopen("http://doctor-allowed.test/", timeout=5).read().decode())
except Exception as e:
    out("allowed", err(e))
out("upstream", resolve("upstream-ok.doctor.test"))

# The filter's upstream is the engine's resolver on 127.0.0.11:53, in the namespace the agent
# shares. Spoofing: take its address and port, pre-create conntrack entries toward every port the
# filter may query from, and answer the filter's upstream query with a forged address.
def spoof(name, fake):
    import threading
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.11", 53))
    except Exception as e:
        return "bind " + err(e)
    s.setblocking(False)
    for p in range(1024, 65536):
        try:
            s.sendto(b"x", ("127.0.0.1", p))
        except Exception:
            pass
    got = {}
    t = threading.Thread(target=lambda: got.update(ip=resolve(name))); t.start()
    s.settimeout(5)
    try:
        q, peer = s.recvfrom(4096)
        end = 12
        while q[end]:
            end += q[end] + 1
        r = q[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + q[12:end + 5]
        r += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(fake)
        s.sendto(r, peer)
    except Exception:
        pass
    t.join()
    return "answered " + str(got.get("ip"))

out("spoof", spoof("spoofed.upstream-ok.doctor.test", cfg["private"]))
out("spoof-name", resolve("spoofed.upstream-ok.doctor.test"))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.bind(("127.0.0.11", 0)); u.sendto(b"x", ("127.0.0.1", 4000)); out("spoof-send", "sent")
except Exception as e:
    out("spoof-send", err(e))

# Co-binding: a socket beside the filter's 127.0.0.1:53 (or any port 53, or below 1024) would take
# queries meant for it or answer as a DNS server.
bound = []
for addr, kind, port in [("127.0.0.1", socket.SOCK_DGRAM, 53), ("127.0.0.1", socket.SOCK_STREAM, 53),
                         ("127.0.0.11", socket.SOCK_DGRAM, 53), ("0.0.0.0", socket.SOCK_STREAM, 80)]:
    b = socket.socket(socket.AF_INET, kind)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        b.bind((addr, port)); bound.append("%s:%d" % (addr, port))
    except Exception:
        pass
out("cobind", "bound " + " ".join(bound) if bound else "refused")
