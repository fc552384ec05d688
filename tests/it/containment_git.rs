//! Attacks on the host through what a session leaves in its checkouts, performed from inside real
//! sessions, with sbx as root and as a regular user in the `docker` group: planted symbolic links
//! and FIFOs for sbx's own end-of-session work, planted git configuration for the user's next
//! `git status` in a kept checkout, and malformed commits for the import.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// `sbx run --repo A --repo B ... -- sh -c script`, as `who`.
fn attack(env: &TestEnv, who: As, repos: &[&Path], script: &str) -> Output {
    let mut args = vec!["run".to_owned()];
    for r in repos {
        args.push("--repo".into());
        args.push(r.display().to_string());
    }
    args.extend(["--".into(), "sh".into(), "-c".into(), script.into()]);
    env.run_as(who, env.home(), &args)
}

/// Where a session kept the checkout of `repo`.
fn kept(env: &TestEnv, id: &str, repo: &str) -> PathBuf {
    env.sessions().join(id).join("repos").join(repo)
}

/// A repository with a tracked subfolder (`sub/`), so FIFOs and nested repositories can sit in
/// a folder libgit2's status walks into.
fn repo_with_sub(env: &TestEnv, name: &str) -> PathBuf {
    let r = env.repo(name);
    std::fs::create_dir(r.join("sub")).unwrap();
    std::fs::write(r.join("sub/s.txt"), "s\n").unwrap();
    git(&r, ["add", "."]);
    git(&r, ["commit", "-qm", "sub"]);
    r
}

/// Spawns `cmd` and waits at most `limit`; a command still running then is killed and the test
/// fails (sbx must return promptly whatever the agent left behind).
#[track_caller]
fn run_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "did not return within {} s\n--- stderr\n{}",
                limit.as_secs(),
                stderr(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// What a user does in a kept checkout or a folder of it: status, diff, log, add, commit, with
/// the real git CLI and its normal config handling. `safe.directory=*` so that git never
/// declines to read a config because of its owner: only what sbx did stands between these and
/// the agent's configuration.
fn user_runs_git(env: &TestEnv, dir: &Path) {
    for args in [
        &["status"][..],
        &["diff"],
        &["diff", "HEAD"],
        &["log", "-2", "--stat"],
        &["add", "-A"],
        &["commit", "-q", "-m", "by the user"],
    ] {
        let mut c = Command::new("timeout");
        c.args(["60", "git", "-c", "safe.directory=*", "-C"])
            .arg(dir)
            .args(args)
            .env_clear()
            .env("HOME", env.home())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GIT_AUTHOR_NAME", "User")
            .env("GIT_AUTHOR_EMAIL", "user@example.com")
            .env("GIT_COMMITTER_NAME", "User")
            .env("GIT_COMMITTER_EMAIL", "user@example.com")
            .stdin(Stdio::null());
        let o = c.output().unwrap();
        assert_ne!(o.status.code(), Some(124), "git {args:?} hung in {dir:?}");
    }
}

/// Shell that plants, in the git folder `$1`, every way git configuration can run a command
/// (`touch MARKER`): hooks, `core.hooksPath`, `core.fsmonitor`, `include.path`, a clean/smudge
/// filter and `diff.external` (both named by `.gitattributes`), `gpg.program` with signing and
/// `log.showSignature`. Planted last, so git inside the session is not disturbed.
fn plant_fn(marker: &Path) -> String {
    let m = marker.display();
    format!(
        r#"plant() {{
  g="$1"
  mkdir -p "$g/hooks"
  for h in pre-commit commit-msg post-commit post-index-change post-checkout reference-transaction; do
    printf '#!/bin/sh\ntouch {m}\nexit 0\n' > "$g/hooks/$h"; chmod +x "$g/hooks/$h"
  done
  printf '[core]\n\tfsmonitor = touch {m}\n' > "$g/evil.cfg"
  cat >> "$g/config" <<EOF
[core]
	fsmonitor = touch {m}
	hooksPath = $g/hooks
	pager = touch {m}
[include]
	path = evil.cfg
[filter "evil"]
	clean = sh -c 'touch {m}; cat'
	smudge = sh -c 'touch {m}; cat'
	required = false
[diff "evil"]
	command = touch {m}
[diff]
	external = touch {m}
[gpg]
	program = touch {m}
[commit]
	gpgsign = true
[log]
	showSignature = true
EOF
}}
"#
    )
}

