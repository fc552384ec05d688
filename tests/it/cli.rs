//! The command line's contract for bad input: clear errors with hints and sbx's own exit code,
//! settings with their sources. Most of these need no engine; the image ones use the real one.

use std::process::Command;

use crate::harness::*;

const SBX_FAILURE: i32 = 125;

#[track_caller]
fn assert_error(o: &std::process::Output, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(SBX_FAILURE), "{}", stderr(o));
    let e = stderr(o);
    assert!(e.lines().any(|l| l.starts_with("error: ")), "{e}");
    for n in needles {
        assert!(e.contains(n), "missing `{n}` in:\n{e}");
    }
    assert!(e.contains("hint: "), "no hint in:\n{e}");
}

#[test]
fn not_a_git_repo() {
    let env = TestEnv::new();
    let dir = env.home().join("plain");
    std::fs::create_dir_all(&dir).unwrap();
    let o = env.run(&dir, ["run", "--", "true"]);
    assert_error(&o, &["not inside a git repository", "--repo"]);
}

#[test]
fn repo_without_commits() {
    let env = TestEnv::new();
    let dir = env.home().join("empty");
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, ["init", "-q"]);
    let o = env.run(&dir, ["run", "--", "true"]);
    assert_error(&o, &["no commits", "git commit"]);
}

#[test]
fn bad_allowlist_entry() {
    let env = TestEnv::new();
    let repo = env.repo("app");
    let o = env.run(
        &repo,
        ["run", "--allow", "https://example.com/x", "--", "true"],
    );
    assert_error(&o, &["`https://example.com/x`", "URL"]);
    let o = env.run(&repo, ["run", "--allow", "example.com:99999", "--", "true"]);
    assert_error(&o, &["port"]);
}

#[test]
fn unknown_config_key_names_key_and_file() {
    let env = TestEnv::new();
    let repo = env.repo("app");
    std::fs::write(
        repo.join(".sbx.yaml"),
        "allow: [a.example.com]\nresourses: {cpus: 2}\n",
    )
    .unwrap();
    let o = env.run(&repo, ["run", "--", "true"]);
    assert_error(&o, &["resourses", ".sbx.yaml"]);
    std::fs::create_dir_all(env.config_dir()).unwrap();
    std::fs::write(repo.join(".sbx.yaml"), "").unwrap();
    std::fs::write(
        env.config_dir().join("config.yaml"),
        "git:\n  mode: sideways\n",
    )
    .unwrap();
    let o = env.run(&repo, ["run", "--", "true"]);
    assert_error(&o, &["sideways", "config.yaml"]);
}

#[test]
fn no_engine_reachable() {
    let env = TestEnv::new();
    let repo = env.repo("app");
    let o = env.run(
        &repo,
        [
            "--docker-host",
            "unix:///nonexistent/docker.sock",
            "run",
            "--",
            "true",
        ],
    );
    assert_error(
        &o,
        &[
            "no container engine answers",
            "/nonexistent/docker.sock",
            "DOCKER_HOST",
        ],
    );
    // Nothing is left behind by a failed start.
    let ids = env.session_ids();
    assert_eq!(ids.len(), 1);
    assert!(!env.sessions().join(&ids[0]).join("repos/app").exists());
}

