//! Everything a session decides before it makes anything, as pure functions: the gate's and the
//! agent's container specs, the checkouts, the files the containers mount, the Claude
//! configuration decision, the package caches, the command's exec (argv, environment with the
//! tokens kept as secrets, user, folder) and the resources clamped to the engine. The session
//! module only performs what the plan says; the plan is snapshot-tested like the firewall's.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::{ClaudeConfig, GitMode, Settings};
use crate::container::{self, ContainerSpec, GateInputs, Inputs};
use crate::engine::ExecSpec;
use crate::gate::{self, File};
use crate::keychain::Secret;
use crate::state::{ExecContext, TokenSource};
use crate::worktree::{self, Checkout, Identity, Repo};

/// What a session is asked to be, with the facts read from this machine that the plan needs.
pub struct Request<'a> {
    pub id: &'a str,
    /// The session folder.
    pub dir: &'a Path,
    /// This HOME's owner tag (labels; `sbx gc` removes only its own).
    pub owner: &'a str,
    pub settings: &'a Settings,
    pub repos: &'a [Repo],
    /// The primary repository's git identity (what the sandbox commits as).
    pub identity: Identity,
    pub command: &'a [String],
    pub secrets: &'a [(TokenSource, Secret)],
    /// The ids the agent runs as.
    pub ids: (u32, u32),
    /// sbx runs as root (then what the agent writes is handed to its ids).
    pub as_root: bool,
    pub gate_image: &'a str,
    pub agent_image: &'a str,
    /// `Some` when both stdin and stdout are a terminal, with its size when known.
    pub terminal: Option<Option<(u16, u16)>>,
    /// The terminal type a TTY exec gets (`TERM`).
    pub term: &'a str,
}

/// The agent's Claude configuration: a copy in the session folder, mounted as its `~/.claude`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaudePlan {
    pub copy: PathBuf,
    /// The folders the agent works in, which the copy trusts.
    pub workspaces: Vec<String>,
}

/// The command's exec, tokens kept as secrets until the moment it starts.
#[derive(Debug, Clone)]
pub struct ExecPlan {
    pub user: String,
    pub working_dir: String,
    /// `KEY=value`, no tokens.
    pub env: Vec<String>,
    /// `(variable, token)`.
    pub secrets: Vec<(String, Secret)>,
    pub tty: bool,
    pub size: Option<(u16, u16)>,
    pub command: Vec<String>,
    /// The name the start-up self-check looks up (it must not resolve).
    pub selfcheck_name: String,
}

/// The session, decided.
#[derive(Debug, Clone)]
pub struct SessionPlan {
    pub gate_inputs: GateInputs,
    pub gate: ContainerSpec,
    pub agent_name: String,
    /// Planned before anything exists, so a crash at any point leaves a record `sbx gc` can
    /// finish.
    pub checkouts: Vec<Checkout>,
    /// The checkouts' and the Claude copy's owner when sbx runs as root.
    pub chown: Option<(u32, u32)>,
    pub files: Vec<File>,
    /// Things to tell the user before the command starts.
    pub notes: Vec<String>,
    pub claude: Option<ClaudePlan>,
    pub caches: Option<crate::caches::Plan>,
    pub exec: ExecPlan,
    pub cpus: Option<f64>,
    pub memory: Option<u64>,
    pub pids: i64,
    pub agent_image: String,
    pub ids: (u32, u32),
}

/// What the engine told the session about itself.
#[derive(Debug, Clone, Copy)]
pub struct EngineFacts {
    pub cpus: u32,
    pub memory: u64,
    /// The session network's IPv4 gateway: the self-check probes it.
    pub gateway: Option<IpAddr>,
}

/// The agent as it starts, once the engine is known and the checkouts are made.
#[derive(Debug, Clone)]
pub struct Launch {
    pub agent: ContainerSpec,
    pub exec: ExecPlan,
    /// The self-check's argv before the command's own.
    pub selfcheck: Vec<String>,
    pub probe: IpAddr,
    pub warnings: Vec<String>,
}

