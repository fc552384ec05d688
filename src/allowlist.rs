//! Allowlist entries: what a user may write after `--allow` or under `allow:` (an exact hostname, a
//! `*.` wildcard name, an IP address or a CIDR block, each optionally with `:PORT`), parsed and
//! normalised. How entries become firewall rules is the firewall module's business.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The built-in allowlist as shipped: one `ENTRY  REASON` per line, `#` comments.
const DEFAULTS_FILE: &str = include_str!("allowlist/defaults.txt");

/// One entry of the built-in allowlist and why it is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultEntry {
    pub entry: &'static str,
    pub reason: &'static str,
}

/// The built-in allowlist: what Claude Code, git, `gh` and the usual package managers need
/// (`src/allowlist/defaults.txt`; a unit test keeps every line valid and explained).
pub fn defaults() -> Vec<DefaultEntry> {
    parse_defaults(DEFAULTS_FILE)
}

fn parse_defaults(text: &'static str) -> Vec<DefaultEntry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (entry, reason) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            DefaultEntry {
                entry,
                reason: reason.trim(),
            }
        })
        .collect()
}

/// Ports an entry without `:PORT` opens.
pub const WEB_PORTS: [u16; 2] = [80, 443];

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// An exact DNS name, lowercase, no trailing dot.
    Host(String),
    /// `*.suffix`: the suffix and every name below it.
    Wildcard(String),
    /// An address block; a bare IP is a /32 or /128.
    Net { addr: IpAddr, prefix: u8 },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    pub target: Target,
    /// `None` means the web ports (80 and 443).
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad allowlist entry `{entry}`: {reason}")]
pub struct EntryError {
    pub entry: String,
    pub reason: String,
}

impl crate::error::Hint for EntryError {
    fn hint(&self) -> Option<String> {
        Some(
            "write a host name (`example.com`), a wildcard (`*.example.com`), an IP or a CIDR, optionally with `:PORT`"
                .into(),
        )
    }
}

impl Entry {
    pub fn ports(&self) -> Vec<u16> {
        match self.port {
            Some(p) => vec![p],
            None => WEB_PORTS.to_vec(),
        }
    }

    /// The name dnsmasq and the summary use: the exact host, or the wildcard's suffix.
    pub fn dns_name(&self) -> Option<&str> {
        match &self.target {
            Target::Host(h) | Target::Wildcard(h) => Some(h),
            Target::Net { .. } => None,
        }
    }

    /// Whether a DNS name is allowed by this entry (exact match, or below a wildcard's suffix;
    /// never a look-alike such as `evil-example.com`).
    pub fn matches_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match &self.target {
            Target::Host(h) => name == *h,
            Target::Wildcard(s) => name == *s || name.ends_with(&format!(".{s}")),
            Target::Net { .. } => false,
        }
    }

    /// Whether everything `other` lets through, this entry lets through already: its ports are
    /// a subset, and its target the same, a name below this wildcard, or a block inside this
    /// one. A name is never covered by an address block: it resolves to whatever DNS says.
    pub fn covers(&self, other: &Entry) -> bool {
        let ports = self.ports();
        if !other.ports().iter().all(|p| ports.contains(p)) {
            return false;
        }
        match (&self.target, &other.target) {
            (Target::Host(a), Target::Host(b)) => a == b,
            (Target::Wildcard(_), Target::Host(h)) => self.matches_name(h),
            (Target::Wildcard(a), Target::Wildcard(b)) => b == a || b.ends_with(&format!(".{a}")),
            (Target::Net { addr, prefix }, Target::Net { addr: b, prefix: q }) => {
                addr.is_ipv4() == b.is_ipv4() && q >= prefix && mask(*b, *prefix) == *addr
            }
            _ => false,
        }
    }
}

