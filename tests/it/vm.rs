//! VM mode end to end on Linux CI, where no VM can boot: a `limactl` test double (in
//! `tests/support/`) implements Lima's contract on top of a stand-in guest (a container running
//! sshd and its own Docker Engine, built here from Debian packages). `sbx setup --vm` and
//! `sbx run --vm` then do everything for real against it: clone, boot, SSH through russh, the
//! Docker socket forwarded over that connection, the hardened session inside, teardown.

use std::path::{Path, PathBuf};

use crate::harness::*;

/// A short Lima home for sbx (`SBX_LIMA_HOME`; Unix socket paths are limited), owned by the
/// test user.
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

/// A small agent Dockerfile (loading it into a guest's engine is quick); its folder.
fn small_agent_image(env: &TestEnv) -> PathBuf {
    let df = env.home().join("agent-image");
    std::fs::create_dir_all(&df).unwrap();
    std::fs::write(
        df.join("Dockerfile"),
        "FROM debian:trixie-slim\nARG AGENT_UID\nARG AGENT_GID\nRUN apt-get update -qq && apt-get install -y -qq --no-install-recommends git >/dev/null && rm -rf /var/lib/apt/lists/*\n",
    )
    .unwrap();
    df
}

/// The instance folders in a Lima home.
fn instances(home: &Path) -> Vec<String> {
    std::fs::read_dir(home)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sbx-"))
        .collect()
}

#[test]
fn a_vm_session_runs_in_a_guest_over_ssh_and_leaves_nothing_but_kept_work() {
    needs!(
        Root,
        "the VM test switches to a regular user, as limactl refuses root"
    );
    needs_docker!();
    build_guest_images();

    let mut env = TestEnv::new();
    // A folder with a space (Lima before 2.2 skipped such mounts without an error).
    let repo = env.repo("my project/app");
    let df = small_agent_image(&env);
    let lima = lima_home();
    // The user's own Lima home, whose settings Lima merges into every instance made there:
    // sbx's VMs must not see its mount of a private folder.
    let user_lima = env.home().join(".lima");
    let private = env.home().join("private");
    std::fs::create_dir_all(user_lima.join("_config")).unwrap();
    std::fs::create_dir_all(&private).unwrap();
    std::fs::write(
        user_lima.join("_config/default.yaml"),
        format!(
            "mounts:\n  - location: \"{}\"\n    writable: true\n",
            private.display()
        ),
    )
    .unwrap();
    // A cache folder so deep that `<session>/docker.sock` cannot be a Unix socket address.
    let cache = env.home().join("c".repeat(64));
    let prefix = env.guest_prefix("lima");
    env.use_doubles();
    for (k, v) in [
        ("SBX_LIMA_HOME", lima.path()),
        ("LIMA_HOME", &user_lima),
        ("XDG_CACHE_HOME", &cache),
        ("SBX_IMAGE_DOCKERFILE", &df),
    ] {
        env.set(k, v);
    }
    for (k, v) in [
        ("LIMA_TEST_GUEST_IMAGE", "sbxtest-guest-bare:latest"),
        // The Lima user's uid is the host user's on a real Mac (501): not the 1000 the
        // agent runs as here.
        ("LIMA_TEST_UID", "1042"),
        // unattended-upgrades holding apt's lock at first boot.
        ("LIMA_TEST_APT_BUSY", "15"),
        // dockerd answering well after the boot scripts are done.
        ("LIMA_TEST_DOCKER_DELAY", "8"),
        (
            "LIMA_TEST_LOAD_IMAGES",
            "sbx-gate:latest sbxtest-vm-agent:latest",
        ),
        ("LIMA_TEST_PREFIX", &prefix),
        ("SBX_IMAGE_TAG", "sbxtest-vm-agent:latest"),
        ("SBX_TOKEN_STORE", "file"),
    ] {
        env.set(k, v);
    }
    let sessions = env.sessions();
    // The images a golden VM holds, built on this machine's engine (the same fingerprints as the
    // test user's: root's agent uid is 1000 too).
    assert_ok(&env.run(env.home(), ["setup"]));

    let token = "ghp_vmtest_4242";
    let o = output_with_input(
        &mut env.command_as(As::User, env.home(), ["token", "set", "github"]),
        &format!("{token}\n"),
    );
    assert_ok(&o);
    // The real provisioning path: the guest has no Docker until it runs, apt is busy at first,
    // and the docker group applies from the next login.
    let o = env.run_as_user(env.home(), ["setup", "--vm"]);
    assert_ok(&o);
    let o = env.run_as_user(env.home(), ["setup", "--vm"]);
    assert_ok(&o);
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));
    let goldens = instances(lima.path());
    assert_eq!(goldens.len(), 1, "{goldens:?}");
    assert!(goldens[0].starts_with("sbx-g-"), "{goldens:?}");
    assert!(
        !user_lima.join("calls.log").exists(),
        "sbx used the user's own LIMA_HOME"
    );

    // Probes stay on the guest: its session network's gateway, and a name that is not allowed.
    // The checkout is the agent's to write and to use with git, whoever the guest says owns it.
    // The token is shown by its digest: what the command prints is in the session's terminal
    // record, which is the agent's output.
    let script = r#"printf %s "$GH_TOKEN" | sha256sum | cut -c1-64