/// The marker a planted command would create, with a control showing that the harness sees it:
/// planted into a plain repository on the host, the same configuration does run.
fn marker_with_control(env: &TestEnv) -> PathBuf {
    let marker = env.home().join("pwned");
    let control = env.repo("control");
    let script = format!(
        "{}\nplant .git && echo '* filter=evil diff=evil' > .gitattributes && echo x >> README.md",
        plant_fn(&marker)
    );
    let o = Command::new("sh")
        .args(["-c", &script])
        .current_dir(&control)
        .output()
        .unwrap();
    assert_ok(&o);
    user_runs_git(env, &control);
    assert!(
        marker.exists(),
        "the planted configuration did not run even unprotected"
    );
    std::fs::remove_file(&marker).unwrap();
    std::fs::remove_dir_all(&control).unwrap();
    marker
}

/// `.git/objects/info/alternates` (`file`) or `.git/objects/info` (`folder`) as a symbolic link
/// to something outside the checkout that the user sbx runs as may write.
fn planted_links_are_not_followed(who: As, variant: &str) {
    let env = TestEnv::new();
    let repo = env.repo("app");
    // Outside the checkout, writable by the user sbx runs as.
    let victim = env.home().join("victim.txt");
    std::fs::write(&victim, "untouched\n").unwrap();
    let victim_dir = env.home().join("victim-dir");
    std::fs::create_dir(&victim_dir).unwrap();
    let script = match variant {
        // sbx used to repair `alternates` with `fs::write`, which followed the link.
        "file" => format!(
            "cd /workspace/app && rm -f .git/objects/info/alternates && \
             ln -s {} .git/objects/info/alternates && echo wip > wip.txt",
            victim.display()
        ),
        // ...and `create_dir_all` + `fs::write` through a linked folder.
        _ => format!(
            "cd /workspace/app && rm -rf .git/objects/info && \
             ln -s {} .git/objects/info && echo wip > wip.txt",
            victim_dir.display()
        ),
    };
    let o = attack(&env, who, &[&repo], &script);
    assert_ok(&o);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "untouched\n",
        "{who}"
    );
    assert_eq!(
        std::fs::read_dir(&victim_dir).unwrap().count(),
        0,
        "{who}: sbx wrote into a folder outside the checkout"
    );
    // The work is kept, safe and usable.
    let id = env.only_session();
    let dir = kept(&env, &id, "app");
    assert!(!stderr(&o).contains("NOT SAFE"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(dir.join("wip.txt")).unwrap(),
        "wip\n"
    );
    assert!(!dir.join(".git/objects/info").is_symlink());
    assert!(git(&dir, ["status", "--porcelain"]).contains("wip.txt"));
}

#[test]
fn a_planted_alternates_link_is_not_followed_as_root() {
    needs_docker!();
    planted_links_are_not_followed(As::Root, "file");
    planted_links_are_not_followed(As::Root, "folder");
}

#[test]
fn a_planted_alternates_link_is_not_followed_as_a_user() {
    needs!(Root, "switches to a regular user");
    needs_docker!();
    planted_links_are_not_followed(As::User, "folder");
    planted_links_are_not_followed(As::User, "file");
}

