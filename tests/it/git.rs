//! Git isolation: nothing inside a session can damage the host repository, and the session's
//! commits come home as `sbx/<session-id>`. Real repositories, real sessions.

use std::path::Path;
use std::process::Stdio;

use crate::harness::*;

fn snapshot(repo: &Path) -> (String, String) {
    (
        git(repo, ["for-each-ref", "--format=%(objectname) %(refname)"]),
        git(repo, ["worktree", "list", "--porcelain"]),
    )
}

#[test]
fn nothing_inside_can_damage_the_host_repository() {
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    git(&repo, ["branch", "feature"]);
    git(&repo, ["tag", "v1"]);
    let before = snapshot(&repo);
    // Every path that leads to git data, attacked from inside.
    let attack = r#"
cd /workspace/app
objects=$(cat .git/objects/info/alternates)
echo "objects=$objects"
git gc --prune=now -q 2>&1 | tail -1
git worktree prune
git reflog expire --expire=now --all
rm -rf "$objects"/* 2>/dev/null; echo "rm-objects=$?"
for f in $(find "$objects" -type f 2>/dev/null | head -50); do echo garbage > "$f" 2>/dev/null && echo "WROTE $f"; done
echo garbage > "$objects/../HEAD" 2>/dev/null; echo garbage > "$objects/../config" 2>/dev/null
mkdir -p "$objects/../refs/heads" 2>/dev/null && echo garbage > "$objects/../refs/heads/main" 2>/dev/null
touch "$objects/evil" 2>/dev/null && echo "WROTE evil"
find .git -type f -exec sh -c 'echo garbage > "$1"' _ {} \;
rm -rf .git /workspace/app/*
echo done
"#;
    let o = env.run(&repo, ["run", "--", "sh", "-c", attack]);
    assert_ok(&o);
    let out = stdout(&o);
    assert!(out.contains("objects=/"), "{out}");
    assert!(
        !out.contains("WROTE"),
        "the host's objects were writable:\n{out}"
    );
    assert!(out.ends_with("done\n"), "{out}");
    git(&repo, ["fsck", "--full", "--strict"]);
    assert_eq!(snapshot(&repo), before, "refs or worktree records changed");
    assert_eq!(git(&repo, ["status", "--porcelain"]), "");
    assert_eq!(
        std::fs::read_to_string(repo.join("README.md")).unwrap(),
        "# app\n"
    );
}

#[test]
fn commits_come_home_as_a_branch_with_content_and_authorship() {
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    git(&repo, ["config", "user.name", "Grace Hopper"]);
    git(&repo, ["config", "user.email", "grace@example.com"]);
    let script = "echo one > one.txt && git add . && git commit -qm 'first inside' && \
                  echo two > two.txt && git add . && git commit -qm 'second inside' && git log --format=%H -1";
    let o = env.run(&repo, ["run", "--", "sh", "-c", script]);
    assert_ok(&o);
    let inside_head = stdout(&o).trim().to_owned();
    let id = env.only_session();
    let branch = format!("sbx/{id}");
    assert!(stderr(&o).contains(&branch), "{}", stderr(&o));
    assert_eq!(git(&repo, ["rev-parse", &branch]).trim(), inside_head);
    assert_eq!(git(&repo, ["show", &format!("{branch}:two.txt")]), "two\n");
    assert_eq!(
        git(&repo, ["log", "--format=%an <%ae>|%s", "-2", &branch]),
        "Grace Hopper <grace@example.com>|second inside\nGrace Hopper <grace@example.com>|first inside\n"
    );
    git(&repo, ["fsck", "--full"]);
    // Clean at the end, so nothing is kept; the host's own branch did not move.
    assert!(!env.sessions().join(&id).join("repos/app").exists());
    assert_eq!(
        git(&repo, ["rev-parse", "main"]),
        git(&repo, ["rev-parse", "HEAD"])
    );
    // `sbx ls --all` shows the branch.
    let ls = env.run(&repo, ["ls", "--all", "--json"]);
    assert!(stdout(&ls).contains(&branch), "{}", stdout(&ls));
}

#[test]
fn no_commits_no_branch() {
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    let o = env.run(&repo, ["run", "--", "true"]);
    assert_ok(&o);
    assert_eq!(git(&repo, ["branch", "--list", "sbx/*"]), "");
}

#[test]
fn concurrent_sessions_on_one_repo_come_back_as_their_own_branches() {
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    let spawn = |n: u32| {
        env.sbx()
            .current_dir(&repo)
            .args([
                "run",
                "--",
                "sh",
                "-c",
                &format!(
                    "sleep 2; echo {n} > s{n}.txt && git add . && git commit -qm 'session {n}'"
                ),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(1), spawn(2));
    for c in [a, b] {
        assert_ok(&c.wait_with_output().unwrap());
    }
    let branches = git(
        &repo,
        ["branch", "--list", "sbx/*", "--format=%(refname:short)"],
    );
    let branches: Vec<&str> = branches.lines().collect();
    assert_eq!(branches.len(), 2, "{branches:?}");
    let subjects: Vec<String> = branches
        .iter()
        .map(|b| {
            git(&repo, ["log", "-1", "--format=%s", b])
                .trim()
                .to_owned()
        })
        .collect();
    assert!(
        subjects.contains(&"session 1".to_owned()) && subjects.contains(&"session 2".to_owned())
    );
    git(&repo, ["fsck", "--full"]);
}

#[test]
fn gc_finishes_the_import_after_a_crash() {
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    let mut cmd = env.sbx();
    cmd.current_dir(&repo).args([
        "run",
        "--",
        "sh",
        "-c",
        "echo x > x && git add x && git commit -qm crashed && touch /tmp/committed && sleep 60",
    ]);
    let (mut child, id) = env.spawn_session(cmd, &["test", "-e", "/tmp/committed"]);
    send_signal(child.id(), 9);
    let _ = child.wait();
    assert_eq!(git(&repo, ["branch", "--list", "sbx/*"]), "");
    let o = env.run(&repo, ["gc"]);
    assert_ok(&o);
    assert_eq!(
        git(&repo, ["log", "-1", "--format=%s", &format!("sbx/{id}")]).trim(),
        "crashed"
    );
    assert!(!env.sessions().join(&id).join("repos/app").exists());
}

/// Runs a committing session on `repo` (given as `--repo`) and returns the imported commit's
/// subject.
fn commit_inside(env: &TestEnv, repo: &Path) -> std::process::Output {
    env.run(
        env.home(),
        [
            "run",
            "--repo",
            repo.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo y > y.txt && git add y.txt && git commit -qm edge && git status --short | wc -l",
        ],
    )
}

#[test]
fn awkward_repositories_work() {
    needs_docker!();
    let env = TestEnv::new();
    let origin = env.repo("origin");
    for i in 0..3 {
        std::fs::write(origin.join(format!("f{i}")), "x").unwrap();
        git(&origin, ["add", "."]);
        git(&origin, ["commit", "-qm", &format!("c{i}")]);
    }
    let code = env.home().join("code");
    // A shallow clone, a bare repository, a detached HEAD, submodules and LFS pointers.
    let shallow = code.join("shallow");
    git(
        &code,
        [
            "clone",
            "-q",
            "--depth",
            "1",
            &format!("file://{}", origin.display()),
            "shallow",
        ],
    );
    let bare = code.join("bare.git");
    git(
        &code,
        [
            "clone",
            "-q",
            "--bare",
            origin.to_str().unwrap(),
            "bare.git",
        ],
    );
    let detached = env.repo("detached");
    git(&detached, ["checkout", "-q", "--detach"]);
    let subs = env.repo("subs");
    git(
        &subs,
        [
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            origin.to_str().unwrap(),
            "dep",
        ],
    );
    git(&subs, ["commit", "-qm", "add submodule"]);
    let lfs = env.repo("lfs");
    std::fs::write(
        lfs.join(".gitattributes"),
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    )
    .unwrap();
    std::fs::write(
        lfs.join("big.bin"),
        "version https://git-lfs.github.com/spec/v1\noid sha256:0000000000000000000000000000000000000000000000000000000000000000\nsize 1\n",
    )
    .unwrap();
    git(&lfs, ["add", "."]);
    git(&lfs, ["commit", "-qm", "lfs"]);

    for (repo, note) in [
        (&shallow, None),
        (&bare, None),
        (&detached, None),
        (&subs, Some("submodules")),
        (&lfs, Some("LFS")),
    ] {
        let before = git(repo, ["for-each-ref", "--format=%(refname)"]);
        let o = commit_inside(&env, repo);
        assert_ok(&o);
        if let Some(n) = note {
            assert!(stderr(&o).contains(n), "{}: {}", repo.display(), stderr(&o));
        }
        let after = git(repo, ["for-each-ref", "--format=%(refname)"]);
        let new: Vec<&str> = after.lines().filter(|l| !before.contains(*l)).collect();
        assert_eq!(new.len(), 1, "{}: {new:?}\n{}", repo.display(), stderr(&o));
        assert!(new[0].starts_with("refs/heads/sbx/"));
        assert_eq!(
            git(repo, ["log", "-1", "--format=%s", new[0]]).trim(),
            "edge"
        );
        git(repo, ["fsck"]);
    }
}

#[test]
fn a_repository_on_another_filesystem_works() {
    needs!(Tmpfs, "puts the repository on another filesystem");
    needs_docker!();
    let shm = Path::new("/dev/shm");
    let env = TestEnv::new();
    let dir = tempfile::Builder::new()
        .prefix("sbxtest-fs-")
        .tempdir_in(shm)
        .unwrap();
    let repo = dir.path().join("app");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, ["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("a"), "a").unwrap();
    git(&repo, ["add", "."]);
    git(&repo, ["commit", "-qm", "first"]);
    let o = commit_inside(&env, &repo);
    assert_ok(&o);
    assert_eq!(
        git(&repo, ["log", "-1", "--format=%s", "--branches=sbx/*"]).trim(),
        "edge"
    );
}

#[test]
fn worktree_mode_lands_commits_in_place() {
    needs!(Root, "runs sbx as a regular user");
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    std::fs::write(repo.join(".sbx.yaml"), "git: {mode: worktree}\n").unwrap();
    git(&repo, ["add", ".sbx.yaml"]);
    git(&repo, ["commit", "-qm", "worktree mode"]);
    // A project file that makes `.git` writable from inside needs the user's approval.
    assert_ok(&env.run(&repo, ["trust"]));
    let script = [
        "run",
        "--",
        "sh",
        "-c",
        "echo w > w && git add w && git commit -qm 'in a worktree'",
    ];
    // As the user a developer is: the agent runs with the same uid, so the shared `.git` is
    // writable. (As root the agent is uid 1000 and cannot write it: sbx says so.)
    let o = env.run_as_user(&repo, script);
    assert_ok(&o);
    let id = env.only_session();
    assert_eq!(
        git(&repo, ["log", "-1", "--format=%s", &format!("sbx/{id}")]).trim(),
        "in a worktree"
    );
    assert_eq!(
        git(&repo, ["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
}

#[test]
fn worktree_mode_as_root_is_refused_with_a_hint() {
    needs!(Root, "checks what sbx does as root");
    let env = TestEnv::new();
    let repo = env.repo("app");
    let o = env
        .sbx()
        .current_dir(&repo)
        .env("SBX_GIT_MODE", "worktree")
        .args(["run", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("as root") && stderr(&o).contains("isolated"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn isolated_mode_as_a_regular_user() {
    needs!(Root, "runs sbx as a regular user");
    needs_docker!();
    let env = TestEnv::new();
    let repo = env.repo("app");
    let script = [
        "run",
        "--",
        "sh",
        "-c",
        "id -u; echo u > u && git add u && git commit -qm 'as a user'",
    ];
    let o = env.run_as_user(&repo, script);
    assert_ok(&o);
    assert_eq!(stdout(&o), "1000\n");
    let id = env.only_session();
    assert_eq!(
        git(&repo, ["log", "-1", "--format=%s", &format!("sbx/{id}")]).trim(),
        "as a user"
    );
}
