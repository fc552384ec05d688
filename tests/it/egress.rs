//! Egress that holds up in real use: wildcards, rotating addresses, no DNS leaks, an audit, and
//! widening a running session. Every name and address belongs to the tests' own hosts.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::*;

#[test]
fn wildcards_match_subdomains_and_not_look_alikes() {
    needs_docker!();
    let env = TestEnv::new();
    let net = env.net(&[]);
    for alias in [
        "a.wild.test",
        "b.c.wild.test",
        "evil-wild.test",
        "wild.test.evil.test",
    ] {
        net.web_host(alias);
    }
    let repo = env.repo("app");
    let body = r#"
for n in ["a.wild.test", "b.c.wild.test", "evil-wild.test", "wild.test.evil.test"]:
    print("%s=%s %s" % (n, resolve(n) != "nxdomain", http("http://%s/" % n)))
"#;
    let args = net.run_args(&["*.wild.test"], python(body));
    let o = env.run(&repo, &args);
    assert_ok(&o);
    let out = stdout(&o);
    assert_eq!(line(&out, "a.wild.test"), "True hello from a.wild.test");
    assert_eq!(line(&out, "b.c.wild.test"), "True hello from b.c.wild.test");
    assert_eq!(line(&out, "evil-wild.test"), "False error");
    assert_eq!(line(&out, "wild.test.evil.test"), "False error");
}

#[test]
fn a_name_whose_address_changes_stays_reachable() {
    needs_docker!();
    let env = TestEnv::new();
    let net = env.net(&[]);
    let one = net.web_host("one.internal");
    let two = net.web_host("two.internal");
    let (ip1, ip2) = (net.ip(&one, false), net.ip(&two, false));
    let dns = net.dns_server(&format!("{ip1} rotating.test\n"));
    let repo = env.repo("app");
    let body = format!(
        r#"
print("first=%s %s" % (resolve("rotating.test"), http("http://rotating.test/")), flush=True)
open("/tmp/phase1", "w").close()
for _ in range(300):
    if resolve("rotating.test") == "{ip2}":
        break
    time.sleep(0.1)
print("second=%s %s" % (resolve("rotating.test"), http("http://rotating.test/")), flush=True)
"#
    );
    let args = net.run_args(&["rotating.test"], python(&body));
    let mut cmd = env.sbx();
    cmd.current_dir(&repo).env("SBX_DNS", &dns.ip).args(&args);
    let (child, _) = env.spawn_session(cmd, &["test", "-e", "/tmp/phase1"]);
    // The name moves to another address mid-session.
    std::fs::write(&dns.hosts, format!("{ip2} rotating.test\n")).unwrap();
    docker_ok(["kill", "-s", "HUP", &dns.name]);
    let o = child.wait_with_output().unwrap();
    assert_ok(&o);
    let out = stdout(&o);
    assert_eq!(
        line(&out, "first"),
        format!("{ip1} hello from one.internal")
    );
    assert_eq!(
        line(&out, "second"),
        format!("{ip2} hello from two.internal")
    );
    assert!(dns.log().contains("rotating.test"));
}

#[test]
fn no_query_for_a_non_allowlisted_name_reaches_the_upstream() {
    needs_docker!();
    let env = TestEnv::new();
    let net = env.net(&[]);
    let dns = net.dns_server("10.9.9.9 ok.test\n");
    let repo = env.repo("app");
    let long = "a".repeat(63);
    let many = (0..40)
        .map(|i| format!("l{i}"))
        .collect::<Vec<_>>()
        .join(".");
    let body = format!(
        r#"
names = ["leak-udp.example", "leak-tcp.example", "{long}.leak.example", "{many}.leak.example",
         "sub.ok.test", "leak-txt.example", "leak-any.example", "leak-aaaa.example"]
print("udp=%s" % rcode_udp("127.0.0.1", names[0]))
print("tcp=%s" % rcode_tcp("127.0.0.1", names[1]))
print("long=%s" % rcode_udp("127.0.0.1", names[2]))
print("many=%s" % rcode_udp("127.0.0.1", names[3]))
print("sub=%s" % rcode_udp("127.0.0.1", names[4]))
print("txt=%s" % rcode_tcp("127.0.0.1", names[5], 16))
print("any=%s" % rcode_udp("127.0.0.1", names[6], 255))
print("aaaa=%s" % rcode_udp("127.0.0.1", names[7], 28))
print("engine=%s" % rcode_udp("127.0.0.11", "leak-engine.example"))
print("ok=%s" % resolve("ok.test"))
"#
    );
    let args = net.run_args(&["ok.test"], python(&body));
    let o = env
        .sbx()
        .current_dir(&repo)
        .env("SBX_DNS", &dns.ip)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ok(&o);
    let out = stdout(&o);
    for k in ["udp", "tcp", "long", "many", "sub", "txt", "any", "aaaa"] {
        assert_eq!(line(&out, k), "3", "{k}: NXDOMAIN expected\n{out}");
    }
    assert_eq!(line(&out, "engine"), "error", "{out}");
    // The allowlisted name went to the upstream (so the recorder is the upstream)...
    assert_eq!(line(&out, "ok"), "10.9.9.9");
    let log = dns.log();
    assert!(log.contains("ok.test"), "{log}");
    // ...and nothing else did.
    assert!(
        !log.contains("leak") && !log.contains("sub.ok.test"),
        "the upstream saw:\n{log}"
    );
}

