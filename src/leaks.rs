//! `sbx doctor --leaks`: a throwaway session on an internal network of its own (so even a broken
//! rule cannot send a packet off this machine), a target host that records every packet reaching
//! it and doubles as the session's upstream resolver, a probe that tries every way out, and a
//! verdict per channel from the evidence: the target's record and the firewall's own log.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::audit::Refusal;

pub const TARGET_SCRIPT: &str = include_str!("../sandbox/doctor/target.py");
pub const PROBE_SCRIPT: &str = include_str!("../sandbox/doctor/probe.py");
/// The target's name on the doctor network; the session allowlists it.
pub const ALLOWED_NAME: &str = "doctor-allowed.test";
/// A name only the target (as upstream resolver) answers; the session allowlists it.
pub const UPSTREAM_NAME: &str = "upstream-ok.doctor.test";
/// An allowlisted name the probe tries to spoof the upstream's answer for.
pub const SPOOF_NAME: &str = "spoofed.upstream-ok.doctor.test";

/// What the probe is told.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeConfig {
    pub tag: String,
    pub target4: IpAddr,
    pub target6: Option<IpAddr>,
    pub gateway: IpAddr,
    /// An unused private address on the doctor network.
    pub private: IpAddr,
}

/// Everything the verdict rests on.
#[derive(Debug, Default)]
pub struct Evidence {
    /// The probe's own results, by row key.
    pub probe: BTreeMap<String, String>,
    /// What reached the target (`tcp 8080 <ip>`, `udp 5353 <ip>`, `dns <name>`, `icmp <ip>`).
    pub target: Vec<String>,
    /// The firewall's refused-connection log.
    pub refused: Vec<Refusal>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Row {
    pub channel: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Parses the probe's JSON lines.
pub fn parse_probe(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some((
                v.get("row")?.as_str()?.to_owned(),
                v.get("result")?.as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// One verdict per channel.
pub fn judge(cfg: &ProbeConfig, ev: &Evidence) -> Vec<Row> {
    let probe = |k: &str| ev.probe.get(k).cloned().unwrap_or_else(|| "not run".into());
    let reached = |prefix: &str| ev.target.iter().any(|l| l.starts_with(prefix));
    let refused_to = |addr: &str| ev.refused.iter().any(|r| r.destination == addr);
    let blocked = |key: &str, evidence: &str, leaked: bool| {
        let result = probe(key);
        let ok = result != "open"
            && result != "answered"
            && result != "reply"
            && result != "not run"
            && !leaked;
        let detail = if leaked {
            format!("LEAK: {evidence} reached the target (probe: {result})")
        } else {
            format!("blocked ({result}); nothing reached the target")
        };
        (ok, detail)
    };
    let firewall = |key: &str, addr: &str| {
        let result = probe(key);
        let logged = refused_to(addr);
        let ok = result != "open" && result != "not run" && logged;
        let detail = match (result.as_str(), logged) {
            ("open", _) => format!("LEAK: {addr} accepted a connection"),
            (_, true) => format!("refused by the firewall ({result})"),
            (_, false) => {
                format!("not refused by the firewall: {result}, and no refusal logged for {addr}")
            }
        };
        (ok, detail)
    };
    let mut rows = Vec::new();
    let mut push = |channel, (ok, detail): (bool, String)| {
        rows.push(Row {
            channel,
            ok,
            detail,
        })
    };
    push(
        "TCP to a non-allowlisted address",
        blocked("tcp", "a TCP connection", reached("tcp 8080")),
    );
    push(
        "UDP to a non-allowlisted address",
        blocked("udp", "a UDP datagram", reached("udp 5353")),
    );
    match cfg.target6 {
        Some(v6) => push(
            "IPv6",
            blocked(
                "ipv6",
                "an IPv6 connection",
                reached(&format!("tcp 8080 {v6}")),
            ),
        ),
        None => push(
            "IPv6",
            (
                true,
                "the engine gave the test network no IPv6; IPv6 is dropped by default".into(),
            ),
        ),
    }
    push(
        "DNS to another server (UDP)",
        blocked(
            "dns-udp",
            "a UDP DNS query",
            reached(&format!("dns leak-direct-udp-{}", cfg.tag)),
        ),
    );
    push(
        "DNS to another server (TCP)",
        blocked(
            "dns-tcp",
            "a TCP DNS query",
            reached(&format!("dns leak-direct-tcp-{}", cfg.tag)),
        ),
    );
    let name_leaked = reached(&format!("dns leak-name-{}", cfg.tag));
    let name_result = probe("dns-name");
    push(
        "DNS query for a non-allowlisted name",
        (
            name_result == "nxdomain" && !name_leaked,
            if name_leaked {
                "LEAK: the query reached the upstream resolver".into()
            } else {
                format!("answered {name_result} locally; the upstream never saw it")
            },
        ),
    );
    push("ICMP", blocked("icmp", "an ICMP echo", reached("icmp")));
    push(
        "the host gateway",
        firewall("gateway", &cfg.gateway.to_string()),
    );
    push(
        "private ranges",
        firewall("private", &cfg.private.to_string()),
    );
    push(
        "cloud metadata 169.254.169.254",
        firewall("metadata", "169.254.169.254"),
    );
    let allowed = probe("allowed");
    push(
        "an allowlisted name",
        (
            allowed == "sbx-doctor-ok",
            if allowed == "sbx-doctor-ok" {
                format!("`{ALLOWED_NAME}` answered over HTTP")
            } else {
                format!("`{ALLOWED_NAME}` did not answer: {allowed}")
            },
        ),
    );
    let (spoof, spoofed_ip, send) = (probe("spoof"), probe("spoof-name"), probe("spoof-send"));
    let private = cfg.private.to_string();
    let spoofed = spoof.starts_with("answered") || spoofed_ip == private || send == "sent";
    push(
        "DNS upstream spoofing",
        (
            !spoofed && spoof != "not run",
            if spoofed {
                format!(
                    "LEAK: the agent answered for the upstream (probe: {spoof}; `{SPOOF_NAME}` is {spoofed_ip}; send from its address: {send})"
                )
            } else {
                format!("the upstream's address and port are not the agent's ({spoof}, {send})")
            },
        ),
    );
    let cobind = probe("cobind");
    push(
        "DNS co-binding beside the filter",
        (
            cobind == "refused",
            if cobind == "refused" {
                "no port 53 and no port below 1024 can be bound".into()
            } else {
                format!("LEAK: {cobind}")
            },
        ),
    );
    let upstream = probe("upstream");
    push(
        "an allowlisted name via the upstream",
        (
            upstream == "10.0.0.7" && reached(&format!("dns {UPSTREAM_NAME}")),
            format!("`{UPSTREAM_NAME}` resolved through the upstream to {upstream}"),
        ),
    );
    rows
}

/// The table `sbx doctor --leaks` prints.
pub fn render(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.channel.len()).max().unwrap_or(10);
    let mut out = String::new();
    for r in rows {
        out.push_str(&format!(
            "{:<4}  {:<width$}  {}\n",
            if r.ok { "ok" } else { "LEAK" },
            r.channel,
            r.detail
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ProbeConfig {
        ProbeConfig {
            tag: "t1".into(),
            target4: "172.30.0.3".parse().unwrap(),
            target6: Some("fd00::3".parse().unwrap()),
            gateway: "172.30.0.1".parse().unwrap(),
            private: "172.30.0.250".parse().unwrap(),
        }
    }

    fn refusal(dst: &str) -> Refusal {
        Refusal {
            time: String::new(),
            destination: dst.into(),
            protocol: "TCP".into(),
            port: Some(80),
            uid: Some(1000),
            selfcheck: false,
        }
    }

    fn clean() -> Evidence {
        let probe = parse_probe(
            r#"{"row": "tcp", "result": "ECONNREFUSED"}
{"row": "udp", "result": "sent"}
{"row": "ipv6", "result": "ECONNREFUSED"}
{"row": "dns-udp", "result": "EPERM"}
{"row": "dns-tcp", "result": "ECONNREFUSED"}
{"row": "dns-name", "result": "nxdomain"}
{"row": "icmp", "result": "timeout"}
{"row": "gateway", "result": "ECONNREFUSED"}
{"row": "private", "result": "ECONNREFUSED"}
{"row": "metadata", "result": "ECONNREFUSED"}
{"row": "allowed", "result": "sbx-doctor-ok"}
{"row": "upstream", "result": "10.0.0.7"}
{"row": "spoof", "result": "bind EACCES"}
{"row": "spoof-name", "result": "10.0.0.7"}
{"row": "spoof-send", "result": "EPERM"}
{"row": "cobind", "result": "refused"}"#,
        );
        Evidence {
            probe,
            target: vec![format!("dns {UPSTREAM_NAME}")],
            refused: ["172.30.0.1", "172.30.0.250", "169.254.169.254"]
                .into_iter()
                .map(refusal)
                .collect(),
        }
    }

    #[test]
    fn a_clean_run_passes_every_row() {
        let rows = judge(&cfg(), &clean());
        assert_eq!(rows.len(), 14);
        assert!(rows.iter().all(|r| r.ok), "{}", render(&rows));
    }

    #[test]
    fn evidence_of_a_leak_fails_its_row() {
        let mut ev = clean();
        ev.target.push("udp 5353 172.30.0.2".into());
        ev.target.push("dns leak-name-t1.example".into());
        ev.refused.retain(|r| r.destination != "169.254.169.254");
        let rows = judge(&cfg(), &ev);
        let failed: Vec<&str> = rows.iter().filter(|r| !r.ok).map(|r| r.channel).collect();
        assert_eq!(
            failed,
            [
                "UDP to a non-allowlisted address",
                "DNS query for a non-allowlisted name",
                "cloud metadata 169.254.169.254"
            ]
        );
        let mut ev = clean();
        ev.probe.insert("tcp".into(), "open".into());
        assert!(!judge(&cfg(), &ev)[0].ok);
        let mut ev = clean();
        ev.probe
            .insert("spoof".into(), "answered 172.30.0.250".into());
        ev.probe
            .insert("cobind".into(), "bound 127.0.0.1:53".into());
        let failed: Vec<&str> = judge(&cfg(), &ev)
            .into_iter()
            .filter(|r| !r.ok)
            .map(|r| r.channel)
            .collect();
        assert_eq!(
            failed,
            ["DNS upstream spoofing", "DNS co-binding beside the filter"]
        );
    }
}