/// FIFOs named `.gitignore` at the top and in a tracked folder: libgit2's status used to block
/// in `open()` on them, so `sbx run` never returned.
fn fifos_do_not_hang_sbx_run(who: As) {
    let env = TestEnv::new();
    let repo = repo_with_sub(&env, "app");
    let args = [
        "run",
        "--",
        "sh",
        "-c",
        "mkfifo .gitignore sub/.gitignore && exit 7",
    ];
    let cmd = env.command_as(who, &repo, args);
    let o = run_within(cmd, Duration::from_secs(180));
    assert_eq!(o.status.code(), Some(7), "{who}: {}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("FIFO") && err.contains("`sub/.gitignore`"),
        "{who}: the FIFOs are not reported:\n{err}"
    );
    // Nothing else changed: clean, so removed.
    let id = env.only_session();
    assert!(!kept(&env, &id, "app").exists(), "{err}");
}

#[test]
fn a_fifo_named_gitignore_does_not_hang_sbx_run_as_root() {
    needs_docker!();
    fifos_do_not_hang_sbx_run(As::Root);
}

#[test]
fn a_fifo_named_gitignore_does_not_hang_sbx_run_as_a_user() {
    needs!(Root, "switches to a regular user");
    needs_docker!();
    fifos_do_not_hang_sbx_run(As::User);
}

#[test]
fn a_fifo_named_gitignore_does_not_hang_sbx_gc() {
    needs_docker!();
    let env = TestEnv::new();
    let repo = repo_with_sub(&env, "app");
    let mut cmd = env.sbx();
    cmd.current_dir(&repo).args([
        "run",
        "--",
        "sh",
        "-c",
        "mkfifo .gitignore sub/.gitignore && echo wip > wip.txt && touch /tmp/planted && sleep 300",
    ]);
    let (mut child, id) = env.spawn_session(cmd, &["test", "-e", "/tmp/planted"]);
    send_signal(child.id(), 9);
    let _ = child.wait();
    let mut gc = env.sbx();
    gc.current_dir(&repo).arg("gc");
    let o = run_within(gc, Duration::from_secs(180));
    assert_ok(&o);
    let err = stderr(&o);
    assert!(err.contains("FIFO"), "{err}");
    let dir = kept(&env, &id, "app");
    assert!(dir.join("wip.txt").exists() && !dir.join(".gitignore").exists());
    assert!(!err.contains("NOT SAFE"), "{err}");
}

