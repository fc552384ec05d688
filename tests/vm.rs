//! VM mode end to end on Linux CI, where no VM can boot: a `limactl` test double (in
//! `tests/support/`) implements Lima's contract on top of a stand-in guest (a container running
//! sshd and its own Docker Engine, built here from Debian packages). `sbx setup --vm` and
//! `sbx run --vm` then do everything for real against it: clone, boot, SSH through russh, the
//! Docker socket forwarded over that connection, the hardened session inside, teardown.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn support() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support")
}

/// A short `LIMA_HOME` (Unix socket paths are limited), owned by the test user.
fn lima_home() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("sbxl")
        .tempdir_in("/tmp")
        .unwrap();
    std::process::Command::new("chown")
        .args(["1000:1000"])
        .arg(d.path())
        .status()
        .unwrap();
    d
}

/// The stand-in guest's image (Debian, sshd, Docker Engine).
fn build_guest_image() {
    docker_ok(&[
        "build",
        "-q",
        "-t",
        "sbxtest-guest:latest",
        support().join("guest").to_str().unwrap(),
    ]);
}

/// A small agent Dockerfile (loading it into a guest's engine is quick); its folder.
fn small_agent_image(env: &Env) -> PathBuf {
    let df = env.home().join("agent-image");
    std::fs::create_dir_all(&df).unwrap();
    std::fs::write(
        df.join("Dockerfile"),
        "FROM debian:trixie-slim\nARG AGENT_UID\nARG AGENT_GID\n",
    )
    .unwrap();
    df
}

struct Cleanup {
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names = docker_ok(&[
            "ps",
            "-a",
            "--filter",
            &format!("name={}", self.prefix),
            "--format",
            "{{.Names}}",
        ]);
        for n in names.lines() {
            let _ = docker(&["rm", "-f", n]);
        }
    }
}

