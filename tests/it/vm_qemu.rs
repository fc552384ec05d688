//! VM mode on a real virtual machine: the `limactl` double's QEMU backend (`LIMA_TEST_BACKEND=qemu`)
//! boots a Debian guest built from Debian packages (`tests/support/qemu-guest/build`), under KVM
//! when the host has a usable one and software emulation otherwise. `sbx setup --vm` provisions
//! Docker in it for real (apt from deb.debian.org through the guest's one forward), and `sbx run
//! --vm` clones it (a qcow2 overlay), boots the clone, mounts the session's folders over 9p and
//! runs the session in its Docker. Slow (minutes under emulation): one test.
//!
//! Needs root (the guest build, and switching to the regular user `limactl` requires), Docker,
//! `qemu-system-x86_64` and the guest folder `SBX_TEST_QEMU_GUEST` (default
//! `/var/cache/sbx-vmtest/guest`, built when missing). Without them it prints `skipping: ...`;
//! `SBX_TEST_REQUIRE_QEMU=1` (set by CI) makes that a failure. Run it alone with
//! `cargo test --test it vm_qemu::`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::*;

/// The guest image folder, built (or found current) by the support script.
fn guest() -> Option<PathBuf> {
    let dir = std::env::var_os("SBX_TEST_QEMU_GUEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/sbx-vmtest/guest"));
    let began = Instant::now();
    let o = std::process::Command::new(support().join("qemu-guest/build"))
        .arg(&dir)
        .output()
        .ok()?;
    if !o.status.success() {
        eprintln!(
            "guest build failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        return None;
    }
    eprintln!(
        "guest image ready in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    Some(dir)
}

/// sbx's Lima home for this test, beside the guest and keyed by it: the provisioned golden VM
/// stays there between runs (sbx rebuilds it when its template, provisioning or images change),
/// so a warm machine pays the boot, not the provisioning. The homes of other guests (an older
/// recipe's) and what an interrupted run left of session VMs are removed first.
fn lima_home(guest: &Path) -> PathBuf {
    let key = std::fs::read_to_string(guest.join("KEY")).unwrap();
    let name = format!("vm-lima-{}", key.trim());
    let parent = guest.parent().unwrap();
    for e in std::fs::read_dir(parent).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("vm-lima-") && n != name {
            kill_qemus(&e.path());
            std::fs::remove_dir_all(e.path()).unwrap();
        }
    }
    let home = parent.join(name);
    kill_qemus(&home);
    std::fs::create_dir_all(&home).unwrap();
    for e in std::fs::read_dir(&home).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("sbx-") && !n.starts_with("sbx-g-") {
            std::fs::remove_dir_all(e.path()).unwrap();
        }
    }
    let _ = std::fs::remove_file(home.join("calls.log"));
    let ok = std::process::Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(&home)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    home
}

fn kill_qemus(home: &Path) {
    let _ = std::process::Command::new("pkill")
        .args(["-9", "-f", &format!("qemu-system.*{}/", home.display())])
        .status();
    std::thread::sleep(Duration::from_millis(200));
}

