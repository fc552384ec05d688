//! Colima sessions end to end on Linux CI, where no VM can boot: a `colima` test double
//! (`tests/support/colima`) drives the `limactl` double the way Colima drives Lima, over the same
//! stand-in guest as `tests/it/vm.rs` (a container running sshd and its own Docker Engine).
//! `sbx run --vm` with `vm.provider: colima` then does everything for real against it: its own
//! Colima home, a fresh profile per session, SSH through russh, the images built in the first
//! session's VM and loaded from sbx's cache in the next, the hardened session inside, and the
//! profile deleted with its data.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::harness::*;

/// The base image sessions build from (this machine's; the guest gets it from the double, in
/// place of the registry a real VM would pull it from).
fn base_image() -> String {
    std::env::var("SBX_IMAGE_BASE").unwrap_or_else(|_| "debian:trixie-slim".into())
}

/// A small agent Dockerfile (quick to build and to save); its folder.
fn small_agent_image(env: &TestEnv) -> PathBuf {
    let df = env.home().join("agent-image");
    std::fs::create_dir_all(&df).unwrap();
    std::fs::write(
        df.join("Dockerfile"),
        "ARG BASE_IMAGE=debian:trixie-slim\nFROM ${BASE_IMAGE}\nARG AGENT_UID\nARG AGENT_GID\n",
    )
    .unwrap();
    df
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_colima_session_boots_its_own_profile_and_the_next_one_reuses_its_images() {
    needs!(
        Root,
        "the Colima test switches to a non-root user, as Colima's limactl refuses root"
    );
    needs_docker!();
    build_guest_images();
    let base = base_image();
    docker_ok(["image", "inspect", "--format", "{{.Id}}", &base]);

    let mut env = TestEnv::new();
    let repo = env.repo("app");
    let df = small_agent_image(&env);
    let prefix = env.guest_prefix("colima");
    env.use_doubles();
    for (k, v) in [
        ("SBX_VM_PROVIDER", "colima"),
        ("LIMA_TEST_GUEST_IMAGE", "sbxtest-guest:latest"),
        // sbx adds no ownership layer to Colima's VMs (its image has no bindfs): the double
        // shows the host's owners, as 9p and sshfs do.
        ("LIMA_TEST_MOUNT_OWNER", "host"),
        ("LIMA_TEST_PREFIX", &prefix),
        ("COLIMA_TEST_SEED_IMAGES", &base),
        ("SBX_IMAGE_DOCKERFILE", df.to_str().unwrap()),
        ("SBX_IMAGE_TAG", "sbxtest-colima-agent:latest"),
        ("SBX_TOKEN_STORE", "file"),
    ] {
        env.set(k, v);
    }
    let token = "ghp_colimatest_4242";
    let o = output_with_input(
        &mut env.command_as(As::User, env.home(), ["token", "set", "github"]),
        &format!("{token}\n"),
    );
    assert_ok(&o);

    // Probes stay on the guest: its session network's gateway, and a name that is not allowed.
    // Then the command waits while the test plays an agent that escaped into its VM (root there):
    // it rewrites what Colima's `delete` reads from a running VM to pick the host-side teardown.
    let script = r#"printenv GH_TOKEN
gw=$(awk '$2 == "00000000" { print $3; exit }' /proc/net/route)
ip=$(printf '%d.%d.%d.%d' 0x${gw:6:2} 0x${gw:4:2} 0x${gw:2:2} 0x${gw:0:2})
(exec 3<>/dev/tcp/$ip/80) 2>/dev/null && echo escaped || echo blocked
getent hosts example.com >/dev/null && echo resolved || echo nxdomain
echo wip > /workspace/app/wip.txt
for _ in $(seq 1500); do [ -e /workspace/app/.go ] && break; sleep 0.2; done
exit 7"#;
    let t = Instant::now();
    let mut child = env
        .command_as(As::User, &repo, ["run", "--vm", "--", "bash", "-c", script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut id = String::new();
    let tampered = wait_until(std::time::Duration::from_secs(600), || {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        id = env.session_ids().into_iter().next().unwrap_or_default();
        let guest = format!("{prefix}-colima-sbx-{id}");
        !id.is_empty()
            && docker([
                "exec",
                &guest,
                "sh",
                "-c",
                "grep -q docker /etc/colima/colima.json 2>/dev/null && echo '{\"runtime\":\"kubernetes\"}' > /etc/colima/colima.json",
            ])
            .status
            .success()
    });
    assert!(tampered, "the session's VM never came up");
    // Once the command has run its probes, it may finish.
    let wip = env.sessions().join(&id).join("repos/app/wip.txt");
    wait_until(std::time::Duration::from_secs(600), || {
        wip.exists() || child.try_wait().unwrap().is_some()
    });
    if wip.exists() {
        std::fs::write(wip.with_file_name(".go"), "").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let first = t.elapsed();
    let err = stderr(&o);
    eprintln!("--- first session ({first:.1?}), stderr:\n{err}");
    assert_eq!(o.status.code(), Some(7), "{err}");
    assert_eq!(stdout(&o), format!("{token}\nblocked\nnxdomain\n"), "{err}");
    // The first session's VM started with an empty engine: it built the images, then saved them.
    assert!(
        err.contains("building the gate image") && err.contains("saved the images"),
        "{err}"
    );
    let id = env.session_ids().into_iter().next().unwrap();
    let profile = format!("sbx-{id}");
    let instance = format!("colima-{profile}");

    // The refusal was the firewall's, logged inside the guest's gate.
    let log = env.run_as_user(&repo, ["log", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&log.stdout).unwrap();
    assert!(
        v["summary"]["refused"]
            .as_object()
            .is_some_and(|r| r.keys().any(|k| k.ends_with(":80/tcp"))),
        "{v}"
    );
    // The dirty checkout is kept.
    assert!(
        env.sessions().join(&id).join("repos/app/wip.txt").exists(),
        "{err}"
    );

    // Nothing of the user's own Colima, SSH, Docker, Kubernetes or Incus configuration was
    // touched, whatever the VM claimed to run.
    for p in [
        ".colima",
        ".config/colima",
        ".ssh/config",
        ".docker",
        ".kube",
        ".config/incus",
    ] {
        assert!(!env.home().join(p).exists(), "`~/{p}` was made");
    }
    // sbx ran Colima in a home of its own, with exactly the flags it means.
    let home = env.cache().join("sbx/colima");
    assert_eq!(mode(&home), 0o700);
    let calls = std::fs::read_to_string(home.join("calls.log")).unwrap();
    let start = calls
        .lines()
        .find(|l| l.starts_with(&format!("start --profile {profile} ")))
        .unwrap_or_else(|| panic!("{calls}"));
    for want in [
        "--activate=false",
        "--ssh-config=false",
        "--template=false",
        "--runtime docker",
        "--port-forwarder=none",
        "--disk 64",
        &format!("--mount {}:w", env.sessions().join(&id).display()),
    ] {
        assert!(start.contains(want), "`{want}` missing from `{start}`");
    }
    // `--vm-type` exists only on macOS 13 or newer.
    assert!(!start.contains("--vm-type"), "{start}");
    assert!(
        calls.contains(&format!("delete --profile {profile} --force --data")),
        "{calls}"
    );
    // Colima drove Lima in sbx's Colima home, where sbx's override keeps every guest port home.
    let lima = home.join("_lima");
    let lcalls = std::fs::read_to_string(lima.join("calls.log")).unwrap();
    let at = |want: String| {
        lcalls
            .find(&want)
            .unwrap_or_else(|| panic!("`{want}` missing from:\n{lcalls}"))
    };
    assert!(at(format!("create --name={instance} ")) < at(format!("start {instance}")));
    // sbx removes the VM with Lima before Colima's delete (which then asks the VM nothing).
    assert!(
        at(format!("delete -f {instance}\n")) < at(format!("delete --force {instance}\n")),
        "{lcalls}"
    );
    let over = std::fs::read_to_string(lima.join("_config/override.yaml")).unwrap();
    assert!(over.contains("guestIP: \"127.0.0.1\"") && over.contains("ignore: true"));

    // The profile is gone with its data disk, its settings and its docker context.
    assert!(!lima.join(&instance).exists(), "the Lima instance is left");
    assert!(
        !lima.join("_disks").join(&instance).exists(),
        "the data disk is left"
    );
    assert!(
        !home.join(&profile).exists(),
        "the profile's settings are left"
    );
    let contexts = home.join("docker/contexts/meta");
    assert_eq!(
        files_in(&contexts),
        Vec::<String>::new(),
        "a docker context is left"
    );
    let left = docker_ok([
        "ps",
        "-a",
        "--filter",
        &format!("name={prefix}-{instance}"),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(left, "", "the stand-in guest is still there");
    assert!(
        !std::fs::read_to_string(home.join("docker/config.json"))
            .unwrap_or_default()
            .contains("currentContext"),
        "a docker context was activated"
    );

    // The saved images: private, and bound to what they are.
    let cache = env.cache().join("sbx/vm/images");
    assert_eq!(mode(&cache), 0o700);
    let entries = files_in(&cache);
    assert_eq!(entries.len(), 2, "{entries:?}");
    for f in &entries {
        assert_eq!(mode(&cache.join(f)), 0o600, "{f}");
    }
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            cache.join(entries.iter().find(|f| f.ends_with(".json")).unwrap()),
        )
        .unwrap(),
    )
    .unwrap();
    let tags: Vec<&str> = manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[0].as_str().unwrap())
        .collect();
    // Saved under the tags sessions use: the fingerprint tags.
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert!(tags[0].starts_with("sbx-gate:fp-"), "{tags:?}");
    assert!(tags[1].starts_with("sbxtest-colima-agent:fp-"), "{tags:?}");

    // A second session: a fresh profile again, whose engine gets the saved images, not a build.
    let t = Instant::now();
    let o = env.run_as_user(
        &repo,
        ["run", "--vm", "--", "sh", "-c", "echo second; exit 3"],
    );
    let second = t.elapsed();
    let err = stderr(&o);
    eprintln!("--- second session ({second:.1?}), stderr:\n{err}");
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert_eq!(stdout(&o), "second\n", "{err}");
    assert!(
        err.contains("loaded the images an earlier Colima session saved"),
        "{err}"
    );
    assert!(!err.contains("building the"), "{err}");
    assert_eq!(files_in(&cache), entries, "the saved images changed");
    let ids = env.session_ids();
    assert_eq!(ids.len(), 2);
    let id2 = ids.into_iter().find(|i| *i != id).unwrap();
    assert!(
        !lima.join(format!("colima-sbx-{id2}")).exists(),
        "the second profile is left"
    );
    eprintln!("first session (build and save): {first:.1?}; second (load): {second:.1?}");

    // A third session dies (`kill -9`) while its command runs, after its VM rewrote the session
    // record (it lies in the folder the VM mounts) to name another VM: `sbx gc` deletes the
    // session's own profile, and only that.
    let mut child = env
        .command_as(
            As::User,
            &repo,
            [
                "run",
                "--vm",
                "--",
                "sh",
                "-c",
                "touch /workspace/app/running; sleep 600",
            ],
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut id3 = String::new();
    let running = wait_until(std::time::Duration::from_secs(300), || {
        id3 = env
            .session_ids()
            .into_iter()
            .find(|i| *i != id && *i != id2)
            .unwrap_or_default();
        !id3.is_empty() && env.sessions().join(&id3).join("repos/app/running").exists()
    });
    assert!(running, "the third session never ran its command");
    let record = env.sessions().join(&id3).join("session.json");
    let mut r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(r["vm"], format!("sbx-{id3}"));
    r["vm"] = "default".into();
    std::fs::write(&record, r.to_string()).unwrap();
    send_signal(child.id(), 9);
    child.wait().unwrap();
    let o = env.run_as_user(&repo, ["gc"]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("names the VM `default`"),
        "{}",
        stderr(&o)
    );
    let instance3 = format!("colima-sbx-{id3}");
    let lcalls = std::fs::read_to_string(lima.join("calls.log")).unwrap();
    assert!(
        lcalls.contains(&format!("delete -f {instance3}\n")),
        "{lcalls}"
    );
    assert!(!lcalls.contains("delete -f colima\n"), "{lcalls}");
    assert!(!lima.join(&instance3).exists(), "the third profile is left");
    assert!(!lima.join("_disks").join(&instance3).exists());
    let left = docker_ok([
        "ps",
        "-a",
        "--filter",
        &format!("name={prefix}-{instance3}"),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(left, "", "the third stand-in guest is still there");
}

#[test]
fn an_old_or_missing_colima_is_refused_before_anything_boots() {
    needs!(
        Root,
        "runs sbx as a regular user, as Colima's limactl refuses root"
    );
    let mut env = TestEnv::new();
    env.set("SBX_VM_PROVIDER", "colima");
    let repo = env.repo("app");
    // No colima on PATH.
    let o = env
        .command_as(As::User, &repo, ["run", "--vm", "--", "true"])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`colima` is not installed")
            && stderr(&o).contains("brew install colima"),
        "{}",
        stderr(&o)
    );
    // Colima 0.9, which lacks `--port-forwarder=none` and `--mount none`.
    let path = format!("{}:/usr/bin:/bin", support().display());
    for version in ["v0.9.1", "development"] {
        let o = env
            .command_as(As::User, &repo, ["run", "--vm", "--", "true"])
            .env("PATH", &path)
            .env("COLIMA_TEST_VERSION", version)
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{err}");
        assert!(
            err.contains(&format!("Colima {version} is too old"))
                && err.contains("0.10.0")
                && err.contains("hint: upgrade Colima"),
            "{err}"
        );
    }
    // Colima was asked its version and nothing else.
    let calls = std::fs::read_to_string(env.cache().join("sbx/colima/calls.log")).unwrap();
    assert!(calls.lines().all(|l| l == "version"), "{calls}");
    assert!(
        !env.cache().join("sbx/colima/_lima/calls.log").exists(),
        "limactl ran"
    );
}

#[test]
fn colima_vm_mode_refuses_root_with_a_hint() {
    needs!(Root, "checks what sbx does as root");
    let mut env = TestEnv::new();
    env.use_doubles();
    env.set("SBX_VM_PROVIDER", "colima");
    let repo = env.repo("app");
    let o = env.run(&repo, ["run", "--vm", "--", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot run as root") && stderr(&o).contains("hint:"),
        "{}",
        stderr(&o)
    );
    assert!(!env.cache().join("sbx/colima").exists());
}

#[test]
fn the_image_cache_loads_only_what_it_saved_and_nothing_altered() {
    use sbx::imagecache::{CacheError, ImageCache};
    needs_docker!();
    let env = TestEnv::new();
    let n = std::process::id();
    let tag = format!("sbxtest-cache-{n}:latest");
    let fingerprint = format!("sbxtest-fingerprint-{n}");
    let ctx = env.home().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}\nLABEL dev.sbx.fingerprint={fingerprint}\n",
            base_image()
        ),
    )
    .unwrap();
    env.remove_image_repo_on_drop(&format!("sbxtest-cache-{n}"));
    docker_ok(["build", "-q", "-t", &tag, ctx.to_str().unwrap()]);
    let spec = |fp: &str| sbx::image::ImageSpec {
        role: "gate",
        tag: tag.clone(),
        alias: tag.clone(),
        context: Vec::new(),
        build_args: Default::default(),
        fingerprint: fp.to_owned(),
    };
    let specs = [spec(&fingerprint)];
    let present = || docker(["image", "inspect", &tag]).status.success();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let endpoint =
            sbx::engine::resolve_endpoint(None, &sbx::engine::EndpointEnv::from_env(env.home()));
        let engine = sbx::engine::Engine::connect(&endpoint).await.unwrap();
        let cache = ImageCache::new(env.cache().join("sbx/vm/images"));
        let tar = cache.store(&engine, &specs).await.unwrap();
        assert_eq!(mode(&cache.dir), 0o700);
        for f in files_in(&cache.dir) {
            assert_eq!(mode(&cache.dir.join(&f)), 0o600, "{f}");
        }
        // An engine that has the images loads nothing.
        assert!(!cache.restore(&engine, &specs).await.unwrap());
        // One that lacks them gets exactly them.
        docker_ok(["rmi", &tag]);
        assert!(cache.restore(&engine, &specs).await.unwrap());
        assert!(present());
        // Other fingerprints have no entry (then the caller builds).
        docker_ok(["rmi", &tag]);
        assert!(!cache.restore(&engine, &[spec("another")]).await.unwrap());
        // A tarball altered after it was saved is never handed to the engine.
        let mut bytes = std::fs::read(&tar).unwrap();
        bytes.push(0);
        std::fs::write(&tar, &bytes).unwrap();
        let e = cache.restore(&engine, &specs).await.unwrap_err();
        assert!(matches!(e, CacheError::Corrupt { .. }), "{e}");
        assert!(!present(), "an altered tarball was loaded");
        // Nor is a link put in its place.
        std::fs::remove_file(&tar).unwrap();
        std::os::unix::fs::symlink(env.home().join("elsewhere.tar"), &tar).unwrap();
        assert!(cache.restore(&engine, &specs).await.is_err());
        assert!(!present());
    });
}
