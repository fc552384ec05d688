//! One sandbox session from start to end: plan it (`plan`, pure), make it (checkouts, the
//! placement and its engine, gate and agent containers), run the command behind the self-check,
//! and tear it down whatever happened (normal exit, an error at any step, SIGINT/SIGTERM/SIGHUP).
//! The engine is reached through `EngineApi` and where it runs through `placement::Placement`,
//! so the lifecycle never names a provider. `sbx gc` (`gc`) finishes sessions whose process died,
//! along the same `finish` path.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use futures_util::future::join_all;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::Settings;
use crate::context::Context;
use crate::engine::{Engine, EngineApi, EngineError};
use crate::image;
use crate::keychain::Secret;
use crate::placement::{self, Placement};
use crate::state::{self, Lock, Phase, Record, TokenSource};
use crate::worktree::{self, Checkout, Outcome, Repo};

pub mod finish;
mod gc;
pub mod plan;
#[cfg(test)]
mod tests;
mod timings;

pub use gc::{GcReport, gc};
pub use plan::{agent_env, exec_env};
pub use timings::Timings;

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
    pub output: crate::engine::attach::Output,
    /// Run the containers in a fresh VM of this provider (`--vm`).
    pub vm: Option<crate::config::VmProvider>,
}

pub struct RunOutcome {
    pub exit_code: i32,
    pub output: Vec<u8>,
    pub session_id: String,
    pub timings: Timings,
}