/// Attacks on the user's next git command in a kept checkout, one checkout each:
/// - `config`: hooks, fsmonitor, hooksPath, include.path, a filter... in `.git/config`;
/// - `gitdir`: `.git` is a `gitdir:` file naming a folder the agent made, with such a config;
/// - `link`: `.git` is a symbolic link to such a folder;
/// - `nested`: a nested repository `sub/nested/.git` with such a config, registered as a
///   submodule (gitlink and `.gitmodules`, committed), and a folder git would take for a bare
///   repository;
/// - `readonly`: the planted `.git`, `.git/hooks` and `.git/config` made read-only;
/// - `broken`: a commit whose parent is missing, so the import fails.
fn kept_checkouts_run_nothing(who: As, cases: &[&str]) {
    let env = TestEnv::new();
    let marker = marker_with_control(&env);
    let repos: Vec<PathBuf> = cases.iter().map(|c| repo_with_sub(&env, c)).collect();
    let mut script = plant_fn(&marker);
    script.push_str("set -e\n");
    for case in cases {
        script.push_str(&format!("cd /workspace/{case}\n"));
        script.push_str("echo '* filter=evil diff=evil' > .gitattributes\necho wip >> README.md\n");
        script.push_str(match *case {
            "config" => "plant .git\n",
            "gitdir" => "cp -r .git .evil && plant .evil && rm -rf .git && echo 'gitdir: .evil' > .git\n",
            "link" => "cp -r .git .evil && plant .evil && rm -rf .git && ln -s .evil .git\n",
            "nested" => {
                "git init -q sub/nested && git -C sub/nested commit -q --allow-empty -m n\n\
                 git add sub/nested 2>/dev/null\n\
                 printf '[submodule \"nested\"]\\n\\tpath = sub/nested\\n\\turl = ./sub/nested\\n' > .gitmodules\n\
                 git add .gitmodules && git commit -q -m 'a submodule'\n\
                 plant sub/nested/.git\n\
                 mkdir -p sub/bare/objects sub/bare/refs && echo 'ref: refs/heads/main' > sub/bare/HEAD && plant sub/bare\n"
            }
            "readonly" => "plant .git && chmod a-w .git/config && chmod -R a-w .git/hooks && chmod a-w .git\n",
            "broken" => {
                "c=$(printf 'tree %s\\nparent 1111111111111111111111111111111111111111\\nauthor A <a@example.com> 1 +0000\\ncommitter A <a@example.com> 1 +0000\\n\\nbroken\\n' $(git write-tree) | git hash-object -t commit -w --stdin)\n\
                 git update-ref HEAD $c\nplant .git\n"
            }
            other => panic!("no case {other}"),
        });
    }
    let refs: Vec<&Path> = repos.iter().map(PathBuf::as_path).collect();
    let o = attack(&env, who, &refs, &script);
    assert_ok(&o);
    let err = stderr(&o);
    assert!(!err.contains("NOT SAFE"), "{err}");
    let id = env.only_session();
    // First what the user would run, case by case.
    let mut ran = Vec::new();
    for case in cases {
        let dir = kept(&env, &id, case);
        let mut folders = vec![dir.clone(), dir.join("sub")];
        if *case == "nested" {
            folders.push(dir.join("sub/nested"));
            folders.push(dir.join("sub/bare"));
        }
        if matches!(*case, "gitdir" | "link") {
            folders.push(dir.join(".evil"));
        }
        for f in &folders {
            user_runs_git(&env, f);
        }
        if std::fs::remove_file(&marker).is_ok() {
            ran.push(*case);
        }
    }
    assert!(
        ran.is_empty(),
        "{who}: git in these kept checkouts ran a command the agent planted: {ran:?}\n{err}"
    );
    for case in cases {
        let dir = kept(&env, &id, case);
        assert!(dir.join(".git").is_dir(), "{case}: {err}");
        assert!(!dir.join(".git/hooks").exists(), "{case}");
        match *case {
            "broken" => {
                assert!(err.contains("were not imported"), "{err}");
                assert!(git(&dir, ["rev-parse", "refs/sbx/refused"]).len() > 40);
            }
            "nested" => {
                assert!(err.contains("`sub/nested/.git` is now"), "{err}");
                // Its commit (gitlink and `.gitmodules`) passed git's checks and came home.
                let host = &repos[cases.iter().position(|c| *c == "nested").unwrap()];
                git(host, ["rev-parse", &format!("sbx/{id}")]);
            }
            "gitdir" | "link" => assert!(err.contains("replaced its `.git`"), "{err}"),
            _ => {}
        }
    }
    for r in &repos {
        git(r, ["fsck", "--full", "--strict"]);
    }
}

#[test]
fn kept_checkouts_are_safe_to_run_git_in_as_root() {
    needs_docker!();
    kept_checkouts_run_nothing(As::Root, &["config", "gitdir", "nested", "broken"]);
}

#[test]
fn kept_checkouts_are_safe_to_run_git_in_as_a_user() {
    needs!(Root, "switches to a regular user");
    needs_docker!();
    // `readonly` bites only there: as root, sbx's writes ignore permissions anyway.
    kept_checkouts_run_nothing(As::User, &["readonly", "link", "config", "broken"]);
}

/// Commits whose tree `git fsck` rejects: entries out of order, or one named `.git`.
fn bad_commit_script(kind: &str) -> String {
    let entries = match kind {
        "unsorted" => "b'100644 b\\0'+b+b'100644 a\\0'+b",
        _ => "b'100644 .git\\0'+b+b'100644 x\\0'+b",
    };
    format!(
        "blob=$(echo hi | git hash-object -w --stdin) && \
         python3 -c \"import sys,binascii;b=binascii.unhexlify(sys.argv[1]);sys.stdout.buffer.write({entries})\" $blob > /tmp/tree && \
         tree=$(git hash-object -t tree --literally -w --stdin < /tmp/tree) && \
         c=$(git commit-tree $tree -p HEAD -m {kind}) && git update-ref HEAD $c && echo {kind}=$c"
    )
}

