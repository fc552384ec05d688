//! Tokens: a real round trip through the kernel keyring (keyutils) and the file store, and a
//! session that gets a stored token in its command's environment and nowhere else.

use std::process::{Command, Output, Stdio};

use crate::harness::*;

/// A [`TestEnv`] whose keyring entries live under their own service, so parallel tests never
/// collide.
fn keyring_env() -> TestEnv {
    let mut env = TestEnv::new();
    let namespace = env
        .home()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    env.set("SBX_KEYRING_NAMESPACE", namespace);
    env
}

/// `sbx args...` in HOME, with `stdin` (or nothing) as its input.
fn sbx(env: &TestEnv, args: &[&str], stdin: Option<&str>) -> Output {
    output_with_input(
        &mut env.command_as(As::Root, env.home(), args),
        stdin.unwrap_or_default(),
    )
}

fn round_trip(extra: &[(&str, &str)], store: &str) {
    let mut env = keyring_env();
    for (k, v) in extra {
        env.set(k, v);
    }
    let value = format!("ghp_{}", std::process::id());
    let o = sbx(
        &env,
        &["token", "set", "github"],
        Some(&format!("{value}\n")),
    );
    assert_ok(&o);
    let o = sbx(
        &env,
        &["token", "set", "deploy", "--env", "DEPLOY_KEY"],
        Some("d3pl0y\n"),
    );
    assert_ok(&o);

    let list = sbx(&env, &["token", "list"], None);
    assert_ok(&list);
    let text = stdout(&list);
    assert!(
        text.contains("github") && text.contains("GH_TOKEN") && text.contains(store),
        "{text}"
    );
    assert!(
        text.contains("deploy") && text.contains("DEPLOY_KEY"),
        "{text}"
    );
    let json = sbx(&env, &["token", "list", "--json"], None);
    assert_ok(&json);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    for o in [&list, &json] {
        let all = format!("{}{}", stdout(o), stderr(o));
        assert!(
            !all.contains(&value) && !all.contains("d3pl0y"),
            "a value leaked: {all}"
        );
    }

    let get = sbx(&env, &["token", "get", "github"], None);
    assert_ok(&get);
    assert_eq!(stdout(&get), format!("{value}\n"));
    assert_ok(&sbx(&env, &["token", "rm", "github"], None));
    let gone = sbx(&env, &["token", "get", "github"], None);
    assert_eq!(gone.status.code(), Some(125));
    assert!(stderr(&gone).contains("no token `github`") && stderr(&gone).contains("hint:"));
    assert_ok(&sbx(&env, &["token", "rm", "deploy"], None));
}

#[test]
fn kernel_keyring_round_trip() {
    // The harness clears the environment, so no D-Bus session: the kernel keyring is used,
    // joined afresh by sbx (this test process has no session keyring of its own in CI).
    round_trip(&[], "kernel keyring");
}

#[test]
fn file_store_round_trip() {
    round_trip(&[("SBX_TOKEN_STORE", "file")], "token file");
}

#[test]
fn bad_input_is_refused_with_a_hint() {
    let env = keyring_env();
    for (args, input, needle) in [
        (vec!["token", "set", "github"], "\n", "empty"),
        (vec!["token", "set", "github"], "", "empty"),
        (vec!["token", "set", "github"], "abc\ndef\n", "line break"),
        (
            vec!["token", "set", "gihub"],
            "x\n",
            "did you mean `github`",
        ),
        (
            vec!["token", "set", "bad name"],
            "x\n",
            "not a valid token name",
        ),
        (
            vec!["token", "set", "x", "--env", "lower"],
            "x\n",
            "not a valid environment variable",
        ),
        (vec!["token", "get", "github"], "", "no token `github`"),
    ] {
        let o = sbx(&env, &args, Some(input));
        assert_eq!(o.status.code(), Some(125), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("hint:"), "{args:?}: {}", stderr(&o));
    }
}