/// What the teardown must undo; filled in before each thing is made. Also collects the phase
/// timings of concurrent steps.
struct Live<E> {
    engine: Option<E>,
    containers: Vec<String>,
    networks: Vec<String>,
    checkouts: Vec<Checkout>,
    started: Instant,
    timings: Vec<(&'static str, Duration, Duration)>,
}

type Shared<E> = Arc<Mutex<Live<E>>>;

fn with<E, T>(live: &Shared<E>, f: impl FnOnce(&mut Live<E>) -> T) -> T {
    match live.lock() {
        Ok(mut l) => f(&mut l),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}

/// Records a phase from concurrent code (merged into the session's timings at the end).
fn timings_push<E>(live: &Shared<E>, name: &'static str, began: Instant) {
    with(live, |l| {
        let start = l.started;
        l.timings
            .push((name, began.duration_since(start), began.elapsed()));
    });
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

/// Runs one session on the engine its settings name (a VM's, a remote one, the local one).
/// Returns the command's exit code; sbx's own failures are errors.
pub async fn run(ctx: &Context, req: RunRequest) -> anyhow::Result<RunOutcome> {
    let placement = placement::choose(req.vm, &req.endpoint);
    run_on(ctx, req, placement, |endpoint| async move {
        Engine::connect(&endpoint).await
    })
    .await
}

/// Runs one session in `placement`, on the engine `connect` reaches at the endpoint the
/// placement brings up.
pub async fn run_on<E, C, F>(
    ctx: &Context,
    req: RunRequest,
    placement: Arc<dyn Placement>,
    connect: C,
) -> anyhow::Result<RunOutcome>
where
    E: EngineApi,
    C: FnOnce(String) -> F + Send,
    F: std::future::Future<Output = Result<E, EngineError>> + Send,
{
    let t0 = Instant::now();
    let mut timings = Timings::new(t0);
    // A gate started ahead for sessions like this one (`spare`): its id becomes the session's.
    let spare_key = spare_key(ctx, &req, placement.as_ref())?;
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
    let vm = placement.vm(&id);
    let mut record = Record {
        id: id.clone(),
        created: state::now(),
        pid: std::process::id(),
        phase: Phase::Running,
        command: req.command.clone(),
        endpoint: req.endpoint.clone(),
        networks: Vec::new(),
        containers: Vec::new(),
        vm: vm.as_ref().map(|(name, _)| name.clone()),
        vm_provider: vm.map(|(_, p)| format!("{p:?}").to_lowercase()),
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
    let live: Shared<E> = Arc::new(Mutex::new(Live {
        engine: None,
        containers: Vec::new(),
        networks: Vec::new(),
        checkouts: Vec::new(),
        started: t0,
        timings: Vec::new(),
    }));
    let session = Session {
        ctx,
        req: &req,
        id: &id,
        dir: &dir,
        spare,
        live: &live,
        placement: placement.as_ref(),
    };

    let result = tokio::select! {
        r = session.start_and_exec(connect, &mut record, &mut timings) => r,
        sig = signals.next() => {
            ctx.ui.fresh_line();
            ctx.ui.notice(format!("{} received, stopping the session", signal_name(sig)));
            Ok((crate::exit::ExitStatus::Signal(sig).code(), Vec::new()))
        }
    };
    // Whatever the command left on its last line, sbx's own lines start on a fresh one.
    ctx.ui.fresh_line();

    let began = Instant::now();
    let (outcomes, leftover) = tokio::select! {
        o = teardown(&id, &live, placement.as_ref(), req.keep, spare_key.is_some()) => o,
        sig = signals.next() => {
            ctx.ui.warn(format!(
                "{} received again: leaving the rest of the cleanup to `sbx gc`",
                signal_name(sig)
            ));
            std::process::exit(crate::exit::ExitStatus::Signal(sig).code());
        }
    };
    timings.record("teardown", began);
    // Phases teardown measured itself (the VM's deletion).
    with(&live, |l| timings.phases.append(&mut l.timings));
    record.exit_code = result.as_ref().ok().map(|r| r.0);
    let _ = finish::record(ctx, &dir, &mut record, outcomes);
    let summary = record_audit(&dir, &record).summary();
    if !summary.is_empty() {
        ctx.ui.info(format!(
            "{}\n  the full record: `sbx log {id}`",
            summary.render()
        ));
    }
    report_outcomes(&ctx.ui, &record.outcomes);
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
fn spare_key(
    ctx: &Context,
    req: &RunRequest,
    placement: &dyn Placement,
) -> anyhow::Result<Option<crate::spare::Key>> {
    let s = &req.settings;
    if !s.spare || !placement.spare() {
        return Ok(None);
    }
    Ok(Some(crate::spare::Key {
        endpoint: req.endpoint.clone(),
        image: image::gate_image(s)?.tag,
        network: s
            .network
            .clone()
            .unwrap_or_else(|| crate::container::SHARED_NETWORK.to_owned()),
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
    let logs = crate::container::log_dir(dir);
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
    audit.mark_selfcheck(&plan::selfcheck_name(&record.id), record.probe.as_deref());
    audit
}

/// Tells the user where their work is.
pub fn report_outcomes(ui: &crate::progress::Ui, outcomes: &[Outcome]) {
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

/// Refuses a `--network` that does not exist or is one of Docker's own.
pub async fn check_user_network<E: EngineApi>(engine: &E, network: &str) -> anyhow::Result<()> {
    match engine.network_driver(network).await? {
        None => Err(crate::error::hinted(
            format!("the network `{network}` does not exist"),
            format!("create it with `docker network create {network}`, or drop `--network`"),
        )),
        Some(_) if ["bridge", "host", "none"].contains(&network) => Err(crate::error::hinted(
            format!("sbx cannot use Docker's `{network}` network: it needs a user-defined network"),
            "`docker network create NAME`, then `--network NAME`",
        )),
        Some(_) => Ok(()),
    }
}

/// A session being made: what every step needs.
struct Session<'a, E> {
    ctx: &'a Context,
    req: &'a RunRequest,
    id: &'a str,
    dir: &'a Path,
    /// The session claimed a gate started ahead.
    spare: bool,
    live: &'a Shared<E>,
    placement: &'a dyn Placement,
}

/// What the engine side of the start leaves for the rest.
struct EngineUp<E> {
    engine: E,
    facts: plan::EngineFacts,
    /// The fresh gate's output (`None`: a spare gate already runs).
    gate_output: Option<crate::engine::OutputStream>,
}

impl<E: EngineApi> Session<'_, E> {
    fn phase(&self, name: &'static str, began: Instant) {
        timings_push(self.live, name, began);
    }

    /// Decides the session from its request and what this machine says.
    fn plan(&self, specs: &[image::ImageSpec]) -> anyhow::Result<plan::SessionPlan> {
        let tty = crate::terminal::stdin_is_tty() && crate::terminal::stdout_is_tty();
        plan::plan(&plan::Request {
            id: self.id,
            dir: self.dir,
            owner: &self.ctx.dirs.owner_tag(),
            settings: &self.req.settings,
            repos: &self.req.repos,
            identity: self
                .req
                .repos
                .first()
                .map(worktree::identity)
                .unwrap_or_default(),
            command: &self.req.command,
            secrets: &self.req.secrets,
            ids: crate::hostids::agent_ids()?,
            as_root: rustix::process::getuid().is_root(),
            gate_image: image::tag_of(specs, "gate"),
            agent_image: image::tag_of(specs, "sandbox"),
            terminal: tty.then(crate::terminal::size),
            term: &crate::terminal::term(),
        })
    }

    async fn start_and_exec<C, F>(
        &self,
        connect: C,
        record: &mut Record,
        timings: &mut Timings,
    ) -> anyhow::Result<(i32, Vec<u8>)>
    where
        C: FnOnce(String) -> F + Send,
        F: std::future::Future<Output = Result<E, EngineError>> + Send,
    {
        let (ctx, dir) = (self.ctx, self.dir);
        let specs = image::specs(&self.req.settings)?;
        let plan = self.plan(&specs)?;
        crate::gate::write(dir, &plan.files)?;
        for n in &plan.notes {
            ctx.ui.info(n);
        }
        let (agent_name, gate_name) = (plan.agent_name.clone(), plan.gate.name.clone());
        with(self.live, |l| {
            l.containers.push(agent_name.clone());
            l.containers.push(gate_name.clone());
            l.checkouts = plan.checkouts.clone();
        });
        // Recorded before anything exists, so a crash at any point leaves a record `sbx gc`
        // can finish.
        record.containers = vec![agent_name.clone(), gate_name.clone()];
        record.checkouts = plan.checkouts.clone();
        record.save(dir)?;

        // Two things run in parallel: the engine side (placement, connect, images, network,
        // then the gate, which needs nothing of the checkouts) and the checkouts.
        let mounts = self.placement.mounts(dir, &plan.checkouts)?;
        let mut planned = plan.checkouts.clone();
        let checkout_side = async {
            let began = Instant::now();
            let made = join_all(planned.iter_mut().map(|c| worktree::create(c, plan.chown))).await;
            with(self.live, |l| l.checkouts = planned.clone());
            made.into_iter().collect::<Result<Vec<()>, _>>()?;
            self.phase("worktrees", began);
            Ok::<_, anyhow::Error>(planned)
        };
        let (up, checkouts) = tokio::try_join!(
            self.engine_side(connect, &plan, &specs, &mounts),
            checkout_side
        )?;
        let EngineUp {
            engine,
            facts,
            gate_output,
        } = up;
        record.checkouts = checkouts.clone();
        record.save(dir)?;

        if let Some(claude) = &plan.claude {
            // The agent's Claude configuration: a copy in the session folder (see `claude`).
            let prepared = crate::claude::prepare(
                &crate::claude::HostConfig::from_env(&ctx.dirs.home),
                dir,
                &claude.workspaces,
                plan.chown,
            )?;
            for n in prepared.notes {
                ctx.ui.info(n);
            }
            record.claude_login = Some(prepared.login_fingerprint);
            record.save(dir)?;
        }
        let launch = plan.launch(&facts, &checkouts)?;
        for w in &launch.warnings {
            ctx.ui.warn(w);
        }
        if let Some(caches) = &plan.caches {
            let began = Instant::now();
            crate::caches::prepare(&engine, caches, plan.ids, image::tag_of(&specs, "gate"))
                .await?;
            self.phase("caches", began);
        }
        self.start_agent(&engine, &launch.agent, gate_output)
            .await?;

        let began = Instant::now();
        record.exec =
            Some(plan.exec_context(self.req.secrets.iter().map(|(t, _)| t.clone()).collect()));
        record.save(dir)?;
        record.probe = Some(launch.probe.to_string());
        let spec = launch.exec_spec();
        let recorder = self.recorder(spec.size);
        // Every line sbx printed is finished before the command's output starts.
        ctx.ui.fresh_line();
        let result = engine
            .exec_attached(&launch.agent.name, spec, self.req.output, recorder)
            .await?;
        timings.first_output = result
            .first_output
            .map(|f| f.duration_since(timings.start()));
        self.phase("exec", began);
        with(self.live, |l| timings.phases.append(&mut l.timings));
        Ok((i32::try_from(result.code).unwrap_or(255), result.captured))
    }

    /// The placement brought up, the engine connected, its images and network ready, and the
    /// gate created (or a spare gate found running).
    async fn engine_side<C, F>(
        &self,
        connect: C,
        plan: &plan::SessionPlan,
        specs: &[image::ImageSpec],
        mounts: &[crate::vm::VmMount],
    ) -> anyhow::Result<EngineUp<E>>
    where
        C: FnOnce(String) -> F + Send,
        F: std::future::Future<Output = Result<E, EngineError>> + Send,
    {
        let ctx = self.ctx;
        let phase = |n, began| timings_push(self.live, n, began);
        let endpoint = self
            .placement
            .bring_up(placement::Up {
                ctx,
                id: self.id,
                dir: self.dir,
                settings: &self.req.settings,
                mounts,
                phase: &phase,
            })
            .await?;
        let began = Instant::now();
        let engine = connect(endpoint.clone()).await?;
        with(self.live, |l| l.engine = Some(engine.clone()));
        self.phase("engine connect", began);
        let began = Instant::now();
        let network = async {
            match &self.req.settings.network {
                Some(n) => {
                    check_user_network(&engine, n).await?;
                    Ok::<_, anyhow::Error>(n.clone())
                }
                None => Ok(engine
                    .ensure_network(
                        crate::container::SHARED_NETWORK,
                        &crate::container::labels("shared", "", "network"),
                    )
                    .await?),
            }
        };
        let images = self.images(&engine, &endpoint, specs, mounts);
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
        self.phase("network", began);
        let facts = plan::EngineFacts {
            cpus: capacity.cpus,
            memory: capacity.memory,
            gateway: engine.network_gateway(&network).await?,
        };
        let gate = &plan.gate;
        let began = Instant::now();
        if self.spare {
            // A spare gate that no longer runs (the engine restarted, `sbx gc` took it) is
            // replaced by a new one, as if there had been no spare.
            if engine.is_running(&gate.name).await? {
                self.phase("spare gate check", began);
                return Ok(EngineUp {
                    engine,
                    facts,
                    gate_output: None,
                });
            }
            engine.remove_container(&gate.name).await?;
        }
        engine.create_container(gate).await?;
        let output = engine.output(&gate.name).await?;
        self.phase("gate create", began);
        Ok(EngineUp {
            engine,
            facts,
            gate_output: Some(output),
        })
    }

    /// The session's images up to date on its engine; for an engine that starts empty (a
    /// Colima profile), through the placement's image cache.
    async fn images(
        &self,
        engine: &E,
        endpoint: &str,
        specs: &[image::ImageSpec],
        mounts: &[crate::vm::VmMount],
    ) -> anyhow::Result<()> {
        let ctx = self.ctx;
        let cache = self.placement.image_cache(ctx, mounts);
        // The cache saves and loads image archives: the real engine's calls, not the session's.
        let docker = match &cache {
            Some(_) => Some(Engine::connect(endpoint).await?),
            None => None,
        };
        if let (Some(cache), Some(docker)) = (&cache, &docker) {
            let began = Instant::now();
            match cache.restore(docker, specs).await {
                Ok(true) => {
                    ctx.ui.info(
                        "loaded the images an earlier Colima session saved (their fingerprints match): nothing to build",
                    );
                    self.phase("image cache load", began);
                }
                Ok(false) => {}
                Err(e) => ctx.ui.warn(format!(
                    "could not use the saved images: {:#}; building them instead",
                    anyhow::Error::new(e)
                )),
            }
        }
        let began = Instant::now();
        let built = crate::imagebuild::ensure(&ctx.ui, engine, specs).await?;
        self.phase(if built { "image build" } else { "image check" }, began);
        if let (Some(cache), Some(docker), true) = (&cache, &docker, built) {
            // Saved now, while the fresh VM's engine holds only what sbx just built: nothing
            // of the session has run there yet. Once the agent runs, whatever it does in its
            // VM must not reach the next session's images (the gate's included).
            let began = Instant::now();
            match cache.store(docker, specs).await {
                Ok(path) => ctx.ui.info(format!(
                    "saved the images for the next Colima sessions in `{}`",
                    path.display()
                )),
                Err(e) => ctx.ui.warn(format!(
                    "could not save the images for the next Colima sessions: {:#}",
                    anyhow::Error::new(e)
                )),
            }
            self.phase("image cache save", began);
        }
        Ok(())
    }

    /// Starts the gate and the agent. The agent is created while the gate starts (it only
    /// needs the gate to exist), but started only once the gate reports the firewall loaded:
    /// until then the namespace is open, and whatever the agent's image runs at start (its
    /// `sleep`, in a custom image) would be too.
    async fn start_agent(
        &self,
        engine: &E,
        agent: &crate::container::ContainerSpec,
        gate_output: Option<crate::engine::OutputStream>,
    ) -> anyhow::Result<()> {
        let gate_name = crate::container::gate_name(self.id);
        let began = Instant::now();
        match gate_output {
            Some(output) => {
                let (gate_started, agent_created) = tokio::join!(
                    engine.start_container(&gate_name),
                    engine.create_container(agent)
                );
                gate_started?;
                agent_created?;
                self.phase("gate start", began);
                let began = Instant::now();
                crate::gate::wait_for_gate(output).await?;
                self.phase("firewall apply", began);
                let began = Instant::now();
                engine.start_container(&agent.name).await?;
                self.phase("agent start", began);
            }
            None => {
                // A spare gate denies everything until it reloads: the agent may start
                // meanwhile, and nothing of it (its image's start-up included) gets out before
                // this session's own plan is in place. The command waits for the reload.
                let reload = async {
                    let began = Instant::now();
                    let r = crate::gate::reload(engine, &gate_name).await;
                    self.phase("spare gate reload", began);
                    r
                };
                let agent_up = async {
                    engine.create_container(agent).await?;
                    self.phase("agent create", began);
                    let began = Instant::now();
                    engine.start_container(&agent.name).await?;
                    self.phase("agent start", began);
                    Ok::<_, anyhow::Error>(())
                };
                let (reloaded, started) = tokio::join!(reload, agent_up);
                started?;
                reloaded.context("the gate started ahead could not load this session's plan")?;
            }
        }
        Ok(())
    }

    /// The terminal record (`sbx log --replay`), when it is on and can be made.
    fn recorder(&self, size: Option<(u16, u16)>) -> Option<crate::cast::Recorder> {
        if !self.req.settings.record {
            return None;
        }
        match crate::cast::Recorder::create(
            &crate::cast::path(self.dir),
            size.unwrap_or((24, 80)),
            &format!("sbx session {}", self.id),
        ) {
            Ok(r) => Some(r),
            Err(e) => {
                self.ctx
                    .ui
                    .warn(format!("the session's terminal is not recorded: {e}"));
                None
            }
        }
    }
}

/// Undoes the session: its containers, then its checkouts (finished only once the agent is
/// stopped, so nothing of it writes there after), networks and the placement (a VM). With
/// `defer`, the containers are only stopped (the agent, at once) and their names returned: a
/// helper that outlives sbx removes them (`spare`), and `sbx gc` does if it cannot; nothing of
/// the session runs meanwhile. Idempotent.
async fn teardown<E: EngineApi>(
    id: &str,
    live: &Shared<E>,
    placement: &dyn Placement,
    keep: bool,
    defer: bool,
) -> (Vec<Outcome>, Vec<String>) {
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
    let limit = Duration::from_secs(20);
    let remove = |name: String| {
        let engine = engine.clone();
        async move {
            if let Some(engine) = engine {
                let _ = tokio::time::timeout(limit, engine.remove_container(&name)).await;
            }
        }
    };
    let stop = |name: String| {
        let engine = engine.clone();
        async move {
            if let Some(engine) = engine {
                // `docker kill` returns once the container no longer runs.
                let stopped = tokio::time::timeout(limit, engine.kill_container(&name)).await;
                if !matches!(stopped, Ok(Ok(()))) {
                    let _ = tokio::time::timeout(limit, engine.remove_container(&name)).await;
                }
            }
        }
    };
    let mut names = containers.into_iter();
    let agent = names.next();
    let others = join_all(names.filter(|_| deferred.is_empty()).map(remove));
    let agent_then_checkouts = async {
        if let Some(a) = agent {
            if deferred.is_empty() {
                remove(a).await;
            } else {
                stop(a).await;
            }
        }
        finish::checkouts(checkouts, id, keep)
            .await
            .unwrap_or_default()
    };
    let (_, outcomes) = tokio::join!(others, agent_then_checkouts);
    if let Some(engine) = &engine {
        for n in &networks {
            let _ = tokio::time::timeout(limit, engine.remove_network(n)).await;
        }
    }
    placement
        .tear_down(&|n, began| timings_push(live, n, began))
        .await;
    (outcomes, deferred)
}
