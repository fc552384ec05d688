//! One sandbox session from start to end, where the adapters meet: checkouts, engine, gate and
//! agent containers, the self-check, the command, and a teardown that runs whatever happened
//! (normal exit, an error at any step, SIGINT/SIGTERM/SIGHUP). Also `sbx gc`, which finishes the
//! teardown of sessions whose process died.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures_util::future::join_all;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::{ClaudeConfig, Settings};
use crate::container::{self, Inputs};
use crate::engine::{Engine, ExecSpec};
use crate::firewall;
use crate::image::{self, ImageSpec};
use crate::keychain::Secret;
use crate::progress::Ui;
use crate::state::{self, Lock, Phase, Record, TokenSource};
use crate::worktree::{self, Checkout, Outcome, Repo};

use crate::context::Context;

pub struct RunRequest {
    pub settings: Settings,
    pub repos: Vec<Repo>,
    pub command: Vec<String>,
    pub keep: bool,
    /// Environment for the command only (tokens): set at exec time, never in the container's
    /// config, never on a command line.
    pub secrets: Vec<(TokenSource, Secret)>,
    pub endpoint: String,
    /// What becomes of the command's stdout (printed, kept instead, or both).
    pub output: crate::attach::Output,
    /// Run the containers in a fresh VM of this provider (`--vm`).
    pub vm: Option<crate::config::VmProvider>,
}

pub struct RunOutcome {
    pub exit_code: i32,
    pub output: Vec<u8>,
    pub session_id: String,
    pub timings: Timings,
}

/// Where a session's time went, phase by phase (phases may overlap: they run in parallel).
#[derive(Debug, Clone)]
pub struct Timings {
    start: Instant,
    pub phases: Vec<(&'static str, Duration, Duration)>,
    pub first_output: Option<Duration>,
}

impl Timings {
    pub fn new(start: Instant) -> Self {
        Timings {
            start,
            phases: Vec::new(),
            first_output: None,
        }
    }

    /// Records a phase that began at `began` and ends now.
    pub fn record(&mut self, name: &'static str, began: Instant) {
        self.phases
            .push((name, began.duration_since(self.start), began.elapsed()));
    }

    pub fn total(&self) -> Duration {
        self.start.elapsed()
    }

    /// The figures for `sbx bench`.
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: &Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        serde_json::json!({
            "phases": self.phases.iter().map(|(n, at, took)| serde_json::json!({
                "name": n, "start_ms": ms(at), "took_ms": ms(took)
            })).collect::<Vec<_>>(),
            "first_output_ms": self.first_output.as_ref().map(ms),
            "total_ms": ms(&self.total()),
        })
    }

    pub fn render(&self) -> String {
        let mut out = String::from("phase                 start      took\n");
        for (name, at, took) in &self.phases {
            out.push_str(&format!(
                "{name:<20} {:>7.1}ms {:>7.1}ms\n",
                at.as_secs_f64() * 1e3,
                took.as_secs_f64() * 1e3
            ));
        }
        if let Some(f) = self.first_output {
            out.push_str(&format!(
                "first output byte     {:>7.1}ms\n",
                f.as_secs_f64() * 1e3
            ));
        }
        out.push_str(&format!(
            "total                 {:>7.1}ms\n",
            self.total().as_secs_f64() * 1e3
        ));
        out
    }
}

/// Whether sbx must hand what the agent writes (checkouts, its Claude configuration) to the
/// agent's ids: only when sbx runs as root, since otherwise they are the user's own.
fn agent_owner(ids: (u32, u32)) -> Option<(u32, u32)> {
    rustix::process::getuid().is_root().then_some(ids)
}

/// Brings the session's images up to date, building what changed, and moves each friendly alias
/// to the image this session uses. An image with the same fingerprint under another name (an
/// older sbx's alias, another `image.tag`) is given the fingerprint tag instead of being rebuilt.
pub async fn ensure_images(ui: &Ui, engine: &Engine, specs: &[ImageSpec]) -> anyhow::Result<bool> {
    let found = join_all(specs.iter().map(|s| async move {
        let have = engine.local_image(&s.tag).await?;
        if have
            .as_ref()
            .is_some_and(|i| i.fingerprint == s.fingerprint)
        {
            return Ok::<_, crate::engine::EngineError>(have);
        }
        match engine.image_by_fingerprint(&s.fingerprint).await? {
            Some(id) => {
                engine.tag_image(&id, &s.tag).await?;
                Ok(engine.local_image(&s.tag).await?)
            }
            None => Ok(None),
        }
    }))
    .await;
    let mut to_build = Vec::new();
    for (s, have) in specs.iter().zip(found) {
        match have? {
            Some(i) if i.fingerprint == s.fingerprint => {
                // Only a name for people, and a sign of use for `sbx gc` (`imagegc`): a failure
                // here costs nothing. Moving the alias tags the image too.
                if !i.tags.contains(&s.alias) {
                    let _ = engine.tag_image(&s.tag, &s.alias).await;
                } else if crate::imagegc::needs_refresh(i.last_tagged) {
                    let _ = engine.tag_image(&s.tag, &s.tag).await;
                }
            }
            _ => to_build.push(s),
        }
    }
    if to_build.is_empty() {
        return Ok(false);
    }
    let builds = to_build.iter().map(|s| async move {
        let bar = ui.bar(&format!("{} image", s.role));
        ui.info(format!(
            "building the {} image `{}` (only when its inputs change)",
            s.role, s.alias
        ));
        let r = engine.build(s, &bar).await;
        match &r {
            Ok(()) => {
                bar.finish("built");
                let _ = engine.tag_image(&s.tag, &s.alias).await;
            }
            Err(_) => bar.abandon(),
        }
        r
    });
    for r in join_all(builds).await {
        r?;
    }
    Ok(true)
}

/// What the teardown must undo; filled in before each thing is made. Also collects the phase
/// timings of concurrent steps.
#[derive(Default)]
struct Live {
    engine: Option<Engine>,
    containers: Vec<String>,
    networks: Vec<String>,
    checkouts: Vec<Checkout>,
    started: Option<Instant>,
    /// The session's VM (deleted at the end) and its SSH connection.
    vm: Option<(crate::vm::Lima, String)>,
    guest: Option<crate::guest::Guest>,
    timings: Vec<(&'static str, Duration, Duration)>,
}

type Shared = Arc<Mutex<Live>>;

fn with<T>(live: &Shared, f: impl FnOnce(&mut Live) -> T) -> T {
    match live.lock() {
        Ok(mut l) => f(&mut l),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}

struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal, as its number.
    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
        }
    }
}