/// Every regular file under `dir`, read as bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p);
            } else if m.is_file() {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_stored_token_reaches_the_command_and_nothing_else() {
    needs_docker!();
    let env = keyring_env();
    let repo = env.repo("app");
    let value = format!(
        "ghp_sbxtest{}x{}",
        std::process::id(),
        env.home().to_string_lossy().len()
    );
    assert_ok(&sbx(
        &env,
        &["token", "set", "github"],
        Some(&format!("{value}\n")),
    ));

    let mut c = env.sbx();
    let script = "printenv GH_TOKEN > /dev/null && echo has-token; sleep 60";
    c.current_dir(&repo).args(["run", "--", "sh", "-c", script]);
    let (child, id) = env.spawn_session(c, &["pgrep", "-f", "^sleep 60$"]);
    let agent = format!("sbx-{id}-agent");
    // The command sees it...
    let seen = docker_ok([
        "exec",
        &agent,
        "sh",
        "-c",
        "cat /proc/$(pgrep -f '^sleep 60$')/environ | tr '\\0' '\\n' | grep ^GH_TOKEN=",
    ]);
    assert_eq!(seen, format!("GH_TOKEN={value}"));
    // ...but no argv inside shows it,
    let ps = docker_ok(["exec", &agent, "ps", "-eo", "args"]);
    assert!(!ps.contains(&value), "{ps}");
    // no container's configuration holds it,
    let containers = session_containers(&id);
    assert_eq!(containers.len(), 2, "{containers:?}");
    for c in containers {
        let inspect = docker_ok(["inspect", &c]);
        assert!(
            !inspect.contains(&value),
            "`docker inspect {c}` shows the token"
        );
        // nor its writable layer, whatever the storage driver: every file `docker diff` lists
        // as added or changed, copied out (a folder's files are listed below it).
        let diff = docker_ok(["diff", &c]);
        let paths: Vec<&str> = diff
            .lines()
            .filter(|l| !l.starts_with("D "))
            .map(|l| &l[2..])
            .collect();
        for p in &paths {
            if paths.iter().any(|q| q.starts_with(&format!("{p}/"))) {
                continue;
            }
            let copied = docker(["cp", &format!("{c}:{p}"), "-"]);
            assert!(
                !contains(&copied.stdout, &value),
                "{c}: {p} in its writable layer holds the token"
            );
        }
    }
    // and no file of the session folder does.
    for (p, bytes) in files_under(&env.sessions().join(&id)) {
        assert!(!contains(&bytes, &value), "{} holds the token", p.display());
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("has-token\n"), "{}", stdout(&o));
    assert!(!stderr(&o).contains(&value));
    for (p, bytes) in files_under(&env.sessions().join(&id)) {
        assert!(!contains(&bytes, &value), "{} holds the token", p.display());
    }
    assert_ok(&sbx(&env, &["token", "rm", "github"], None));
}

#[test]
fn host_gh_token_is_forwarded_when_none_is_stored() {
    needs_docker!();
    let env = keyring_env();
    let repo = env.repo("app");
    let mut c = env.sbx();
    let o = c
        .current_dir(&repo)
        .env("GH_TOKEN", "from-the-host")
        .args(["run", "--", "printenv", "GH_TOKEN"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ok(&o);
    assert_eq!(stdout(&o), "from-the-host\n");
    assert!(
        stderr(&o).contains("sbx token set github"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn git_inside_uses_gh_for_github_https_and_the_host_identity() {
    needs_docker!();
    let env = keyring_env();
    let repo = env.repo("app");
    git(&repo, ["config", "user.name", "Ada Lovelace"]);
    git(&repo, ["config", "user.email", "ada@example.com"]);
    git(&repo, ["config", "commit.gpgsign", "true"]);
    git(
        &repo,
        ["remote", "add", "origin", "git@github.com:example/app.git"],
    );
    assert_ok(&sbx(
        &env,
        &["token", "set", "github"],
        Some("ghp_credtest\n"),
    ));
    let script = r#"
printf 'protocol=https\nhost=github.com\n\n' | git credential fill | grep '^password='
git remote get-url --push origin
git config user.name; git config user.email
echo x > x && git add x && git commit -qm inside && git log -1 --format='%an <%ae> %G?'
"#;
    let mut c = env.sbx();
    let o = c
        .current_dir(&repo)
        .args(["run", "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ok(&o);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "password=ghp_credtest", "{out}");
    assert_eq!(lines[1], "https://github.com/example/app.git", "{out}");
    assert_eq!(lines[2..4], ["Ada Lovelace", "ada@example.com"], "{out}");
    assert_eq!(lines[4], "Ada Lovelace <ada@example.com> N", "{out}");
    assert!(
        stderr(&o).contains("commit signing is off"),
        "{}",
        stderr(&o)
    );
    assert_ok(&sbx(&env, &["token", "rm", "github"], None));
}

/// `sbx login` runs the sign-in (a stand-in for `claude setup-token`, whose service cannot be
/// reached here) in a sandbox that reaches only the sign-in's hosts, reads the token it shows
/// broken over rows of a narrow terminal, and keeps it: the next session gets it.
#[test]
fn login_keeps_the_token_the_sign_in_shows_and_the_next_session_gets_it() {
    needs!(Terminal, "signs in on a terminal");
    needs_docker!();
    let env = keyring_env();
    // An agent image whose `claude` is the stand-in.
    let image = env.home().join("standin");
    std::fs::create_dir_all(&image).unwrap();
    std::fs::copy(support().join("claude-setup-token"), image.join("claude")).unwrap();
    std::fs::write(
        image.join("Dockerfile"),
        "ARG BASE_IMAGE=debian:trixie-slim\nFROM ${BASE_IMAGE}\n\
         COPY claude /usr/local/bin/claude\nRUN chmod 755 /usr/local/bin/claude\nUSER nobody\n",
    )
    .unwrap();
    std::fs::create_dir_all(env.config_dir()).unwrap();
    std::fs::write(
        env.config_dir().join("config.yaml"),
        format!(
            "image:\n  dockerfile: {}\n  tag: sbxtest-claude-standin:latest\n",
            image.display()
        ),
    )
    .unwrap();
    assert_ok(&env.run(env.home(), ["setup"]));
    // The sign-in's look-ups go to the test's own DNS server, on an internal network.
    let net = env.net(&["--internal"]);
    let dns = net.dns_server("");

    let size = (50, 30);
    let (out, code) = env.in_terminal(
        env.home(),
        "login",
        size,
        &[("SBX_NETWORK", &net.name), ("SBX_DNS", &dns.ip)],
        b"code42\r",
    );
    let screen = screen_rows(&out, size).join("\n");
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("stored your Claude login"), "{screen}");
    let token = format!("sk-ant-oat01-code42-{}-AA", "x".repeat(90));
    let get = sbx(&env, &["token", "get", "claude"], None);
    assert_ok(&get);
    assert_eq!(stdout(&get).trim(), token);

    // The sign-in's sandbox allowed its hosts and nothing else, and refused none it asked for.
    let id = env.session_ids().pop().unwrap();
    let log = sbx(&env, &["log", &id, "--json"], None);
    assert_ok(&log);
    let log: serde_json::Value = serde_json::from_slice(&log.stdout).unwrap();
    assert_eq!(
        log["allow"],
        serde_json::json!(["platform.claude.com", "api.anthropic.com", "claude.ai"])
    );
    let queries = log["audit"]["queries"].as_array().unwrap();
    assert!(
        queries
            .iter()
            .any(|q| q["name"] == "platform.claude.com" && q["outcome"] != "denied"),
        "{queries:?}"
    );
    assert!(dns.log().contains("platform.claude.com"), "{}", dns.log());

    // The next session is signed in: the token is in its command's environment.
    let repo = env.repo("app");
    let o = env
        .sbx()
        .env("SBX_NETWORK", &net.name)
        .env("SBX_DNS", &dns.ip)
        .current_dir(env.home())
        .arg("run")
        .arg("--repo")
        .arg(&repo)
        .args(["--", "sh", "-c", "echo \"tok=$CLAUDE_CODE_OAUTH_TOKEN\""])
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(
        stdout(&o).contains(&format!("tok={token}")),
        "{}",
        stdout(&o)
    );
    assert_ok(&sbx(&env, &["token", "rm", "claude"], None));
}

#[test]
fn login_without_a_terminal_says_what_to_do() {
    let env = keyring_env();
    let o = sbx(&env, &["login"], None);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("needs a terminal"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("sbx token set claude"),
        "{}",
        stderr(&o)
    );
}
