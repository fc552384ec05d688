//! The egress firewall as a plan: pure functions from the allowlist to the files the gate loads
//! (`ipset restore`, `iptables-restore`, `ip6tables-restore` input, the dnsmasq and ulogd
//! configuration). Applying them is the gate script's job (sandbox/gate/gate); nothing here does
//! I/O, so every rule is snapshot-tested.
//!
//! Shape: default DROP both ways for IPv4 and IPv6; loopback and replies allowed; only root in the
//! namespace (the gate's DNS filter and the engine's embedded resolver, which sends from inside
//! the namespace) may send DNS upstream; the agent resolves through the filter on 127.0.0.1,
//! which answers NXDOMAIN itself for every name not allowlisted and adds the answers for
//! allowlisted names to per-port ipsets (with expiry, so rotating CDN addresses keep working);
//! TCP to those sets is allowed; everything else is logged and REJECTed (TCP reset, ICMP
//! admin-prohibited otherwise) so it fails at once instead of hanging.
//!
//! The filter has no default upstream (`no-resolv`): each allowlisted name names the engine's
//! resolver explicitly. (A `resolv-file` would make dnsmasq forward every name, whatever
//! `local=/#/` says.)

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::allowlist::{Entry, Target};

/// Where the gate finds its configuration and writes its logs (container paths).
pub const GATE_CONF_DIR: &str = "/run/sbx/gate";
pub const GATE_LOG_DIR: &str = "/run/sbx/log";
/// Each of the gate's logs is cut at this size, the previous part kept as `<log>.1`, so a
/// session's record takes at most twice this per log however much the agent does.
pub const LOG_LIMIT_BYTES: u64 = 4 << 20;
/// The NFLOG group refused packets are sent to (read by ulogd in the gate).
pub const NFLOG_GROUP: u16 = 7;
/// How long an address learned from a DNS answer stays allowed after its last lookup.
pub const LEARNED_TTL_SECS: u32 = 3600;
/// dnsmasq's cache may not outlive the set entries it would otherwise skip refreshing.
const MAX_CACHE_TTL_SECS: u32 = 300;
/// Docker's embedded resolver: the filter's only upstream, which the agent must not use directly
/// (user-defined networks always have it; it forwards to the engine's or `dns:` servers).
const ENGINE_DNS: &str = "127.0.0.11";
/// Where the DNS filter listens, the agent's only resolver.
const FILTER_DNS: &str = "127.0.0.1";

/// The files the gate loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ipset: String,
    pub iptables: String,
    pub ip6tables: String,
    pub dnsmasq: String,
    pub ulogd: String,
    /// The agent container's `/etc/resolv.conf`: the filter, nothing else.
    pub agent_resolv_conf: String,
}

/// The ports an entry opens, which decides the sets its addresses go to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PortGroup {
    Web,
    Port(u16),
}

impl PortGroup {
    fn of(e: &Entry) -> Self {
        e.port.map_or(PortGroup::Web, PortGroup::Port)
    }

    fn set(&self, v6: bool) -> String {
        let fam = if v6 { 6 } else { 4 };
        match self {
            PortGroup::Web => format!("sbx-web-{fam}"),
            PortGroup::Port(p) => format!("sbx-p{p}-{fam}"),
        }
    }

    fn match_ports(&self) -> String {
        match self {
            PortGroup::Web => "-m multiport --dports 80,443".into(),
            PortGroup::Port(p) => format!("--dport {p}"),
        }
    }
}

pub fn plan(entries: &[Entry]) -> Plan {
    let groups: BTreeSet<PortGroup> = std::iter::once(PortGroup::Web)
        .chain(entries.iter().map(PortGroup::of))
        .collect();
    Plan {
        ipset: ipset_rules(entries, &groups),
        iptables: iptables_rules(&groups, false),
        ip6tables: iptables_rules(&groups, true),
        dnsmasq: dnsmasq_conf(entries),
        ulogd: ulogd_conf(),
        agent_resolv_conf: format!("nameserver {FILTER_DNS}\noptions ndots:0\n"),
    }
}

fn ipset_rules(entries: &[Entry], groups: &BTreeSet<PortGroup>) -> String {
    let mut out = String::from("# sbx: allowed destinations, one set per port group and family\n");
    for g in groups {
        for (v6, fam) in [(false, "inet"), (true, "inet6")] {
            out.push_str(&format!(
                "create {} hash:net family {fam} timeout {LEARNED_TTL_SECS} -exist\n",
                g.set(v6)
            ));
        }
    }
    for e in entries {
        if let Target::Net { addr, prefix } = e.target {
            // Addresses the user named never expire.
            for (a, p) in split_zero_prefix(addr, prefix) {
                out.push_str(&format!(
                    "add {} {a}/{p} timeout 0 -exist\n",
                    PortGroup::of(e).set(a.is_ipv6())
                ));
            }
        }
    }
    out
}