#[test]
fn a_vm_session_runs_in_a_guest_over_ssh_and_leaves_nothing_but_kept_work() {
    require_docker!();
    if !Env::is_root() {
        eprintln!(
            "skipping: the VM test switches to a non-root user (limactl refuses root) and needs root for that"
        );
        return;
    }
    ensure_images();
    build_guest_image();

    let env = Env::new();
    let _g = SessionGuard { env: &env };
    let repo = env.repo("app");
    let df = small_agent_image(&env);
    let lima = lima_home();
    let prefix = format!("limatest-{}", std::process::id());
    let _c = Cleanup {
        prefix: prefix.clone(),
    };
    let path = format!(
        "{}:{}",
        support().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let vars: Vec<(&str, String)> = vec![
        ("PATH", path),
        ("LIMA_HOME", lima.path().display().to_string()),
        ("LIMATEST_GUEST_IMAGE", "sbxtest-guest:latest".into()),
        (
            "LIMATEST_LOAD_IMAGES",
            "sbx-gate:latest sbxtest-vm-agent:latest".into(),
        ),
        ("LIMATEST_PREFIX", prefix.clone()),
        ("SBX_IMAGE_DOCKERFILE", df.display().to_string()),
        ("SBX_IMAGE_TAG", "sbxtest-vm-agent:latest".into()),
        ("SBX_TOKEN_STORE", "file".into()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The images a golden VM holds, built on this machine's engine (the same fingerprints as the
    // test user's: root's agent uid is 1000 too).
    let mut setup = env.sbx();
    let o = setup
        .envs(vars.iter().copied())
        .current_dir(env.home())
        .arg("setup")
        .output()
        .unwrap();
    assert_ok(&o);

    let token = "ghp_vmtest_4242";
    let o = env
        .run_as_user_with(
            env.home(),
            &["token", "set", "github"],
            &vars,
            Some(&format!("{token}\n")),
        )
        .unwrap();
    assert_ok(&o);
    let o = env
        .run_as_user_with(env.home(), &["setup", "--vm"], &vars, None)
        .unwrap();
    assert_ok(&o);
    let o = env
        .run_as_user_with(env.home(), &["setup", "--vm"], &vars, None)
        .unwrap();
    assert_ok(&o);
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));

    // Probes stay on the guest: its session network's gateway, and a name that is not allowed.
    let script = r#"printenv GH_TOKEN
gw=$(awk '$2 == "00000000" { print $3; exit }' /proc/net/route)
ip=$(printf '%d.%d.%d.%d' 0x${gw:6:2} 0x${gw:4:2} 0x${gw:2:2} 0x${gw:0:2})
(exec 3<>/dev/tcp/$ip/80) 2>/dev/null && echo escaped || echo blocked
getent hosts example.com >/dev/null && echo resolved || echo nxdomain
echo wip > /workspace/app/wip.txt
echo '{"oauthAccount":{"emailAddress":"vm@example.com"},"inside":true}' > "$CLAUDE_CONFIG_DIR/.claude.json"
exit 7"#;
    let o = env
        .run_as_user_with(
            &repo,
            &["run", "--vm", "--", "bash", "-c", script],
            &vars,
            None,
        )
        .unwrap();
    eprintln!("--- sbx run --vm stderr:\n{}", stderr(&o));
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("{token}\nblocked\nnxdomain\n"),
        "{}",
        stderr(&o)
    );
    let id = session_ids(&env).into_iter().next().unwrap();
    // The login state Claude wrote in the guest came back, and nothing else of the file.
    let global = std::fs::read_to_string(env.home().join(".claude.json")).unwrap();
    assert!(
        global.contains("vm@example.com") && !global.contains("inside"),
        "{global}"
    );
    // The refusal was the firewall's, logged inside the guest's gate.
    let log = env
        .run_as_user_with(&repo, &["log", &id, "--json"], &vars, None)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&log.stdout).unwrap();
    assert!(
        v["summary"]["refused"]
            .as_object()
            .is_some_and(|r| r.keys().any(|k| k.ends_with(":80/tcp"))),
        "{v}"
    );
    // The session VM is gone; the golden one stays.
    assert!(!lima.path().join(format!("sbx-{id}")).exists());
    assert!(lima.path().join("sbx-golden/protected").exists());
    let left = docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={prefix}-sbx-{id}"),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(left, "", "the stand-in guest is still there");
    // The dirty checkout is kept.
    assert!(
        env.sessions().join(&id).join("repos/app/wip.txt").exists(),
        "{}",
        stderr(&o)
    );
    // The token never went through limactl's command lines or the session's files.
    let calls = std::fs::read_to_string(lima.path().join("calls.log")).unwrap();
    assert!(
        calls.contains(&format!("clone sbx-golden sbx-{id}")) && calls.contains("--mount-only"),
        "{calls}"
    );
    assert!(!calls.contains(token));
    let session_dir = env.sessions().join(&id);
    let mut todo = vec![session_dir];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(token),
                    "{} holds the token",
                    p.display()
                );
            }
        }
    }

    // The golden VM, once protected, comes down with the test.
    let double = support().join("limactl");
    for sub in ["unprotect", "delete"] {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=1000", "--regid=1000", "--clear-groups"])
            .arg(&double)
            .args(["--tty=false", sub])
            .args(if sub == "delete" { vec!["-f"] } else { vec![] })
            .arg("sbx-golden")
            .env("LIMA_HOME", lima.path())
            .env("LIMATEST_PREFIX", &prefix);
        let _ = c.output();
    }
}

#[test]
fn vm_mode_refuses_root_with_a_hint() {
    if !Env::is_root() {
        eprintln!("skipping: this checks what happens when sbx runs as root");
        return;
    }
    let env = Env::new();
    let repo = env.repo("app");
    let path = format!(
        "{}:{}",
        support().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = env
        .sbx()
        .current_dir(&repo)
        .env("PATH", path)
        .args(["run", "--vm", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("cannot run as root") && stderr(&o).contains("hint:"),
        "{}",
        stderr(&o)
    );
    assert!(
        session_ids(&env)
            .iter()
            .all(|id| !env.sessions().join(id).join("repos/app").exists())
    );
}

#[test]
fn a_missing_or_old_limactl_is_a_clear_error() {
    if !Env::is_root() {
        eprintln!("skipping: runs sbx as a non-root user, which needs root");
        return;
    }
    let env = Env::new();
    let repo = env.repo("app");
    let lima = lima_home();
    // No limactl on PATH at all.
    let o = env
        .run_as_user_with(
            &repo,
            &["run", "--vm", "--", "true"],
            &[
                ("PATH", "/usr/bin:/bin"),
                ("LIMA_HOME", lima.path().to_str().unwrap()),
            ],
            None,
        )
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`limactl` is not installed")
            && stderr(&o).contains("brew install lima"),
        "{}",
        stderr(&o)
    );
    // An old Lima.
    let path = format!("{}:/usr/bin:/bin", support().display());
    let o = env
        .run_as_user_with(
            &repo,
            &["run", "--vm", "--", "true"],
            &[
                ("PATH", &path),
                ("LIMA_HOME", lima.path().to_str().unwrap()),
                ("LIMATEST_VERSION", "1.2.0"),
            ],
            None,
        )
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Lima 1.2.0 is too old"),
        "{}",
        stderr(&o)
    );
    // A `LIMA_HOME` too long for the instances' Unix sockets.
    let long = lima.path().join("x".repeat(80));
    let o = env
        .run_as_user_with(
            &repo,
            &["run", "--vm", "--", "true"],
            &[("PATH", &path), ("LIMA_HOME", long.to_str().unwrap())],
            None,
        )
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("too long") && stderr(&o).contains("hint:"),
        "{}",
        stderr(&o)
    );
    // No golden VM yet.
    let o = env
        .run_as_user_with(
            &repo,
            &["run", "--vm", "--", "true"],
            &[
                ("PATH", &path),
                ("LIMA_HOME", lima.path().to_str().unwrap()),
            ],
            None,
        )
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("sbx setup --vm"), "{}", stderr(&o));
}