/// One session with a repository per kind of bad commit, each on HEAD at the end.
fn the_import_refuses(who: As, kinds: &[&str]) {
    let env = TestEnv::new();
    let repos: Vec<PathBuf> = kinds.iter().map(|k| env.repo(k)).collect();
    let script: Vec<String> = kinds
        .iter()
        .map(|k| format!("cd /workspace/{k} && {}", bad_commit_script(k)))
        .collect();
    let refs: Vec<&Path> = repos.iter().map(PathBuf::as_path).collect();
    let o = attack(&env, who, &refs, &script.join(" && "));
    assert_ok(&o);
    let (out, err) = (stdout(&o), stderr(&o));
    let id = env.only_session();
    for (kind, repo) in kinds.iter().zip(&repos) {
        let bad = line(&out, kind).to_owned();
        let why = if *kind == "unsorted" {
            "treeNotSorted"
        } else {
            "hasDotgit"
        };
        assert!(
            err.contains("were not imported") && err.contains("git refused") && err.contains(why),
            "{who} {kind}: no clear refusal:\n{err}"
        );
        // Nothing of it entered the host repository.
        git(repo, ["fsck", "--full", "--strict"]);
        assert_eq!(git(repo, ["branch", "--list", "sbx/*"]), "", "{kind}");
        let o = Command::new("git")
            .args(["-c", "safe.directory=*", "-C"])
            .arg(repo)
            .args(["cat-file", "-t", &bad])
            .output()
            .unwrap();
        assert!(!o.status.success(), "{kind}: the bad commit is in the host");
        // ...and it stays inspectable in the kept checkout, whose HEAD is back at the start.
        let dir = kept(&env, &id, kind);
        assert_eq!(git(&dir, ["rev-parse", "refs/sbx/refused"]).trim(), bad);
        assert_eq!(git(&dir, ["cat-file", "-t", &bad]).trim(), "commit");
        assert_eq!(
            git(&dir, ["rev-parse", "HEAD"]),
            git(repo, ["rev-parse", "HEAD"])
        );
    }
}

#[test]
fn the_import_refuses_what_git_fsck_rejects_as_root() {
    needs_docker!();
    the_import_refuses(As::Root, &["unsorted", "dotgit"]);
}

#[test]
fn the_import_refuses_what_git_fsck_rejects_as_a_user() {
    needs!(Root, "switches to a regular user");
    needs_docker!();
    the_import_refuses(As::User, &["dotgit", "unsorted"]);
}

/// What sbx cannot check (here: folders nested deeper than it walks) is kept and reported as
/// not safe, loudly, by `sbx run` and `sbx ls`; the commits still come home.
#[test]
fn a_checkout_sbx_cannot_check_is_reported_as_not_safe() {
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    let script = "cd /workspace/app && echo n > n && git add n && git commit -qm inside && \
                  mkdir -p $(python3 -c 'print(\"/\".join([\"d\"] * 420))')";
    let o = attack(&env, As::Root, &[&repo], script);
    assert_ok(&o);
    let err = stderr(&o);
    assert!(
        err.contains("warning:") && err.contains("NOT SAFE") && err.contains("do not run git"),
        "{err}"
    );
    let id = env.only_session();
    assert_eq!(
        git(&repo, ["log", "-1", "--format=%s", &format!("sbx/{id}")]).trim(),
        "inside"
    );
    let ls = env.run(env.home(), ["ls"]);
    assert!(stdout(&ls).contains("NOT SAFE"), "{}", stdout(&ls));
    let json = env.run(env.home(), ["ls", "--json"]);
    assert!(
        stdout(&json).contains("\"not_safe\": \"sbx could not check"),
        "{}",
        stdout(&json)
    );
}