impl FromStr for Entry {
    type Err = EntryError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| EntryError {
            entry: raw.to_owned(),
            reason: reason.to_owned(),
        };
        let s = raw.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.contains("://") {
            return Err(err(
                "write a host name, not a URL (drop the scheme and path)",
            ));
        }
        // Split off the port. IPv6 needs brackets to carry one: `[2001:db8::1]:443`.
        let (body, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inner, after) = rest
                .split_once(']')
                .ok_or_else(|| err("missing `]` after an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| err("expected `:PORT` after `]`"))?,
                ),
            };
            (inner, port)
        } else if s.matches(':').count() == 1 {
            let (b, p) = s.split_once(':').unwrap_or((s, ""));
            (b, Some(p))
        } else {
            (s, None)
        };
        let port = port
            .map(|p| match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(err("the port must be a number from 1 to 65535")),
                Ok(n) => Ok(n),
            })
            .transpose()?;

        let target = if let Some((addr, len)) = body.split_once('/') {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| err("the part before `/` is not an IP address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = len
                .parse()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| err(&format!("the prefix length must be 0 to {max}")))?;
            Target::Net {
                addr: mask(addr, prefix),
                prefix,
            }
        } else if let Ok(addr) = body.parse::<IpAddr>() {
            Target::Net {
                addr,
                prefix: if addr.is_ipv4() { 32 } else { 128 },
            }
        } else if let Some(suffix) = body.strip_prefix("*.") {
            let suffix = hostname(suffix).map_err(|r| err(&r))?;
            if !suffix.contains('.') {
                return Err(err(
                    "a wildcard must name a domain with at least two labels, such as `*.example.com`",
                ));
            }
            Target::Wildcard(suffix)
        } else {
            if body.contains('*') {
                return Err(err("a wildcard is only allowed as a leading `*.`"));
            }
            Target::Host(hostname(body).map_err(|r| err(&r))?)
        };
        Ok(Entry { target, port })
    }
}

fn hostname(s: &str) -> Result<String, String> {
    let s = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    if s.is_empty() || s.len() > 253 {
        return Err("a host name must be 1 to 253 characters long".into());
    }
    for label in s.split('.') {
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > 63 || !ok_chars {
            return Err(format!(
                "`{label}` is not a valid DNS label (letters, digits, `-`, 1 to 63 characters)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the label `{label}` starts or ends with `-`"));
        }
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("this looks like an IP address but is not a valid one".into());
    }
    Ok(s)
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ipv6 = matches!(
            &self.target,
            Target::Net {
                addr: IpAddr::V6(_),
                ..
            }
        );
        let body = match &self.target {
            Target::Host(h) => h.clone(),
            Target::Wildcard(s) => format!("*.{s}"),
            Target::Net { addr, prefix } => {
                let full = if addr.is_ipv4() { 32 } else { 128 };
                if *prefix == full {
                    addr.to_string()
                } else {
                    format!("{addr}/{prefix}")
                }
            }
        };
        match (self.port, ipv6) {
            (None, _) => f.write_str(&body),
            (Some(p), true) => write!(f, "[{body}]:{p}"),
            (Some(p), false) => write!(f, "{body}:{p}"),
        }
    }
}