#[test]
fn macos_real_lima_vm_session() {
    if !cfg!(target_os = "macos") {
        eprintln!("skipping: boots a real Lima VM, which needs macOS");
        return;
    }
    if std::process::Command::new("limactl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping: limactl is not installed");
        return;
    }
    let env = Env::new();
    let repo = env.repo("app");
    let o = env.run(env.home(), &["setup", "--vm"]);
    assert_ok(&o);
    let o = env.run(
        &repo,
        &["run", "--vm", "--", "sh", "-c", "uname -s; exit 3"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stdout(&o), "Linux\n");
}

#[test]
fn docker_host_over_ssh_drives_a_remote_engine() {
    require_docker!();
    if !Env::is_root() {
        eprintln!(
            "skipping: runs sbx as a non-root user against a stand-in host, which needs root"
        );
        return;
    }
    ensure_images();
    build_guest_image();
    let env = Env::new();
    let repo = env.repo("app");
    let df = small_agent_image(&env);
    let key = env.home().join("id_ed25519");
    let o = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success());
    let vars: Vec<(&str, String)> = vec![
        ("SBX_IMAGE_DOCKERFILE", df.display().to_string()),
        ("SBX_IMAGE_TAG", "sbxtest-vm-agent:latest".into()),
        ("SBX_SSH_KEY", key.display().to_string()),
        ("SBX_CLAUDE_CONFIG", "none".into()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_ok(
        &env.sbx()
            .envs(vars.iter().copied())
            .current_dir(env.home())
            .arg("setup")
            .output()
            .unwrap(),
    );

    // The remote Linux machine: sshd and Docker, with the user's files at the same paths (as a
    // shared home would give), and the images loaded.
    let name = format!("sbxtest-remote-{}", std::process::id());
    let _c = Cleanup {
        prefix: name.clone(),
    };
    let home = env.home().display().to_string();
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        TEST_LABEL,
        "--cap-add",
        "ALL",
        "--cap-drop",
        "SYS_RESOURCE",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs",
        "/var/lib/docker:exec",
        "-p",
        "127.0.0.1::22",
        "-v",
        &format!("{}.pub:/sbx-authorized-keys:ro", key.display()),
        "-v",
        &format!("{home}:{home}"),
        "sbxtest-guest:latest",
    ]);
    assert!(wait_until(std::time::Duration::from_secs(120), || docker(
        &["exec", &name, "docker", "info"]
    )
    .status
    .success()));
    let load = std::process::Command::new("sh")
        .args(["-c", &format!("docker save sbx-gate:latest sbxtest-vm-agent:latest | docker exec -i {name} docker load -q")])
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let port = docker_ok(&["port", &name, "22/tcp"]);
    let port = port
        .lines()
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();

    let url = format!("ssh://lima@127.0.0.1:{port}");
    let o = env
        .run_as_user_with(
            &repo,
            &[
                "--docker-host",
                &url,
                "run",
                "--",
                "sh",
                "-c",
                "echo remote; hostname; exit 5",
            ],
            &vars,
            None,
        )
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("remote\nsbx-"), "{}", stdout(&o));
    // The session's containers were made, and removed, on the remote engine.
    let left = docker_ok(&[
        "exec",
        &name,
        "docker",
        "ps",
        "-aq",
        "--filter",
        "label=dev.sbx.role",
    ]);
    assert_eq!(left, "");
    let made = docker_ok(&[
        "exec",
        &name,
        "docker",
        "network",
        "ls",
        "--format",
        "{{.Name}}",
    ]);
    assert!(made.contains("sbx-sessions"), "{made}");
}
