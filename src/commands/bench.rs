//! `sbx bench` (hidden): the project's benchmark. Runs real sessions with this very binary and
//! prints where the time goes: warm start-to-exit, phases, first output byte, a no-op setup,
//! concurrent sessions, repository and allowlist size, peak memory. `--json` for the figures.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::context::Context;
use crate::exit::ExitStatus;
use crate::process::Cmd;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Runs per measurement.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// The figures as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Measure VM sessions (`sbx run --vm`) instead: their phases, from the clone of the golden
    /// VM to its deletion (after `sbx setup --vm`).
    #[arg(long)]
    pub vm: bool,
}

/// One measured run of a child `sbx`.
struct Measured {
    ok: bool,
    wall: Duration,
    first_output: Option<Duration>,
    max_rss_kib: u64,
    timings: Option<serde_json::Value>,
}

/// Runs a command, timing it to exit and to its first stdout byte, and reading its peak RSS
/// (which needs `wait4` on the child, so a `std` command).
fn measure(cmd: &Cmd) -> std::io::Result<Measured> {
    let mut cmd = cmd.std_command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(std::io::Error::other("the child's output is not piped"));
    };
    let first = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut first = None;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            first.get_or_insert_with(|| start.elapsed());
        }
        first
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for a child we spawned; pointers are to live locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    let first_output = first.join().unwrap_or(None);
    let stderr = err.join().unwrap_or_default();
    let ok = r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // ru_maxrss is KiB on Linux, bytes on macOS.
    let rss = usage.ru_maxrss.max(0) as u64;
    let max_rss_kib = if cfg!(target_os = "macos") {
        rss / 1024
    } else {
        rss
    };
    let timings = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("sbx-timings: "))
        .and_then(|j| serde_json::from_str(j).ok());
    if !ok {
        eprintln!("bench: a run failed:\n{stderr}");
    }
    Ok(Measured {
        ok,
        wall,
        first_output,
        max_rss_kib,
        timings,
    })
}

