//! `sbx doctor`: checks what sbx needs and says what to do about anything missing.

use clap::Args;

use crate::config::{Layer, Settings};
use crate::container::{self, ContainerSpec};
use crate::context::Context;
use crate::engine::{Engine, NetworkSpec};
use crate::exit::ExitStatus;
use crate::leaks;
use crate::process::Cmd;
use crate::session;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Run the thorough egress leak check in a throwaway session (one row per channel; exit
    /// code 1 on any leak).
    #[arg(long)]
    pub leaks: bool,
}

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
    hints: Vec<String>,
}

/// A hint shown only when `needed`.
fn hint_when(needed: bool, hint: &str) -> Vec<String> {
    if needed {
        vec![hint.to_owned()]
    } else {
        Vec::new()
    }
}

pub async fn run(
    ctx: &Context,
    args: DoctorArgs,
    docker_host: Option<String>,
) -> anyhow::Result<ExitStatus> {
    if args.leaks {
        let settings =
            super::load_settings(ctx, super::project_root().as_deref(), Layer::default())?;
        let endpoint = super::endpoint(ctx, &settings, docker_host);
        return leaks(ctx, settings, &endpoint).await;
    }
    let mut checks = Vec::new();
    let settings = super::load_settings(ctx, super::project_root().as_deref(), Layer::default());
    checks.push(match &settings {
        Ok(_) => Check {
            name: "settings",
            ok: true,
            detail: "valid".into(),
            hints: Vec::new(),
        },
        Err(e) => Check {
            name: "settings",
            ok: false,
            detail: format!("{e:#}"),
            hints: crate::hints::hints(e.as_ref()),
        },
    });
    let settings = settings.unwrap_or_default();
    checks.push(match Cmd::new("git").arg("--version").run().await {
        Ok(v) => Check {
            name: "git",
            ok: true,
            detail: v.trim().to_owned(),
            hints: Vec::new(),
        },
        Err(e) => Check {
            name: "git",
            ok: false,
            detail: e.to_string(),
            hints: vec!["install git".into()],
        },
    });
    let endpoint = super::endpoint(ctx, &settings, docker_host);
    match Engine::connect(&endpoint).await {
        Ok(engine) => {
            let version = engine.version().await.unwrap_or_default();
            checks.push(Check {
                name: "engine",
                ok: true,
                detail: format!("Docker {version} at {endpoint}"),
                hints: Vec::new(),
            });
            match crate::image::specs(&settings) {
                Ok(specs) => {
                    for s in specs {
                        let fp = engine.image_fingerprint(&s.tag).await.ok().flatten();
                        let (ok, detail) = match fp {
                            Some(f) if f == s.fingerprint => {
                                (true, format!("`{}` up to date (`{}`)", s.alias, s.tag))
                            }
                            _ => (
                                false,
                                format!("`{}` is not built for these settings", s.alias),
                            ),
                        };
                        let built = ok;
                        checks.push(Check {
                            name: if s.role == "gate" {
                                "gate image"
                            } else {
                                "sandbox image"
                            },
                            ok,
                            detail,
                            hints: hint_when(!ok, "run `sbx setup`"),
                        });
                        if s.role == "sandbox" && built {
                            checks.push(claude_code(&engine, &s.tag, &ctx.dirs.owner_tag()).await);
                        }
                    }
                }
                Err(e) => checks.push(Check {
                    name: "images",
                    ok: false,
                    detail: e.to_string(),
                    hints: crate::hints::hints(&e),
                }),
            }
        }
        Err(e) => checks.push(Check {
            name: "engine",
            ok: false,
            detail: e.to_string(),
            hints: crate::hints::hints(&e),
        }),
    }
    let vm = match crate::vm::Lima::locate(&ctx.dirs, settings.vm.provider).await {
        Ok(lima) if lima.colima.is_some() => Check {
            name: "vm mode",
            ok: true,
            detail: format!(
                "Colima found; each session boots its own profile in `{}`",
                lima.colima
                    .as_ref()
                    .map(|c| c.home.display().to_string())
                    .unwrap_or_default()
            ),
            hints: Vec::new(),
        },
        Ok(lima) => {
            let golden = crate::placement::golden::current(&lima, &settings)
                .await
                .ok()
                .flatten()
                .is_some();
            Check {
                name: "vm mode",
                ok: true,
                detail: if golden {
                    "Lima found; golden VM prepared".into()
                } else {
                    "Lima found; no golden VM yet".into()
                },
                hints: hint_when(!golden, "run `sbx setup --vm` before `sbx run --vm`"),
            }
        }
        Err(e) => Check {
            name: "vm mode",
            ok: false,
            detail: format!("unavailable ({e})"),
            hints: crate::hints::hints(&e),
        },
    };
    let cache = ctx.dirs.sessions();
    let writable = crate::state::create_private_dir(&cache).is_ok();
    checks.push(Check {
        name: "session folder",
        ok: writable,
        detail: cache.display().to_string(),
        hints: hint_when(
            !writable,
            "make the folder writable, or set `XDG_CACHE_HOME`",
        ),
    });

    let print = |c: &Check, status: &str| {
        // Details quote errors that may carry a repository's or the agent's bytes.
        let p = crate::text::printable_lines;
        println!("{status:<4} {:<15} {}", c.name, p(&c.detail));
        for h in &c.hints {
            println!("     {:<15} hint: {}", "", p(h));
        }
    };
    let mut failed = 0;
    for c in &checks {
        print(c, if c.ok { "ok" } else { "FAIL" });
        failed += usize::from(!c.ok);
    }
    // VM mode is optional: its row informs and never fails the check.
    print(&vm, if vm.ok { "ok" } else { "--" });
    Ok(if failed == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Problem
    })
}