#[test]
fn summary_and_log_report_what_was_denied() {
    needs_docker!();
    let env = TestEnv::new();
    let net = env.net(&[]);
    let host = net.web_host("hidden.test");
    let ip = net.ip(&host, false);
    let repo = env.repo("app");
    let body = format!(
        r#"
print(resolve("denied-one.example"), resolve("denied-one.example"), resolve("hidden.test"))
print(http("http://{ip}/"))
"#
    );
    let args = net.run_args(&[], python(&body));
    let o = env.run(&repo, &args);
    assert_ok(&o);
    let err = stderr(&o);
    assert!(
        err.contains("names denied:") && err.contains("denied-one.example"),
        "{err}"
    );
    assert!(err.contains(&format!("{ip}:80/tcp")), "{err}");
    assert!(
        err.contains("allow:\n      - denied-one.example\n      - hidden.test"),
        "{err}"
    );
    assert!(
        !err.contains("sbx-selfcheck"),
        "the self-check is not the user's: {err}"
    );
    let id = env.session_ids().pop().unwrap();
    let log = env.run(&repo, ["log", &id, "--json"]);
    assert_ok(&log);
    let v: serde_json::Value = serde_json::from_slice(&log.stdout).unwrap();
    assert_eq!(v["summary"]["denied_names"]["denied-one.example"], 2);
    assert!(
        v["audit"]["refused"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["destination"] == ip.as_str())
    );
    let text = env.run(&repo, ["log", &id[..4]]);
    assert_ok(&text);
    assert!(stdout(&text).contains("denied-one.example") && stdout(&text).contains("denied"));
    // The self-check's probes are there, apart, as sbx's own: its name and its two packets to
    // the gateway's port 9.
    let text = stdout(&text);
    let (agent, own) = text
        .split_once("sbx's own start-up self-check")
        .unwrap_or_else(|| panic!("no self-check part:\n{text}"));
    assert!(!agent.contains("sbx-selfcheck-"), "{text}");
    assert!(
        own.contains(&format!("sbx-selfcheck-{id}.invalid")),
        "{text}"
    );
    assert!(
        own.contains("UDP ") && own.contains("TCP ") && own.contains(":9"),
        "{text}"
    );
    let marked = |list: &str| {
        v["audit"][list]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["selfcheck"] == true)
            .count()
    };
    assert_eq!((marked("queries"), marked("refused")), (2, 2), "{v}");
}

#[test]
fn allow_widens_a_running_session() {
    needs_docker!();
    let env = TestEnv::new();
    let net = env.net(&[]);
    net.web_host("late.test");
    let repo = env.repo("app");
    let body = r#"
print("before=" + http("http://late.test/"), flush=True)
open("/tmp/phase1", "w").close()
for _ in range(300):
    r = http("http://late.test/")
    if r != "error":
        break
    time.sleep(0.1)
print("after=" + r)
"#;
    let args = net.run_args(&[], python(body));
    let mut cmd = env.sbx();
    cmd.current_dir(&repo).args(&args);
    let (child, id) = env.spawn_session(cmd, &["test", "-e", "/tmp/phase1"]);
    let a = env.run(&repo, ["allow", "late.test", "--session", &id]);
    assert_ok(&a);
    let o = child.wait_with_output().unwrap();
    assert_ok(&o);
    let out = stdout(&o);
    assert_eq!(line(&out, "before"), "error");
    assert_eq!(line(&out, "after"), "hello from late.test");
    // A finished session cannot be widened.
    let again = env.run(&repo, ["allow", "x.test", "--session", &id]);
    assert_eq!(again.status.code(), Some(125));
    assert!(stderr(&again).contains("not running"));
}