/// Runs one session. Returns the command's exit code; sbx's own failures are errors.
pub async fn run(ctx: &Context, req: RunRequest) -> anyhow::Result<RunOutcome> {
    let t0 = Instant::now();
    let mut timings = Timings::new(t0);
    // A gate started ahead for sessions like this one (`spare`): its id becomes the session's.
    let spare_key = spare_key(ctx, &req)?;
    let claimed = spare_key
        .as_ref()
        .and_then(|k| crate::spare::claim(&ctx.dirs, k));
    let spare = claimed.is_some();
    let id = claimed.unwrap_or_else(state::new_id);
    let dir = ctx.dirs.session(&id);
    state::create_private_dir(&dir)
        .with_context(|| format!("cannot create the session folder `{}`", dir.display()))?;
    let _lock = Lock::acquire(&dir)?.ok_or_else(|| anyhow!("session `{id}` is already locked"))?;
    let allow: Vec<String> = req
        .settings
        .allowlist()?
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut record = Record {
        id: id.clone(),
        created: state::now(),
        pid: std::process::id(),
        phase: Phase::Running,
        command: req.command.clone(),
        endpoint: req.endpoint.clone(),
        networks: Vec::new(),
        containers: Vec::new(),
        vm: req.vm.map(|_| crate::vm::session_vm(&id)),
        vm_provider: req.vm.map(|p| format!("{p:?}").to_lowercase()),
        checkouts: Vec::new(),
        outcomes: Vec::new(),
        allow,
        exit_code: None,
        probe: None,
        claude_login: None,
        ended: None,
        exec: None,
    };
    record.save(&dir)?;
    let mut signals = Signals::install()?;
    let live: Shared = Arc::default();
    with(&live, |l| l.started = Some(t0));

    let result = tokio::select! {
        r = start_and_exec(ctx, &req, &id, &dir, spare, &live, &mut record, &mut timings) => r,
        sig = signals.next() => {
            ctx.ui.fresh_line();
            ctx.ui.notice(format!("{} received, stopping the session", signal_name(sig)));
            Ok((128 + sig, Vec::new()))
        }
    };
    // Whatever the command left on its last line, sbx's own lines start on a fresh one.
    ctx.ui.fresh_line();

    let began = Instant::now();
    let (outcomes, leftover) = tokio::select! {
        o = teardown(&id, &live, req.keep, spare_key.is_some()) => o,
        sig = signals.next() => {
            ctx.ui.warn(format!(
                "{} received again: leaving the rest of the cleanup to `sbx gc`",
                signal_name(sig)
            ));
            std::process::exit(128 + sig);
        }
    };
    timings.record("teardown", began);
    // Phases teardown measured itself (the VM's deletion).
    with(&live, |l| timings.phases.append(&mut l.timings));
    finish_claude(ctx, &dir, &record);
    record.outcomes = outcomes;
    record.phase = Phase::Finished;
    record.ended = Some(state::now());
    record.exit_code = result.as_ref().ok().map(|r| r.0);
    let _ = record.save(&dir);
    let summary = record_audit(&dir, &record).summary();
    if !summary.is_empty() {
        ctx.ui.info(format!(
            "{}\n  the full record: `sbx log {id}`",
            summary.render()
        ));
    }
    report_outcomes(&ctx.ui, &record.outcomes);
    let _ = std::fs::remove_dir(dir.join("repos"));
    if let Some(key) = &spare_key {
        // A helper that outlives this process removes this session's stopped containers, then
        // makes the next session's gate.
        crate::spare::spawn_helper(key, &leftover);
    }
    let (exit_code, output) = result?;
    Ok(RunOutcome {
        exit_code,
        output,
        session_id: id,
        timings,
    })
}