/// Which Claude Code the sandbox image has; informs, never fails (a custom image may have none).
async fn claude_code(engine: &Engine, tag: &str, owner: &str) -> Check {
    let detail = match crate::claude::image_version(engine, tag, owner).await {
        Some(v) => format!("{v} in `{tag}` (self-updater off inside)"),
        None => format!("none that answers `claude --version` in `{tag}`"),
    };
    Check {
        name: "claude code",
        ok: true,
        detail,
        hints: vec!["`sbx setup --update` rebuilds the image with the newest release".into()],
    }
}

/// `sbx doctor --leaks`: see the `leaks` module.
async fn leaks(ctx: &Context, settings: Settings, endpoint: &str) -> anyhow::Result<ExitStatus> {
    let engine = Engine::connect(endpoint).await?;
    crate::imagebuild::ensure(&ctx.ui, &engine, &crate::image::specs(&settings)?).await?;
    let tag = crate::state::new_id();
    let net = format!("sbx-doctor-{tag}");
    let target = format!("{net}-target");
    let labels = container::labels(&format!("doctor-{tag}"), &ctx.dirs.owner_tag(), "doctor");
    let mut spec = NetworkSpec {
        name: net.clone(),
        labels: labels.clone(),
        isolate_containers: false,
        // Nothing on this network has a route off the machine, whatever the firewall does.
        internal: true,
        ipv6_subnet: Some(format!("fd00:5b0:{}::/64", &tag[..4])),
    };
    if engine.create_network_with(&spec).await.is_err() {
        spec.ipv6_subnet = None;
        engine.create_network_with(&spec).await?;
    }
    let throwaway = Throwaway {
        tag: tag.clone(),
        net: net.clone(),
        target: target.clone(),
        labels,
    };
    let result = leaks_on(ctx, &settings, &engine, endpoint, &throwaway).await;
    let _ = engine.remove_container(&target).await;
    let _ = engine.remove_network(&net).await;
    result
}

/// The leak check's own network and target host, removed by the caller whatever happens.
struct Throwaway {
    tag: String,
    net: String,
    target: String,
    labels: std::collections::BTreeMap<String, String>,
}