/// Parses a list of entries, deduplicating while keeping the first occurrence's order.
pub fn parse_all<'a>(raw: impl IntoIterator<Item = &'a str>) -> Result<Vec<Entry>, EntryError> {
    let mut out: Vec<Entry> = Vec::new();
    for r in raw {
        let e: Entry = r.parse()?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Entry {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_form_and_prints_it_back() {
        for s in [
            "github.com",
            "github.com:8443",
            "*.githubusercontent.com",
            "*.example.com:22",
            "10.1.2.3",
            "10.1.2.3:80",
            "10.0.0.0/8",
            "2001:db8::1",
            "[2001:db8::1]:443",
            "2001:db8::/32",
            "[2001:db8::/32]:443",
        ] {
            assert_eq!(p(s).to_string(), s, "round trip of {s}");
        }
        assert_eq!(p("GitHub.COM.").to_string(), "github.com");
        assert_eq!(p("10.1.2.3/8").to_string(), "10.0.0.0/8");
    }

    #[test]
    fn rejects_bad_entries_with_a_reason() {
        for (s, why) in [
            ("", "empty"),
            ("https://github.com/x", "URL"),
            ("github.com:0", "port"),
            ("github.com:99999", "port"),
            ("github.com:http", "port"),
            ("*.com", "two labels"),
            ("a.*.com", "leading"),
            ("exa mple.com", "label"),
            ("-bad.com", "starts or ends"),
            ("10.0.0.0/33", "prefix"),
            ("999.1.1.1", "IP address"),
            ("[::1", "`]`"),
        ] {
            let e = s.parse::<Entry>().unwrap_err();
            assert!(e.to_string().contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn wildcards_match_subdomains_not_look_alikes() {
        let w = p("*.example.com");
        assert!(w.matches_name("a.example.com"));
        assert!(w.matches_name("a.b.example.com."));
        assert!(w.matches_name("example.com"));
        assert!(!w.matches_name("evil-example.com"));
        assert!(!w.matches_name("example.com.evil.test"));
        let h = p("example.com");
        assert!(h.matches_name("EXAMPLE.com"));
        assert!(!h.matches_name("a.example.com"));
    }

    #[test]
    fn coverage_is_by_target_and_ports() {
        let covers = |a: &str, b: &str| p(a).covers(&p(b));
        assert!(covers("github.com", "github.com:443"));
        assert!(!covers("github.com:443", "github.com"));
        assert!(!covers("github.com", "github.com:22"));
        assert!(covers("*.example.com", "a.example.com"));
        assert!(covers("*.example.com", "*.a.example.com"));
        assert!(!covers("*.example.com", "evil-example.com"));
        assert!(!covers("a.example.com", "*.example.com"));
        assert!(covers("10.0.0.0/8", "10.1.0.0/16:443"));
        assert!(!covers("10.0.0.0/16", "10.0.0.0/8"));
        assert!(!covers("10.0.0.0/8", "11.0.0.1"));
        assert!(!covers("0.0.0.0/0", "::/0"));
        assert!(covers("2001:db8::/32", "2001:db8:1::1"));
        assert!(!covers("10.0.0.0/8", "ten.example.com"));
    }

    #[test]
    fn deduplicates_keeping_order() {
        let v = parse_all(["b.com", "a.com", "B.com"]).unwrap();
        assert_eq!(v, vec![p("b.com"), p("a.com")]);
        assert_eq!(p("x.com").ports(), vec![80, 443]);
        assert_eq!(p("x.com:22").ports(), vec![22]);
    }

    #[test]
    fn the_default_list_parses_and_every_entry_says_why() {
        let list = defaults();
        assert!(list.len() >= 10, "{list:?}");
        let mut seen = std::collections::BTreeSet::new();
        for d in &list {
            let e: Entry = d.entry.parse().unwrap_or_else(|e| panic!("{e}"));
            assert!(seen.insert(e), "`{}` is listed twice", d.entry);
            assert!(d.reason.len() >= 10, "`{}` has no reason", d.entry);
        }
        // What current Claude Code needs to sign in, refresh its login and work.
        for host in ["api.anthropic.com", "platform.claude.com", "claude.ai"] {
            assert!(list.iter().any(|d| d.entry == host), "{host} missing");
        }
        // Third-party telemetry accepts anyone's data: a way out, never allowed by default.
        for host in [
            "sentry.io",
            "statsig.anthropic.com",
            "http-intake.logs.us5.datadoghq.com",
        ] {
            assert!(!list.iter().any(|d| d.entry == host), "{host} listed");
        }
        assert_eq!(
            parse_defaults("# c\n\n  a.com   why it is here  \nb.com\n"),
            vec![
                DefaultEntry {
                    entry: "a.com",
                    reason: "why it is here"
                },
                DefaultEntry {
                    entry: "b.com",
                    reason: ""
                },
            ]
        );
    }
}