/// `hash:net` cannot hold a /0, so "everything" becomes its two halves.
fn split_zero_prefix(addr: IpAddr, prefix: u8) -> Vec<(IpAddr, u8)> {
    match (addr, prefix) {
        (IpAddr::V4(_), 0) => vec![
            (IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)), 1),
            (IpAddr::V4(Ipv4Addr::new(128, 0, 0, 0)), 1),
        ],
        (IpAddr::V6(_), 0) => vec![
            (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 1),
            (IpAddr::V6(Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0)), 1),
        ],
        _ => vec![(addr, prefix)],
    }
}

fn iptables_rules(groups: &BTreeSet<PortGroup>, v6: bool) -> String {
    let reject = if v6 {
        "icmp6-adm-prohibited"
    } else {
        "icmp-admin-prohibited"
    };
    let mut r = vec![
        "# sbx egress firewall (generated): default DROP, allowlisted TCP only".to_owned(),
        "*filter".into(),
        ":INPUT DROP [0:0]".into(),
        ":FORWARD DROP [0:0]".into(),
        ":OUTPUT DROP [0:0]".into(),
        ":SBX-REFUSE - [0:0]".into(),
        "-A INPUT -i lo -j ACCEPT".into(),
        "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT".into(),
    ];
    // DNS belongs to root in this namespace: the filter (127.0.0.1:53) and the engine's resolver
    // (127.0.0.11:53, which the filter forwards to). The agent shares the namespace, so nothing it
    // sends may look like either of them or reach the upstream: no packet from port 53 (a forged
    // answer), none from the upstream's address (which, sent toward the filter's query ports,
    // would pre-create conntrack entries that route the filter's next query to the agent), none
    // to the upstream (a resolver that answers any name), and DNS on loopback only to the filter.
    // Binding port 53 is already impossible for it (below 1024, no capability); these rules hold
    // even if that ever changes. They match sockets only: the kernel's own packets (a SYN-ACK
    // or a time-wait ACK from the filter's port 53) have no owner and are not the agent's.
    for proto in ["udp", "tcp"] {
        r.push(format!(
            "-A OUTPUT -p {proto} --sport 53 -m owner --socket-exists ! --uid-owner 0 -j SBX-REFUSE"
        ));
    }
    if v6 {
        for proto in ["udp", "tcp"] {
            r.push(format!(
                "-A OUTPUT -o lo -p {proto} --dport 53 -m owner --socket-exists ! --uid-owner 0 -j SBX-REFUSE"
            ));
        }
    } else {
        r.extend([
            format!("-A OUTPUT -o lo -s {ENGINE_DNS} -m owner --socket-exists ! --uid-owner 0 -j SBX-REFUSE"),
            format!("-A OUTPUT -o lo -d {ENGINE_DNS} -m owner --socket-exists ! --uid-owner 0 -j SBX-REFUSE"),
        ]);
        for proto in ["udp", "tcp"] {
            r.push(format!(
                "-A OUTPUT -o lo -p {proto} --dport 53 ! -d {FILTER_DNS} -m owner --socket-exists ! --uid-owner 0 -j SBX-REFUSE"
            ));
        }
    }
    r.extend([
        "-A OUTPUT -o lo -j ACCEPT".to_owned(),
        "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT".into(),
        // DNS upstream: only root, i.e. the gate's filter and the engine's embedded resolver.
        // The agent never runs as root and cannot gain it (no capability, no-new-privileges).
        "-A OUTPUT -p udp --dport 53 -m owner --uid-owner 0 -j ACCEPT".into(),
        "-A OUTPUT -p tcp --dport 53 -m owner --uid-owner 0 -j ACCEPT".into(),
    ]);
    for g in groups {
        r.push(format!(
            "-A OUTPUT -p tcp {} -m set --match-set {} dst -j ACCEPT",
            g.match_ports(),
            g.set(v6)
        ));
    }
    r.extend([
        "-A OUTPUT -j SBX-REFUSE".to_owned(),
        format!(
            "-A SBX-REFUSE -m limit --limit 50/second --limit-burst 100 -j NFLOG --nflog-group {NFLOG_GROUP} --nflog-prefix sbx-refused"
        ),
        // TCP gets a reset (an instant "connection refused"; an ICMP error would leave connect()
        // retrying for a second), everything else an ICMP admin-prohibited.
        "-A SBX-REFUSE -p tcp -j REJECT --reject-with tcp-reset".into(),
        format!("-A SBX-REFUSE -j REJECT --reject-with {reject}"),
        "COMMIT".into(),
    ]);
    let mut out = r.join("\n");
    out.push('\n');
    out
}

/// How one allowlisted DNS name is served.
#[derive(Default)]
struct Domain {
    wildcard: bool,
    sets: BTreeSet<String>,
}

