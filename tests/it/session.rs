//! Container sessions against a real Docker engine: exit codes and streams, the checkouts'
//! fate, the agent container's hardening, and cleanup on signals and after `kill -9`.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::*;

#[test]
fn exit_code_and_output_come_back_and_stdin_works_without_a_tty() {
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    let o = env.run(
        &repo,
        ["run", "--", "sh", "-c", "echo out; echo err >&2; exit 7"],
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    assert!(stderr(&o).contains("err\n"), "{}", stderr(&o));

    let mut child = env
        .sbx()
        .current_dir(&repo)
        .args(["run", "--", "sh", "-c", "tr a-z A-Z; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello sandbox\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_ok(&o);
    assert_eq!(stdout(&o), "HELLO SANDBOX\ndone\n");
}

#[test]
fn agent_container_is_hardened_and_labelled() {
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    let mut cmd = env.sbx();
    cmd.current_dir(&repo).args(["run", "--", "sleep", "30"]);
    let (child, id) = env.spawn_session(cmd, &["pgrep", "-x", "sleep"]);
    let agent = format!("sbx-{id}-agent");
    assert_eq!(
        docker_ok([
            "inspect",
            "-f",
            "{{index .Config.Labels \"dev.sbx.role\"}}",
            &agent
        ]),
        "agent"
    );
    let inspect = |f: &str| docker_ok(["inspect", "-f", f, &agent]);
    let cap_add = inspect("{{json .HostConfig.CapAdd}}");
    assert!(cap_add == "null" || cap_add == "[]", "CapAdd: {cap_add}");
    assert_eq!(inspect("{{json .HostConfig.CapDrop}}"), r#"["ALL"]"#);
    assert!(inspect("{{json .HostConfig.SecurityOpt}}").contains("no-new-privileges"));
    let user = inspect("{{.Config.User}}");
    assert!(
        !user.is_empty() && !user.starts_with("0") && !user.starts_with("root"),
        "user {user}"
    );
    assert!(inspect("{{.HostConfig.Init}}") == "true");
    assert!(inspect("{{.HostConfig.Memory}}").parse::<u64>().unwrap() > 0);
    assert!(inspect("{{.HostConfig.NanoCpus}}").parse::<u64>().unwrap() > 0);
    assert!(inspect("{{.HostConfig.PidsLimit}}").parse::<u64>().unwrap() > 0);
    assert!(inspect("{{.HostConfig.NetworkMode}}").starts_with("container:"));
    assert_eq!(inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    // The agent owns its PID 1: what it writes there must not pile up in the engine's logs.
    assert_eq!(inspect("{{.HostConfig.LogConfig.Type}}"), "none");
    docker_ok([
        "exec",
        &agent,
        "sh",
        "-c",
        "head -c 20000000 /dev/zero > /proc/1/fd/1",
    ]);
    let log_path = inspect("{{.LogPath}}");
    let logged = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
    assert!(logged < 1_000_000, "{log_path}: {logged} bytes");
    // From inside: the agent's own view of its capabilities is empty.
    let caps = docker_ok(["exec", &agent, "sh", "-c", "grep CapEff /proc/self/status"]);
    assert!(caps.ends_with("0000000000000000"), "{caps}");
    send_signal(child.id(), 15);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(128 + 15), "{}", stderr(&o));
}

#[test]
fn dirty_checkout_is_kept_and_clean_one_pruned_and_host_tree_untouched() {
    needs_docker!();
    let env = TestEnv::new();
    let a = env.repo("alpha");
    let b = env.repo("beta");
    let o = env.run(
        &a,
        [
            "run",
            "--repo",
            a.to_str().unwrap(),
            "--repo",
            b.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "ls /workspace && echo wip > /workspace/alpha/wip.txt && rm -rf /workspace/beta/* && git -C /workspace/beta checkout -q -- . && rm -rf /workspace/alpha/README.md",
        ],
    );
    assert_ok(&o);
    assert_eq!(stdout(&o), "alpha\nbeta\n");
    let id = env.only_session();
    let kept = env.sessions().join(&id).join("repos/alpha");
    assert!(kept.join("wip.txt").exists(), "dirty checkout kept");
    assert!(
        stderr(&o).contains(&kept.display().to_string()),
        "{}",
        stderr(&o)
    );
    assert!(
        !env.sessions().join(&id).join("repos/beta").exists(),
        "clean checkout pruned"
    );
    // The host's working trees saw none of it.
    assert!(a.join("README.md").exists() && !a.join("wip.txt").exists());
    assert!(b.join("README.md").exists());
    assert_eq!(git(&a, ["status", "--porcelain"]), "");
    assert!(session_containers(&id).is_empty() && session_networks(&id).is_empty());
}

#[test]
fn same_named_repos_get_distinct_folders() {
    needs_docker!();
    let env = TestEnv::new();
    let a = env.repo("x/app");
    let b = env.repo("y/app");
    let o = env.run(
        &a,
        [
            "run",
            "--repo",
            a.to_str().unwrap(),
            "--repo",
            b.to_str().unwrap(),
            "--",
            "ls",
            "/workspace",
        ],
    );
    assert_ok(&o);
    assert_eq!(stdout(&o), "app\napp-2\n");
}

fn start_sleeping_session(env: &TestEnv, repo: &std::path::Path) -> (std::process::Child, String) {
    let mut cmd = env.sbx();
    cmd.current_dir(repo).args(["run", "--", "sleep", "60"]);
    env.spawn_session(cmd, &["pgrep", "-x", "sleep"])
}

fn assert_all_gone(env: &TestEnv, id: &str) {
    assert!(
        session_containers(id).is_empty(),
        "containers left: {:?}",
        session_containers(id)
    );
    assert!(
        session_networks(id).is_empty(),
        "networks left: {:?}",
        session_networks(id)
    );
    assert!(
        !env.sessions().join(id).join("repos/app").exists(),
        "the clean checkout was not pruned"
    );
}

#[test]
fn sigterm_and_sigint_mid_session_clean_up() {
    needs_docker!();
    for (sig, code) in [(15, 143), (2, 130)] {
        let env = TestEnv::new();
        let repo = env.repo("app");
        let (child, id) = start_sleeping_session(&env, &repo);
        send_signal(child.id(), sig);
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(code), "signal {sig}: {}", stderr(&o));
        assert_all_gone(&env, &id);
    }
}

#[test]
fn gc_after_kill_9_leaves_nothing_behind_but_dirty_work() {
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    let (mut child, id) = start_sleeping_session(&env, &repo);
    send_signal(child.id(), 9);
    let _ = child.wait();
    assert!(
        !session_containers(&id).is_empty(),
        "kill -9 cannot clean up"
    );
    let ls = env.run(&repo, ["ls", "--json"]);
    assert_ok(&ls);
    assert!(stdout(&ls).contains("\"dead\""), "{}", stdout(&ls));
    let o = env.run(&repo, ["gc"]);
    assert_ok(&o);
    assert_all_gone(&env, &id);
    // A second gc has nothing to do.
    let o = env.run(&repo, ["gc"]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("removed 0 containers"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn gc_never_deletes_a_dirty_checkout() {
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    let (mut child, id) = start_sleeping_session(&env, &repo);
    let checkout = env.sessions().join(&id).join("repos/app");
    docker_ok([
        "exec",
        &format!("sbx-{id}-agent"),
        "sh",
        "-c",
        "echo wip > /workspace/app/wip.txt",
    ]);
    send_signal(child.id(), 9);
    let _ = child.wait();
    let o = env.run(&repo, ["gc"]);
    assert_ok(&o);
    assert!(checkout.join("wip.txt").exists());
    assert!(stderr(&o).contains("uncommitted"), "{}", stderr(&o));
    assert!(session_containers(&id).is_empty());
}

#[test]
fn keep_keeps_every_checkout() {
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    let o = env.run(&repo, ["run", "--keep", "--", "true"]);
    assert_ok(&o);
    let id = env.only_session();
    assert!(
        env.sessions()
            .join(&id)
            .join("repos/app/README.md")
            .exists()
    );
}

#[test]
fn a_tty_is_used_when_stdin_is_a_terminal() {
    needs!(Terminal, "runs sbx on a terminal");
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    // `script` gives sbx a pseudo-terminal for stdin and stdout.
    let (out, code) = env.in_terminal(
        &repo,
        "run -- sh -c 'tty; echo term=$TERM; exit 4'",
        (100, 30),
        &[],
        b"",
    );
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("/dev/pts/"), "no TTY inside:\n{out}");
    assert!(out.contains("term=xterm-256color"), "{out}");
    assert_eq!(code, Some(4), "{out}");
}

/// What sbx prints before the command is finished before the command's first byte (one that
/// starts with a carriage return included), and its summary starts on a line of its own after
/// a command that ends mid-line, on a terminal with progress bars on.
#[test]
fn the_terminal_hand_over_leaves_no_partial_line() {
    needs!(Terminal, "runs sbx on a terminal");
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    let size = (120, 40);
    let (out, code) = env.in_terminal(
        &repo,
        r#"run -- bash -c 'printf "\rFIRST\n"; getent hosts denied.example; printf partial'"#,
        size,
        // A line of sbx's own before the command (bars on, as for a person).
        &[("GH_TOKEN", "not-a-real-token")],
        b"",
    );
    assert_eq!(code, Some(0));
    let rows = screen_rows(&out, size);
    let text = rows.join("\n");
    let at = |needle: &str| {
        rows.iter()
            .position(|r| r.starts_with(needle))
            .unwrap_or_else(|| panic!("no row starts with `{needle}`:\n{text}"))
    };
    let sbx_line = at("sbx: forwarding `GH_TOKEN` from your environment");
    assert!(rows[sbx_line].ends_with("`sbx token set github`"), "{text}");
    let first = at("FIRST");
    assert_eq!(rows[first], "FIRST", "{text}");
    assert_eq!(first, sbx_line + 1, "{text}");
    let partial = at("partial");
    assert_eq!(rows[partial], "partial", "{text}");
    assert_eq!(
        at("sbx: blocked during this session:"),
        partial + 1,
        "{text}"
    );
}

#[test]
fn sessions_cannot_reach_each_other() {
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    let mut cmd = env.sbx();
    cmd.current_dir(&repo)
        .args(["run", "--", "python3", "-m", "http.server", "8080"]);
    let (mut a, id) = env.spawn_session(cmd, &["pgrep", "-f", "http.server"]);
    let ip = docker_ok([
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &format!("sbx-{id}-gate"),
    ]);
    // Even with A's address allowlisted, B cannot connect.
    let env_b = TestEnv::new();
    let repo_b = env_b.repo("other");
    let probe = format!(
        "import socket\ns=socket.socket();s.settimeout(3)\ntry:\n s.connect(('{ip}',8080));print('open')\nexcept OSError as e:\n print('closed',e)"
    );
    let o = env_b.run(
        &repo_b,
        [
            "run",
            "--allow",
            &format!("{ip}:8080"),
            "--",
            "python3",
            "-c",
            &probe,
        ],
    );
    assert_ok(&o);
    assert!(stdout(&o).starts_with("closed"), "{}", stdout(&o));
    send_signal(a.id(), 15);
    let _ = a.wait();
}

/// `sbx exec` runs a second command in a running session under the agent's restrictions: its
/// user, folder, tokens, DNS filter, firewall and read-only root; its exit code comes back;
/// ending it leaves the session running, and ending the session ends it.
#[test]
fn exec_runs_under_the_agents_restrictions_and_dies_with_the_session() {
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    let o = env.run(&repo, ["exec"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("no session is running"),
        "{}",
        stderr(&o)
    );

    let mut cmd = env.sbx();
    cmd.env("GH_TOKEN", "ghp_exec_test")
        .current_dir(&repo)
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "id -u > /tmp/agent-uid; exec sleep 300",
        ]);
    let (mut session, id) = env.spawn_session(cmd, &["test", "-s", "/tmp/agent-uid"]);

    let exec = |args: &[&str]| {
        env.sbx()
            .env("GH_TOKEN", "ghp_exec_test")
            .current_dir(&repo)
            .arg("exec")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // From inside, as the agent would: who am I, what do I have, what can I reach or write.
    let probe = r#"
echo "same-user=$([ "$(id -u)" = "$(cat /tmp/agent-uid)" ] && echo yes)"
echo "token=$GH_TOKEN"
echo "pwd=$(pwd)"
echo "session=$SBX_SESSION"
getent hosts denied.example >/dev/null 2>&1 && echo dns=resolved || echo dns=denied
gw=$(ip route | awk '/default/ {print $3}')
out=$( (echo x > /dev/udp/$gw/9) 2>&1 )
case $out in *"Operation not permitted"*) echo firewall=refused ;; *) echo "firewall=open $out" ;; esac
touch /usr/x 2>/dev/null && echo root=writable || echo root=read-only
exit 7
"#;
    let o = exec(&["--", "bash", "-c", probe]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(7), "{out}\n{}", stderr(&o));
    for want in [
        "same-user=yes",
        "token=ghp_exec_test",
        "pwd=/workspace/app",
        &format!("session={id}"),
        "dns=denied",
        "firewall=refused",
        "root=read-only",
    ] {
        assert!(out.lines().any(|l| l == want), "missing {want}:\n{out}");
    }
    // By a prefix of the id; the session runs on after its execs.
    let o = exec(&[&id[..4], "--", "true"]);
    assert_ok(&o);
    assert!(session.try_wait().unwrap().is_none(), "the session ended");
    let o = env.run(&repo, ["ls"]);
    assert!(
        stderr(&o).contains(&format!("sbx exec {id}")),
        "{}",
        stderr(&o)
    );

    // Ending the session ends a running exec.
    let mut long = env
        .sbx()
        .current_dir(&repo)
        .args(["exec", &id, "--", "sleep", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        docker([
            "exec",
            &format!("sbx-{id}-agent"),
            "pgrep",
            "-f",
            "sleep 300",
        ])
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count()
            >= 2
    }));
    send_signal(session.id(), libc::SIGTERM);
    let _ = session.wait();
    assert!(
        wait_until(Duration::from_secs(20), || long
            .try_wait()
            .unwrap()
            .is_some()),
        "the exec outlived its session"
    );
    let o = exec(&[&id, "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
}

/// The command's terminal output is recorded (asciicast v2, private to the user) and replays,
/// at the chosen speed or exported as JSON; `record: false` turns it off.
#[test]
fn the_terminal_is_recorded_and_replays() {
    needs!(Terminal, "runs sbx on a terminal");
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    let size = (100, 30);
    let (_, code) = env.in_terminal(
        &repo,
        "run -- sh -c 'echo first; sleep 1; echo second >&2; printf \"\\033[1mbold\\033[0m\\n\"'",
        size,
        &[],
        b"",
    );
    assert_eq!(code, Some(0));
    let id = env.only_session();
    let cast = env.sessions().join(&id).join("terminal.cast");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cast).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let o = env.run(&repo, ["log", &id, "--replay", "--json"]);
    assert_ok(&o);
    let text = stdout(&o);
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(100), Some(30))
    );
    let events: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let output: String = events.iter().map(|e| e[2].as_str().unwrap()).collect();
    assert!(
        output.contains("first") && output.contains("second"),
        "{output}"
    );
    assert!(
        output.contains("\u{1b}[1mbold"),
        "escape sequences are kept: {output:?}"
    );
    let times: Vec<f64> = events.iter().map(|e| e[0].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let first = events
        .iter()
        .find(|e| e[2].as_str().unwrap().contains("first"))
        .unwrap();
    let second = events
        .iter()
        .find(|e| e[2].as_str().unwrap().contains("second"))
        .unwrap();
    let gap = second[0].as_f64().unwrap() - first[0].as_f64().unwrap();
    assert!(gap > 0.8, "the pause is kept: {gap}");

    // Replayed in order, faster.
    let began = std::time::Instant::now();
    let o = env.run(&repo, ["log", &id[..4], "--replay", "--speed", "4"]);
    assert_ok(&o);
    let played = stdout(&o);
    let (a, b) = (
        played.find("first").unwrap(),
        played.find("second").unwrap(),
    );
    assert!(a < b, "{played}");
    assert!(began.elapsed() < Duration::from_secs(5));

    // Turned off: nothing recorded, and replay says why.
    let other = env.repo("other");
    let o = env
        .sbx()
        .env("SBX_RECORD", "false")
        .current_dir(&other)
        .args(["run", "--", "echo", "quiet"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ok(&o);
    let quiet = env.session_ids().into_iter().find(|s| *s != id).unwrap();
    assert!(!env.sessions().join(&quiet).join("terminal.cast").exists());
    let o = env.run(&repo, ["log", &quiet, "--replay"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("no terminal record"), "{}", stderr(&o));
}

/// Package caches survive from one session to the next of the same project, are not shared with
/// another project, are listed and removed by `sbx cache`, and are off with `caches: false`.
#[test]
fn package_caches_survive_per_project_and_are_not_shared() {
    needs_docker!();
    let env = TestEnv::new();
    let (a, b) = (env.repo("a"), env.repo("b"));
    let run = |repo: &std::path::Path, script: &str| {
        let o = env.run(repo, ["run", "--", "sh", "-c", script]);
        assert_ok(&o);
        stdout(&o)
    };
    // Written as the agent, where the tools keep their caches.
    run(
        &a,
        "echo a > ~/.npm/marker && echo a > ~/.cache/pip/marker && echo a > ~/.cargo/registry/marker && echo a > ~/go/pkg/mod/marker",
    );
    let seen = "for f in ~/.npm ~/.cache/pip ~/.cache/uv ~/.cargo/registry ~/.cargo/git ~/go/pkg/mod; do \
                cat $f/marker 2>/dev/null || echo none; done";
    assert_eq!(run(&a, seen), "a\na\nnone\na\nnone\na\n");
    assert_eq!(run(&b, seen), "none\nnone\nnone\nnone\nnone\nnone\n");

    let o = env.run(&a, ["cache", "ls", "--json"]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let projects: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["project"].as_str().unwrap())
        .collect();
    assert_eq!(projects.len(), 2, "{v}");
    assert!(
        projects.iter().any(|p| p.starts_with(a.to_str().unwrap())),
        "{v}"
    );

    assert_ok(&env.run(&a, ["cache", "rm"]));
    assert_eq!(
        run(&a, "cat ~/.npm/marker 2>/dev/null || echo none"),
        "none\n"
    );
    let o = env.run(&b, ["cache", "ls", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");

    // Off: nothing mounted, nothing linked.
    let o = env
        .sbx()
        .env("SBX_CACHES", "false")
        .current_dir(&a)
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "ls /cache 2>/dev/null || echo no-cache; [ -L ~/.npm ] && echo linked || echo plain",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ok(&o);
    assert_eq!(stdout(&o), "no-cache\nplain\n");
}