/// What a spare gate must match for this session to use one, when it may: its own engine on
/// this machine (not a VM's, not over SSH) and `spare` on.
fn spare_key(ctx: &Context, req: &RunRequest) -> anyhow::Result<Option<crate::spare::Key>> {
    let s = &req.settings;
    if !s.spare || req.vm.is_some() || req.endpoint.starts_with("ssh://") {
        return Ok(None);
    }
    Ok(Some(crate::spare::Key {
        endpoint: req.endpoint.clone(),
        image: image::gate_image(s)?.tag,
        network: s
            .network
            .clone()
            .unwrap_or_else(|| container::SHARED_NETWORK.to_owned()),
        dns: s.dns.clone(),
        owner: ctx.dirs.owner_tag(),
    }))
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "Ctrl-C",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// The session's audit: every DNS question and refused connection in its logs (the gate caps
/// each log, keeping the previous part as `<log>.1`).
pub fn read_audit(dir: &Path) -> crate::audit::Audit {
    let logs = container::log_dir(dir);
    let read = |f: &str| {
        let mut bytes = std::fs::read(logs.join(format!("{f}.1"))).unwrap_or_default();
        bytes.extend(std::fs::read(logs.join(f)).unwrap_or_default());
        String::from_utf8_lossy(&bytes).into_owned()
    };
    crate::audit::Audit {
        queries: crate::audit::parse_dns_log(&read("dns.log")),
        refused: crate::audit::parse_refused_log(&read("refused.log")),
    }
}

/// The session's audit with the start-up self-check's probes marked as sbx's own (its look-up
/// of a name of its own, and its first TCP and UDP probe of the gateway's port 9).
pub fn record_audit(dir: &Path, record: &Record) -> crate::audit::Audit {
    let mut audit = read_audit(dir);
    audit.mark_selfcheck(&selfcheck_name(&record.id), record.probe.as_deref());
    audit
}

/// The name the start-up self-check looks up (it must not resolve).
fn selfcheck_name(id: &str) -> String {
    format!("sbx-selfcheck-{id}.invalid")
}

/// Tells the user where their work is.
pub fn report_outcomes(ui: &Ui, outcomes: &[Outcome]) {
    for o in outcomes {
        if let Some(b) = &o.branch {
            ui.notice(format!(
                "the session's commits in `{}` are on branch `{b}`: `git -C {} log {b}`",
                o.name,
                o.host_root.display()
            ));
        }
        // Reasons and notes may quote what the agent wrote (a ref name, git's message about it).
        let p = crate::text::printable;
        for note in &o.notes {
            ui.notice(format!("in `{}`, sbx {}", o.name, p(note)));
        }
        if let Some(why) = &o.not_safe {
            // Never presented as ordinary kept work: git run there could run the agent's code.
            ui.warn(format!(
                "`{}` is kept, but it is NOT SAFE to use as a repository: {}\n  do not run git (or anything that runs git: an editor, a shell prompt) in it or its folders; copy out the files you need and delete it",
                o.path.display(),
                p(why)
            ));
        } else if let Some(why) = &o.kept {
            ui.notice(format!("kept `{}`: {}", o.path.display(), p(why)));
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn start_and_exec(
    ctx: &Context,
    req: &RunRequest,
    id: &str,
    dir: &Path,
    spare: bool,
    live: &Shared,
    record: &mut Record,
    timings: &mut Timings,
) -> anyhow::Result<(i32, Vec<u8>)> {
    let settings = &req.settings;
    let (uid, gid) = crate::hostids::agent_ids()?;
    if settings.git.mode == crate::config::GitMode::Worktree && rustix::process::getuid().is_root()
    {
        return Err(crate::error::hinted(
            "`git.mode: worktree` cannot work when sbx runs as root: the agent never runs as root, so it could not write your `.git`",
            "use `git.mode: isolated` (the default), or run sbx as your own user",
        ));
    }
    let specs = image::specs(settings)?;
    write_session_files(dir, &settings.allowlist()?, &req.repos, (uid, gid), &ctx.ui)?;
    let gate_inputs = container::GateInputs {
        session_id: id.to_owned(),
        owner: ctx.dirs.owner_tag(),
        image: image::tag_of(&specs, "gate").to_owned(),
        network: String::new(),
        session_dir: dir.to_owned(),
        dns: settings.dns.clone(),
        spare_for: None,
    };
    let gate_name = container::gate_name(id);
    let agent_name = container::agent_name(id);
    with(live, |l| {
        l.containers.push(agent_name.clone());
        l.containers.push(gate_name.clone());
    });
    record.containers = vec![agent_name.clone(), gate_name.clone()];
    // Planned before anything exists, so a crash at any point leaves a record `sbx gc` can finish.
    let names = worktree::mount_names(&req.repos);
    let mut planned: Vec<Checkout> = req
        .repos
        .iter()
        .zip(&names)
        .map(|(repo, name)| {
            Checkout::plan(repo, name, &dir.join("repos").join(name), settings.git.mode)
        })
        .collect();
    with(live, |l| l.checkouts = planned.clone());
    record.checkouts = planned.clone();
    record.save(dir)?;

    // Two things run in parallel: the engine side (connect, images, network, then the gate,
    // which needs nothing of the checkouts) and the checkouts.
    let vm_mounts = if req.vm.is_some() {
        crate::guest::session_mounts(dir, &planned)?
    } else {
        Vec::new()
    };
    let engine_side = async {
        let began = Instant::now();
        let endpoint = guest_endpoint(ctx, req, id, dir, live, &vm_mounts).await?;
        if endpoint != req.endpoint && req.vm.is_none() {
            timings_push(live, "remote connect", began);
        }
        let began = Instant::now();
        let engine = Engine::connect(&endpoint).await?;
        with(live, |l| l.engine = Some(engine.clone()));
        timings_push(live, "engine connect", began);
        let began = Instant::now();
        let network = async {
            match &settings.network {
                Some(n) => {
                    check_user_network(&engine, n).await?;
                    Ok::<_, anyhow::Error>(n.clone())
                }
                None => Ok(engine
                    .ensure_network(
                        container::SHARED_NETWORK,
                        &container::labels("shared", "", "network"),
                    )
                    .await?),
            }
        };
        let images = async {
            let cache = image_cache(ctx, req, &vm_mounts);
            if let Some(cache) = &cache {
                let began = Instant::now();
                match cache.restore(&engine, &specs).await {
                    Ok(true) => {
                        ctx.ui.info(
                            "loaded the images an earlier Colima session saved (their fingerprints match): nothing to build",
                        );
                        timings_push(live, "image cache load", began);
                    }
                    Ok(false) => {}
                    Err(e) => ctx.ui.warn(format!(
                        "could not use the saved images: {:#}; building them instead",
                        anyhow::Error::new(e)
                    )),
                }
            }
            let began = Instant::now();
            let built = ensure_images(&ctx.ui, &engine, &specs).await?;
            timings_push(
                live,
                if built { "image build" } else { "image check" },
                began,
            );
            if let Some(cache) = cache.as_ref().filter(|_| built) {
                // Saved now, while the fresh VM's engine holds only what sbx just built: nothing
                // of the session has run there yet. Once the agent runs, whatever it does in its
                // VM must not reach the next session's images (the gate's included).
                let began = Instant::now();
                match cache.store(&engine, &specs).await {
                    Ok(path) => ctx.ui.info(format!(
                        "saved the images for the next Colima sessions in `{}`",
                        path.display()
                    )),
                    Err(e) => ctx.ui.warn(format!(
                        "could not save the images for the next Colima sessions: {:#}",
                        anyhow::Error::new(e)
                    )),
                }
                timings_push(live, "image cache save", began);
            }
            Ok::<_, anyhow::Error>(())
        };
        let (capacity, network, ()) = tokio::try_join!(
            async { engine.capacity().await.map_err(anyhow::Error::from) },
            network,
            images
        )?;
        if !capacity.seccomp {
            return Err(crate::error::hinted(
                "the engine runs containers without a seccomp filter, so the agent could call `keyctl` and read your kernel keyring (where `sbx token` keeps tokens)",
                "run the engine with its default seccomp profile (remove `--seccomp-profile=unconfined` or `\"seccomp-profile\"` from its configuration)",
            ));
        }
        timings_push(live, "network", began);
        let gateway = engine.network_gateway(&network).await?;
        let began = Instant::now();
        if spare {
            // A spare gate that no longer runs (the engine restarted, `sbx gc` took it) is
            // replaced by a new one, as if there had been no spare.
            if engine.is_running(&gate_name).await? {
                timings_push(live, "spare gate check", began);
                return Ok::<_, anyhow::Error>((engine, capacity, gateway, None));
            }
            engine.remove_container(&gate_name).await?;
        }
        let gate = container::gate(&container::GateInputs {
            network,
            ..gate_inputs.clone()
        });
        engine.create_container(&gate).await?;
        let output = engine.attach_output(&gate.name).await?;
        timings_push(live, "gate create", began);
        Ok::<_, anyhow::Error>((engine, capacity, gateway, Some(output)))
    };
    let checkout_side = async {
        let began = Instant::now();
        let owner = agent_owner((uid, gid));
        let made = join_all(planned.iter_mut().map(|c| worktree::create(c, owner))).await;
        with(live, |l| l.checkouts = planned.clone());
        made.into_iter().collect::<Result<Vec<()>, _>>()?;
        timings_push(live, "worktrees", began);
        Ok::<_, anyhow::Error>(planned)
    };
    let (
        (
            engine,
            crate::engine::Capacity {
                cpus: ncpu,
                memory: mem,
                ..
            },
            gateway,
            gate_output,
        ),
        checkouts,
    ) = tokio::try_join!(engine_side, checkout_side)?;
    record.checkouts = checkouts.clone();
    record.save(dir)?;

    // The agent's Claude configuration: a copy in the session folder (see `claude`).
    let claude = match settings.claude.config {
        ClaudeConfig::Mount => {
            let workspaces: Vec<String> = checkouts
                .iter()
                .map(|c| format!("/workspace/{}", c.name))
                .collect();
            let prepared = crate::claude::prepare(
                &crate::claude::HostConfig::from_env(&ctx.dirs.home),
                dir,
                &workspaces,
                agent_owner((uid, gid)),
            )?;
            for n in prepared.notes {
                ctx.ui.info(n);
            }
            record.claude_login = Some(prepared.login_fingerprint);
            record.save(dir)?;
            Some(crate::claude::session_copy(dir))
        }
        ClaudeConfig::None => None,
    };
    if let Some(c) = settings.resources.cpus.filter(|c| *c > f64::from(ncpu)) {
        ctx.ui.warn(format!(
            "`resources.cpus` is {c} but the engine has {ncpu}; using {ncpu}"
        ));
    }
    let caches = if settings.caches {
        let began = Instant::now();
        let plan = crate::caches::plan(&gate_inputs.owner, &req.repos[0].common_dir, (uid, gid));
        prepare_caches(&engine, &plan, (uid, gid), image::tag_of(&specs, "gate")).await?;
        timings_push(live, "caches", began);
        Some(plan)
    } else {
        None
    };
    let inputs = Inputs {
        caches: caches
            .as_ref()
            .map(|p| {
                p.volumes
                    .iter()
                    .map(|(v, at, _)| (v.clone(), at.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        gate: gate_inputs,
        agent_image: image::tag_of(&specs, "sandbox").to_owned(),
        uid,
        gid,
        mounts: checkouts.iter().flat_map(|c| c.mounts.clone()).collect(),
        claude,
        cpus: container::cpus(settings.resources.cpus, ncpu),
        memory: container::memory(settings.resources.memory, mem),
        pids: settings.resources.pids,
        working_dir: format!("/workspace/{}", checkouts[0].name),
    };
    let agent = container::agent(&inputs);
    // The agent is created while the gate starts (it only needs the gate to exist), but started
    // only once the gate reports the firewall loaded: until then the namespace is open, and
    // whatever the agent's image runs at start (its `sleep`, in a custom image) would be too.
    let began = Instant::now();
    match gate_output {
        Some(output) => {
            let (gate_started, agent_created) = tokio::join!(
                engine.start_container(&gate_name),
                engine.create_container(&agent)
            );
            gate_started?;
            agent_created?;
            timings_push(live, "gate start", began);
            let began = Instant::now();
            wait_for_gate(output).await?;
            timings_push(live, "firewall apply", began);
            let began = Instant::now();
            engine.start_container(&agent.name).await?;
            timings_push(live, "agent start", began);
        }
        None => {
            // A spare gate denies everything until it reloads: the agent may start meanwhile,
            // and nothing of it (its image's start-up included) gets out before this session's
            // own plan is in place. The command waits for the reload.
            let reload = async {
                let began = Instant::now();
                let r = reload_gate(&engine, &gate_name).await;
                timings_push(live, "spare gate reload", began);
                r
            };
            let agent_up = async {
                engine.create_container(&agent).await?;
                timings_push(live, "agent create", began);
                let began = Instant::now();
                engine.start_container(&agent.name).await?;
                timings_push(live, "agent start", began);
                Ok::<_, anyhow::Error>(())
            };
            let (reloaded, started) = tokio::join!(reload, agent_up);
            started?;
            reloaded.context("the gate started ahead could not load this session's plan")?;
        }
    }

    let began = Instant::now();
    let tty = crate::terminal::stdin_is_tty() && crate::terminal::stdout_is_tty();
    record.exec = Some(crate::state::ExecContext {
        user: format!("{uid}:{gid}"),
        working_dir: inputs.working_dir.clone(),
        claude: inputs.claude.is_some(),
        tokens: req.secrets.iter().map(|(t, _)| t.clone()).collect(),
    });
    record.save(dir)?;
    let mut env = agent_env(id, inputs.claude.is_some());
    if let Some(plan) = &caches {
        // The start-up script links the caches into the home (a fresh in-memory folder).
        env.push(format!("SBX_CACHE_LINKS={}", plan.links));
    }
    let env = exec_env(
        env,
        tty,
        req.secrets.iter().map(|(t, v)| (t.env.as_str(), v)),
    );
    // The command starts behind the self-check, in the same exec: from the attacker's side, as
    // the agent, it proves the firewall holds (and stops the session when it does not).
    let Some(gateway) = gateway else {
        bail!("the session network has no IPv4 gateway to run the firewall self-check against");
    };
    record.probe = Some(gateway.to_string());
    let mut cmd = vec![
        "bash".to_owned(),
        "-c".into(),
        image::SELFCHECK.into(),
        "sbx-selfcheck".into(),
        gateway.to_string(),
        selfcheck_name(id),
        "--".into(),
    ];
    cmd.extend(req.command.iter().cloned());
    let spec = ExecSpec {
        cmd,
        user: format!("{uid}:{gid}"),
        env,
        working_dir: Some(inputs.working_dir.clone()),
        tty,
        stdin: true,
        size: if tty { crate::terminal::size() } else { None },
    };
    let recorder = if req.settings.record {
        let size = spec.size.unwrap_or((24, 80));
        match crate::cast::Recorder::create(
            &crate::cast::path(dir),
            size,
            &format!("sbx session {id}"),
        ) {
            Ok(r) => Some(r),
            Err(e) => {
                ctx.ui
                    .warn(format!("the session's terminal is not recorded: {e}"));
                None
            }
        }
    } else {
        None
    };
    // Every line sbx printed is finished before the command's output starts.
    ctx.ui.fresh_line();
    let result = crate::attach::run(&engine, &agent.name, spec, req.output, recorder).await?;
    timings.first_output = result.first_output.map(|f| f.duration_since(timings.start));
    timings_push(live, "exec", began);
    with(live, |l| timings.phases.append(&mut l.timings));
    Ok((i32::try_from(result.code).unwrap_or(255), result.captured))
}

/// The command's environment, tokens aside: the same for the session's command and every
/// `sbx exec` into it.
pub fn agent_env(id: &str, claude: bool) -> Vec<String> {
    let mut env = vec![
        "HOME=/home/agent".to_owned(),
        "USER=agent".to_owned(),
        format!("SBX_SESSION={id}"),
        // Forced over any repository config: the signing key stays on the host.
        "GIT_CONFIG_COUNT=2".into(),
        "GIT_CONFIG_KEY_0=commit.gpgsign".into(),
        "GIT_CONFIG_VALUE_0=false".into(),
        "GIT_CONFIG_KEY_1=tag.gpgsign".into(),
        "GIT_CONFIG_VALUE_1=false".into(),
        // Claude Code, also in a custom image: no self-updating in a container that is thrown
        // away (`sbx setup --update`), and no third-party telemetry or error reporting, whose
        // hosts are not on the allowlist (anyone's account there would be a way out).
        "DISABLE_AUTOUPDATER=1".into(),
        "DISABLE_TELEMETRY=1".into(),
        "DISABLE_ERROR_REPORTING=1".into(),
    ];
    if claude {
        // Claude Code then keeps its `.claude.json` inside the mounted copy too.
        env.push(format!(
            "CLAUDE_CONFIG_DIR={}",
            crate::claude::AGENT_CONFIG_DIR
        ));
    }
    env
}

/// `env` with the terminal type (for a TTY) and the tokens: what an exec into the agent's
/// container gets. Exec environment is not the container's configuration: `docker inspect`
/// never shows it.
pub fn exec_env<'a>(
    mut env: Vec<String>,
    tty: bool,
    tokens: impl Iterator<Item = (&'a str, &'a Secret)>,
) -> Vec<String> {
    if tty {
        env.push(format!("TERM={}", crate::terminal::term()));
    }
    env.extend(tokens.map(|(k, v)| format!("{k}={}", v.expose())));
    env
}

/// Makes the project's cache volumes that do not exist yet, and gives the top folder of each
/// new one (or one made for other ids) to the agent's ids: `chown` in sbx's own gate image, as
/// root with only `CAP_CHOWN` and `CAP_DAC_OVERRIDE`, no network, only those volumes mounted.
async fn prepare_caches(
    engine: &Engine,
    plan: &crate::caches::Plan,
    (uid, gid): (u32, u32),
    gate_image: &str,
) -> anyhow::Result<()> {
    use crate::caches::{KIND_LABEL, USER_LABEL};
    let user = format!("{uid}:{gid}");
    // One listing of this HOME's cache volumes, not a question per volume: this is the start
    // path. (The owner tag is hex; a project path may hold anything a label filter mishandles.)
    let owner = &plan.labels[container::OWNER_LABEL];
    let existing: std::collections::HashMap<_, _> = engine
        .volumes(&[
            format!("{}={owner}", container::OWNER_LABEL),
            crate::caches::KIND_LABEL.to_owned(),
        ])
        .await?
        .into_iter()
        .collect();
    let mut fresh = Vec::new();
    for (name, at, kind) in &plan.volumes {
        match existing.get(name) {
            Some(l) if l.get(USER_LABEL) == Some(&user) => {}
            Some(_) => fresh.push((name.clone(), at.clone())),
            None => {
                let mut labels = plan.labels.clone();
                labels.insert(KIND_LABEL.to_owned(), (*kind).to_owned());
                engine.create_volume(name, &labels).await?;
                fresh.push((name.clone(), at.clone()));
            }
        }
    }
    if fresh.is_empty() {
        return Ok(());
    }
    let mut cmd = vec!["chown".to_owned(), "-R".into(), user];
    cmd.extend(fresh.iter().map(|(_, at)| at.clone()));
    let spec = container::ContainerSpec {
        name: format!("sbx-cache-prep-{}", state::new_id()),
        image: gate_image.to_owned(),
        user: "0:0".into(),
        cmd,
        labels: plan
            .labels
            .iter()
            .filter(|(k, _)| *k == container::OWNER_LABEL)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        volumes: fresh,
        cap_add: vec!["CHOWN".into(), "DAC_OVERRIDE".into()],
        cap_drop: vec!["ALL".into()],
        security_opt: vec!["no-new-privileges:true".into()],
        network_mode: "none".into(),
        pids_limit: 64,
        read_only_rootfs: true,
        ..Default::default()
    };
    let out = engine.run_once(&spec, Duration::from_secs(120)).await?;
    anyhow::ensure!(
        out.trim().is_empty(),
        "could not prepare the package caches: {}",
        out.trim()
    );
    Ok(())
}

/// Records a phase from concurrent code (merged into the session's timings at the end).
fn timings_push(live: &Shared, name: &'static str, began: Instant) {
    with(live, |l| {
        let start = l.started.unwrap_or(began);
        l.timings
            .push((name, began.duration_since(start), began.elapsed()));
    });
}

async fn check_user_network(engine: &Engine, network: &str) -> anyhow::Result<()> {
    match engine.network_driver(network).await? {
        None => bail!(
            "the network `{network}` does not exist (hint: create it with `docker network create {network}`, or drop `--network`)"
        ),
        Some(_) if ["bridge", "host", "none"].contains(&network) => bail!(
            "sbx cannot use Docker's `{network}` network: it needs a user-defined network (hint: `docker network create NAME`, then `--network NAME`)"
        ),
        Some(_) => Ok(()),
    }
}

/// Waits for the gate to report its firewall and DNS filter in place.
/// Has a running gate load its session's plan again (`gate reload`): after `sbx allow`, and when a
/// session claims a spare gate.
pub async fn reload_gate(engine: &Engine, gate: &str) -> anyhow::Result<()> {
    let (code, out) = engine
        .exec_output(
            gate,
            vec!["/usr/local/lib/sbx/gate".into(), "reload".into()],
            "0:0",
        )
        .await?;
    if code != 0 || !out.contains("sbx-gate: reloaded") {
        bail!("the gate could not load the plan:\n{}", out.trim());
    }
    Ok(())
}

pub(crate) async fn wait_for_gate(
    mut output: std::pin::Pin<
        Box<
            dyn futures_util::Stream<
                    Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
                > + Send,
        >,
    >,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let mut seen = String::new();
    let wait = async {
        while let Some(Ok(chunk)) = output.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            if seen.contains("sbx-gate: ready") {
                return true;
            }
            if seen.contains("sbx-gate: error") {
                return false;
            }
        }
        false
    };
    let ok = tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        bail!(
            "the session's firewall could not be set up:\n{}",
            seen.trim()
        )
    }
}

/// Brings the session's Claude login state home and deletes its copy of the configuration.
fn finish_claude(ctx: &Context, dir: &Path, record: &Record) {
    let Some(start) = &record.claude_login else {
        // A copy whose making was interrupted brings nothing back, but may hold credentials.
        if let Err(e) = crate::claude::discard(dir) {
            ctx.ui.warn(format!(
                "could not delete the session's Claude configuration copy in `{}`: {e}",
                crate::claude::session_copy(dir).display()
            ));
        }
        return;
    };
    let host = crate::claude::HostConfig::from_env(&ctx.dirs.home);
    match crate::claude::bring_back(&host, dir, start) {
        Ok(done) if done.credentials => ctx.ui.info(
            "kept the Claude sign-in the session made or refreshed (credentials and account only)",
        ),
        // A first start writes its user id and onboarding flag: kept, nothing to say.
        Ok(_) => {}
        Err(e) => ctx.ui.warn(format!(
            "could not finish the session's Claude configuration copy in `{}`: {e}",
            crate::claude::session_copy(dir).display()
        )),
    }
}

/// The files the gate and the agent mount: the firewall plan, the agent's resolver, the logs,
/// and the git configuration.
pub fn write_session_files(
    dir: &Path,
    entries: &[crate::allowlist::Entry],
    repos: &[Repo],
    (uid, gid): (u32, u32),
    ui: &Ui,
) -> anyhow::Result<()> {
    write_gate_files(dir, entries)?;
    write_log_files(dir)?;
    let identity = repos.first().map(worktree::identity).unwrap_or_default();
    if identity.signs_commits {
        ui.info("commit signing is off inside the sandbox (your signing key stays on the host)");
    }
    let gitconfig = container::gitconfig_path(dir);
    if let Some(p) = gitconfig.parent() {
        std::fs::create_dir_all(p)?;
    }
    for (path, text) in [
        (gitconfig, gitconfig_text(&identity)),
        (container::passwd_path(dir), container::passwd(uid, gid)),
        (container::group_path(dir), container::group(gid)),
    ] {
        std::fs::write(&path, text)?;
        set_mode(&path, 0o644)?;
    }
    Ok(())
}

/// The gate's logs, empty (a spare's, claimed, are emptied: its start is no part of the session).
pub fn write_log_files(dir: &Path) -> anyhow::Result<()> {
    let logs = container::log_dir(dir);
    std::fs::create_dir_all(&logs)?;
    for f in [
        "dns.log",
        "dns.log.1",
        "refused.log",
        "refused.log.1",
        "ulogd.log",
        "ulogd.log.1",
    ] {
        let p = logs.join(f);
        std::fs::write(&p, "")?;
        // The gate writes these as a root without CAP_DAC_OVERRIDE.
        set_mode(&p, 0o666)?;
    }
    Ok(())
}

/// (Re)writes the gate's configuration from the allowlist.
pub fn write_gate_files(dir: &Path, entries: &[crate::allowlist::Entry]) -> anyhow::Result<()> {
    let plan = firewall::plan(entries);
    let gate = container::gate_dir(dir);
    std::fs::create_dir_all(&gate)?;
    set_mode(&gate, 0o755)?;
    for (name, text) in [
        ("ipset.rules", &plan.ipset),
        ("iptables.rules", &plan.iptables),
        ("ip6tables.rules", &plan.ip6tables),
        ("dnsmasq.conf", &plan.dnsmasq),
        ("ulogd.conf", &plan.ulogd),
        ("resolv.conf", &plan.agent_resolv_conf),
        ("log-limit", &firewall::LOG_LIMIT_BYTES.to_string()),
    ] {
        let p = gate.join(name);
        std::fs::write(&p, text)?;
        set_mode(&p, 0o644)?;
    }
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

/// The system git config inside the sandbox: the user's identity, GitHub over HTTPS with `gh` as
/// the credential helper (so a `GH_TOKEN` is all `git push` needs), and every folder trusted
/// (checkouts may belong to another uid when sbx runs as root).
pub fn gitconfig_text(id: &worktree::Identity) -> String {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::from("# written by sbx for this session (read-only)\n");
    if id.name.is_some() || id.email.is_some() {
        out.push_str("[user]\n");
        if let Some(n) = &id.name {
            out.push_str(&format!("\tname = \"{}\"\n", quote(n)));
        }
        if let Some(e) = &id.email {
            out.push_str(&format!("\temail = \"{}\"\n", quote(e)));
        }
    }
    out.push_str(
        "[commit]\n\tgpgsign = false\n\
         [tag]\n\tgpgsign = false\n\
         [safe]\n\tdirectory = *\n\
         [credential \"https://github.com\"]\n\thelper =\n\thelper = !/usr/bin/gh auth git-credential\n\
         [credential \"https://gist.github.com\"]\n\thelper =\n\thelper = !/usr/bin/gh auth git-credential\n\
         [url \"https://github.com/\"]\n\tinsteadOf = git@github.com:\n\tinsteadOf = ssh://git@github.com/\n",
    );
    out
}

/// Removes the containers and, once the agent's is gone (so nothing writes to a checkout while
/// it is judged), finishes the checkouts while the rest is removed. Idempotent.
/// Undoes the session: its containers, then its checkouts (finished only once the agent is
/// stopped, so nothing of it writes there after), networks and VM. With `defer`, the containers
/// are only stopped (the agent, at once) and their names returned: a helper that outlives sbx
/// removes them (`spare`), and `sbx gc` does if it cannot; nothing of the session runs meanwhile.
async fn teardown(id: &str, live: &Shared, keep: bool, defer: bool) -> (Vec<Outcome>, Vec<String>) {
    let (engine, containers, networks, checkouts) = with(live, |l| {
        (
            l.engine.clone(),
            std::mem::take(&mut l.containers),
            std::mem::take(&mut l.networks),
            std::mem::take(&mut l.checkouts),
        )
    });
    let deferred = if defer && engine.is_some() {
        containers.clone()
    } else {
        Vec::new()
    };
    let remove = |name: String| {
        let engine = engine.clone();
        async move {
            if let Some(engine) = engine {
                let _ =
                    tokio::time::timeout(Duration::from_secs(20), engine.remove_container(&name))
                        .await;
            }
        }
    };
    let stop = |name: String| {
        let engine = engine.clone();
        async move {
            if let Some(engine) = engine {
                // `docker kill` returns once the container no longer runs.
                let stopped =
                    tokio::time::timeout(Duration::from_secs(20), engine.kill_container(&name))
                        .await;
                if !matches!(stopped, Ok(Ok(()))) {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(20),
                        engine.remove_container(&name),
                    )
                    .await;
                }
            }
        }
    };
    let mut names = containers.into_iter();
    let agent = names.next();
    let others = join_all(names.filter(|_| deferred.is_empty()).map(remove));
    let id = id.to_owned();
    let agent_then_checkouts = async {
        if let Some(a) = agent {
            if deferred.is_empty() {
                remove(a).await;
            } else {
                stop(a).await;
            }
        }
        tokio::task::spawn_blocking(move || {
            checkouts
                .iter()
                .map(|c| worktree::finish(c, &id, keep))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default()
    };
    let (_, outcomes) = tokio::join!(others, agent_then_checkouts);
    if let Some(engine) = &engine {
        for n in &networks {
            let _ = tokio::time::timeout(Duration::from_secs(20), engine.remove_network(n)).await;
        }
    }
    let (vm, guest) = with(live, |l| (l.vm.take(), l.guest.take()));
    if let Some(g) = guest {
        g.close();
    }
    if let Some((lima, name)) = vm {
        let began = Instant::now();
        let _ = lima.remove_session_vm(&name).await;
        timings_push(live, "vm delete", began);
    }
    (outcomes, deferred)
}

/// The engine endpoint of this session: the local one, or a guest's Docker socket forwarded
/// over SSH (a fresh VM for `--vm`, a remote host for `ssh://`).
async fn guest_endpoint(
    ctx: &Context,
    req: &RunRequest,
    id: &str,
    dir: &Path,
    live: &Shared,
    mounts: &[crate::vm::VmMount],
) -> anyhow::Result<String> {
    let vm_cache = ctx.dirs.cache.join("vm");
    if let Some(provider) = req.vm {
        let lima = crate::vm::Lima::locate(&ctx.dirs, provider).await?;
        let name = crate::vm::session_vm(id);
        // Written before the VM exists, read inside it before anything runs there.
        let nonces = crate::guest::Nonces::plant(id, mounts)?;
        let guest = if provider == crate::config::VmProvider::Colima {
            // A folder Colima would mangle (or mount another in its place) stops the session
            // before anything boots.
            crate::vm::check_colima_mounts(mounts)?;
            with(live, |l| l.vm = Some((lima.clone(), name.clone())));
            // Every profile starts with an empty engine: the images come from sbx's image cache
            // when an earlier session saved them, else they are built (see `image_cache`).
            let inst = lima.colima_start(&name, &req.settings.vm, mounts).await?;
            let guest = crate::guest::connect_instance(&lima, &inst, &vm_cache, dir).await?;
            guest
                .wait_for_docker(&name, crate::guest::DOCKER_READY_LIMIT)
                .await?;
            guest
        } else {
            let golden = crate::guest::current_golden(&lima, &req.settings)
                .await?
                .ok_or(crate::vm::VmError::GoldenStale)?;
            crate::guest::mark_used(&vm_cache, &golden);
            with(live, |l| l.vm = Some((lima.clone(), name.clone())));
            let mut phase = |n, began| timings_push(live, n, began);
            crate::guest::boot_session_vm(&lima, &golden, &name, mounts, &vm_cache, dir, &mut phase)
                .await?
        };
        let checked = async {
            let began = Instant::now();
            guest.prove_mounts(&name, &nonces).await?;
            timings_push(live, "vm mounts proven", began);
            // Colima's own image has no bindfs (sbx does not provision it): its sessions see
            // the owners Colima's file sharing reports (see the README).
            if provider == crate::config::VmProvider::Lima {
                let began = Instant::now();
                guest
                    .share_mounts(mounts, crate::hostids::agent_ids()?)
                    .await?;
                timings_push(live, "vm mounts shared", began);
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        drop(nonces);
        if let Err(e) = checked {
            guest.close();
            return Err(e);
        }
        let endpoint = guest.endpoint();
        with(live, |l| l.guest = Some(guest));
        return Ok(endpoint);
    }
    if req.endpoint.starts_with("ssh://") {
        let target = crate::guest::remote_target(&req.endpoint, &ctx.dirs.home, &vm_cache)?;
        let guest = crate::guest::connect(&target, dir).await?;
        let endpoint = guest.endpoint();
        with(live, |l| l.guest = Some(guest));
        return Ok(endpoint);
    }
    Ok(req.endpoint.clone())
}

/// The host-side image cache a session uses: only a Colima session (its VM starts with an empty
/// engine), and only while no folder the VM may write holds the cache (a writable mount above it
/// would let the VM replace the images every later session loads).
fn image_cache(
    ctx: &Context,
    req: &RunRequest,
    mounts: &[crate::vm::VmMount],
) -> Option<crate::imagecache::ImageCache> {
    if req.vm != Some(crate::config::VmProvider::Colima) {
        return None;
    }
    let dir = ctx.dirs.cache.join("vm").join("images");
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let cache_real = real(&ctx.dirs.cache);
    if let Some(m) = mounts
        .iter()
        .find(|m| m.writable && (dir.starts_with(&m.path) || cache_real.starts_with(real(&m.path))))
    {
        ctx.ui.warn(format!(
            "not using sbx's image cache: the session VM may write `{}`, which holds it",
            m.path.display()
        ));
        return None;
    }
    Some(crate::imagecache::ImageCache::new(dir))
}

/// What `sbx gc` did.
#[derive(Debug, Default)]
pub struct GcReport {
    pub sessions_finished: Vec<String>,
    pub containers_removed: Vec<String>,
    pub networks_removed: Vec<String>,
    pub vms_removed: Vec<String>,
    pub outcomes: Vec<Outcome>,
    pub folders_removed: Vec<PathBuf>,
    /// Sessions that could not be finished (each reported as it happened).
    pub failed: Vec<String>,
}

/// Finishes one dead session: its VM or containers and networks, its checkouts (commits imported
/// first, dirty ones kept) and its Claude configuration copy; or, long finished with nothing
/// kept, removes its folder.
async fn gc_session(
    ctx: &Context,
    engine: Option<&Engine>,
    dir: &Path,
    mut record: Record,
    report: &mut GcReport,
) -> anyhow::Result<()> {
    if record.phase == Phase::Finished {
        let old =
            state::now().saturating_sub(record.ended.unwrap_or(record.created)) > 7 * 24 * 3600;
        let kept = record
            .outcomes
            .iter()
            .any(|o| o.kept.is_some() && o.path.exists());
        if old && !kept {
            // Its logs and leftovers are the agent's: removed without following links.
            let parent = dir.parent().unwrap_or(dir);
            let name = dir.file_name().unwrap_or_default();
            crate::safefs::Dir::open(parent)?.remove_tree(name)?;
            report.folders_removed.push(dir.to_owned());
        }
        return Ok(());
    }
    if let Some(recorded) = &record.vm {
        // The record lies in the session folder, which the session's VM may write: only the name
        // sbx gives this folder's VM is ever deleted (not another session's, nor one of yours).
        let name = &crate::vm::session_vm(&crate::paths::base_name(dir));
        if recorded != name {
            ctx.ui.warn(format!(
                "the record of session `{}` names the VM `{}`; deleting `{name}`, the one sbx made for it",
                crate::paths::base_name(dir),
                crate::text::printable(recorded)
            ));
        }
        // The containers live and die with the session's VM.
        let provider = if record.vm_provider.as_deref() == Some("colima") {
            crate::config::VmProvider::Colima
        } else {
            crate::config::VmProvider::Lima
        };
        let lima = crate::vm::Lima::locate(&ctx.dirs, provider)
            .await
            .with_context(|| format!("it left the VM `{name}`, which sbx cannot reach"))?;
        lima.remove_session_vm(name).await?;
        report.vms_removed.push(name.clone());
    } else if let Some(engine) = engine {
        for c in &record.containers {
            engine.remove_container(c).await?;
            report.containers_removed.push(c.clone());
        }
        for n in &record.networks {
            engine.remove_network(n).await?;
            report.networks_removed.push(n.clone());
        }
    } else if !record.containers.is_empty() {
        bail!(
            "it left containers on `{}`, which is not reachable; run `sbx gc` again when it is",
            record.endpoint
        );
    }
    let id = record.id.clone();
    let checkouts = record.checkouts.clone();
    let outcomes = tokio::task::spawn_blocking(move || {
        checkouts
            .iter()
            .map(|c| worktree::finish(c, &id, false))
            .collect::<Vec<_>>()
    })
    .await?;
    report.outcomes.extend(outcomes.clone());
    finish_claude(ctx, dir, &record);
    record.outcomes = outcomes;
    record.phase = Phase::Finished;
    record.ended = Some(state::now());
    record.save(dir)?;
    let _ = std::fs::remove_dir(dir.join("repos"));
    report.sessions_finished.push(record.id.clone());
    Ok(())
}

/// Finishes what dead sessions left: their containers and networks, their checkouts (commits
/// imported first, dirty ones kept), and records of long-finished sessions with nothing kept.
/// Never touches a live session.
pub async fn gc(ctx: &Context, engine: Option<&Engine>) -> anyhow::Result<GcReport> {
    let mut report = GcReport::default();
    let sessions = ctx.dirs.sessions();
    let mut live_ids = Vec::new();
    for (dir, record) in state::list(&sessions) {
        if state::is_live(&dir) {
            live_ids.push(record.id.clone());
            continue;
        }
        let Some(_lock) = Lock::acquire(&dir)? else {
            live_ids.push(record.id.clone());
            continue;
        };
        // One session that cannot be finished (its files are the agent's) stops nothing else.
        let id = record.id.clone();
        if let Err(e) = gc_session(ctx, engine, &dir, record, &mut report).await {
            ctx.ui.warn(format!(
                "could not finish session `{id}`: {e:#}; the rest goes on"
            ));
            report.failed.push(id);
        }
    }
    // Session VMs of this cache's sessions that are not alive (never the golden one, never a VM
    // another sbx installation sharing `LIMA_HOME` made).
    if let Ok(lima) = crate::vm::Lima::locate(&ctx.dirs, crate::config::VmProvider::Lima).await {
        for inst in lima.list_prefixed("sbx-").await.unwrap_or_default() {
            let id = inst.name.trim_start_matches("sbx-");
            if !crate::vm::is_golden(&inst.name)
                && crate::state::valid_id(id)
                && ctx.dirs.session(id).exists()
                && !live_ids.iter().any(|l| l == id)
                && !report.vms_removed.contains(&inst.name)
            {
                lima.delete(&inst.name).await?;
                report.vms_removed.push(inst.name.clone());
            }
        }
    }
    // Session profiles in sbx's own Colima home that are not alive: every profile there is one
    // of this cache's sessions (Colima is not run at all when that home was never made).
    if crate::vm::sbx_colima_home(&ctx.dirs.cache).is_dir()
        && let Ok(lima) = crate::vm::Lima::locate_colima(&ctx.dirs.cache).await
    {
        for profile in lima.colima_session_profiles().await.unwrap_or_default() {
            let id = profile.trim_start_matches("sbx-");
            if crate::state::valid_id(id)
                && !live_ids.iter().any(|l| l == id)
                && !report.vms_removed.contains(&profile)
            {
                lima.colima_delete(&profile).await?;
                report.vms_removed.push(profile);
            }
        }
    }
    // Anything labelled by sbx whose session is not alive (its folder may be gone entirely).
    if let Some(engine) = engine {
        let (containers, networks) = engine.labelled(&ctx.dirs.owner_tag()).await?;
        for c in containers.iter().filter(|c| !live_ids.contains(&c.session)) {
            engine.remove_container(&c.name).await?;
            if !report.containers_removed.contains(&c.name) {
                report.containers_removed.push(c.name.clone());
            }
        }
        for n in networks.iter().filter(|n| !live_ids.contains(&n.session)) {
            engine.remove_network(&n.name).await?;
            if !report.networks_removed.contains(&n.name) {
                report.networks_removed.push(n.name.clone());
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitconfig_has_identity_and_no_signing() {
        let t = gitconfig_text(&worktree::Identity {
            name: Some("Ada \"L\"".into()),
            email: Some("ada@example.com".into()),
            signs_commits: true,
        });
        assert!(t.contains("name = \"Ada \\\"L\\\"\""));
        assert!(t.contains("gpgsign = false"));
        assert!(t.contains("insteadOf = git@github.com:"));
    }
}
