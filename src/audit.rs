//! What the egress controls saw: the DNS filter's query log (dnsmasq, `log-queries=extra`) and
//! the refused-connection log (ulogd), parsed into a session's audit record, its end-of-session
//! summary, and the `.sbx.yaml` lines that would allow what was denied. Pure parsing; reading the
//! files is the caller's.

use std::collections::BTreeMap;

use serde::Serialize;

/// One DNS question and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Query {
    pub time: String,
    pub name: String,
    pub qtype: String,
    /// `denied` (answered NXDOMAIN locally, never forwarded), `forwarded`, or `cached`.
    pub outcome: String,
    /// Addresses in the reply, when allowed.
    pub answers: Vec<String>,
    /// Asked by sbx's start-up self-check, not by the agent.
    pub selfcheck: bool,
}

/// A connection the firewall refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub time: String,
    pub destination: String,
    pub protocol: String,
    pub port: Option<u16>,
    pub uid: Option<u32>,
    /// Made by sbx's start-up self-check, not by the agent.
    pub selfcheck: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    pub queries: Vec<Query>,
    pub refused: Vec<Refusal>,
}

/// Parses the DNS filter's log. Names are the agent's choice and may hold spaces (dnsmasq logs
/// them as they are), so a name runs up to the last ` from `, ` to ` or ` is ` of its line.
pub fn parse_dns_log(text: &str) -> Vec<Query> {
    let mut by_serial: BTreeMap<u64, Query> = BTreeMap::new();
    for line in text.lines() {
        let Some((head, rest)) = line.split_once("]: ") else {
            continue;
        };
        let time = head.get(..15).unwrap_or("").to_owned();
        let mut words = rest.splitn(4, ' ');
        let (Some(serial), Some(_client), Some(action), Some(rest)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Ok(serial) = serial.parse::<u64>() else {
            continue;
        };
        let tidy = |name: &str| name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(qtype) = action
            .strip_prefix("query[")
            .and_then(|t| t.strip_suffix(']'))
        {
            let name = rest.rsplit_once(" from ").map_or(rest, |(n, _)| n);
            by_serial.insert(
                serial,
                Query {
                    time,
                    name: tidy(name),
                    qtype: qtype.to_owned(),
                    outcome: "asked".into(),
                    answers: Vec::new(),
                    selfcheck: false,
                },
            );
            continue;
        }
        let Some(q) = by_serial.get_mut(&serial) else {
            continue;
        };
        let answer = rest.rsplit_once(" is ").map(|(_, a)| a.trim());
        match action {
            "config" => q.outcome = "denied".into(),
            "forwarded" => q.outcome = "forwarded".into(),
            "cached" if q.outcome == "asked" => q.outcome = "cached".into(),
            _ => {}
        }
        if matches!(action, "reply" | "cached")
            && let Some(a) = answer.filter(|a| a.parse::<std::net::IpAddr>().is_ok())
        {
            q.answers.push(a.to_owned());
        }
    }
    by_serial.into_values().collect()
}

/// Parses ulogd's LOGEMU lines (`... DST=1.2.3.4 ... PROTO=TCP ... DPT=443 ... UID=1000`).
pub fn parse_refused_log(text: &str) -> Vec<Refusal> {
    text.lines()
        .filter(|l| l.contains("sbx-refused"))
        .filter_map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k).map(str::to_owned))
            };
            Some(Refusal {
                time: l.get(..15).unwrap_or("").to_owned(),
                destination: field("DST=")?,
                protocol: field("PROTO=").unwrap_or_else(|| "?".into()),
                port: field("DPT=").and_then(|p| p.parse().ok()),
                uid: field("UID=").and_then(|u| u.parse().ok()),
                selfcheck: false,
            })
        })
        .collect()
}

/// Reverse lookups are noise in a summary.
fn worth_reporting(name: &str) -> bool {
    !(name.ends_with(".in-addr.arpa") || name.ends_with(".ip6.arpa") || name.is_empty())
}

/// At most this many names are suggested as allowlist lines (the agent decides how many it
/// looks up).
const MAX_SUGGESTIONS: usize = 20;

/// The short end-of-session summary, or `None` when nothing was denied.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Denied names and how often each was asked.
    pub denied_names: BTreeMap<String, usize>,
    /// `(destination, protocol/port)` and how often.
    pub refused: BTreeMap<String, usize>,
}