/// Decides the session.
pub fn plan(req: &Request) -> anyhow::Result<SessionPlan> {
    let s = req.settings;
    if s.git.mode == GitMode::Worktree && req.as_root {
        return Err(crate::error::hinted(
            "`git.mode: worktree` cannot work when sbx runs as root: the agent never runs as root, so it could not write your `.git`",
            "use `git.mode: isolated` (the default), or run sbx as your own user",
        ));
    }
    let (uid, gid) = req.ids;
    let gate_inputs = GateInputs {
        session_id: req.id.to_owned(),
        owner: req.owner.to_owned(),
        image: req.gate_image.to_owned(),
        network: s
            .network
            .clone()
            .unwrap_or_else(|| container::SHARED_NETWORK.to_owned()),
        session_dir: req.dir.to_owned(),
        dns: s.dns.clone(),
        spare_for: None,
    };
    let names = worktree::mount_names(req.repos);
    let checkouts: Vec<Checkout> = req
        .repos
        .iter()
        .zip(&names)
        .map(|(repo, name)| {
            Checkout::plan(repo, name, &req.dir.join("repos").join(name), s.git.mode)
        })
        .collect();
    let workspaces: Vec<String> = names.iter().map(|n| format!("/workspace/{n}")).collect();
    let working_dir = workspaces
        .first()
        .cloned()
        .unwrap_or_else(|| "/workspace".into());
    let mut files = gate::files(req.dir, &s.allowlist()?);
    files.extend(gate::log_files(req.dir));
    files.extend([
        File {
            path: container::gitconfig_path(req.dir),
            text: gitconfig_text(&req.identity),
            mode: 0o644,
        },
        File {
            path: container::passwd_path(req.dir),
            text: container::passwd(uid, gid),
            mode: 0o644,
        },
        File {
            path: container::group_path(req.dir),
            text: container::group(gid),
            mode: 0o644,
        },
    ]);
    let mut notes = Vec::new();
    if req.identity.signs_commits {
        notes.push(
            "commit signing is off inside the sandbox (your signing key stays on the host)".into(),
        );
    }
    let claude = (s.claude.config == ClaudeConfig::Mount).then(|| ClaudePlan {
        copy: crate::claude::session_copy(req.dir),
        workspaces: workspaces.clone(),
    });
    let caches = match req.repos.first() {
        Some(primary) if s.caches => {
            Some(crate::caches::plan(req.owner, &primary.common_dir, req.ids))
        }
        _ => None,
    };
    let mut env = agent_env(req.id, claude.is_some());
    if let Some(plan) = &caches {
        // The start-up script links the caches into the home (a fresh in-memory folder).
        env.push(format!("SBX_CACHE_LINKS={}", plan.links));
    }
    let tty = req.terminal.is_some();
    if tty {
        env.push(format!("TERM={}", req.term));
    }
    let exec = ExecPlan {
        user: format!("{uid}:{gid}"),
        working_dir,
        env,
        secrets: req
            .secrets
            .iter()
            .map(|(t, v)| (t.env.clone(), v.clone()))
            .collect(),
        tty,
        size: req.terminal.flatten(),
        command: req.command.to_vec(),
        selfcheck_name: selfcheck_name(req.id),
    };
    Ok(SessionPlan {
        gate: container::gate(&gate_inputs),
        agent_name: container::agent_name(req.id),
        gate_inputs,
        checkouts,
        chown: req.as_root.then_some(req.ids),
        files,
        notes,
        claude,
        caches,
        exec,
        cpus: s.resources.cpus,
        memory: s.resources.memory,
        pids: s.resources.pids,
        agent_image: req.agent_image.to_owned(),
        ids: req.ids,
    })
}

impl SessionPlan {
    /// What `sbx exec` needs to run a second command the same way.
    pub fn exec_context(&self, tokens: Vec<TokenSource>) -> ExecContext {
        ExecContext {
            user: self.exec.user.clone(),
            working_dir: self.exec.working_dir.clone(),
            claude: self.claude.is_some(),
            tokens,
        }
    }

