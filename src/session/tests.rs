//! The lifecycle against the recording fake engine: what is made and undone, in which order,
//! and what `sbx gc` may touch. Real git repositories; no Docker (the integration tests prove
//! the same against the real engine).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::*;
use crate::config::ClaudeConfig;
use crate::engine::fake::{FakeEngine, Held};
use crate::paths::Dirs;
use crate::progress::Ui;

/// A HOME of its own with one committed repository.
struct World {
    _tmp: tempfile::TempDir,
    ctx: Context,
    repo: Repo,
}

fn git(dir: &Path, args: &[&str]) {
    let ok = crate::process::Cmd::new("git")
        .cwd(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .std_command()
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let repo_dir = root.join("app");
    std::fs::create_dir_all(&repo_dir).unwrap();
    git(&repo_dir, &["init", "-q", "-b", "main"]);
    std::fs::write(repo_dir.join("README"), "hi\n").unwrap();
    git(&repo_dir, &["add", "."]);
    git(&repo_dir, &["commit", "-q", "-m", "first"]);
    let dirs = Dirs {
        config: root.join("config"),
        cache: root.join("cache"),
        data: root.join("data"),
        home: root.clone(),
    };
    World {
        repo: worktree::discover(&repo_dir).unwrap(),
        ctx: Context {
            dirs,
            ui: Ui::new(true),
        },
        _tmp: tmp,
    }
}

fn request(w: &World) -> RunRequest {
    let mut settings = Settings {
        caches: false,
        spare: false,
        record: false,
        ..Settings::default()
    };
    settings.claude.config = ClaudeConfig::None;
    RunRequest {
        settings,
        repos: vec![w.repo.clone()],
        command: vec!["true".into()],
        keep: false,
        secrets: vec![(
            TokenSource {
                env: "GH_TOKEN".into(),
                stored: Some("github".into()),
            },
            Secret::new("ghp_not_a_real_token".into()),
        )],
        endpoint: "unix:///fake.sock".into(),
        output: crate::engine::attach::Output::Capture,
        vm: None,
    }
}

/// The local engine, with its bringing up and tearing down in the fake's record.
struct Noted(FakeEngine);

impl Placement for Noted {
    fn vm(&self, _: &str) -> Option<(String, crate::config::VmProvider)> {
        None
    }
    fn spare(&self) -> bool {
        false
    }
    fn mounts(&self, _: &Path, _: &[Checkout]) -> anyhow::Result<Vec<crate::vm::VmMount>> {
        Ok(Vec::new())
    }
    fn bring_up<'a>(
        &'a self,
        _: placement::Up<'a>,
    ) -> placement::BoxFuture<'a, anyhow::Result<String>> {
        self.0.note("placement up");
        Box::pin(async { Ok("unix:///fake.sock".to_owned()) })
    }
    fn tear_down<'a>(&'a self, _: placement::Phase<'a>) -> placement::BoxFuture<'a, ()> {
        self.0.note("placement down");
        Box::pin(async {})
    }
}

async fn run_fake(w: &World, fake: &FakeEngine) -> anyhow::Result<RunOutcome> {
    let req = request(w);
    fake.has_images(&image::specs(&req.settings).unwrap());
    let engine = fake.clone();
    run_on(&w.ctx, req, Arc::new(Noted(fake.clone())), |_| async move {
        Ok(engine)
    })
    .await
}

/// The index of the first call starting with `prefix` (and ending with `suffix`).
fn at(calls: &[String], prefix: &str, suffix: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(prefix) && c.ends_with(suffix))
        .unwrap_or_else(|| panic!("no `{prefix} …{suffix}` in {calls:#?}"))
}

/// The checkouts under the session folders, as they are now.
fn checkouts_on_disk(cache: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for s in std::fs::read_dir(cache.join("sessions"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for c in std::fs::read_dir(s.path().join("repos"))
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(c.path());
        }
    }
    out
}

fn only_record(w: &World) -> Record {
    let mut all = state::list(&w.ctx.dirs.sessions());
    assert_eq!(all.len(), 1, "one session");
    all.remove(0).1
}

#[tokio::test]
async fn teardown_removes_the_agent_before_it_finishes_the_checkouts_and_the_placement_last() {
    let w = world();
    let fake = FakeEngine::default();
    fake.prints("-gate", "sbx-gate: ready\n");
    // What exists of the checkout at the moment the agent's container goes.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (cache, s) = (w.ctx.dirs.cache.clone(), seen.clone());
    fake.on_call(move |call| {
        if call.starts_with("remove_container") && call.ends_with("-agent") {
            s.lock().unwrap().extend(checkouts_on_disk(&cache));
        }
    });
    fake.exits_with(3);
    let out = run_fake(&w, &fake).await.unwrap();
    assert_eq!(out.exit_code, 3);

    let calls = fake.calls();
    let gate_create = at(&calls, "create_container", "-gate");
    let gate_start = at(&calls, "start_container", "-gate");
    let agent_start = at(&calls, "start_container", "-agent");
    let exec = at(&calls, "exec_attached", "-agent");
    let agent_gone = at(&calls, "remove_container", "-agent");
    let gate_gone = at(&calls, "remove_container", "-gate");
    let down = at(&calls, "placement down", "");
    assert!(at(&calls, "placement up", "") < gate_create);
    // The agent starts only once the gate reported its firewall in place.
    assert!(gate_create < gate_start && gate_start < agent_start && agent_start < exec);
    assert!(exec < agent_gone && exec < gate_gone);
    assert!(agent_gone < down && gate_gone < down, "{calls:#?}");
    // The checkout still existed when the agent went, and was finished (clean: pruned) after.
    assert_eq!(seen.lock().unwrap().len(), 1, "{calls:#?}");
    assert!(checkouts_on_disk(&w.ctx.dirs.cache).is_empty());
    let record = only_record(&w);
    assert_eq!(record.phase, Phase::Finished);
    assert_eq!(record.exit_code, Some(3));
    assert!(record.outcomes.iter().all(|o| o.kept.is_none()));
    // The token went to the exec only: no engine call carries it.
    assert!(!calls.iter().any(|c| c.contains("ghp_not_a_real_token")));
}

