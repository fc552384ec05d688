//! The egress firewall, tested from the attacker's side: commands inside the sandbox try to
//! reach the tests' own hosts, and only allowlisted ones answer. All traffic stays on networks
//! the tests create.

use crate::harness::*;

fn run_in_sandbox(env: &TestEnv, net: &TestNet, allow: &[&str], body: &str) -> String {
    let repo = env.repo("app");
    let args = net.run_args(allow, python(body));
    let o = env.run(&repo, &args);
    assert_ok(&o);
    stdout(&o)
}

/// The same probes from a plain container on the test network (proves a path is real).
fn run_outside(net: &TestNet, body: &str) -> String {
    let mut args = vec!["run", "--rm", "--network", &net.name, "sbx-sandbox:latest"];
    let cmd = python(body);
    args.extend(cmd.iter().map(String::as_str));
    docker_ok(&args)
}

#[test]
fn allowlisted_host_answers_and_others_are_refused_at_once() {
    needs_docker!();
    let env = TestEnv::new();
    let net = env.net(&[]);
    net.web_host("allowed.test");
    let blocked = net.web_host("blocked.test");
    let blocked_ip = net.ip(&blocked, false);
    let out = run_in_sandbox(
        &env,
        &net,
        &["allowed.test"],
        &format!(
            r#"
print("allowed=" + http("http://allowed.test/"))
r, t = tcp("{blocked_ip}", 80)
print("blocked=%s %.3f" % (r, t))
print("blocked_name=" + resolve("blocked.test"))
r, t = tcp("{blocked_ip}", 22)
print("ssh=%s" % r)
"#
        ),
    );
    assert_eq!(line(&out, "allowed"), "hello from allowed.test");
    let (result, secs) = line(&out, "blocked").split_once(' ').unwrap();
    assert_eq!(result, "ECONNREFUSED", "{out}");
    assert!(secs.parse::<f64>().unwrap() < 1.0, "refusal took {secs}s");
    assert_eq!(line(&out, "blocked_name"), "nxdomain");
    assert_eq!(line(&out, "ssh"), "ECONNREFUSED");
    // The blocked host is really up: a container outside the sandbox reaches it.
    let o = docker([
        "run",
        "--rm",
        "--network",
        &net.name,
        "sbx-sandbox:latest",
        "curl",
        "-sf",
        "-m",
        "5",
        &format!("http://{blocked_ip}/"),
    ]);
    assert_eq!(stdout(&o).trim(), "hello from blocked.test");
}

#[test]
fn ipv6_egress_is_blocked() {
    needs_docker!();
    let env = TestEnv::new();
    let net = env.net(&["--ipv6", "--subnet", "fd00:5b0:5b0::/64"]);
    let host = net.web_host("dual.test");
    let v4 = net.ip(&host, false);
    let v6 = net.ip(&host, true);
    assert!(
        v6.contains(':'),
        "the test host has no IPv6 address: {v6:?}"
    );
    // The IPv6 path works outside the sandbox.
    let o = docker([
        "run",
        "--rm",
        "--network",
        &net.name,
        "sbx-sandbox:latest",
        "curl",
        "-sf",
        "-m",
        "5",
        &format!("http://[{v6}]/"),
    ]);
    assert_eq!(stdout(&o).trim(), "hello from dual.test", "{}", stderr(&o));
    let out = run_in_sandbox(
        &env,
        &net,
        &[&v4],
        &format!(
            r#"
print("v4=" + http("http://{v4}/"))
print("v6=%s" % tcp("{v6}", 80, v6=True)[0])
"#
        ),
    );
    assert_eq!(line(&out, "v4"), "hello from dual.test");
    assert_ne!(line(&out, "v6"), "open", "{out}");
}

#[test]
fn dns_to_any_other_server_is_blocked() {
    needs_docker!();
    let env = TestEnv::new();
    let net = env.net(&[]);
    let dns = net.host(
        &["ns.test"],
        "sbx-gate:latest",
        &[
            "dnsmasq",
            "-k",
            "--user=root",
            "--group=",
            "--no-resolv",
            "--address=/secret.test/10.9.9.9",
            "--log-queries",
            "--log-facility=-",
        ],
    );
    let ip = net.ip(&dns, false);
    // The server answers outside the sandbox.
    let outside = run_outside(
        &net,
        &format!("print('udp=' + dns_udp('{ip}', 'probe.test'))"),
    );
    assert_eq!(line(&outside, "udp"), "answered");
    let out = run_in_sandbox(
        &env,
        &net,
        &[],
        &format!(
            r#"
print("udp=" + dns_udp("{ip}", "secret.test"))
print("tcp=" + dns_tcp("{ip}", "secret.test"))
print("engine=" + dns_udp("127.0.0.11", "ns.test"))
print("resolve=" + resolve("secret.test"))
"#
        ),
    );
    assert_ne!(line(&out, "udp"), "answered", "{out}");
    assert_ne!(line(&out, "tcp"), "answered", "{out}");
    assert_ne!(line(&out, "engine"), "answered", "{out}");
    assert_eq!(line(&out, "resolve"), "nxdomain");
    let logs = stderr(&docker(["logs", &dns]));
    assert!(
        logs.contains("probe.test"),
        "the server logs queries:\n{logs}"
    );
    assert!(
        !logs.contains("secret.test"),
        "the test DNS server was reached:\n{logs}"
    );
}

#[test]
fn the_agent_cannot_change_the_firewall() {
    needs_docker!();
    let env = TestEnv::new();
    let net = env.net(&[]);
    let host = net.web_host("blocked.test");
    let ip = net.ip(&host, false);
    let repo = env.repo("app");
    let script = format!(
        "iptables -F; echo iptables=$?; iptables -P OUTPUT ACCEPT; echo policy=$?; ip6tables -F; echo ip6tables=$?; \
         ipset flush; echo ipset=$?; ip link set eth0 down; echo link=$?; \
         curl -s -m 3 -o /dev/null http://{ip}/; echo curl=$?"
    );
    let o = env.run(
        &repo,
        ["run", "--network", &net.name, "--", "sh", "-c", &script],
    );
    assert_ok(&o);
    let out = stdout(&o);
    for k in ["iptables", "policy", "ip6tables", "ipset", "link"] {
        assert_ne!(
            line(&out, k),
            "0",
            "`{k}` succeeded inside the sandbox:\n{out}"
        );
    }
    // 7: curl's "failed to connect".
    assert_eq!(line(&out, "curl"), "7", "{out}");
}