async fn leaks_on(
    ctx: &Context,
    settings: &Settings,
    engine: &Engine,
    endpoint: &str,
    throwaway: &Throwaway,
) -> anyhow::Result<ExitStatus> {
    let (tag, net, target) = (
        throwaway.tag.as_str(),
        throwaway.net.as_str(),
        throwaway.target.as_str(),
    );
    let labels = throwaway.labels.clone();
    let spec = ContainerSpec {
        name: target.to_owned(),
        image: crate::image::agent_image(settings)?.tag,
        user: "0:0".into(),
        cmd: vec!["python3".into(), "-c".into(), leaks::TARGET_SCRIPT.into()],
        labels,
        mounts: Vec::new(),
        // The engine's default capabilities: NET_RAW records ICMP.
        cap_add: Vec::new(),
        cap_drop: Vec::new(),
        security_opt: vec!["no-new-privileges:true".into()],
        network_mode: net.to_owned(),
        aliases: vec![leaks::ALLOWED_NAME.into()],
        memory: Some(256 << 20),
        nano_cpus: Some(500_000_000),
        pids_limit: 64,
        init: true,
        ..Default::default()
    };
    engine.create_container(&spec).await?;
    engine.start_container(target).await?;
    let mut ready = false;
    for _ in 0..200 {
        if engine.logs(target).await?.contains("ready") {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::ensure!(ready, "the leak check's target host did not start");
    let (Some(target4), target6) = engine.container_ips(target, net).await? else {
        anyhow::bail!("the leak check's target host has no IPv4 address");
    };
    let gateway = engine
        .network_gateway(net)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the leak check's network has no gateway"))?;
    let private = match gateway {
        std::net::IpAddr::V4(g) => {
            let o = g.octets();
            std::net::IpAddr::from([o[0], o[1], o[2], 250])
        }
        other => other,
    };
    let cfg = leaks::ProbeConfig {
        tag: tag.to_owned(),
        target4,
        target6,
        gateway,
        private,
    };

    let repo_dir = super::throwaway_repo("sbx-doctor-").await?;
    let mut s = settings.clone();
    s.network = Some(net.to_owned());
    s.default_allowlist = false;
    s.allow = vec![
        leaks::ALLOWED_NAME.into(),
        leaks::UPSTREAM_NAME.into(),
        leaks::SPOOF_NAME.into(),
    ];
    s.dns = vec![target4];
    s.claude.config = crate::config::ClaudeConfig::None;
    s.git.mode = crate::config::GitMode::Isolated;
    s.record = false;
    s.caches = false;
    let req = session::RunRequest {
        settings: s,
        repos: vec![crate::worktree::discover(repo_dir.path())?],
        command: vec![
            "python3".into(),
            "-c".into(),
            leaks::PROBE_SCRIPT.into(),
            serde_json::to_string(&cfg)?,
        ],
        keep: false,
        secrets: Vec::new(),
        endpoint: endpoint.to_owned(),
        output: crate::engine::attach::Output::Capture,
        vm: None,
    };
    ctx.ui.info("running the leak check in a throwaway session");
    let quiet = Context {
        dirs: ctx.dirs.clone(),
        ui: crate::progress::Ui::new(true),
    };
    let outcome = session::run(&quiet, req).await?;
    let evidence = leaks::Evidence {
        probe: leaks::parse_probe(&String::from_utf8_lossy(&outcome.output)),
        target: engine
            .logs(target)
            .await?
            .lines()
            .map(str::to_owned)
            .collect(),
        refused: session::read_audit(&ctx.dirs.session(&outcome.session_id)).refused,
    };
    let rows = leaks::judge(&cfg, &evidence);
    print!("{}", leaks::render(&rows));
    let leaked = rows.iter().filter(|r| !r.ok).count();
    if leaked > 0 {
        ctx.ui.warn(format!(
            "{leaked} channel(s) failed; the session's record: `sbx log {}`",
            outcome.session_id
        ));
        Ok(ExitStatus::Problem)
    } else {
        ctx.ui.info("no leaks");
        Ok(ExitStatus::Success)
    }
}