#[test]
fn doctor_leaks_exercises_every_channel_and_finds_none() {
    needs_docker!();
    let env = TestEnv::new();
    let o = env.run(env.home(), ["doctor", "--leaks"]);
    assert_ok(&o);
    let out = stdout(&o);
    let rows: Vec<&str> = out.lines().collect();
    for channel in [
        "TCP to a non-allowlisted address",
        "UDP to a non-allowlisted address",
        "IPv6",
        "DNS to another server (UDP)",
        "DNS to another server (TCP)",
        "DNS query for a non-allowlisted name",
        "ICMP",
        "the host gateway",
        "private ranges",
        "cloud metadata 169.254.169.254",
        "an allowlisted name",
        "DNS upstream spoofing",
        "DNS co-binding beside the filter",
    ] {
        let row = rows
            .iter()
            .find(|r| r[6..].starts_with(channel))
            .unwrap_or_else(|| panic!("no row for {channel}:\n{out}"));
        assert!(row.starts_with("ok "), "{row}");
    }
    // IPv6 was really exercised (the engine here gives the test network IPv6).
    assert!(
        out.contains("IPv6                                  blocked"),
        "{out}"
    );
    // The doctor's network and target are gone.
    let left = docker_ok([
        "ps",
        "-a",
        "--filter",
        "name=sbx-doctor-",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(left, "");
}

/// A real Claude Code start, as the first `sbx run` of a new user (no login, the default
/// settings), on a terminal: every name it looks up is one the default allowlist allows, none
/// refused. They reach the test's own DNS server, which knows none of them, on an internal
/// network, so nothing leaves the machine. Its self-updater is off.
#[test]
fn claude_code_starts_with_no_name_refused_and_its_updater_off() {
    needs!(Terminal, "runs sbx on a terminal");
    needs_docker!();
    let env = TestEnv::new();
    let net = env.net(&["--internal"]);
    let dns = net.dns_server("");
    let repo = env.repo("app");
    let size = (100, 30);
    let (out, _) = env.in_terminal(
        &repo,
        &format!(
            "run --network {} -- sh -c 'echo updater=$DISABLE_AUTOUPDATER; exec timeout --foreground 90 claude'",
            net.name
        ),
        size,
        &[("SBX_DNS", &dns.ip)],
        b"",
    );
    let screen = screen_rows(&out, size).join("\n");
    // Printed before Claude Code took the screen (it may clear it).
    assert!(
        String::from_utf8_lossy(&out).contains("updater=1"),
        "{screen}"
    );
    let image = docker_ok([
        "image",
        "inspect",
        "-f",
        "{{json .Config.Env}}",
        "sbx-sandbox:latest",
    ]);
    assert!(image.contains("DISABLE_AUTOUPDATER=1"), "{image}");

    let id = env.only_session();
    let log = env.run(&repo, ["log", &id, "--json"]);
    assert_ok(&log);
    let v: serde_json::Value = serde_json::from_slice(&log.stdout).unwrap();
    let queries = v["audit"]["queries"].as_array().unwrap();
    let names = |outcome: &dyn Fn(&str) -> bool| -> Vec<String> {
        queries
            .iter()
            .filter(|q| q["selfcheck"] == false && outcome(q["outcome"].as_str().unwrap_or("")))
            .map(|q| q["name"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(
        names(&|o| o == "denied"),
        Vec::<String>::new(),
        "{queries:?}"
    );
    let asked = names(&|_| true);
    assert!(asked.iter().any(|n| n == "api.anthropic.com"), "{asked:?}");
    // The self-check's own look-up is there, marked as sbx's.
    assert!(
        queries.iter().any(|q| q["selfcheck"] == true),
        "{queries:?}"
    );
    // What was allowed went to the test's own upstream.
    assert!(dns.log().contains("api.anthropic.com"), "{}", dns.log());
}

/// The ready spare's id under this HOME, once its helper has made it.
fn ready_spare(env: &TestEnv) -> Option<String> {
    let mut found = None;
    wait_until(Duration::from_secs(30), || {
        found = ready_spare_now(env);
        found.is_some()
    });
    found
}

fn files_under(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, base, out);
        } else {
            out.push(p.strip_prefix(base).unwrap().display().to_string());
        }
    }
}

/// A gate started ahead for the next session holds nothing of any session and lets nothing out,
/// tried from its own namespace as the agent would be; the next session takes it over with that
/// session's own allowlist (allowed host reachable, any other refused, the self-check passing),
/// a new one is made after it, and `sbx gc` removes it.
#[test]
fn a_spare_gate_lets_nothing_out_and_the_session_that_claims_it_gets_its_own_allowlist() {
    needs_docker!();
    let env = TestEnv::new();
    let net = env.net(&[]);
    let good = net.web_host("good.test");
    net.web_host("evil.test");
    let good_ip = net.ip(&good, false);
    let repo = env.repo("app");
    let run = |body: &str| {
        let args = net.run_args(&["good.test"], python(body));
        env.sbx()
            .env("SBX_SPARE", "true")
            .current_dir(&repo)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = run("print('first=%s' % http('http://good.test/'))");
    assert_ok(&o);
    assert_eq!(line(&stdout(&o), "first"), "hello from good.test");
    let spare = ready_spare(&env).expect("no spare gate was made after the session");
    let spare_dir = env.cache().join("sbx/spares").join(&spare);

    // Nothing of any session in it: the gate's plan and empty logs.
    let mut files = Vec::new();
    files_under(&spare_dir, &spare_dir, &mut files);
    files.sort();
    for f in &files {
        assert!(
            f.starts_with("gate/") || f.starts_with("log/") || f == "spare.json",
            "{files:?}"
        );
    }
    // Its logs hold only the DNS filter's own start-up lines.
    for f in files.iter().filter(|f| f.starts_with("log/")) {
        let text = std::fs::read_to_string(spare_dir.join(f)).unwrap();
        assert!(
            !text.contains("query") && !text.contains("SRC="),
            "{f}: {text}"
        );
    }
    // From inside its namespace, as an unprivileged process: no name, no address answers.
    let resolv = spare_dir.join("gate/resolv.conf");
    let probe = python(&format!(
        "print('name=%s' % resolve('good.test'))\nprint('web=%s' % http('http://{good_ip}/'))"
    ));
    let mut args = vec![
        "run".to_owned(),
        "--rm".into(),
        "--label".into(),
        TEST_LABEL.into(),
        "--network".into(),
        format!("container:sbx-{spare}-gate"),
        "--user".into(),
        "1000:1000".into(),
        "--cap-drop".into(),
        "ALL".into(),
        "-v".into(),
        format!("{}:/etc/resolv.conf:ro", resolv.display()),
        "sbx-sandbox:latest".into(),
    ];
    args.extend(probe);
    let out = docker_ok(&args);
    assert_eq!(line(&out, "name"), "nxdomain", "{out}");
    assert_eq!(line(&out, "web"), "error", "{out}");

    // The next session takes it over, with its own allowlist.
    let o = run("import os\nprint('id=%s' % os.environ['SBX_SESSION'])\n\
         print('good=%s' % http('http://good.test/'))\nprint('evil=%s' % http('http://evil.test/'))");
    assert_ok(&o);
    let out = stdout(&o);
    assert_eq!(line(&out, "id"), spare, "{}", stderr(&o));
    assert_eq!(line(&out, "good"), "hello from good.test");
    assert_eq!(line(&out, "evil"), "error");
    assert!(!spare_dir.exists());
    assert!(env.sessions().join(&spare).join("session.json").exists());
    let log = env.run(&repo, ["log", &spare]);
    assert!(stdout(&log).contains("evil.test"), "{}", stdout(&log));

    // After it, a helper removes its containers (stopped before its checkout was finished) and
    // makes a new spare; `sbx gc` removes that.
    let next = ready_spare(&env).expect("no spare gate was made after the second session");
    assert_ne!(next, spare);
    assert!(
        wait_until(Duration::from_secs(10), || session_containers(&spare)
            .is_empty()),
        "{:?}",
        session_containers(&spare)
    );
    let o = env.run(&repo, ["gc"]);
    assert_ok(&o);
    assert!(stderr(&o).contains("1 spare gate"), "{}", stderr(&o));
    assert!(session_containers(&next).is_empty());
    assert!(ready_spare_now(&env).is_none());
}

fn ready_spare_now(env: &TestEnv) -> Option<String> {
    std::fs::read_dir(env.cache().join("sbx/spares"))
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| e.path().join("spare.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
}