#[derive(Serialize, Default, Clone)]
struct Stats {
    runs: usize,
    failed: usize,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

fn stats(ms: &[f64], failed: usize) -> Stats {
    let mut v = ms.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Stats {
        runs: v.len(),
        failed,
        median_ms: round(median),
        min_ms: round(v.first().copied().unwrap_or(0.0)),
        max_ms: round(v.last().copied().unwrap_or(0.0)),
    }
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[derive(Serialize)]
struct Report {
    /// Create, start, wait for and remove `true` containers straight through the engine: one,
    /// and 16 at once (what 8 sessions ask of it). Sessions cannot beat these.
    engine_baseline_ms: (f64, f64),
    cores: usize,
    /// `docker run --rm --cap-drop ALL --network none IMAGE true`, one before each warm run:
    /// the floor a session is measured against.
    bare_container: Stats,
    warm_run: Stats,
    /// Warm runs that took over a gate started ahead (`spare`).
    warm_runs_on_spare: usize,
    phases_median_ms: Vec<(String, f64)>,
    first_output: Stats,
    setup_noop: Stats,
    peak_rss_mib: f64,
    concurrent: Vec<Concurrent>,
    repo_size: Vec<RepoSize>,
    allowlist: Vec<AllowSize>,
}

#[derive(Serialize)]
struct Concurrent {
    sessions: usize,
    all_succeeded: bool,
    total_ms: f64,
    leftovers: usize,
}

#[derive(Serialize)]
struct RepoSize {
    files: usize,
    sbx_checkout_ms: f64,
    sbx_session_ms: f64,
    git_worktree_add_ms: f64,
}

#[derive(Serialize)]
struct AllowSize {
    entries: usize,
    median_ms: f64,
}

async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let ok = Cmd::git(dir)
        .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
        .args(args)
        .timeout(Duration::from_secs(600))
        .output()
        .await?
        .ok();
    anyhow::ensure!(ok, "git {args:?} failed in {}", dir.display());
    Ok(())
}

/// `docker run --rm --cap-drop ALL --network none IMAGE true` with the Docker CLI, in ms; `None`
/// without the CLI.
fn bare_container(image: &str) -> anyhow::Result<Option<f64>> {
    let c = Cmd::new("docker").inherit(&[crate::env::DOCKER_ALL]).args([
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "--network",
        "none",
        image,
        "true",
    ]);
    match measure(&c) {
        Ok(m) if m.ok => Ok(Some(ms(m.wall))),
        Ok(_) => anyhow::bail!("`docker run ... {image} true` failed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Waits (up to 10 s) until the previous session's helper has a spare gate ready.
fn wait_for_spare(dirs: &crate::paths::Dirs) {
    let root = crate::spare::root(dirs);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let ready = std::fs::read_dir(&root)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("spare.json").exists());
        if ready {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the spare gate the bench's last session left (once its helper is done).
async fn forget_spares(dirs: &crate::paths::Dirs) {
    wait_for_spare(dirs);
    let endpoint =
        crate::engine::resolve_endpoint(None, &crate::engine::EndpointEnv::from_env(&dirs.home));
    if let Ok(engine) = crate::engine::Engine::connect(&endpoint).await {
        let _ = crate::spare::remove(dirs, &engine, true).await;
    }
}

/// Removes what the bench's sessions left: their package caches (volumes of the bench's own
/// HOME) and its session folders.
fn forget_bench_cache() {
    if let Ok(exe) = std::env::current_exe() {
        let _ = Cmd::sbx(exe)
            .args(["-q", "cache", "rm", "--all"])
            .env(crate::env::XDG_CACHE_HOME, bench_cache())
            .std_command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = std::fs::remove_dir_all(bench_cache());
}

/// A repository with `files` files in a tree of folders.
async fn make_repo(dir: &Path, files: usize) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    git(dir, &["init", "-q", "-b", "main"]).await?;
    for i in 0..files {
        let sub = dir.join(format!("d{}/e{}", i % 50, (i / 50) % 20));
        std::fs::create_dir_all(&sub)?;
        std::fs::write(sub.join(format!("f{i}.txt")), format!("file {i}\n"))?;
    }
    std::fs::write(dir.join("README"), "bench\n")?;
    git(dir, &["add", "-A"]).await?;
    git(dir, &["commit", "-q", "-m", "bench"]).await?;
    Ok(dir.to_owned())
}

/// The bench's sessions keep their records in a cache folder of their own, so what they leave
/// behind (nothing, if all is well) is counted apart from the user's sessions.
fn bench_cache() -> PathBuf {
    std::env::temp_dir().join(format!("sbx-bench-cache-{}", std::process::id()))
}

fn sbx_cmd(repos: &[&Path], extra: &[String], cmd: &[&str]) -> anyhow::Result<Cmd> {
    use crate::env;
    let mut c = Cmd::sbx(std::env::current_exe()?)
        .env(env::SBX_TIMINGS, "json")
        .env(env::SBX_NO_PROGRESS, "1")
        .env(env::XDG_CACHE_HOME, bench_cache())
        .args(["run", "--timings"]);
    for r in repos {
        c = c.arg("--repo").arg(r);
    }
    Ok(c.args(extra).arg("--").args(cmd))
}

fn phase_ms(t: &serde_json::Value, name: &str) -> Option<f64> {
    t.get("phases")?
        .as_array()?
        .iter()
        .find(|p| p.get("name").and_then(|n| n.as_str()) == Some(name))?
        .get("took_ms")?
        .as_f64()
}

/// Adds a run's phases to the per-phase lists (in the order first seen).
fn collect_phases(m: &Measured, phases: &mut Vec<(String, Vec<f64>)>) {
    let Some(t) = &m.timings else {
        return;
    };
    for p in t["phases"].as_array().into_iter().flatten() {
        let (Some(name), Some(took)) = (p["name"].as_str(), p["took_ms"].as_f64()) else {
            continue;
        };
        match phases.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => v.push(took),
            None => phases.push((name.to_owned(), vec![took])),
        }
    }
}

/// The VM figures: `sbx run --vm -- true` with one repository, and where its time goes.
#[derive(Serialize)]
struct VmReport {
    cores: usize,
    run: Stats,
    phases_median_ms: Vec<(String, f64)>,
}

async fn run_vm(ctx: &Context, args: BenchArgs) -> anyhow::Result<ExitStatus> {
    let n = args.runs.max(1);
    let tmp = tempfile::Builder::new().prefix("sbx-bench-").tempdir()?;
    let repo = make_repo(&tmp.path().join("alpha"), 10).await?;
    // The golden VM is in the user's own sbx Lima home, not under the bench's cache.
    let lima_home = crate::env::non_empty(crate::env::SBX_LIMA_HOME)
        .map(PathBuf::from)
        .unwrap_or_else(|| ctx.dirs.cache.join("lima"));
    let cmd = || -> anyhow::Result<Cmd> {
        Ok(sbx_cmd(&[repo.as_path()], &["--vm".to_owned()], &["true"])?
            .env(crate::env::SBX_LIMA_HOME, &lima_home))
    };
    ctx.ui.info("warming up (one VM session)");
    let warm = measure(&cmd()?)?;
    if !warm.ok {
        return Err(crate::error::hinted(
            "a warm-up VM session failed",
            "run `sbx setup --vm` and `sbx doctor`",
        ));
    }
    ctx.ui
        .info(format!("`sbx run --vm -- true` with one repo, {n} runs"));
    let (mut walls, mut failed, mut phases) = (Vec::new(), 0, Vec::new());
    for _ in 0..n {
        let m = measure(&cmd()?)?;
        if !m.ok {
            failed += 1;
            continue;
        }
        walls.push(ms(m.wall));
        collect_phases(&m, &mut phases);
    }
    forget_bench_cache();
    let report = VmReport {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        run: stats(&walls, failed),
        phases_median_ms: phases
            .iter()
            .map(|(name, v)| (name.clone(), stats(v, 0).median_ms))
            .collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let mut out = format!(
            "VM session (`sbx run --vm -- true`, one repo, {} cores): median {} ms (min {} ms, {} runs, {} failed)\nphases (median ms):\n",
            report.cores,
            report.run.median_ms,
            report.run.min_ms,
            report.run.runs,
            report.run.failed
        );
        for (name, took) in &report.phases_median_ms {
            out.push_str(&format!("  {name:<20} {took:>9.1}\n"));
        }
        print!("{out}");
    }
    Ok(ExitStatus::Success)
}

pub async fn run(ctx: &Context, args: BenchArgs) -> anyhow::Result<ExitStatus> {
    if args.vm {
        return run_vm(ctx, args).await;
    }
    let n = args.runs.max(1);
    let bench_dirs = crate::paths::Dirs {
        cache: bench_cache().join("sbx"),
        ..ctx.dirs.clone()
    };
    let tmp = tempfile::Builder::new().prefix("sbx-bench-").tempdir()?;
    let a = make_repo(&tmp.path().join("alpha"), 10).await?;
    let b = make_repo(&tmp.path().join("beta"), 10).await?;
    let two = [a.as_path(), b.as_path()];
    ctx.ui.info("warming up (image check, first session)");
    let warm = measure(&sbx_cmd(&two, &[], &["true"])?)?;
    if !warm.ok {
        return Err(crate::error::hinted(
            "a warm-up session failed",
            "run `sbx doctor`",
        ));
    }

    let settings = super::load_settings(ctx, None, crate::config::Layer::default())?;
    let agent_image = crate::image::agent_image(&settings)?.tag;
    let spare = settings.spare;
    ctx.ui.info(format!(
        "warm `sbx run -- true` with two repos, {n} runs, each after a bare `docker run` (the floor){}",
        if spare {
            ", with the gate started ahead ready"
        } else {
            ""
        }
    ));
    let mut walls = Vec::new();
    let mut floors = Vec::new();
    let mut on_spare = 0;
    let mut failed = 0;
    let mut phases: Vec<(String, Vec<f64>)> = Vec::new();
    let mut peak = warm.max_rss_kib;
    for _ in 0..n {
        if let Some(f) = bare_container(&agent_image)? {
            floors.push(f);
        }
        if spare {
            wait_for_spare(&bench_dirs);
        }
        let m = measure(&sbx_cmd(&two, &[], &["true"])?)?;
        peak = peak.max(m.max_rss_kib);
        if !m.ok {
            failed += 1;
            continue;
        }
        walls.push(ms(m.wall));
        if m.timings
            .as_ref()
            .and_then(|t| phase_ms(t, "spare gate reload"))
            .is_some()
        {
            on_spare += 1;
        }
        collect_phases(&m, &mut phases);
    }
    let warm_run = stats(&walls, failed);
    let bare = stats(&floors, 0);
    let phases_median_ms = phases
        .iter()
        .map(|(name, v)| (name.clone(), stats(v, 0).median_ms))
        .collect();

    ctx.ui.info("time to first output byte");
    let mut firsts = Vec::new();
    for _ in 0..n {
        if spare {
            wait_for_spare(&bench_dirs);
        }
        let m = measure(&sbx_cmd(&two, &[], &["echo", "x"])?)?;
        if let Some(f) = m.first_output.filter(|_| m.ok) {
            firsts.push(ms(f));
        }
    }
    let first_output = stats(&firsts, n - firsts.len());

    ctx.ui.info("`sbx setup` with nothing to do");
    let mut setups = Vec::new();
    for _ in 0..n {
        let c = Cmd::sbx(std::env::current_exe()?).args(["setup", "-q"]);
        let m = measure(&c)?;
        if m.ok {
            setups.push(ms(m.wall));
        }
    }
    let setup_noop = stats(&setups, n - setups.len());

    let mut concurrent = Vec::new();
    for k in [1usize, 4, 8] {
        ctx.ui.info(format!("{k} concurrent sessions"));
        let start = Instant::now();
        let handles: Vec<_> = (0..k)
            .map(|_| {
                let c = sbx_cmd(&two, &[], &["true"]);
                std::thread::spawn(move || c.and_then(|c| Ok(measure(&c)?)).map(|m| m.ok))
            })
            .collect();
        let all_ok = handles
            .into_iter()
            .all(|h| matches!(h.join(), Ok(Ok(true))));
        let total = ms(start.elapsed());
        concurrent.push(Concurrent {
            sessions: k,
            all_succeeded: all_ok,
            total_ms: round(total),
            leftovers: leftovers(&bench_dirs).await,
        });
    }

    ctx.ui
        .info("engine baseline: one container, then 16 at once");
    let engine = crate::engine::Engine::connect(&crate::engine::resolve_endpoint(
        None,
        &crate::engine::EndpointEnv::from_env(&ctx.dirs.home),
    ))
    .await?;
    let gate = crate::image::gate_image(&settings)?.tag;
    let one = baseline(&engine, &gate, 1).await?;
    let sixteen = baseline(&engine, &gate, 16).await?;

    let mut repo_size = Vec::new();
    for files in [1_000usize, 20_000] {
        ctx.ui.info(format!("a {files}-file repository"));
        let repo = make_repo(&tmp.path().join(format!("size{files}")), files).await?;
        let mut checkout = Vec::new();
        let mut session = Vec::new();
        let mut plain = Vec::new();
        for i in 0..n.min(3) {
            let m = measure(&sbx_cmd(&[repo.as_path()], &[], &["true"])?)?;
            if let Some(t) = m.timings.as_ref().filter(|_| m.ok) {
                checkout.extend(phase_ms(t, "worktrees"));
                session.push(ms(m.wall));
            }
            let wt = tmp.path().join(format!("wt{files}-{i}"));
            let began = Instant::now();
            git(
                &repo,
                &[
                    "worktree",
                    "add",
                    "-q",
                    "--detach",
                    wt.to_str().unwrap_or(""),
                    "HEAD",
                ],
            )
            .await?;
            plain.push(ms(began.elapsed()));
            git(
                &repo,
                &["worktree", "remove", "--force", wt.to_str().unwrap_or("")],
            )
            .await?;
        }
        repo_size.push(RepoSize {
            files,
            sbx_checkout_ms: stats(&checkout, 0).median_ms,
            sbx_session_ms: stats(&session, 0).median_ms,
            git_worktree_add_ms: stats(&plain, 0).median_ms,
        });
    }

    let mut allowlist = Vec::new();
    for entries in [10usize, 200] {
        ctx.ui.info(format!("an allowlist of {entries} entries"));
        let extra: Vec<String> = (0..entries)
            .flat_map(|i| {
                let e = if i % 4 == 0 {
                    format!("10.{}.{}.0/24", i / 256, i % 256)
                } else {
                    format!("host{i}.bench.example")
                };
                ["--allow".to_owned(), e]
            })
            .collect();
        let mut walls = Vec::new();
        for _ in 0..n.min(5) {
            let m = measure(&sbx_cmd(&two, &extra, &["true"])?)?;
            if m.ok {
                walls.push(ms(m.wall));
            }
        }
        allowlist.push(AllowSize {
            entries,
            median_ms: stats(&walls, 0).median_ms,
        });
    }

    forget_spares(&bench_dirs).await;
    forget_bench_cache();
    let report = Report {
        engine_baseline_ms: (round(one), round(sixteen)),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        bare_container: bare,
        warm_run,
        warm_runs_on_spare: on_spare,
        phases_median_ms,
        first_output,
        setup_noop,
        peak_rss_mib: round(peak as f64 / 1024.0),
        concurrent,
        repo_size,
        allowlist,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(ExitStatus::Success)
}

/// Containers of the bench's sessions, unfinished sessions and checkouts left behind (all
/// should be zero).
async fn leftovers(dirs: &crate::paths::Dirs) -> usize {
    let endpoint =
        crate::engine::resolve_endpoint(None, &crate::engine::EndpointEnv::from_env(&dirs.home));
    // A gate started ahead for the next session is no leftover; neither are the containers a
    // finished session's helper has not removed yet (given a few seconds).
    let spares: Vec<String> = std::fs::read_dir(crate::spare::root(dirs))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut n = 0;
    if let Ok(engine) = crate::engine::Engine::connect(&endpoint).await {
        for _ in 0..50 {
            n = engine
                .labelled(&dirs.owner_tag())
                .await
                .map_or(0, |(containers, _)| {
                    containers
                        .iter()
                        .filter(|c| !spares.contains(&c.session))
                        .count()
                });
            if n == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for (dir, r) in crate::state::list(&dirs.sessions()) {
        let unfinished = r.phase != crate::state::Phase::Finished;
        n += usize::from(unfinished) + usize::from(dir.join("repos").exists());
    }
    n
}

fn render(r: &Report) -> String {
    let s = |x: &Stats| {
        format!(
            "median {:>7.1} ms  min {:>7.1}  max {:>7.1}  ({} runs{})",
            x.median_ms,
            x.min_ms,
            x.max_ms,
            x.runs,
            if x.failed > 0 {
                format!(", {} FAILED", x.failed)
            } else {
                String::new()
            }
        )
    };
    let mut out = format!("sbx bench on {} cores\n\n", r.cores);
    out.push_str(&format!(
        "bare `docker run ... true` (floor)  {}\n",
        s(&r.bare_container)
    ));
    out.push_str(&format!(
        "warm `sbx run -- true`, two repos   {}\n",
        s(&r.warm_run)
    ));
    if r.bare_container.median_ms > 0.0 {
        out.push_str(&format!(
            "  {:.2}x the floor (target: at most 2x); {} of {} runs took over a gate started ahead\n",
            r.warm_run.median_ms / r.bare_container.median_ms,
            r.warm_runs_on_spare,
            r.warm_run.runs
        ));
    }
    out.push_str(&format!(
        "time to first output byte           {}  (target: at most 350 ms)\n",
        s(&r.first_output)
    ));
    out.push_str(&format!(
        "`sbx setup`, nothing to do          {}\n",
        s(&r.setup_noop)
    ));
    out.push_str(&format!(
        "peak memory of the sbx process      {:.1} MiB\n",
        r.peak_rss_mib
    ));
    out.push_str("\nphases of a warm run (median; some overlap, they run in parallel)\n");
    for (name, ms) in &r.phases_median_ms {
        out.push_str(&format!("  {name:<18} {ms:>7.1} ms\n"));
    }
    out.push_str(&format!(
        "\nengine baseline: one `true` container {:.1} ms, 16 at once {:.1} ms\n",
        r.engine_baseline_ms.0, r.engine_baseline_ms.1
    ));
    out.push_str("\nconcurrent sessions\n");
    for c in &r.concurrent {
        out.push_str(&format!(
            "  {:>2} sessions  total {:>7.1} ms  {}  leftovers {}\n",
            c.sessions,
            c.total_ms,
            if c.all_succeeded {
                "all succeeded"
            } else {
                "SOME FAILED"
            },
            c.leftovers
        ));
    }
    out.push_str("\nrepository size (session setup next to plain `git worktree add`)\n");
    for x in &r.repo_size {
        out.push_str(&format!(
            "  {:>6} files  sbx checkout {:>7.1} ms  git worktree add {:>7.1} ms  ({:.2}x)  whole session {:>7.1} ms\n",
            x.files,
            x.sbx_checkout_ms,
            x.git_worktree_add_ms,
            if x.git_worktree_add_ms > 0.0 { x.sbx_checkout_ms / x.git_worktree_add_ms } else { 0.0 },
            x.sbx_session_ms
        ));
    }
    out.push_str("\nallowlist size\n");
    for a in &r.allowlist {
        out.push_str(&format!(
            "  {:>4} entries  median {:>7.1} ms\n",
            a.entries, a.median_ms
        ));
    }
    out
}

/// Runs `count` `true` containers at once through the engine; milliseconds until all are gone.
async fn baseline(
    engine: &crate::engine::Engine,
    image: &str,
    count: usize,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let runs = (0..count).map(|i| async move {
        let name = format!("sbx-bench-baseline-{}-{i}", std::process::id());
        let spec = crate::container::ContainerSpec {
            name: name.clone(),
            image: image.to_owned(),
            user: "0:0".into(),
            cmd: vec!["true".into()],
            labels: Default::default(),
            mounts: Vec::new(),
            cap_add: Vec::new(),
            cap_drop: vec!["ALL".into()],
            security_opt: Vec::new(),
            network_mode: crate::container::SHARED_NETWORK.into(),
            hostname: None,
            aliases: Vec::new(),
            pids_limit: 16,
            ..Default::default()
        };
        engine.create_container(&spec).await?;
        engine.start_container(&name).await?;
        engine.remove_container(&name).await?;
        Ok::<_, anyhow::Error>(())
    });
    for r in futures_util::future::join_all(runs).await {
        r?;
    }
    Ok(ms(start.elapsed()))
}