impl Audit {
    /// Marks the start-up self-check's probes as sbx's own: its first look-up of `name` (one A
    /// and one AAAA question) and its first TCP and first UDP packet to `probe` port 9. The
    /// self-check runs before anything of the agent's, so a later look-alike is the agent's.
    pub fn mark_selfcheck(&mut self, name: &str, probe: Option<&str>) {
        let mut types = Vec::new();
        for q in self.queries.iter_mut().filter(|q| q.name == name) {
            if !types.contains(&q.qtype) {
                types.push(q.qtype.clone());
                q.selfcheck = true;
            }
        }
        let Some(probe) = probe else { return };
        let mut protocols = Vec::new();
        for r in self
            .refused
            .iter_mut()
            .filter(|r| r.destination == probe && r.port == Some(9))
        {
            if matches!(r.protocol.as_str(), "TCP" | "UDP") && !protocols.contains(&r.protocol) {
                protocols.push(r.protocol.clone());
                r.selfcheck = true;
            }
        }
    }

    /// What the agent did, without sbx's own probes.
    pub fn agents(&self) -> (Vec<&Query>, Vec<&Refusal>) {
        (
            self.queries.iter().filter(|q| !q.selfcheck).collect(),
            self.refused.iter().filter(|r| !r.selfcheck).collect(),
        )
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        let (queries, refused) = self.agents();
        for q in queries.into_iter().filter(|q| q.outcome == "denied") {
            if worth_reporting(&q.name) {
                *s.denied_names.entry(q.name.clone()).or_default() += 1;
            }
        }
        for r in refused {
            let key = match r.port {
                Some(p) => format!("{}:{p}/{}", r.destination, r.protocol.to_ascii_lowercase()),
                None => format!("{} ({})", r.destination, r.protocol.to_ascii_lowercase()),
            };
            *s.refused.entry(key).or_default() += 1;
        }
        s
    }
}

impl Summary {
    pub fn is_empty(&self) -> bool {
        self.denied_names.is_empty() && self.refused.is_empty()
    }

    /// The denied names that may be suggested as allowlist entries: plain host names only (the
    /// agent chooses what it looks up; `0.0.0.0/0:443` is a valid DNS question).
    pub fn suggestible(&self) -> Vec<&str> {
        self.denied_names
            .keys()
            .map(String::as_str)
            .filter(|n| crate::text::is_host_name(n))
            .collect()
    }

    /// The `.sbx.yaml` lines that would allow the denied names, or `None` when none may be
    /// suggested.
    pub fn allow_lines(&self) -> Option<String> {
        let names = self.suggestible();
        if names.is_empty() {
            return None;
        }
        let mut out = String::from("allow:\n");
        for name in names.iter().take(MAX_SUGGESTIONS) {
            out.push_str(&format!("  - {name}\n"));
        }
        if names.len() > MAX_SUGGESTIONS {
            out.push_str(&format!(
                "  # and {} more (`sbx log SESSION` lists them all)\n",
                names.len() - MAX_SUGGESTIONS
            ));
        }
        Some(out)
    }