#[tokio::test]
async fn a_gate_error_tears_down_both_containers_and_keeps_dirty_work() {
    let w = world();
    let fake = FakeEngine::default();
    fake.prints("-gate", "sbx-gate: error: iptables-restore failed\n");
    // Work in the checkout by the time the gate starts (as if something had written there).
    let cache = w.ctx.dirs.cache.clone();
    fake.on_call(move |call| {
        if call.starts_with("start_container") && call.ends_with("-gate") {
            for c in checkouts_on_disk(&cache) {
                std::fs::write(c.join("work.txt"), "unsaved\n").unwrap();
            }
        }
    });
    let Err(err) = run_fake(&w, &fake).await else {
        panic!("the session ran behind a gate that failed");
    };
    assert!(
        format!("{err:#}").contains("firewall could not be set up"),
        "{err:#}"
    );

    let calls = fake.calls();
    at(&calls, "create_container", "-agent");
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("start_container") && c.ends_with("-agent")),
        "the agent never starts behind a failed gate: {calls:#?}"
    );
    at(&calls, "remove_container", "-agent");
    at(&calls, "remove_container", "-gate");
    at(&calls, "placement down", "");
    let record = only_record(&w);
    assert_eq!(record.phase, Phase::Finished);
    let kept = &record.outcomes[0];
    assert!(kept.kept.is_some(), "{kept:?}");
    assert_eq!(
        std::fs::read_to_string(kept.path.join("work.txt")).unwrap(),
        "unsaved\n"
    );
}

#[tokio::test]
async fn gc_never_touches_a_live_session_or_another_owners_resources() {
    let w = world();
    let owner = w.ctx.dirs.owner_tag();
    let record_for = |id: &str| Record {
        id: id.into(),
        created: state::now(),
        pid: 0,
        phase: Phase::Running,
        command: vec!["true".into()],
        endpoint: "unix:///fake.sock".into(),
        networks: Vec::new(),
        containers: vec![
            crate::container::agent_name(id),
            crate::container::gate_name(id),
        ],
        vm: None,
        vm_provider: None,
        checkouts: Vec::new(),
        outcomes: Vec::new(),
        allow: Vec::new(),
        exit_code: None,
        probe: None,
        claude_login: None,
        ended: None,
        exec: None,
    };
    let (live, dead, theirs) = ("aaaaaaaa", "bbbbbbbb", "cccccccc");
    for id in [live, dead] {
        let dir = w.ctx.dirs.session(id);
        state::create_private_dir(&dir).unwrap();
        record_for(id).save(&dir).unwrap();
    }
    // The live session's process holds its lock.
    let _held = Lock::acquire(&w.ctx.dirs.session(live)).unwrap().unwrap();
    let fake = FakeEngine::default();
    let hold = |name: String, session: &str, owner: &str| Held {
        name,
        session: session.into(),
        owner: owner.into(),
    };
    for (id, who) in [
        (live, owner.as_str()),
        (dead, owner.as_str()),
        (theirs, "0ther0wner00"),
    ] {
        fake.holds_container(hold(crate::container::agent_name(id), id, who));
        fake.holds_container(hold(crate::container::gate_name(id), id, who));
    }
    // A dead session of this owner whose folder is gone: found by its labels alone.
    fake.holds_network(hold("sbx-dddddddd-net".into(), "dddddddd", &owner));
    fake.holds_network(hold("sbx-eeeeeeee-net".into(), "eeeeeeee", "0ther0wner00"));

    let report = gc(&w.ctx, Some(&fake)).await.unwrap();
    let calls = fake.calls();
    let removed: Vec<&String> = calls.iter().filter(|c| c.starts_with("remove_")).collect();
    assert_eq!(
        removed,
        [
            &format!("remove_container {}", crate::container::agent_name(dead)),
            &format!("remove_container {}", crate::container::gate_name(dead)),
            &"remove_network sbx-dddddddd-net".to_owned(),
        ],
        "{calls:#?}"
    );
    assert_eq!(report.sessions_finished, [dead]);
    assert!(calls.contains(&format!("labelled {owner}")));
    // The live session is untouched, the dead one finished.
    let records = state::list(&w.ctx.dirs.sessions());
    let phase = |id: &str| records.iter().find(|(_, r)| r.id == id).unwrap().1.phase;
    assert_eq!(phase(live), Phase::Running);
    assert_eq!(phase(dead), Phase::Finished);
}