gw=$(awk '$2 == "00000000" { print $3; exit }' /proc/net/route)
ip=$(printf '%d.%d.%d.%d' 0x${gw:6:2} 0x${gw:4:2} 0x${gw:2:2} 0x${gw:0:2})
(exec 3<>/dev/tcp/$ip/80) 2>/dev/null && echo escaped || echo blocked
getent hosts example.com >/dev/null && echo resolved || echo nxdomain
[ "$(stat -c %u /workspace/app)" = "$(id -u)" ] && echo owned || echo "owner $(stat -c %u:%g /workspace/app)"
echo change >> /workspace/app/README.md && git -C /workspace/app commit -qam inside && echo committed
echo wip > /workspace/app/wip.txt
echo '{"oauthAccount":{"emailAddress":"vm@example.com"},"inside":true}' > "$CLAUDE_CONFIG_DIR/.claude.json"
exit 7"#;
    let o = env.run_as_user(&repo, ["run", "--vm", "--", "bash", "-c", script]);
    eprintln!("--- sbx run --vm stderr:\n{}", stderr(&o));
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "{}\nblocked\nnxdomain\nowned\ncommitted\n",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token))
        ),
        "{}",
        stderr(&o)
    );
    let id = std::fs::read_dir(&sessions)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .unwrap();
    // The commit came back; the login state Claude wrote in the guest came back, and nothing
    // else of the file.
    assert!(git(&repo, ["branch", "--list", &format!("sbx/{id}")]).contains(&id));
    let global = std::fs::read_to_string(env.home().join(".claude.json")).unwrap();
    assert!(
        global.contains("vm@example.com") && !global.contains("inside"),
        "{global}"
    );
    // The refusal was the firewall's, logged inside the guest's gate.
    let log = env.run_as_user(&repo, ["log", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&log.stdout).unwrap();
    assert!(
        v["summary"]["refused"]
            .as_object()
            .is_some_and(|r| r.keys().any(|k| k.ends_with(":80/tcp"))),
        "{v}"
    );
    // The session VM is gone, and its host-key pin; the golden one stays.
    assert!(!lima.path().join(format!("sbx-{id}")).exists());
    assert!(!cache.join(format!("sbx/vm/known_hosts/sbx-{id}")).exists());
    assert!(lima.path().join(&goldens[0]).join("protected").exists());
    let left = docker_ok([
        "ps",
        "-a",
        "--filter",
        &format!("name={prefix}-sbx-{id}"),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(left, "", "the stand-in guest is still there");
    // The dirty checkout is kept, and nothing was left in the host's folders.
    let kept = sessions.join(&id).join("repos/app");
    assert!(kept.join("wip.txt").exists(), "{}", stderr(&o));
    let stray: Vec<_> = std::fs::read_dir(repo.join(".git/objects"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".sbx-mount"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    // The token never went through limactl's command lines or the session's files.
    let calls = std::fs::read_to_string(lima.path().join("calls.log")).unwrap();
    assert!(
        calls.contains(&format!("clone {} sbx-{id}", goldens[0])) && calls.contains("--mount-only"),
        "{calls}"
    );
    assert!(!calls.contains(token));
    assert_no_file_holds(sessions.join(&id), token);

    // A mount Lima skipped without an error (`nofail`): the session stops before its command,
    // saying which folder, and leaves no VM.
    let o = env
        .command_as(As::User, &repo, ["run", "--vm", "--", "echo", "ran"])
        .env("LIMA_TEST_SKIP_MOUNT", "/sbx/sessions/")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(!stdout(&o).contains("ran"));
    assert!(
        stderr(&o).contains("does not show the host's") && stderr(&o).contains("nofail"),
        "{}",
        stderr(&o)
    );
    assert_eq!(instances(lima.path()), goldens);

    // Ctrl-C while the clone is being made: Lima calls the half-made folder broken and will not
    // delete it; sbx removes it.
    let mut c = env.command_as(As::User, &repo, ["run", "--vm", "--", "true"]);
    c.env("LIMA_TEST_CLONE_DELAY", "30")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    assert!(wait_until(std::time::Duration::from_secs(60), || {
        instances(lima.path()).len() > goldens.len()
    }));
    std::thread::sleep(std::time::Duration::from_millis(500));
    send_signal(child.id(), 2);
    let o = child.wait_with_output().unwrap();
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(instances(lima.path()), goldens, "{}", stderr(&o));

    // A folder whose path Lima would split (a comma) is refused before anything is made.
    let odd = env.repo("a,b");
    let o = env.run_as_user(&odd, ["run", "--vm", "--", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot share"), "{}", stderr(&o));
    assert_eq!(instances(lima.path()), goldens);

    // The golden VM, once protected, comes down with the test.
    let double = support().join("limactl");
    for sub in ["unprotect", "delete"] {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=1000", "--regid=1000", "--clear-groups"])
            .arg(&double)
            .args(["--tty=false", sub])
            .args(if sub == "delete" { vec!["-f"] } else { vec![] })
            .arg(&goldens[0])
            .env("LIMA_HOME", lima.path())
            .env("LIMA_TEST_PREFIX", &prefix);
        let _ = c.output();
    }
}

#[test]
fn vm_mode_refuses_root_with_a_hint() {
    needs!(Root, "checks what sbx does as root");
    let mut env = TestEnv::new();
    env.use_doubles();
    let repo = env.repo("app");
    let o = env.run(&repo, ["run", "--vm", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("cannot run as root") && stderr(&o).contains("hint:"),
        "{}",
        stderr(&o)
    );
    assert!(
        env.session_ids()
            .iter()
            .all(|id| !env.sessions().join(id).join("repos/app").exists())
    );
}

#[test]
fn a_missing_or_old_limactl_is_a_clear_error() {
    needs!(Root, "runs sbx as a regular user, as limactl refuses root");
    let env = TestEnv::new();
    let repo = env.repo("app");
    let lima = lima_home();
    let home = lima.path().to_str().unwrap();
    let run = |vars: &[(&str, &str)]| {
        let o = env
            .command_as(As::User, &repo, ["run", "--vm", "--", "true"])
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
        stderr(&o)
    };
    // No limactl on PATH at all.
    let e = run(&[("PATH", "/usr/bin:/bin"), ("SBX_LIMA_HOME", home)]);
    assert!(
        e.contains("`limactl` is not installed") && e.contains("brew install lima"),
        "{e}"
    );
    // An old Lima: 2.1 skipped mounts whose path holds a space without an error.
    let path = format!("{}:/usr/bin:/bin", support().display());
    let e = run(&[
        ("PATH", &path),
        ("SBX_LIMA_HOME", home),
        ("LIMA_TEST_VERSION", "2.1.0"),
    ]);
    assert!(
        e.contains("Lima 2.1.0 is too old") && e.contains("2.2"),
        "{e}"
    );
    // A Lima home too long for the instances' Unix sockets, also when reached by a short link
    // (Lima resolves it).
    let long = lima.path().join("x".repeat(80));
    let e = run(&[("PATH", &path), ("SBX_LIMA_HOME", long.to_str().unwrap())]);
    assert!(e.contains("too long") && e.contains("hint:"), "{e}");
    let link = lima.path().join("l");
    std::os::unix::fs::symlink(&long, &link).unwrap();
    let e = run(&[("PATH", &path), ("SBX_LIMA_HOME", link.to_str().unwrap())]);
    assert!(e.contains("too long"), "{e}");
    // Settings Lima would merge into every instance, found in sbx's own Lima home.
    let cfg = lima.path().join("own");
    std::fs::create_dir_all(cfg.join("_config")).unwrap();
    std::fs::write(cfg.join("_config/override.yaml"), "mounts: []\n").unwrap();
    std::process::Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(&cfg)
        .status()
        .unwrap();
    let e = run(&[("PATH", &path), ("SBX_LIMA_HOME", cfg.to_str().unwrap())]);
    assert!(e.contains("override.yaml") && e.contains("remove"), "{e}");
    // `limactl list` failing is reported as that, not as a missing golden VM.
    let e = run(&[
        ("PATH", &path),
        ("SBX_LIMA_HOME", home),
        ("LIMA_TEST_LIST_FAIL", "host agent unreachable"),
    ]);
    assert!(
        e.contains("host agent unreachable") && !e.contains("sbx setup --vm"),
        "{e}"
    );
    // No golden VM yet.
    let e = run(&[("PATH", &path), ("SBX_LIMA_HOME", home)]);
    assert!(e.contains("sbx setup --vm"), "{e}");
}

#[test]
fn macos_real_lima_vm_session() {
    // On a Mac with Lima 2.2+: `SBX_TEST_REQUIRE_VM=1 cargo test --test it vm::macos_` (see
    // README).
    needs!(MacVm, "boots a real Lima VM");
    let mut env = TestEnv::new();
    // The test's HOME is under `TMPDIR` (long on macOS): sbx's Lima home must be short, and the
    // sockets sbx forwards find a short place themselves.
    let lima = tempfile::Builder::new()
        .prefix("sbxl")
        .tempdir_in("/tmp")
        .unwrap();
    env.set("SBX_LIMA_HOME", lima.path());
    let repo = env.repo("my project/app");
    assert_ok(&env.run(env.home(), ["setup", "--vm"]));
    let script = "uname -s; echo hi > /workspace/app/new.txt && git -C /workspace/app status --porcelain; exit 3";
    let o = env.run(&repo, ["run", "--vm", "--", "sh", "-c", script]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stdout(&o), "Linux\n?? new.txt\n");
    let golden: Vec<_> = std::fs::read_dir(lima.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("sbx-g-"))
        .collect();
    for g in golden {
        for sub in [&["unprotect"][..], &["delete", "-f"][..]] {
            let _ = std::process::Command::new("limactl")
                .env("LIMA_HOME", lima.path())
                .arg("--tty=false")
                .args(sub)
                .arg(&g)
                .output();
        }
    }
}

#[test]
fn docker_host_over_ssh_drives_a_remote_engine() {
    needs!(Root, "runs sbx as a regular user against a stand-in host");
    needs_docker!();
    build_guest_images();
    let mut env = TestEnv::new();
    let repo = env.repo("app");
    let df = small_agent_image(&env);
    let key = env.home().join("id_ed25519");
    let o = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success());
    env.set("SBX_IMAGE_DOCKERFILE", &df);
    env.set("SBX_IMAGE_TAG", "sbxtest-vm-agent:latest");
    env.set("SBX_SSH_KEY", &key);
    env.set("SBX_CLAUDE_CONFIG", "none");
    assert_ok(&env.run(env.home(), ["setup"]));

    // The remote Linux machine: sshd and Docker, with the user's files at the same paths (as a
    // shared home would give), and the images loaded.
    let name = unique("remote");
    env.remove_container_on_drop(&name);
    let home = env.home().display().to_string();
    docker_ok([
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
        ["exec", &name, "docker", "info"]
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
    let port = docker_ok(["port", &name, "22/tcp"]);
    let port = port
        .lines()
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();

    let url = format!("ssh://lima@127.0.0.1:{port}");
    let o = env.run_as_user(
        &repo,
        [
            "--docker-host",
            &url,
            "run",
            "--",
            "sh",
            "-c",
            "echo remote; hostname; exit 5",
        ],
    );
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("remote\nsbx-"), "{}", stdout(&o));
    // The session's containers were made, and removed, on the remote engine.
    let left = docker_ok([
        "exec",
        &name,
        "docker",
        "ps",
        "-aq",
        "--filter",
        "label=dev.sbx.role",
    ]);
    assert_eq!(left, "");
    let made = docker_ok([
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