    /// A few lines for stderr at the end of a session.
    pub fn render(&self) -> String {
        let list = |m: &BTreeMap<String, usize>| {
            let mut items: Vec<String> = m
                .iter()
                .take(8)
                .map(|(k, n)| {
                    let k = crate::text::printable(k);
                    if *n > 1 { format!("{k} (x{n})") } else { k }
                })
                .collect();
            if m.len() > 8 {
                items.push(format!("and {} more", m.len() - 8));
            }
            items.join(", ")
        };
        let mut out = String::from("blocked during this session:\n");
        if !self.denied_names.is_empty() {
            out.push_str(&format!("  names denied: {}\n", list(&self.denied_names)));
        }
        if !self.refused.is_empty() {
            out.push_str(&format!("  connections refused: {}\n", list(&self.refused)));
        }
        if let Some(lines) = self.allow_lines() {
            out.push_str("  to allow the names, add to `.sbx.yaml` (then `sbx trust`):\n");
            for l in lines.lines() {
                out.push_str(&format!("    {l}\n"));
            }
        }
        out.trim_end().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DNS: &str = "\
Nov 27 08:45:37 dnsmasq[84]: started, version 2.91 cachesize 150
Nov 27 08:45:37 dnsmasq[84]: 1 127.0.0.1/50138 query[A] api.github.com from 127.0.0.1
Nov 27 08:45:37 dnsmasq[84]: 1 127.0.0.1/50138 forwarded api.github.com to 127.0.0.11
Nov 27 08:45:37 dnsmasq[84]: 1 127.0.0.1/50138 ipset add sbx-web-4 140.82.112.5 api.github.com
Nov 27 08:45:37 dnsmasq[84]: 1 127.0.0.1/50138 reply api.github.com is 140.82.112.5
Nov 27 08:45:38 dnsmasq[84]: 2 127.0.0.1/38814 query[A] evil.example from 127.0.0.1
Nov 27 08:45:38 dnsmasq[84]: 2 127.0.0.1/38814 config evil.example is NXDOMAIN
Nov 27 08:45:38 dnsmasq[84]: 3 127.0.0.1/38815 query[AAAA] evil.example from 127.0.0.1
Nov 27 08:45:38 dnsmasq[84]: 3 127.0.0.1/38815 config evil.example is NXDOMAIN
Nov 27 08:45:38 dnsmasq[84]: 4 127.0.0.1/38816 query[PTR] 5.112.82.140.in-addr.arpa from 127.0.0.1
Nov 27 08:45:38 dnsmasq[84]: 4 127.0.0.1/38816 config 5.112.82.140.in-addr.arpa is NXDOMAIN
";
    const REFUSED: &str = "\
Nov 27 09:02:40 sbx-da8ee4a5 sbx-refused IN= OUT=eth0 MAC= SRC=172.24.0.2 DST=10.1.2.3 LEN=60 TOS=00 PREC=0x00 TTL=64 ID=41190 DF PROTO=TCP SPT=56200 DPT=443 SEQ=1 ACK=0 WINDOW=64240 SYN URGP=0 UID=1000 GID=1000 MARK=0x0
Nov 27 09:02:41 sbx-da8ee4a5 sbx-refused IN= OUT=eth0 MAC= SRC=172.24.0.2 DST=10.1.2.3 LEN=60 PROTO=TCP SPT=56201 DPT=443 UID=1000 GID=1000
Nov 27 09:02:42 sbx-da8ee4a5 sbx-refused IN= OUT=eth0 MAC= SRC=172.24.0.2 DST=10.1.2.4 LEN=84 PROTO=ICMP TYPE=8 CODE=0 ID=7 SEQ=1 UID=1000 GID=1000
";

    #[test]
    fn parses_queries_and_outcomes() {
        let q = parse_dns_log(DNS);
        assert_eq!(q.len(), 4);
        assert_eq!(q[0].name, "api.github.com");
        assert_eq!(q[0].outcome, "forwarded");
        assert_eq!(q[0].answers, ["140.82.112.5"]);
        assert_eq!(
            (q[1].qtype.as_str(), q[1].outcome.as_str()),
            ("A", "denied")
        );
    }

    #[test]
    fn parses_refusals() {
        let r = parse_refused_log(REFUSED);
        assert_eq!(r.len(), 3);
        assert_eq!(
            (
                r[0].destination.as_str(),
                r[0].protocol.as_str(),
                r[0].port,
                r[0].uid
            ),
            ("10.1.2.3", "TCP", Some(443), Some(1000))
        );
        assert_eq!((r[2].protocol.as_str(), r[2].port), ("ICMP", None));
    }

    #[test]
    fn summary_counts_and_suggests_allow_lines() {
        let a = Audit {
            queries: parse_dns_log(DNS),
            refused: parse_refused_log(REFUSED),
        };
        let s = a.summary();
        assert_eq!(s.denied_names.get("evil.example"), Some(&2));
        assert!(!s.denied_names.keys().any(|k| k.ends_with("arpa")));
        assert_eq!(s.refused.get("10.1.2.3:443/tcp"), Some(&2));
        assert_eq!(s.allow_lines().unwrap(), "allow:\n  - evil.example\n");
        insta::assert_snapshot!(s.render());
        assert!(Audit::default().summary().is_empty());
    }

    #[test]
    fn names_with_spaces_are_read_whole_and_suggestions_are_bounded() {
        let log = "Nov 27 08:45:38 dnsmasq[84]: 2 127.0.0.1/38814 query[A] sp ace.example from 127.0.0.1\n\
                   Nov 27 08:45:38 dnsmasq[84]: 2 127.0.0.1/38814 config sp ace.example is NXDOMAIN\n";
        let q = parse_dns_log(log);
        assert_eq!(
            (q[0].name.as_str(), q[0].outcome.as_str()),
            ("sp ace.example", "denied")
        );
        let a = Audit {
            queries: q,
            refused: vec![],
        };
        assert_eq!(a.summary().allow_lines(), None);
        let mut s = Summary::default();
        for i in 0..500 {
            s.denied_names.insert(format!("n{i}.example"), 1);
        }
        let lines = s.allow_lines().unwrap();
        assert_eq!(lines.lines().count(), 1 + MAX_SUGGESTIONS + 1, "{lines}");
        assert!(lines.contains("and 480 more"));
    }

    #[test]
    fn hostile_names_are_shown_escaped_and_never_suggested() {
        let mut s = Summary::default();
        for n in ["0.0.0.0/0:443", "red\x1b[31m.example", "ok.example"] {
            s.denied_names.insert(n.to_owned(), 1);
        }
        assert_eq!(s.allow_lines().unwrap(), "allow:\n  - ok.example\n");
        let r = s.render();
        assert!(!r.contains('\x1b'), "{r}");
        assert!(r.contains("red\\x1b[31m.example"), "{r}");
        assert!(!r.contains("- 0.0.0.0/0:443"), "{r}");
        s.denied_names.remove("ok.example");
        assert_eq!(s.allow_lines(), None);
        assert!(!s.render().contains("add to"));
    }

    #[test]
    fn the_selfchecks_probes_are_marked_and_left_out_of_the_summary() {
        let dns = "\
Nov 27 08:45:37 dnsmasq[84]: 1 127.0.0.1/5 query[AAAA] sbx-selfcheck-ab.invalid from 127.0.0.1
Nov 27 08:45:37 dnsmasq[84]: 1 127.0.0.1/5 config sbx-selfcheck-ab.invalid is NXDOMAIN
Nov 27 08:45:37 dnsmasq[84]: 2 127.0.0.1/6 query[A] sbx-selfcheck-ab.invalid from 127.0.0.1
Nov 27 08:45:37 dnsmasq[84]: 2 127.0.0.1/6 config sbx-selfcheck-ab.invalid is NXDOMAIN
Nov 27 08:45:39 dnsmasq[84]: 3 127.0.0.1/7 query[A] sbx-selfcheck-ab.invalid from 127.0.0.1
Nov 27 08:45:39 dnsmasq[84]: 3 127.0.0.1/7 config sbx-selfcheck-ab.invalid is NXDOMAIN
";
        let refused = "\
Nov 27 09:02:40 g sbx-refused SRC=172.24.0.2 DST=172.24.0.1 PROTO=UDP SPT=5 DPT=9 UID=1000
Nov 27 09:02:40 g sbx-refused SRC=172.24.0.2 DST=172.24.0.1 PROTO=TCP SPT=5 DPT=9 UID=1000
Nov 27 09:02:45 g sbx-refused SRC=172.24.0.2 DST=172.24.0.1 PROTO=TCP SPT=6 DPT=9 UID=1000
";
        let mut a = Audit {
            queries: parse_dns_log(dns),
            refused: parse_refused_log(refused),
        };
        a.mark_selfcheck("sbx-selfcheck-ab.invalid", Some("172.24.0.1"));
        let marks: Vec<bool> = a.queries.iter().map(|q| q.selfcheck).collect();
        assert_eq!(marks, [true, true, false]);
        let marks: Vec<bool> = a.refused.iter().map(|r| r.selfcheck).collect();
        assert_eq!(marks, [true, true, false]);
        // The agent's own look-alikes are the agent's.
        let s = a.summary();
        assert_eq!(s.denied_names.get("sbx-selfcheck-ab.invalid"), Some(&1));
        assert_eq!(s.refused.get("172.24.0.1:9/tcp"), Some(&1));
        let (q, r) = a.agents();
        assert_eq!((q.len(), r.len()), (1, 1));
    }
}