/// QEMU processes of instances under this Lima home.
fn qemus(home: &Path) -> String {
    let o = std::process::Command::new("pgrep")
        .args(["-af", &format!("qemu-system.*{}/", home.display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn instances(home: &Path) -> Vec<String> {
    std::fs::read_dir(home)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sbx-"))
        .collect()
}

/// The lines of sbx's `--timings` table.
fn phases(stderr: &str) -> String {
    stderr
        .lines()
        .skip_while(|l| !l.starts_with("phase "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn setup_and_run_on_a_real_vm_then_ctrl_c_while_one_boots() {
    needs!(Qemu, "boots a real VM");
    needs_docker!();
    let Some(guest) = guest() else {
        return skip(Need::Qemu, "the guest image could not be built");
    };

    let mut env = TestEnv::new();
    let repo = env.repo("app");
    let df = env.home().join("agent-image");
    std::fs::create_dir_all(&df).unwrap();
    std::fs::write(
        df.join("Dockerfile"),
        "FROM debian:trixie-slim\nARG AGENT_UID\nARG AGENT_GID\nRUN apt-get update -qq && apt-get install -y -qq --no-install-recommends git >/dev/null && rm -rf /var/lib/apt/lists/*\n",
    )
    .unwrap();
    let lima = lima_home(&guest);
    // Whatever QEMU the test left running stops, even when it fails.
    let home = lima.clone();
    env.on_drop(move || kill_qemus(&home));
    let sessions = env.sessions();
    let user_lima = env.home().join(".lima");
    env.use_doubles();
    for (k, v) in [
        ("SBX_LIMA_HOME", &lima),
        ("LIMA_HOME", &user_lima),
        ("LIMA_TEST_QEMU_GUEST", &guest),
        ("SBX_IMAGE_DOCKERFILE", &df),
    ] {
        env.set(k, v);
    }
    for (k, v) in [
        ("LIMA_TEST_BACKEND", "qemu"),
        (
            "LIMA_TEST_LOAD_IMAGES",
            "sbx-gate:latest sbxtest-qvm-agent:latest",
        ),
        ("SBX_IMAGE_TAG", "sbxtest-qvm-agent:latest"),
        ("SBX_TOKEN_STORE", "file"),
    ] {
        env.set(k, v);
    }
    // The images the golden VM's Docker gets, built on this machine's engine first (the same
    // fingerprints: root's agent uid is 1000 too).
    assert_ok(&env.run(env.home(), ["setup"]));
    let token = "ghp_qemutest_4242";
    let o = output_with_input(
        &mut env.command_as(As::User, env.home(), ["token", "set", "github"]),
        &format!("{token}\n"),
    );
    assert_ok(&o);

    // The real provisioning path (the guest has no Docker until sbx installs it), or, on a warm
    // machine, the golden VM an earlier run provisioned, which sbx checks is current.
    // Each progress line is timed as it arrives: the golden VM's phases (create, first boot,
    // provisioning, images, stop).
    let began = Instant::now();
    let mut c = env.command_as(As::User, env.home(), ["setup", "--vm"]);
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut err = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap())) {
        let line = line.unwrap();
        eprintln!("[{:>6.1} s] {line}", began.elapsed().as_secs_f64());
        err.push_str(&line);
        err.push('\n');
    }
    let status = child.wait().unwrap();
    eprintln!("--- sbx setup --vm: {:.0} s", began.elapsed().as_secs_f64());
    assert!(status.success(), "{err}");
    assert!(
        err.contains("golden VM: ready") || err.contains("up to date"),
        "{err}"
    );
    let goldens = instances(lima.as_path());
    assert_eq!(goldens.len(), 1, "{goldens:?}");
    assert_eq!(qemus(lima.as_path()), "", "the golden VM still runs");

    let script = r#"printf %s "$GH_TOKEN" | sha256sum | cut -c1-64
gw=$(awk '$2 == "00000000" { print $3; exit }' /proc/net/route)
ip=$(printf '%d.%d.%d.%d' 0x${gw:6:2} 0x${gw:4:2} 0x${gw:2:2} 0x${gw:0:2})
(exec 3<>/dev/tcp/$ip/80) 2>/dev/null && echo escaped || echo blocked
getent hosts example.com >/dev/null && echo resolved || echo nxdomain
[ "$(stat -c %u /workspace/app)" = "$(id -u)" ] && echo owned || echo "owner $(stat -c %u:%g /workspace/app)"
echo change >> /workspace/app/README.md && git -C /workspace/app commit -qam inside && echo committed
echo wip > /workspace/app/wip.txt
exit 7"#;
    let began = Instant::now();
    let o = env.run_as_user(
        &repo,
        ["run", "--vm", "--timings", "--", "bash", "-c", script],
    );
    eprintln!(
        "--- sbx run --vm ({:.0} s), its phases:\n{}",
        began.elapsed().as_secs_f64(),
        phases(&stderr(&o))
    );
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
    assert!(git(&repo, ["branch", "--list", &format!("sbx/{id}")]).contains(&id));
    assert!(sessions.join(&id).join("repos/app/wip.txt").exists());
    // The token went through no limactl command line and into none of the session's files.
    let calls = std::fs::read_to_string(lima.join("calls.log")).unwrap();
    assert!(!calls.contains(token), "{calls}");
    assert_no_file_holds(sessions.join(&id), token);
    // The session VM is gone with its overlay and its QEMU; the golden stays, stopped.
    assert_eq!(instances(lima.as_path()), goldens);
    assert_eq!(qemus(lima.as_path()), "");

    // Ctrl-C while the session's VM boots: nothing is left, and `sbx gc` has nothing to do.
    let mut c = env.command_as(As::User, &repo, ["run", "--vm", "--", "true"]);
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let booting = wait_until(Duration::from_secs(120), || {
        instances(lima.as_path())
            .iter()
            .any(|n| !goldens.contains(n) && lima.as_path().join(n).join("qemu.pid").exists())
    });
    assert!(booting, "no session VM started booting");
    send_signal(child.id(), libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert_eq!(instances(lima.as_path()), goldens, "{}", stderr(&o));
    assert_eq!(qemus(lima.as_path()), "");
    let o = env.run_as_user(&repo, ["gc"]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("0 VMs") && stderr(&o).contains("finished 0 dead sessions"),
        "{}",
        stderr(&o)
    );
}