#[test]
fn config_show_lists_values_and_sources() {
    let env = TestEnv::new();
    let repo = env.repo("app");
    std::fs::write(repo.join(".sbx.yaml"), "allow: [a.example.com]\n").unwrap();
    std::fs::create_dir_all(env.config_dir()).unwrap();
    std::fs::write(
        env.config_dir().join("config.yaml"),
        "git: {mode: worktree}\n",
    )
    .unwrap();
    let o = env
        .sbx()
        .current_dir(&repo)
        .env("SBX_CPUS", "1.5")
        .args(["config", "show"])
        .output()
        .unwrap();
    assert_ok(&o);
    let out = stdout(&o);
    let row = |k: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{k} ")))
            .unwrap_or_else(|| panic!("no {k} in {out}"))
            .to_owned()
    };
    assert!(row("allow").contains("a.example.com") && row("allow").contains(".sbx.yaml"));
    assert!(row("git.mode").contains("worktree") && row("git.mode").contains("config.yaml"));
    assert!(row("resources.cpus").contains("1.5") && row("resources.cpus").contains("SBX_CPUS"));
    assert!(row("image.tag").contains("# default"));
    let o = env
        .sbx()
        .current_dir(&repo)
        .args(["config", "show", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|r| r["key"] == "git.mode" && r["value"] == "worktree")
    );
    // The effective allowlist: the built-in hosts, each with why, and the user's, with where
    // each came from.
    let allow = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "allowlist")
        .unwrap()["value"]
        .as_array()
        .unwrap()
        .clone();
    let entry = |name: &str| {
        allow
            .iter()
            .find(|a| a["entry"] == name)
            .unwrap_or_else(|| panic!("no {name} in {allow:?}"))
            .clone()
    };
    for host in [
        "api.anthropic.com",
        "platform.claude.com",
        "claude.ai",
        "registry.npmjs.org",
    ] {
        let e = entry(host);
        assert_eq!(e["source"], "default", "{e}");
        assert!(e["reason"].as_str().unwrap().len() > 10, "{e}");
    }
    assert!(
        entry("a.example.com")["source"]
            .as_str()
            .unwrap()
            .ends_with(".sbx.yaml")
    );
    let line = |host: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("{host} ")))
            .unwrap_or_else(|| panic!("no {host} in {out}"))
            .to_owned()
    };
    assert!(
        line("platform.claude.com").contains("# built in: Claude Code"),
        "{out}"
    );
    assert!(line("a.example.com").contains(".sbx.yaml"), "{out}");
    // Turned off, the built-in hosts are gone and it says so.
    let o = env
        .sbx()
        .current_dir(&repo)
        .env("SBX_DEFAULT_ALLOWLIST", "false")
        .args(["config", "show"])
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(!stdout(&o).contains("api.anthropic.com"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("built-in entries are off"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn ls_json_is_data_on_stdout() {
    let env = TestEnv::new();
    let o = env.run(env.home(), ["ls", "--json"]);
    assert_ok(&o);
    assert_eq!(stdout(&o).trim(), "[]");
}

#[test]
fn image_build_failure_shows_the_failing_step() {
    needs_docker!();
    let env = TestEnv::new();
    let dir = env.home().join("img");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM debian:trixie-slim\nRUN echo about to fail && echo sbx-test-marker >&2 && false\n",
    )
    .unwrap();
    let o = env
        .sbx()
        .current_dir(env.home())
        .env("SBX_IMAGE_DOCKERFILE", &dir)
        .env("SBX_IMAGE_TAG", "sbxtest-broken:latest")
        .args(["setup"])
        .output()
        .unwrap();
    assert_error(
        &o,
        &["RUN echo about to fail", "sbx-test-marker", "sbx setup"],
    );
}

#[test]
fn setup_is_a_no_op_when_up_to_date() {
    needs_docker!();
    let env = TestEnv::new();
    let o = env.run(env.home(), ["setup"]);
    assert_ok(&o);
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));
}

