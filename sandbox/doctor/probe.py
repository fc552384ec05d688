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