    /// The agent's container and the command's start, for this engine and the checkouts as
    /// made (their mounts are known once they exist).
    pub fn launch(&self, engine: &EngineFacts, checkouts: &[Checkout]) -> anyhow::Result<Launch> {
        let mut warnings = Vec::new();
        if let Some(c) = self.cpus.filter(|c| *c > f64::from(engine.cpus)) {
            warnings.push(format!(
                "`resources.cpus` is {c} but the engine has {n}; using {n}",
                n = engine.cpus
            ));
        }
        let inputs = Inputs {
            caches: self
                .caches
                .as_ref()
                .map(|p| {
                    p.volumes
                        .iter()
                        .map(|(v, at, _)| (v.clone(), at.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            gate: self.gate_inputs.clone(),
            agent_image: self.agent_image.clone(),
            uid: self.ids.0,
            gid: self.ids.1,
            mounts: checkouts.iter().flat_map(|c| c.mounts.clone()).collect(),
            claude: self.claude.as_ref().map(|c| c.copy.clone()),
            cpus: container::cpus(self.cpus, engine.cpus),
            memory: container::memory(self.memory, engine.memory),
            pids: self.pids,
            working_dir: self.exec.working_dir.clone(),
        };
        // The command starts behind the self-check, in the same exec: from the attacker's side,
        // as the agent, it proves the firewall holds (and stops the session when it does not).
        let Some(probe) = engine.gateway else {
            anyhow::bail!(
                "the session network has no IPv4 gateway to run the firewall self-check against"
            );
        };
        let selfcheck = vec![
            "bash".to_owned(),
            "-c".into(),
            crate::image::SELFCHECK.into(),
            "sbx-selfcheck".into(),
            probe.to_string(),
            self.exec.selfcheck_name.clone(),
            "--".into(),
        ];
        Ok(Launch {
            agent: container::agent(&inputs),
            exec: self.exec.clone(),
            selfcheck,
            probe,
            warnings,
        })
    }
}

impl Launch {
    /// The engine's exec: the self-check, then the command, with the tokens in its environment
    /// (exec environment is not the container's configuration: `docker inspect` never shows it).
    pub fn exec_spec(&self) -> ExecSpec {
        let mut cmd = self.selfcheck.clone();
        cmd.extend(self.exec.command.iter().cloned());
        // `TERM` is in the planned environment already (the plan knows the terminal).
        let env = exec_env(
            self.exec.env.clone(),
            false,
            self.exec.secrets.iter().map(|(k, v)| (k.as_str(), v)),
        );
        ExecSpec {
            cmd,
            user: self.exec.user.clone(),
            env,
            working_dir: Some(self.exec.working_dir.clone()),
            tty: self.exec.tty,
            stdin: true,
            size: self.exec.size,
        }
    }
}

/// The name the start-up self-check looks up (it must not resolve).
pub fn selfcheck_name(id: &str) -> String {
    format!("sbx-selfcheck-{id}.invalid")
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

/// The system git config inside the sandbox: the user's identity, GitHub over HTTPS with `gh` as
/// the credential helper (so a `GH_TOKEN` is all `git push` needs), and every folder trusted
/// (checkouts may belong to another uid when sbx runs as root).
pub fn gitconfig_text(id: &Identity) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> Repo {
        Repo {
            root: "/home/u/code/app".into(),
            common_dir: "/home/u/code/app/.git".into(),
            bare: false,
            head_commit: "0123456789abcdef0123456789abcdef01234567".into(),
            head_branch: Some("main".into()),
            shallow: false,
            has_submodules: false,
            uses_lfs: false,
        }
    }

    fn settings() -> Settings {
        let mut s = Settings {
            caches: true,
            ..Settings::default()
        };
        s.claude.config = ClaudeConfig::Mount;
        s.resources.cpus = Some(8.0);
        s
    }

    fn decided(s: &Settings, as_root: bool) -> anyhow::Result<SessionPlan> {
        let repos = [repo()];
        let secrets = [(
            TokenSource {
                env: "GH_TOKEN".into(),
                stored: Some("github".into()),
            },
            Secret::new("ghp_secret_value".into()),
        )];
        plan(&Request {
            id: "abc123",
            dir: Path::new("/home/u/.cache/sbx/sessions/abc123"),
            owner: "0123456789ab",
            settings: s,
            repos: &repos,
            identity: Identity {
                name: Some("Ada".into()),
                email: Some("ada@example.com".into()),
                signs_commits: true,
            },
            command: &["claude".into(), "--continue".into()],
            secrets: &secrets,
            ids: (1000, 1000),
            as_root,
            gate_image: "sbx-gate:fp-0000000000000001",
            agent_image: "sbx-sandbox:fp-0000000000000002",
            terminal: Some(Some((40, 120))),
            term: "xterm-256color",
        })
    }

    /// The plan with the firewall's files shortened (they have snapshots of their own).
    fn shown(mut p: SessionPlan) -> SessionPlan {
        for f in &mut p.files {
            if f.path
                .starts_with("/home/u/.cache/sbx/sessions/abc123/gate")
                && !f.text.is_empty()
            {
                f.text = format!("<{} bytes: see the firewall snapshots>", f.text.len());
            }
        }
        p
    }

    #[test]
    fn session_plan_snapshot() {
        let p = decided(&settings(), true).unwrap();
        let text = format!("{:#?}", shown(p));
        assert!(
            !text.contains("ghp_secret_value"),
            "a token in the plan's rendering"
        );
        insta::assert_snapshot!(text);
    }

    #[test]
    fn launch_snapshot() {
        let p = decided(&settings(), false).unwrap();
        let mut made = p.checkouts.clone();
        made[0].mounts = vec![
            worktree::Mount {
                host: "/home/u/.cache/sbx/sessions/abc123/repos/app".into(),
                container: "/workspace/app".into(),
                read_only: false,
            },
            worktree::Mount {
                host: "/home/u/code/app/.git/objects".into(),
                container: "/home/u/code/app/.git/objects".into(),
                read_only: true,
            },
        ];
        let facts = EngineFacts {
            cpus: 2,
            memory: 4 << 30,
            gateway: Some(IpAddr::from([172, 30, 0, 1])),
        };
        let launch = p.launch(&facts, &made).unwrap();
        let spec = launch.exec_spec();
        // The token reaches the exec's environment, and only there.
        assert!(spec.env.contains(&"GH_TOKEN=ghp_secret_value".to_owned()));
        let mut shown = launch.clone();
        shown.selfcheck[2] = "<image::SELFCHECK>".into();
        let mut text = format!("{shown:#?}");
        text.push_str(&format!(
            "\nexec argv tail: {:?}",
            &spec.cmd[spec.cmd.len() - 4..]
        ));
        assert!(
            !text.contains("ghp_secret_value"),
            "a token in the launch's rendering"
        );
        insta::assert_snapshot!(text);
        let no_gateway = EngineFacts {
            gateway: None,
            ..facts
        };
        assert!(p.launch(&no_gateway, &made).is_err());
    }

    #[test]
    fn worktree_mode_as_root_is_refused_before_anything_is_made() {
        let mut s = settings();
        s.git.mode = GitMode::Worktree;
        assert!(decided(&s, true).is_err());
        assert!(decided(&s, false).is_ok());
    }

    #[test]
    fn no_terminal_no_term_and_no_claude_no_config_dir() {
        let mut s = settings();
        s.claude.config = ClaudeConfig::None;
        s.caches = false;
        let repos = [repo()];
        let p = plan(&Request {
            id: "abc123",
            dir: Path::new("/s"),
            owner: "o",
            settings: &s,
            repos: &repos,
            identity: Identity::default(),
            command: &[],
            secrets: &[],
            ids: (1, 1),
            as_root: false,
            gate_image: "g",
            agent_image: "a",
            terminal: None,
            term: "xterm",
        })
        .unwrap();
        assert!(!p.exec.tty && p.claude.is_none() && p.caches.is_none() && p.notes.is_empty());
        assert!(
            !p.exec
                .env
                .iter()
                .any(|e| e.starts_with("TERM=") || e.starts_with("CLAUDE_CONFIG_DIR="))
        );
    }

    #[test]
    fn gitconfig_has_identity_and_no_signing() {
        let t = gitconfig_text(&Identity {
            name: Some("Ada \"L\"".into()),
            email: Some("ada@example.com".into()),
            signs_commits: true,
        });
        assert!(t.contains("name = \"Ada \\\"L\\\"\""));
        assert!(t.contains("gpgsign = false"));
        assert!(t.contains("insteadOf = git@github.com:"));
    }
}