fn dnsmasq_conf(entries: &[Entry]) -> String {
    let mut domains: BTreeMap<String, Domain> = BTreeMap::new();
    for e in entries {
        let (name, wildcard) = match &e.target {
            Target::Host(h) => (h, false),
            Target::Wildcard(s) => (s, true),
            Target::Net { .. } => continue,
        };
        let d = domains.entry(name.clone()).or_default();
        d.wildcard |= wildcard;
    }
    // dnsmasq applies only the longest matching `ipset=` line, so each domain carries the sets of
    // every entry that covers it.
    let names: Vec<String> = domains.keys().cloned().collect();
    for name in &names {
        let sets: BTreeSet<String> = entries
            .iter()
            .filter(|e| e.dns_name().is_some() && e.matches_name(name))
            .flat_map(|e| [PortGroup::of(e).set(false), PortGroup::of(e).set(true)])
            .collect();
        if let Some(d) = domains.get_mut(name) {
            d.sets = sets;
        }
    }
    let covered_by_wildcard = |name: &str| {
        domains
            .iter()
            .any(|(w, d)| d.wildcard && (name == w || name.ends_with(&format!(".{w}"))))
    };
    let mut out = format!(
        "# sbx DNS filter (generated)\n\
         listen-address={FILTER_DNS}\n\
         bind-interfaces\n\
         port=53\n\
         user=root\n\
         group=\n\
         no-hosts\n\
         no-resolv\n\
         cache-size=1000\n\
         max-cache-ttl={MAX_CACHE_TTL_SECS}\n\
         log-queries=extra\n\
         log-facility={GATE_LOG_DIR}/dns.log\n\
         log-async=50\n"
    );
    for (name, d) in &domains {
        out.push_str(&format!("server=/{name}/{ENGINE_DNS}\n"));
        if !d.wildcard && !covered_by_wildcard(name) {
            // An exact name allows that name only: its subdomains stay local (NXDOMAIN), so
            // `<data>.allowed.example` cannot carry data to the domain's name servers.
            out.push_str(&format!("local=/*.{name}/\n"));
        }
        let sets: Vec<&str> = d.sets.iter().map(String::as_str).collect();
        out.push_str(&format!("ipset=/{name}/{}\n", sets.join(",")));
    }
    // Everything else is answered NXDOMAIN here and never leaves the sandbox.
    out.push_str("local=/#/\n");
    out
}

fn ulogd_conf() -> String {
    format!(
        "# sbx refused-connection log (generated); the gate prepends the plugin lines\n\
         [global]\n\
         logfile=\"{GATE_LOG_DIR}/ulogd.log\"\n\
         loglevel=5\n\
         stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU\n\
         \n\
         [log1]\n\
         group={NFLOG_GROUP}\n\
         netlink_qthreshold=1\n\
         netlink_qtimeout=1\n\
         \n\
         [emu1]\n\
         file=\"{GATE_LOG_DIR}/refused.log\"\n\
         sync=1\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allowlist::parse_all;

    fn sample() -> Plan {
        plan(
            &parse_all([
                "github.com",
                "api.github.com",
                "*.githubusercontent.com",
                "objects.githubusercontent.com:8443",
                "10.9.8.7",
                "192.168.0.0/16:5432",
                "[2001:db8::/32]:443",
                "0.0.0.0/0:9999",
            ])
            .unwrap(),
        )
    }

    #[test]
    fn iptables_snapshot() {
        insta::assert_snapshot!(sample().iptables);
    }

    #[test]
    fn ip6tables_snapshot() {
        insta::assert_snapshot!(sample().ip6tables);
    }

    #[test]
    fn ipset_snapshot() {
        insta::assert_snapshot!(sample().ipset);
    }

    #[test]
    fn dnsmasq_snapshot() {
        insta::assert_snapshot!(sample().dnsmasq);
    }

    #[test]
    fn security_properties_hold() {
        let p = sample();
        for rules in [&p.iptables, &p.ip6tables] {
            assert!(rules.contains(":OUTPUT DROP") && rules.contains(":INPUT DROP"));
            assert!(!rules.contains("--dport 22 "), "no port 22");
            assert!(
                !rules.contains("*nat"),
                "the nat table (engine DNS) is never touched"
            );
            assert!(rules.lines().last() == Some("COMMIT"));
            // Every ACCEPT of non-loopback, non-reply traffic is bound to a set or to root's DNS.
            for l in rules.lines().filter(|l| l.contains("-j ACCEPT")) {
                assert!(
                    l.contains("-i lo")
                        || l.contains("-o lo")
                        || l.contains("ESTABLISHED")
                        || l.contains("--match-set")
                        || l.contains("--uid-owner 0"),
                    "unexpected accept: {l}"
                );
            }
        }
        assert!(p.dnsmasq.trim_end().ends_with("local=/#/"));
        assert!(p.dnsmasq.contains("local=/*.github.com/"));
        assert!(
            !p.dnsmasq
                .contains("local=/*.objects.githubusercontent.com/")
        );
    }
}