/// `sbx setup --update` builds the image's Claude Code layer again, from the npm registry, and
/// says which version it has; `sbx doctor` shows the same; the stamp is kept, so a later plain
/// `sbx setup` has nothing to do (and no later build goes back to an older release).
#[test]
fn setup_update_rebuilds_claude_code_and_doctor_shows_its_version() {
    needs_docker!();
    // Its own tag: other tests keep using the usual image meanwhile.
    let tag = "sbxtest-update:latest";
    let mut env = TestEnv::new();
    env.set("SBX_IMAGE_TAG", tag);
    env.remove_image_repo_on_drop("sbxtest-update");
    let sbx = |args: &[&str]| env.run(env.home(), args);
    let o = sbx(&["setup", "--update"]);
    assert_ok(&o);
    let err = stderr(&o);
    let version = err
        .lines()
        .find_map(|l| l.strip_prefix("sbx: Claude Code "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no version reported:\n{err}"))
        .to_owned();
    assert!(
        version.split('.').count() == 3 && version.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "{version}"
    );
    let stamp = std::fs::read_to_string(env.cache().join("sbx/claude-code-refresh")).unwrap();
    let history = docker_ok(["history", "--no-trunc", "--format", "{{.CreatedBy}}", tag]);
    assert!(
        history.contains(&format!("CLAUDE_CODE_REFRESH={}", stamp.trim())),
        "{history}"
    );

    let o = sbx(&["doctor"]);
    let row = stdout(&o)
        .lines()
        .find(|l| l.contains("claude code"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        row.starts_with("ok") && row.contains(&version),
        "{}",
        stdout(&o)
    );

    let o = sbx(&["setup"]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("images are up to date"),
        "{}",
        stderr(&o)
    );

    // Another HOME, without the stamp, under the same `image.tag`: its image is the usual one,
    // found by fingerprint and tagged, not built; after that the two settings alternate without
    // rebuilding each other's images, each session using its own fingerprint tag.
    let mut other = TestEnv::new();
    other.set("SBX_IMAGE_TAG", tag);
    let other_setup = || other.run(other.home(), ["setup"]);
    let o = other_setup();
    assert_ok(&o);
    assert!(!stderr(&o).contains("building"), "{}", stderr(&o));
    for _ in 0..2 {
        for o in [sbx(&["setup"]), other_setup()] {
            assert_ok(&o);
            assert!(
                stderr(&o).contains("images are up to date"),
                "{}",
                stderr(&o)
            );
        }
    }
    let tags = docker_ok(["images", "sbxtest-update", "--format", "{{.Tag}}"]);
    let mut tags: Vec<&str> = tags.lines().collect();
    tags.sort();
    assert_eq!(tags.len(), 3, "{tags:?}");
    assert_eq!(tags[2], "latest");
    assert!(tags[..2].iter().all(|t| t.starts_with("fp-")), "{tags:?}");
}

/// Completions are generated for the shells and load in bash (completing a subcommand); the
/// man page is roff that names every command, one page per command with `--dir`.
#[test]
fn completions_load_in_bash_and_the_man_page_names_every_command() {
    let env = TestEnv::new();
    for shell in ["bash", "zsh", "fish"] {
        let o = env.run(env.home(), ["completions", shell]);
        assert_ok(&o);
        assert!(stdout(&o).contains("login"), "{shell}: {}", stdout(&o));
    }
    let o = env.run(env.home(), ["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let script = env.home().join("sbx.bash");
    std::fs::write(
        &script,
        stdout(&env.run(env.home(), ["completions", "bash"])),
    )
    .unwrap();
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            r#"source {}; COMP_WORDS=(sbx lo); COMP_CWORD=1; COMP_LINE="sbx lo"; COMP_POINT=6
_sbx sbx lo sbx; echo "reply: ${{COMPREPLY[*]}}"
COMP_WORDS=(sbx setup --up); COMP_CWORD=2; _sbx sbx --up setup; echo "flags: ${{COMPREPLY[*]}}""#,
            script.display()
        ))
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(stdout(&o).contains("reply: log login"), "{}", stdout(&o));
    assert!(stdout(&o).contains("flags: --update"), "{}", stdout(&o));

    let o = env.run(env.home(), ["man"]);
    assert_ok(&o);
    let page = stdout(&o);
    assert!(page.contains(".TH sbx 1"), "{page}");
    for command in ["run", "login", "setup", "token", "completions"] {
        assert!(
            page.contains(&format!("sbx\\-{command}")),
            "{command}: {page}"
        );
    }
    let dir = env.home().join("man1");
    assert_ok(&env.run(env.home(), ["man", "--dir", dir.to_str().unwrap()]));
    for page in ["sbx.1", "sbx-run.1", "sbx-login.1", "sbx-token-set.1"] {
        assert!(dir.join(page).is_file(), "{page}");
    }
}

/// An image of one small file, named `name`, that looks built long ago: `docker save`d, its
/// creation time set to 2020, loaded again (a loaded image has never been tagged).
fn old_image(dir: &std::path::Path, name: &str, sbx_label: bool) {
    use sha2::Digest;
    let ctx = dir.join(name.replace([':', '/'], "-"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f"), name).unwrap();
    let label = if sbx_label {
        "LABEL dev.sbx.image=sandbox\n"
    } else {
        ""
    };
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nCOPY f /f\n{label}"),
    )
    .unwrap();
    docker_ok(["build", "-q", "-t", name, ctx.to_str().unwrap()]);
    let saved = ctx.join("saved.tar");
    docker_ok(["save", "-o", saved.to_str().unwrap(), name]);
    docker_ok(["rmi", name]);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&saved).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let path = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            files.push((path, data));
        }
    }
    let find = |p: &str| files.iter().find(|(n, _)| n == p).unwrap().1.clone();
    let mut manifest: serde_json::Value = serde_json::from_slice(&find("manifest.json")).unwrap();
    let config_name = manifest[0]["Config"].as_str().unwrap().to_owned();
    let mut config: serde_json::Value = serde_json::from_slice(&find(&config_name)).unwrap();
    config["created"] = "2020-01-01T00:00:00Z".into();
    let config = serde_json::to_vec(&config).unwrap();
    let new_name = format!("{}.json", hex::encode(sha2::Sha256::digest(&config)));
    manifest[0]["Config"] = new_name.clone().into();
    files.retain(|(n, _)| *n != config_name && n != "manifest.json" && n != "repositories");
    files.push((new_name, config));
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    let tarball = ctx.join("old.tar");
    std::fs::write(&tarball, b.into_inner().unwrap()).unwrap();
    docker_ok(["load", "-q", "-i", tarball.to_str().unwrap()]);
    let created = docker_ok(["image", "inspect", "-f", "{{.Created}}", name]);
    assert!(created.starts_with("2020-01-01"), "{created}");
}

fn image_exists(name: &str) -> bool {
    docker(["image", "inspect", name]).status.success()
}

/// `sbx gc` removes the images sbx built that nothing needs (not used for two weeks, not the
/// current settings', in no container); what was built or used recently, what a container uses,
/// the current images and images sbx did not build stay.
#[test]
fn gc_removes_only_the_images_nothing_needs() {
    needs_docker!();
    let env = TestEnv::new();
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "sbxtest-gc-old:fp-1",
        "sbxtest-gc-used:fp-1",
        "sbxtest-gc-foreign:old",
        "sbxtest-gc-new:fp-1",
    ];
    for n in names {
        env.remove_image_repo_on_drop(n.split(':').next().unwrap());
    }
    old_image(dir.path(), names[0], true);
    old_image(dir.path(), names[1], true);
    old_image(dir.path(), names[2], false);
    let fresh = dir.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(fresh.join("f"), "fresh").unwrap();
    std::fs::write(
        fresh.join("Dockerfile"),
        "FROM scratch\nCOPY f /f\nLABEL dev.sbx.image=sandbox\n",
    )
    .unwrap();
    docker_ok(["build", "-q", "-t", names[3], fresh.to_str().unwrap()]);
    let container = docker_ok(["create", "--label", TEST_LABEL, names[1], "/f"]);
    env.remove_container_on_drop(&container);

    let o = env.run(env.home(), ["gc"]);
    assert_ok(&o);
    assert!(!image_exists(names[0]), "{}", stderr(&o));
    assert!(stderr(&o).contains("image name"), "{}", stderr(&o));
    for n in &names[1..] {
        assert!(image_exists(n), "{n} was removed:\n{}", stderr(&o));
    }
    // The current settings' images stayed: nothing to build.
    let o = env.run(env.home(), ["setup"]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("images are up to date"),
        "{}",
        stderr(&o)
    );
}
