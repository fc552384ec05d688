//! The session's copies of the user's repositories ("checkouts") and what happens to them at the
//! end. Two modes: `isolated` (a per-session repository that borrows the host's objects through a
//! read-only alternate, so nothing of the host's `.git` is writable from inside) and `worktree` (a
//! plain `git worktree`, whose `.git` is shared and writable). At the end, new commits become the
//! host branch `sbx/<session-id>`, clean checkouts are removed and dirty ones kept.
//!
//! Safety rule: after the sandbox has run, a checkout is attacker-controlled data. sbx touches it
//! only through `safefs` (no symbolic link followed, no FIFO opened), never runs or trusts the
//! agent's `.git`, and writes a new one from data it validated before libgit2 opens it; the
//! session's commits reach the host only through `git index-pack --strict`. The git CLI never
//! runs inside a checkout after the session.

mod rebuild;

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::GitMode;
use crate::process::Cmd;
use crate::safefs::{Dir, Kind};
use rebuild::{Head, NewGit, SweepOptions, Swept};

/// A repository of the session, as found on the host.
#[derive(Debug, Clone)]
pub struct Repo {
    /// The working tree's top folder, or the repository folder when bare.
    pub root: PathBuf,
    /// The shared `.git` folder (`git rev-parse --git-common-dir`), absolute.
    pub common_dir: PathBuf,
    pub bare: bool,
    pub head_commit: String,
    /// The branch HEAD points at (short name), `None` when detached.
    pub head_branch: Option<String>,
    pub shallow: bool,
    pub has_submodules: bool,
    pub uses_lfs: bool,
}

/// A bind mount a checkout needs inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub host: PathBuf,
    pub container: PathBuf,
    pub read_only: bool,
}

/// One checkout of a session, as recorded in the session file (so `sbx gc` can finish it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkout {
    /// The folder name under `/workspace`.
    pub name: String,
    pub host_root: PathBuf,
    pub common_dir: PathBuf,
    /// Where the checkout lives on the host (inside the session folder).
    pub path: PathBuf,
    pub mode: GitMode,
    pub start_commit: String,
    pub start_branch: Option<String>,
    pub mounts: Vec<Mount>,
    /// False until the checkout is complete; an unfinished one is simply removed at the end.
    #[serde(default)]
    pub ready: bool,
    /// The session repository's `.git/config` as sbx wrote it (isolated mode), restored when
    /// the checkout is kept.
    #[serde(default)]
    pub git_config: Option<String>,
}

/// What became of a checkout at the end of its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub name: String,
    /// The host branch that now holds the session's commits.
    pub branch: Option<String>,
    /// Set when the checkout was kept, with the reason.
    pub kept: Option<String>,
    pub path: PathBuf,
    pub host_root: PathBuf,
    /// Set when sbx could not make a kept checkout safe to run git in, with the reason: its
    /// files are the session's work, but git there may run what the agent planted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_safe: Option<String>,
    /// What sbx changed to make it safe (special files removed, nested repositories disabled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("`{path}` is not inside a git repository")]
    NotARepo { path: PathBuf },
    #[error("the repository `{path}` has no commits yet")]
    NoCommits { path: PathBuf },
    #[error("cannot read the repository `{path}`")]
    Open {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("cannot make a checkout of `{repo}` in `{dest}`")]
    Create {
        repo: PathBuf,
        dest: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot remove the checkout `{path}`")]
    Remove {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl crate::error::Hint for GitError {
    fn hint(&self) -> Option<String> {
        match self {
            GitError::NotARepo { .. } => Some(
                "run sbx inside a git repository, or name one with `--repo PATH` (`git init` makes one)"
                    .into(),
            ),
            GitError::NoCommits { .. } => {
                Some("make a first commit (`git commit --allow-empty -m init`), then try again".into())
            }
            _ => None,
        }
    }
}

/// Finds the repository containing `path`.
pub fn discover(path: &Path) -> Result<Repo, GitError> {
    let repo = git2::Repository::discover(path).map_err(|e| match e.code() {
        git2::ErrorCode::NotFound => GitError::NotARepo {
            path: path.to_owned(),
        },
        _ => GitError::Open {
            path: path.to_owned(),
            source: e,
        },
    })?;
    let bare = repo.is_bare();
    let root = match repo.workdir() {
        Some(w) => w.to_owned(),
        None => repo.path().to_owned(),
    };
    let root = absolute(&root);
    let head = match repo.head() {
        Ok(h) => h,
        Err(e)
            if matches!(
                e.code(),
                git2::ErrorCode::UnbornBranch | git2::ErrorCode::NotFound
            ) =>
        {
            return Err(GitError::NoCommits { path: root });
        }
        Err(source) => return Err(GitError::Open { path: root, source }),
    };
    let head_commit = head
        .peel_to_commit()
        .map_err(|source| GitError::Open {
            path: root.clone(),
            source,
        })?
        .id()
        .to_string();
    let head_branch = if head.is_branch() {
        head.shorthand().ok().map(str::to_owned)
    } else {
        None
    };
    let workdir_file = |f: &str| !bare && root.join(f).exists();
    let uses_lfs = !bare
        && std::fs::read_to_string(root.join(".gitattributes"))
            .map(|a| a.contains("filter=lfs"))
            .unwrap_or(false);
    Ok(Repo {
        common_dir: absolute(repo.commondir()),
        bare,
        head_commit,
        head_branch,
        shallow: repo.is_shallow(),
        has_submodules: workdir_file(".gitmodules"),
        uses_lfs,
        root,
    })
}

fn absolute(p: &Path) -> PathBuf {
    let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    // libgit2 reports folders with a trailing slash; keep paths tidy for mounts and messages.
    PathBuf::from(p.to_string_lossy().trim_end_matches('/'))
}

impl Repo {
    /// The folder name this repository gets under `/workspace`.
    pub fn base_name(&self) -> String {
        let n = crate::paths::base_name(&self.root);
        n.strip_suffix(".git")
            .filter(|s| !s.is_empty())
            .unwrap_or(&n)
            .to_owned()
    }

    /// One-line notes about what the sandbox copy lacks (submodules, LFS content).
    pub fn notes(&self) -> Vec<String> {
        let mut n = Vec::new();
        if self.has_submodules {
            n.push(format!(
                "`{}` has submodules; they are not checked out in the sandbox",
                self.base_name()
            ));
        }
        if self.uses_lfs {
            n.push(format!(
                "`{}` uses Git LFS; LFS files are pointer files in the sandbox",
                self.base_name()
            ));
        }
        n
    }
}

/// Distinct `/workspace` folder names: two repos called `app` become `app` and `app-2`.
pub fn mount_names(repos: &[Repo]) -> Vec<String> {
    let mut seen = HashSet::new();
    repos
        .iter()
        .map(|r| {
            let base = r.base_name();
            let mut name = base.clone();
            let mut n = 2;
            while !seen.insert(name.clone()) {
                name = format!("{base}-{n}");
                n += 1;
            }
            name
        })
        .collect()
}

/// The object folders git inside the sandbox must read: the repository's own and every
/// alternate it borrows from, transitively.
pub fn object_dirs(common_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![common_dir.join("objects")];
    while let Some(dir) = todo.pop() {
        let dir = absolute(&dir);
        if out.contains(&dir) || out.len() > 16 {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("info/alternates")) {
            for line in text.lines().map(str::trim) {
                if !line.is_empty() && !line.starts_with('#') {
                    todo.push(dir.join(line));
                }
            }
        }
        out.push(dir);
    }
    out
}

impl Checkout {
    /// The checkout a session is about to make, recorded before anything exists on disk so that
    /// an interrupted start can be cleaned up.
    pub fn plan(repo: &Repo, name: &str, dest: &Path, mode: GitMode) -> Checkout {
        Checkout {
            name: name.to_owned(),
            host_root: repo.root.clone(),
            common_dir: repo.common_dir.clone(),
            path: dest.to_owned(),
            mode,
            start_commit: repo.head_commit.clone(),
            start_branch: repo.head_branch.clone(),
            mounts: Vec::new(),
            ready: false,
            git_config: None,
        }
    }
}

/// Makes a planned checkout. `owner` chowns the result (used when sbx runs as root but the agent
/// does not). On failure nothing of it is left behind.
pub async fn create(c: &mut Checkout, owner: Option<(u32, u32)>) -> Result<(), GitError> {
    match create_inner(c, owner).await {
        Ok(mounts) => {
            c.mounts = std::iter::once(Mount {
                host: c.path.clone(),
                container: PathBuf::from("/workspace").join(&c.name),
                read_only: false,
            })
            .chain(mounts)
            .collect();
            if c.mode == GitMode::Isolated {
                c.git_config = std::fs::read_to_string(c.path.join(".git/config")).ok();
            }
            c.ready = true;
            Ok(())
        }
        Err(source) => {
            let _ = remove(c);
            Err(GitError::Create {
                repo: c.host_root.clone(),
                dest: c.path.clone(),
                source,
            })
        }
    }
}

async fn create_inner(
    c: &Checkout,
    owner: Option<(u32, u32)>,
) -> Result<Vec<Mount>, Box<dyn std::error::Error + Send + Sync>> {
    let mounts = match c.mode {
        GitMode::Isolated => create_isolated(c).await?,
        GitMode::Worktree => create_worktree(c).await?,
    };
    if let Some((uid, gid)) = owner {
        let d = c.path.clone();
        let gitdir = match c.mode {
            GitMode::Worktree => worktree_admin_dir(&c.path),
            GitMode::Isolated => None,
        };
        tokio::task::spawn_blocking(move || {
            crate::safefs::chown_tree(&d, uid, gid)?;
            if let Some(g) = gitdir {
                crate::safefs::chown_tree(&g, uid, gid)?;
            }
            Ok::<_, std::io::Error>(())
        })
        .await??;
    }
    Ok(mounts)
}

/// Git settings for commands sbx runs in a fresh checkout: no hooks, no LFS downloads (the
/// sandbox cannot reach the LFS server from the host side either), parallel checkout.
const QUIET_CHECKOUT: &[&str] = &[
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "filter.lfs.smudge=",
    "-c",
    "filter.lfs.process=",
    "-c",
    "filter.lfs.required=false",
    "-c",
    "checkout.workers=0",
    "-c",
    "advice.detachedHead=false",
];

async fn create_isolated(
    c: &Checkout,
) -> Result<Vec<Mount>, Box<dyn std::error::Error + Send + Sync>> {
    let dest = c.path.as_path();
    let (refs, config, format) = {
        let common = c.common_dir.clone();
        let head_branch = c.start_branch.clone();
        tokio::task::spawn_blocking(move || host_refs_and_config(&common, head_branch.as_deref()))
            .await??
    };
    std::fs::create_dir_all(dest)?;
    let mut init = Cmd::git(dest).args(["init", "-q", "--template="]);
    if let Some(f) = &format {
        init = init.arg(format!("--object-format={f}"));
    }
    init.run().await?;
    let gitdir = dest.join(".git");
    let objects = object_dirs(&c.common_dir);
    let own_objects = objects[0].clone();
    std::fs::create_dir_all(gitdir.join("objects/info"))?;
    std::fs::write(
        gitdir.join("objects/info/alternates"),
        format!("{}\n", own_objects.display()),
    )?;
    std::fs::write(gitdir.join("packed-refs"), refs)?;
    let head = match &c.start_branch {
        Some(b) => format!("ref: refs/heads/{b}\n"),
        None => format!("{}\n", c.start_commit),
    };
    std::fs::write(gitdir.join("HEAD"), head)?;
    if c.common_dir.join("shallow").exists() {
        std::fs::copy(c.common_dir.join("shallow"), gitdir.join("shallow"))?;
    }
    if let Ok(exclude) = std::fs::read(c.common_dir.join("info/exclude")) {
        std::fs::create_dir_all(gitdir.join("info"))?;
        std::fs::write(gitdir.join("info/exclude"), exclude)?;
    }
    if !config.is_empty() {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(gitdir.join("config"))?;
        f.write_all(config.as_bytes())?;
    }
    Cmd::git(dest)
        .args(QUIET_CHECKOUT)
        .args(["reset", "--hard", "-q"])
        .timeout(std::time::Duration::from_secs(600))
        .run()
        .await?;
    // The host's objects are readable, never writable, from inside.
    Ok(objects
        .into_iter()
        .map(|o| Mount {
            container: o.clone(),
            host: o,
            read_only: true,
        })
        .collect())
}

/// The host's refs as a `packed-refs` file, its remotes and upstream as git config text, and
/// its object format when not SHA-1.
fn host_refs_and_config(
    common: &Path,
    head_branch: Option<&str>,
) -> Result<(String, String, Option<String>), git2::Error> {
    let repo = git2::Repository::open_bare(common)?;
    let mut refs = Vec::new();
    for r in repo.references()? {
        let r = r?;
        let Ok(name) = r.name() else { continue };
        let keep = ["refs/heads/", "refs/tags/", "refs/remotes/"]
            .iter()
            .any(|p| name.starts_with(p));
        if let (true, Some(oid)) = (keep, r.target()) {
            refs.push(format!("{oid} {name}"));
        }
    }
    refs.sort_by(|a, b| a[41..].cmp(&b[41..]));
    let mut packed = String::from("# pack-refs with: sorted \n");
    for r in refs {
        packed.push_str(&r);
        packed.push('\n');
    }
    // Remotes (so `git push` inside goes where it goes on the host) and the current branch's
    // upstream. Other config (hooks, filters, credential helpers) deliberately stays behind.
    let cfg = repo.config()?.open_level(git2::ConfigLevel::Local)?;
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut entries = cfg.entries(None)?;
    while let Some(e) = entries.next() {
        let e = e?;
        let (Ok(name), Ok(value)) = (e.name(), e.value()) else {
            continue;
        };
        let wanted_branch = head_branch.map(|b| format!("branch.{b}."));
        let keep = (name.starts_with("remote.")
            && [".url", ".pushurl", ".fetch"]
                .iter()
                .any(|s| name.ends_with(s)))
            || wanted_branch.as_ref().is_some_and(|p| {
                name.starts_with(p.as_str())
                    && (name.ends_with(".remote") || name.ends_with(".merge"))
            });
        if !keep {
            continue;
        }
        let (section, key) = name.rsplit_once('.').unwrap_or((name, ""));
        let header = match section.split_once('.') {
            Some((s, sub)) => format!("[{s} \"{}\"]", escape(sub)),
            None => format!("[{section}]"),
        };
        let value = format!("\t{key} = \"{}\"", escape(value));
        match sections.iter_mut().find(|(h, _)| *h == header) {
            Some((_, v)) => v.push((key.to_owned(), value)),
            None => sections.push((header, vec![(key.to_owned(), value)])),
        }
    }
    let mut config = String::new();
    for (h, vals) in sections {
        config.push_str(&h);
        config.push('\n');
        for (_, v) in vals {
            config.push_str(&v);
            config.push('\n');
        }
    }
    let format = cfg
        .get_string("extensions.objectformat")
        .ok()
        .filter(|f| f != "sha1");
    Ok((packed, config, format))
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

async fn create_worktree(
    c: &Checkout,
) -> Result<Vec<Mount>, Box<dyn std::error::Error + Send + Sync>> {
    if let Some(parent) = c.path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    Cmd::git(&c.host_root)
        .args(QUIET_CHECKOUT)
        .args(["worktree", "add", "--detach", "-q"])
        .arg(&c.path)
        .arg(&c.start_commit)
        .timeout(std::time::Duration::from_secs(600))
        .run()
        .await?;
    // The worktree's `.git` file names the shared `.git` by absolute path, so it is mounted at
    // the same path, writable: commits need it. This is the mode's known weakness.
    Ok(vec![Mount {
        host: c.common_dir.clone(),
        container: c.common_dir.clone(),
        read_only: false,
    }])
}

/// The `.git/worktrees/<name>` folder of a linked worktree, from its `.git` file.
fn worktree_admin_dir(worktree: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(worktree.join(".git")).ok()?;
    let dir = text.trim().strip_prefix("gitdir:")?.trim();
    Some(PathBuf::from(dir))
}

/// Lets libgit2 open repositories owned by another uid (checkouts handed to the agent's uid).
/// Safe here because sbx opens a checkout with libgit2 only once its `.git` is sbx's own, and
/// libgit2 runs no hooks, filters or commands.
fn trust_checkout_owners() {
    // SAFETY: a process-wide libgit2 option, set before any repository is opened by this call
    // path's threads; libgit2 reads it without other synchronisation requirements.
    unsafe {
        let _ = git2::opts::set_verify_owner_validation(false);
    }
}

/// The host branch a session's commits land on.
pub fn session_branch(session_id: &str) -> String {
    format!("sbx/{session_id}")
}

/// Where a kept checkout keeps commits the import refused, for the user to inspect.
pub const REFUSED_REF: &str = "refs/sbx/refused";

/// How long finishing one checkout may take. Nothing in a checkout should hold sbx any more
/// (special files are removed, every read is non-blocking and capped), so reaching this means
/// something unforeseen did; the checkout is then reported as not safe instead of hanging
/// `sbx run` or `sbx gc` (which a FIFO named `.gitignore` used to do).
const FINISH_LIMIT: Duration = Duration::from_secs(600);

/// How long `git index-pack` may take to check the session's commits.
const INDEX_PACK_LIMIT: Duration = Duration::from_secs(300);

/// `index-pack --strict` checks every object as `git fsck --strict` does (warnings are errors:
/// unsorted trees, `.git` entries, bad idents, `.gitmodules` problems) and that every object a
/// new one names exists. A bad file mode is only informational even there; git itself never
/// writes one, so it is refused too.
const INDEX_PACK_STRICT: &str = "--strict=badFilemode=error";

impl Outcome {
    fn start(c: &Checkout) -> Outcome {
        Outcome {
            name: c.name.clone(),
            branch: None,
            kept: None,
            path: c.path.clone(),
            host_root: c.host_root.clone(),
            not_safe: None,
            notes: Vec::new(),
        }
    }
}

/// Ends a checkout: brings new commits home as `sbx/<session-id>`, then removes the checkout when
/// it is clean, keeps it when it holds uncommitted work (or when `keep` is set). A kept isolated
/// checkout gets a `.git` that sbx writes, so git run there later runs nothing the agent planted;
/// when sbx cannot do that, the outcome says so (`not_safe`). Idempotent: a checkout that is
/// already gone is reported as removed. Bounded in time. Blocking.
pub fn finish(c: &Checkout, session_id: &str, keep: bool) -> Outcome {
    finish_within(c, session_id, keep, FINISH_LIMIT)
}

fn finish_within(c: &Checkout, session_id: &str, keep: bool, limit: Duration) -> Outcome {
    let (job, id) = (c.clone(), session_id.to_owned());
    match bounded(limit, move || finish_unbounded(&job, &id, keep)) {
        Ok(out) => out,
        Err(why) => {
            let mut out = Outcome::start(c);
            out.kept = Some("sbx could not finish it".into());
            out.not_safe = Some(why);
            out
        }
    }
}

/// Runs `f` on a thread of its own and waits at most `limit` for it. A thread still blocked
/// after that is abandoned and ends with the process: a hostile checkout must not hold sbx.
fn bounded<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("sbx-finish".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| format!("sbx could not start a thread for it ({e})"))?;
    match rx.recv_timeout(limit) {
        Ok(v) => Ok(v),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "sbx gave up after {} s: something in it kept sbx waiting",
            limit.as_secs()
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err("sbx failed while finishing it".into())
        }
    }
}

fn finish_unbounded(c: &Checkout, session_id: &str, keep: bool) -> Outcome {
    trust_checkout_owners();
    let mut out = Outcome::start(c);
    if std::fs::symlink_metadata(&c.path).is_err() {
        return out;
    }
    if !c.ready {
        // Interrupted while being made: it holds nothing of the user's.
        if let Err(e) = remove(c) {
            out.kept = Some(with_source(&e));
        }
        return out;
    }
    match c.mode {
        GitMode::Isolated => finish_isolated(c, session_id, keep, &mut out),
        GitMode::Worktree => finish_worktree(c, session_id, keep, &mut out),
    }
    out
}

/// The uid and gid a kept checkout goes back to when sbx runs as root (it was the agent's).
fn host_owner() -> Option<(u32, u32)> {
    rustix::process::getuid().is_root().then(|| {
        (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        )
    })
}

fn parent_and_name(p: &Path) -> Option<(&Path, &OsStr)> {
    Some((p.parent()?, p.file_name()?))
}

/// An isolated checkout the agent had becomes one that is safe to run git in: its files swept
/// (special files removed, nested repositories disabled, owner restored), its `.git` replaced by
/// one sbx writes, the commits imported, then removed when clean. What cannot be made safe is
/// kept and reported (`not_safe`).
fn finish_isolated(c: &Checkout, session_id: &str, keep: bool, out: &mut Outcome) {
    let not_safe = |out: &mut Outcome, why: String| {
        out.kept = Some("sbx could not make it safe".into());
        out.not_safe = Some(why);
    };
    let owner = host_owner();
    let opened = |e: std::io::Error| format!("sbx could not open it ({e})");
    let dirs = parent_and_name(&c.path)
        .ok_or_else(|| "its path has no parent folder".to_owned())
        .and_then(|(parent, name)| {
            let repos = Dir::open(parent).map_err(opened)?;
            let root = repos.open_dir(name).map_err(opened)?;
            Ok((repos, root))
        });
    let (repos, root) = match dirs {
        Ok(d) => d,
        Err(why) => return not_safe(out, why),
    };
    if let Some((uid, gid)) = owner
        && let Err(e) = root.chown_self(uid, gid)
    {
        return not_safe(
            out,
            format!("sbx could not take it back from the agent's user ({e})"),
        );
    }
    let mut swept = Swept::default();
    // A sweep that could not finish (folders nested too deep, an entry sbx may not change)
    // leaves parts unchecked: the rest still runs, so the top `.git` is still replaced and the
    // commits still come home, but the checkout is kept and reported as not safe.
    let unchecked = rebuild::sweep(
        &root,
        SweepOptions {
            disarm_nested: true,
            owner,
        },
        &mut swept,
    )
    .err()
    .map(|e| format!("sbx could not check all of its files ({e})"));
    match replace_git(c, &repos, &root, owner) {
        Ok(notes) => out.notes.extend(notes),
        Err(e) => {
            out.notes.extend(swept.notes());
            return not_safe(out, format!("sbx could not replace its `.git` ({e})"));
        }
    }
    settle_isolated(c, session_id, keep, unchecked.is_none(), out);
    // Folders git would open as bare repositories only matter in what is kept; disabling them
    // earlier would make every checkout of a repository with such a fixture look changed.
    let mut broken = unchecked;
    if c.path.exists()
        && let Err(e) = rebuild::disarm_bare(&root, &mut swept)
    {
        broken.get_or_insert(format!("sbx could not disable a nested repository ({e})"));
    }
    let mut notes = swept.notes();
    notes.append(&mut out.notes);
    out.notes = notes;
    if let Some(why) = broken {
        out.kept
            .get_or_insert_with(|| "sbx could not make it safe".into());
        out.not_safe = Some(why);
    }
}

/// Replaces the checkout's `.git` with one sbx writes. The agent's goes aside first (to
/// `repos/.sbx-quarantine-<name>`, outside the checkout) and only its objects, `HEAD` and refs
/// are taken from it, each validated; its config, hooks, index, info, logs, worktrees, modules,
/// `commondir` and `shallow` are never read. The new one is built next to the quarantine and
/// moved into place whole, so a finish that is interrupted (a second Ctrl-C) and taken up again
/// by `sbx gc` finds either the quarantine and no `.git` (build again) or the quarantine and a
/// complete `.git` (only the quarantine is left to remove).
fn replace_git(
    c: &Checkout,
    repos: &Dir,
    root: &Dir,
    owner: Option<(u32, u32)>,
) -> std::io::Result<Vec<String>> {
    let hexlen = c.start_commit.len();
    let dot_git = OsStr::new(".git");
    let quarantine = OsString::from(format!(".sbx-quarantine-{}", c.name));
    let building = OsString::from(format!(".sbx-git-{}", c.name));
    let mut notes = Vec::new();
    if repos.meta(&quarantine)?.is_some() {
        if root.meta(dot_git)?.is_some() {
            // Only sbx writes `.git` once the agent's is in quarantine: this one is complete.
            repos.remove_tree(&quarantine)?;
            return Ok(notes);
        }
    } else {
        match root.meta(dot_git)? {
            Some(m) if m.kind == Kind::Dir => {
                // Moving a folder to another parent needs write access to it (its `..`).
                if m.mode & 0o700 != 0o700 {
                    root.set_mode(dot_git, m.mode | 0o700)?;
                }
                root.rename(dot_git, repos, &quarantine)?;
            }
            Some(m) => {
                // A `gitdir:` file or a symbolic link names git data elsewhere, which the agent
                // chose: nothing of it is read.
                root.remove(dot_git)?;
                notes.push(format!(
                    "replaced its `.git`, a {} instead of the folder sbx made (nothing it names can be trusted), with a fresh one at the start commit; the session's commits were not imported",
                    m.kind.describe()
                ));
            }
            None => notes.push(
                "gave it a fresh `.git` at the start commit (the agent had removed it)".to_owned(),
            ),
        }
    }
    let agent_git = match repos.meta(&quarantine)? {
        Some(m) if m.kind == Kind::Dir => Some(repos.open_dir(&quarantine)?),
        _ => None,
    };
    let (head, mut refs) = match &agent_git {
        Some(g) => rebuild::read_refs(g, hexlen),
        None => (None, Default::default()),
    };
    let head = head.unwrap_or_else(|| match &c.start_branch {
        Some(b) => Head::Branch(format!("refs/heads/{b}")),
        None => Head::Detached(c.start_commit.clone()),
    });
    if let Head::Branch(b) = &head {
        // Never an unborn branch: without a commit every file would look new.
        refs.entry(b.clone())
            .or_insert_with(|| c.start_commit.clone());
    }
    let agent_objects = agent_git
        .as_ref()
        .and_then(|g| g.open_dir(OsStr::new("objects")).ok());
    let config = c
        .git_config
        .clone()
        .unwrap_or_else(|| default_git_config(hexlen));
    let new = NewGit {
        config: &config,
        head,
        refs,
        alternates: format!("{}\n", own_objects(&c.common_dir).display()),
        exclude: std::fs::read(c.common_dir.join("info/exclude")).ok(),
        shallow: std::fs::read(c.common_dir.join("shallow")).ok(),
    };
    repos.remove_tree(&building)?;
    let linked = rebuild::write_git(
        repos,
        &building,
        &new,
        agent_objects.as_ref(),
        hexlen,
        owner,
    )?;
    tracing::debug!(linked, "objects carried over from the agent's repository");
    repos.rename(&building, root, dot_git)?;
    drop(agent_objects);
    drop(agent_git);
    repos.remove_tree(&quarantine)?;
    Ok(notes)
}

/// The config `git init` writes, for records made before sbx remembered the one it wrote.
fn default_git_config(hexlen: usize) -> String {
    if hexlen == 64 {
        "[core]\n\trepositoryformatversion = 1\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n[extensions]\n\tobjectformat = sha256\n".into()
    } else {
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n".into()
    }
}

/// The host repository's own object folder (what a session repository borrows).
fn own_objects(common_dir: &Path) -> PathBuf {
    object_dirs(common_dir)
        .into_iter()
        .next()
        .unwrap_or_else(|| common_dir.join("objects"))
}

/// The rest of an isolated finish, on a checkout whose `.git` is sbx's: import, index, status
/// (unless parts of it went unchecked: then it is simply kept), then remove or keep.
fn settle_isolated(
    c: &Checkout,
    session_id: &str,
    keep: bool,
    check_status: bool,
    out: &mut Outcome,
) {
    let repo = match open_checkout(&c.path) {
        Ok(r) => r,
        Err(why) => {
            out.kept = Some(why);
            return;
        }
    };
    // What HEAD names, and whether it is a commit libgit2 can read (an object the agent wrote
    // with a malformed header is not; it is refused like one git refuses).
    let head = repo.head().ok().and_then(|h| {
        let target = h.target()?;
        Some(match h.peel_to_commit() {
            Ok(commit) => Ok(commit.id()),
            Err(e) => Err((target, e)),
        })
    });
    let refused = match head {
        Some(Ok(h)) if h.to_string() != c.start_commit => {
            let branch = session_branch(session_id);
            match import_isolated(c, &repo, h, &branch) {
                Ok(()) => {
                    out.branch = Some(branch);
                    None
                }
                Err(e) => Some((h, e)),
            }
        }
        Some(Err((target, e))) if target.to_string() != c.start_commit => Some((
            target,
            ImportError::Unreadable(rebuild::shown(e.message().as_bytes())),
        )),
        _ => None,
    };
    if let Some((head, e)) = refused {
        out.kept = Some(match set_aside(&repo, c, head) {
            Ok(()) => format!(
                "its commits were not imported: {e}; they stay in it as `{REFUSED_REF}`, and its HEAD is back at the start commit"
            ),
            Err(e2) => format!(
                "its commits were not imported: {e} (and sbx could not set them aside: {})",
                rebuild::shown(e2.message().as_bytes())
            ),
        });
    }
    // The agent's index is gone with its `.git`: this one matches HEAD, so staged but
    // uncommitted changes show as unstaged (the files themselves are untouched).
    if let Err(e) = rebuild_index(&repo) {
        out.kept.get_or_insert_with(|| {
            format!(
                "its index could not be rebuilt ({})",
                rebuild::shown(e.message().as_bytes())
            )
        });
        return;
    }
    if !check_status {
        out.kept
            .get_or_insert_with(|| "sbx could not check all of it".into());
        return;
    }
    let dirty = match dirty(&repo, true) {
        Ok(d) => d,
        Err(why) => {
            out.kept.get_or_insert(why);
            return;
        }
    };
    drop(repo);
    decide(c, keep, dirty, out);
}

/// Removes a clean checkout, keeps the rest (and says why).
fn decide(c: &Checkout, keep: bool, dirty: bool, out: &mut Outcome) {
    if out.kept.is_some() {
    } else if keep {
        out.kept = Some("kept as asked (`--keep`)".into());
    } else if dirty {
        out.kept = Some("it has uncommitted changes".into());
    } else if let Err(e) = remove(c) {
        out.kept = Some(with_source(&e));
    }
}

/// `worktree` mode: its `.git` is the host's, mounted writable (the mode's documented weakness),
/// so there is nothing to rebuild; special files are still removed first, as libgit2's status
/// would block on a FIFO as well.
fn finish_worktree(c: &Checkout, session_id: &str, keep: bool, out: &mut Outcome) {
    let mut swept = Swept::default();
    let result = Dir::open(&c.path).and_then(|root| {
        rebuild::sweep(
            &root,
            SweepOptions {
                disarm_nested: false,
                owner: None,
            },
            &mut swept,
        )
    });
    out.notes.extend(swept.notes());
    if let Err(e) = result {
        out.kept = Some(format!("sbx could not check all of its files ({e})"));
        return;
    }
    let state = match open_checkout(&c.path).and_then(|r| {
        let head = head_commit(&r);
        dirty(&r, false).map(|d| (head, d))
    }) {
        Ok(s) => s,
        Err(reason) => {
            out.kept = Some(reason);
            return;
        }
    };
    if let Some(head) = state.0.filter(|h| h.to_string() != c.start_commit) {
        let branch = session_branch(session_id);
        match point_branch(c, head, &branch) {
            Ok(()) => out.branch = Some(branch),
            Err(e) => {
                out.kept = Some(format!("its commits were not imported: {e}"));
                return;
            }
        }
    }
    decide(c, keep, state.1, out);
}

fn with_source(e: &GitError) -> String {
    match std::error::Error::source(e) {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    }
}

fn open_checkout(path: &Path) -> Result<git2::Repository, String> {
    let fail = |e: git2::Error| {
        format!(
            "its repository cannot be read ({})",
            rebuild::shown(e.message().as_bytes())
        )
    };
    let repo = git2::Repository::open_ext(
        path,
        git2::RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
    .map_err(fail)?;
    // A config inside the checkout may point `core.worktree` elsewhere; look only here.
    repo.set_workdir(path, false).map_err(fail)?;
    Ok(repo)
}

fn head_commit(repo: &git2::Repository) -> Option<git2::Oid> {
    repo.head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .map(|c| c.id())
}

/// Whether the work tree differs from HEAD (untracked files count). `update_index` stores the
/// file stats in the index, so the user's first `git status` there is fast.
fn dirty(repo: &git2::Repository, update_index: bool) -> Result<bool, String> {
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(false)
        .exclude_submodules(true)
        .include_ignored(false)
        .update_index(update_index);
    Ok(!repo
        .statuses(Some(&mut opts))
        .map_err(|e| {
            format!(
                "its status cannot be read ({})",
                rebuild::shown(e.message().as_bytes())
            )
        })?
        .is_empty())
}

fn rebuild_index(repo: &git2::Repository) -> Result<(), git2::Error> {
    let mut index = repo.index()?;
    index.clear()?;
    if let Some(tree) = repo.head().ok().and_then(|h| h.peel_to_tree().ok()) {
        index.read_tree(&tree)?;
    }
    index.write()
}

/// After a refused import: the refused commits stay inspectable under [`REFUSED_REF`] and HEAD
/// (its branch, or HEAD itself when detached) goes back to the start commit, so the kept
/// checkout shows the session's work as changes against it.
fn set_aside(repo: &git2::Repository, c: &Checkout, head: git2::Oid) -> Result<(), git2::Error> {
    let start = git2::Oid::from_str(&c.start_commit)?;
    repo.reference(REFUSED_REF, head, true, "sbx: commits the import refused")?;
    let branch = repo
        .find_reference("HEAD")?
        .symbolic_target()
        .ok()
        .flatten()
        .filter(|t| t.starts_with("refs/heads/"))
        .map(str::to_owned);
    match branch {
        Some(b) => {
            repo.reference(&b, start, true, "sbx: back to the start commit")?;
        }
        None => repo.set_head_detached(start)?,
    }
    Ok(())
}

/// Why the session's commits did not come home.
#[derive(Debug, thiserror::Error)]
enum ImportError {
    #[error("git refused them: {0}")]
    Refused(String),
    #[error("sbx could not read them ({0})")]
    Unreadable(String),
    #[error("sbx could not write them into `{repo}` ({why})")]
    Host { repo: PathBuf, why: String },
}

/// Copies the commits reachable from `head` (and not from the start commit) into the host
/// repository, checked by git as strictly as `git fsck --strict`, and points `branch` at `head`.
fn import_isolated(
    c: &Checkout,
    session: &git2::Repository,
    head: git2::Oid,
    branch: &str,
) -> Result<(), ImportError> {
    let host_err = |why: String| ImportError::Host {
        repo: c.host_root.clone(),
        why,
    };
    let known = git2::Repository::open_bare(&c.common_dir)
        .map_err(|e| host_err(e.message().to_owned()))?
        .find_commit(head)
        .is_ok();
    if !known {
        let pack = build_pack(c, session, head)
            .map_err(|e| ImportError::Unreadable(rebuild::shown(e.message().as_bytes())))?;
        validate_into_host(c, pack)?;
    }
    point_branch(c, head, branch).map_err(host_err)
}

/// The session's new objects as one pack, made by libgit2 from the rebuilt repository.
fn build_pack(
    c: &Checkout,
    session: &git2::Repository,
    head: git2::Oid,
) -> Result<Vec<u8>, git2::Error> {
    let mut walk = session.revwalk()?;
    walk.push(head)?;
    if let Ok(start) = git2::Oid::from_str(&c.start_commit) {
        // The start commit may be missing from a shallow or damaged history.
        let _ = walk.hide(start);
    }
    let mut pb = session.packbuilder()?;
    pb.insert_walk(&mut walk)?;
    let mut buf = git2::Buf::new();
    pb.write_buf(&mut buf)?;
    Ok(buf.to_vec())
}

/// Feeds the pack to `git index-pack --strict` in the host repository, the way `git
/// receive-pack` takes a push: into a quarantine object folder first, moved in only when git
/// accepted every object. (A refused `index-pack` leaves its temporary pack behind, and it runs
/// the queued `.gitmodules`/`.gitattributes` checks, `fsck_finish`, only after installing the
/// pack.) The host's config is the user's and trusted; no config of the session repository is
/// read.
fn validate_into_host(c: &Checkout, pack: Vec<u8>) -> Result<(), ImportError> {
    let host_err = |why: String| ImportError::Host {
        repo: c.host_root.clone(),
        why,
    };
    let objects = own_objects(&c.common_dir);
    let incoming = tempfile::Builder::new()
        .prefix("incoming-sbx-")
        .tempdir_in(&objects)
        .map_err(|e| host_err(e.to_string()))?;
    let mut git_dir = OsString::from("--git-dir=");
    git_dir.push(&c.common_dir);
    let out = Cmd::git(&c.common_dir)
        .arg(git_dir)
        .args(["index-pack", INDEX_PACK_STRICT, "--stdin"])
        .env("GIT_OBJECT_DIRECTORY", incoming.path())
        .env(
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            alternate_entry(&objects),
        )
        .stdin(pack)
        .timeout(INDEX_PACK_LIMIT)
        .output_blocking()
        .map_err(|e| host_err(e.to_string()))?;
    if !out.ok() {
        return Err(ImportError::Refused(first_lines(&out.stderr)));
    }
    // `.idx` last: git finds a pack by its index.
    let from = incoming.path().join("pack");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&from)
        .map_err(|e| host_err(e.to_string()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(OsStr::to_str).is_some_and(|n| {
                n.starts_with("pack-") && [".pack", ".rev", ".idx"].iter().any(|s| n.ends_with(s))
            })
        })
        .collect();
    files.sort_by_key(|p| p.extension().is_some_and(|e| e == "idx"));
    let to = objects.join("pack");
    for f in files {
        if let Some(name) = f.file_name() {
            std::fs::rename(&f, to.join(name)).map_err(|e| host_err(e.to_string()))?;
        }
    }
    Ok(())
}

/// `path` as one entry of `GIT_ALTERNATE_OBJECT_DIRECTORIES`, a `:`-separated list: quoted the
/// way git unquotes it (`unquote_c_style`) when it holds a `:` or starts with `"`.
fn alternate_entry(path: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let b = path.as_os_str().as_bytes();
    if !b.contains(&b':') && b.first() != Some(&b'"') {
        return path.as_os_str().to_owned();
    }
    let mut out = vec![b'"'];
    for &c in b {
        match c {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', c]),
            0..0x20 | 0x7f => out.extend_from_slice(format!("\\{c:03o}").as_bytes()),
            _ => out.push(c),
        }
    }
    out.push(b'"');
    OsString::from_vec(out)
}

/// The first lines of git's complaint, escaped, for the outcome.
fn first_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(3)
        .collect();
    let text = rebuild::shown(lines.join("; ").as_bytes());
    if text.chars().count() > 400 {
        format!("{}...", text.chars().take(400).collect::<String>())
    } else if text.is_empty() {
        "no reason given".into()
    } else {
        text
    }
}

/// Points `refs/heads/<branch>` of the host repository at `head`, which it must hold.
fn point_branch(c: &Checkout, head: git2::Oid, branch: &str) -> Result<(), String> {
    let msg = |e: git2::Error| rebuild::shown(e.message().as_bytes());
    let host = git2::Repository::open_bare(&c.common_dir).map_err(msg)?;
    let commit = host.find_commit(head).map_err(msg)?;
    let refname = format!("refs/heads/{branch}");
    match host.find_reference(&refname) {
        Ok(existing) if existing.target() == Some(head) => Ok(()),
        _ => host
            .reference(&refname, commit.id(), true, "sbx: session commits")
            .map(|_| ())
            .map_err(msg),
    }
}

fn remove(c: &Checkout) -> Result<(), GitError> {
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| GitError::Remove {
        path: c.path.clone(),
        source,
    };
    if c.mode == GitMode::Worktree {
        // Prune the host's record of the worktree, then the folder. Find the record by the
        // folder it points at, never by a name the sandbox could have written.
        let host = git2::Repository::open_bare(&c.common_dir).map_err(|e| fail(e.into()))?;
        let names = host.worktrees().map_err(|e| fail(e.into()))?;
        for name in names.iter().flatten().flatten() {
            if let Ok(wt) = host.find_worktree(name)
                && absolute(wt.path()) == absolute(&c.path)
            {
                let mut opts = git2::WorktreePruneOptions::new();
                opts.valid(true).working_tree(true);
                wt.prune(Some(&mut opts)).map_err(|e| fail(e.into()))?;
            }
        }
    }
    let Some((parent, name)) = parent_and_name(&c.path) else {
        return Ok(());
    };
    // Never follows a symbolic link, and restores the permissions an agent took away.
    match Dir::open(parent) {
        Ok(dir) => dir.remove_tree(name).map_err(|e| fail(e.into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(fail(e.into())),
    }
}

/// The user's git identity and signing preference, read on the host.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub name: Option<String>,
    pub email: Option<String>,
    pub signs_commits: bool,
}

pub fn identity(repo: &Repo) -> Identity {
    let cfg = git2::Repository::open_bare(&repo.common_dir)
        .and_then(|r| r.config())
        .or_else(|_| git2::Config::open_default());
    let Ok(cfg) = cfg else {
        return Identity::default();
    };
    Identity {
        name: cfg.get_string("user.name").ok(),
        email: cfg.get_string("user.email").ok(),
        signs_commits: cfg.get_bool("commit.gpgsign").unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Hint;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Cmd::git(dir)
            .args(args)
            .std_command()
            .env("GIT_AUTHOR_NAME", "T")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "T")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn repo_with_commit(dir: &Path) {
        git(dir, &["init", "-q", "-b", "main"]);
        std::fs::write(dir.join("a.txt"), "a\n").unwrap();
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "first"]);
        git(
            dir,
            &["remote", "add", "origin", "https://example.com/x.git"],
        );
    }

    #[test]
    fn discovery_errors_have_hints() {
        let d = tempfile::tempdir().unwrap();
        let e = discover(d.path()).unwrap_err();
        assert!(matches!(e, GitError::NotARepo { .. }) && e.hint().is_some());
        git(d.path(), &["init", "-q"]);
        let e = discover(d.path()).unwrap_err();
        assert!(matches!(e, GitError::NoCommits { .. }), "{e}");
    }

    #[test]
    fn mount_names_are_distinct() {
        let d = tempfile::tempdir().unwrap();
        let mk = |p: &str| {
            let p = d.path().join(p).join("app");
            std::fs::create_dir_all(&p).unwrap();
            repo_with_commit(&p);
            discover(&p).unwrap()
        };
        let names = mount_names(&[mk("x"), mk("y"), mk("z")]);
        assert_eq!(names, ["app", "app-2", "app-3"]);
    }

    #[tokio::test]
    async fn isolated_checkout_imports_commits_and_prunes() {
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("host");
        std::fs::create_dir(&host).unwrap();
        repo_with_commit(&host);
        let repo = discover(&host).unwrap();
        assert_eq!(repo.head_branch.as_deref(), Some("main"));
        let dest = d.path().join("s/repos/host");
        let mut c = Checkout::plan(&repo, "host", &dest, GitMode::Isolated);
        create(&mut c, None).await.unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("a.txt")).unwrap(), "a\n");
        assert_eq!(
            git(&dest, &["remote", "get-url", "origin"]).trim(),
            "https://example.com/x.git"
        );
        assert_eq!(git(&dest, &["status", "--porcelain"]), "");
        // Nothing changed: removed, no branch.
        let o = finish(&c, "s1", false);
        assert_eq!((o.branch.clone(), o.kept.clone()), (None, None), "{o:?}");
        assert!(!dest.exists());

        let mut c = Checkout::plan(&repo, "host", &dest, GitMode::Isolated);
        create(&mut c, None).await.unwrap();
        std::fs::write(dest.join("b.txt"), "b\n").unwrap();
        git(&dest, &["add", "."]);
        git(&dest, &["commit", "-q", "-m", "second"]);
        std::fs::write(dest.join("c.txt"), "wip\n").unwrap();
        let o = finish(&c, "s2", false);
        assert_eq!(o.branch.as_deref(), Some("sbx/s2"));
        assert!(o.kept.is_some() && dest.exists(), "{o:?}");
        assert_eq!(git(&host, &["show", "sbx/s2:b.txt"]), "b\n");
        assert_eq!(
            git(&host, &["log", "-1", "--format=%an %s", "sbx/s2"]).trim(),
            "T second"
        );
        git(&host, &["fsck", "--full"]);
        // Finishing again is harmless.
        let o2 = finish(&c, "s2", false);
        assert_eq!(o2.branch.as_deref(), Some("sbx/s2"));
    }

    #[tokio::test]
    async fn a_kept_session_repository_is_defanged() {
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("host");
        std::fs::create_dir(&host).unwrap();
        repo_with_commit(&host);
        let repo = discover(&host).unwrap();
        let dest = d.path().join("s/repos/host");
        let mut c = Checkout::plan(&repo, "host", &dest, GitMode::Isolated);
        create(&mut c, None).await.unwrap();
        // What a hostile agent leaves for the user's next `git status`.
        std::fs::create_dir_all(dest.join(".git/hooks")).unwrap();
        std::fs::write(
            dest.join(".git/hooks/post-checkout"),
            "#!/bin/sh\ntouch /tmp/pwned\n",
        )
        .unwrap();
        git(&dest, &["config", "core.fsmonitor", "touch /tmp/pwned"]);
        std::fs::write(dest.join("wip.txt"), "work").unwrap();
        let o = finish(&c, "k1", false);
        assert!(o.kept.is_some());
        assert!(!dest.join(".git/hooks").exists());
        let config = std::fs::read_to_string(dest.join(".git/config")).unwrap();
        assert!(!config.contains("fsmonitor"), "{config}");
        assert!(config.contains("https://example.com/x.git"), "{config}");
        assert!(dest.join("wip.txt").exists());
    }

    /// A host repository and a fresh isolated checkout of it, under `d`.
    async fn isolated(d: &Path) -> (PathBuf, PathBuf, Checkout) {
        let host = d.join("host");
        std::fs::create_dir(&host).unwrap();
        repo_with_commit(&host);
        std::fs::create_dir(host.join("sub")).unwrap();
        std::fs::write(host.join("sub/s.txt"), "s\n").unwrap();
        git(&host, &["add", "."]);
        git(&host, &["commit", "-q", "-m", "sub"]);
        let repo = discover(&host).unwrap();
        let dest = d.join("s/repos/host");
        let mut c = Checkout::plan(&repo, "host", &dest, GitMode::Isolated);
        create(&mut c, None).await.unwrap();
        (host, dest, c)
    }

    /// What a user does in a kept checkout, with git's own config handling (`safe.directory`
    /// trusts it, so only sbx's rebuild stands between these and the agent's config).
    fn user_runs_git(dir: &Path) {
        for args in [
            &["status"][..],
            &["diff"],
            &["log", "-1", "--stat"],
            &["add", "-A"],
            &["commit", "-q", "-m", "user"],
        ] {
            let _ = Cmd::new("git")
                .args(["-c", "safe.directory=*", "-C"])
                .arg(dir)
                .args(args)
                .std_command()
                .env("GIT_AUTHOR_NAME", "U")
                .env("GIT_AUTHOR_EMAIL", "u@example.com")
                .env("GIT_COMMITTER_NAME", "U")
                .env("GIT_COMMITTER_EMAIL", "u@example.com")
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
        }
    }

    /// Plants, in the git folder `gitdir`, every way git config can run a command.
    fn plant(gitdir: &Path, marker: &Path) {
        let touch = format!("touch {}", marker.display());
        std::fs::create_dir_all(gitdir.join("hooks")).unwrap();
        for h in [
            "pre-commit",
            "post-commit",
            "commit-msg",
            "post-index-change",
        ] {
            let p = gitdir.join("hooks").join(h);
            std::fs::write(&p, format!("#!/bin/sh\n{touch}\n")).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        std::fs::write(
            gitdir.join("evil.cfg"),
            format!("[core]\n\tfsmonitor = {touch}\n"),
        )
        .unwrap();
        let mut cfg = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(gitdir.join("config"))
            .unwrap();
        std::io::Write::write_all(
            &mut cfg,
            format!(
                "[core]\n\tfsmonitor = {touch}\n\thooksPath = {}\n[include]\n\tpath = {}\n\
                 [filter \"x\"]\n\tclean = {touch}\n\tsmudge = {touch}\n[diff]\n\texternal = {touch}\n",
                gitdir.join("hooks").display(),
                gitdir.join("evil.cfg").display()
            )
            .as_bytes(),
        )
        .unwrap();
    }

    #[tokio::test]
    async fn planted_links_in_the_git_folder_are_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let (_host, dest, c) = isolated(d.path()).await;
        let victim = d.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let info = dest.join(".git/objects/info");
        std::fs::remove_file(info.join("alternates")).unwrap();
        std::os::unix::fs::symlink(&victim, info.join("alternates")).unwrap();
        let o = finish(&c, "l1", true);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(o.not_safe.is_none(), "{o:?}");
        assert!(!info.join("alternates").is_symlink());
        // The whole `info` folder as a link to a folder outside.
        std::fs::remove_dir_all(&info).unwrap();
        std::os::unix::fs::symlink(&outside, &info).unwrap();
        let o = finish(&c, "l1", true);
        assert!(o.not_safe.is_none(), "{o:?}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert!(info.is_dir() && !info.is_symlink());
        git(&dest, &["status"]);
    }

    #[tokio::test]
    async fn fifos_are_removed_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let (_host, dest, c) = isolated(d.path()).await;
        let fifo = crate::safefs::mkfifo;
        fifo(&dest.join(".gitignore"));
        fifo(&dest.join("sub/.gitignore"));
        fifo(&d.path().join("far-fifo"));
        std::os::unix::fs::symlink(d.path().join("far-fifo"), dest.join("sub/.gitattributes"))
            .unwrap();
        let o = finish_within(&c, "f1", false, Duration::from_secs(60));
        assert!(o.not_safe.is_none(), "{o:?}");
        assert!(!dest.join(".gitignore").exists());
        assert!(std::fs::symlink_metadata(dest.join("sub/.gitattributes")).is_err());
        let notes = o.notes.join("\n");
        assert!(
            notes.contains("`.gitignore`") && notes.contains("`sub/.gitignore`"),
            "{notes}"
        );
        // Nothing else was left: clean, so removed.
        assert_eq!(o.kept, None, "{o:?}");
        assert!(!dest.exists());
    }

    #[test]
    fn a_stuck_finish_is_abandoned_in_time() {
        let started = std::time::Instant::now();
        let r = bounded(Duration::from_millis(200), || {
            std::thread::sleep(Duration::from_secs(30));
        });
        assert!(r.unwrap_err().contains("gave up"));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(bounded(Duration::from_secs(5), || 7), Ok(7));
    }

    #[tokio::test]
    async fn kept_checkouts_run_nothing_the_agent_planted() {
        let d = tempfile::tempdir().unwrap();
        let marker = d.path().join("pwned");
        // The harness notices a planted command when nothing stops it.
        let control = d.path().join("control");
        std::fs::create_dir(&control).unwrap();
        repo_with_commit(&control);
        plant(&control.join(".git"), &marker);
        std::fs::write(control.join("a.txt"), "changed\n").unwrap();
        user_runs_git(&control);
        assert!(marker.exists());
        std::fs::remove_file(&marker).unwrap();
        let (_host, dest, c) = isolated(d.path()).await;
        std::fs::write(dest.join(".gitattributes"), "* filter=x diff=x\n").unwrap();
        std::fs::write(dest.join("a.txt"), "changed\n").unwrap();
        plant(&dest.join(".git"), &marker);
        // A nested repository with its own config, registered as a submodule.
        git(&dest.join("sub"), &["init", "-q"]);
        plant(&dest.join("sub/.git"), &marker);
        // A folder git would open as a bare repository.
        let bare = dest.join("sub/bare");
        std::fs::create_dir_all(bare.join("objects")).unwrap();
        std::fs::create_dir_all(bare.join("refs")).unwrap();
        std::fs::write(bare.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        plant(&bare, &marker);
        // And everything read-only, as an agent with the user's uid can make it.
        for p in [".git/hooks", ".git", "sub/.git"] {
            std::fs::set_permissions(
                dest.join(p),
                std::os::unix::fs::PermissionsExt::from_mode(0o555),
            )
            .unwrap();
        }
        let o = finish(&c, "p1", false);
        assert!(o.not_safe.is_none(), "{o:?}");
        assert!(o.kept.is_some());
        for dir in [
            &dest,
            &dest.join("sub"),
            &bare,
            &dest.join("sub/.git.sbx-disabled"),
        ] {
            user_runs_git(dir);
        }
        assert!(!marker.exists(), "a planted command ran: {o:?}");
        assert!(!dest.join(".git/hooks").exists());
        let notes = o.notes.join("\n");
        assert!(
            notes.contains("`sub/.git` is now `sub/.git.sbx-disabled`"),
            "{notes}"
        );
        assert!(notes.contains("`sub/bare/HEAD`"), "{notes}");
        // The work is all there.
        assert_eq!(
            std::fs::read_to_string(dest.join("a.txt")).unwrap(),
            "changed\n"
        );
    }

    #[tokio::test]
    async fn a_git_file_or_link_is_replaced_by_a_fresh_git_folder() {
        for how in ["gitdir", "symlink"] {
            let d = tempfile::tempdir().unwrap();
            let marker = d.path().join("pwned");
            let (_host, dest, c) = isolated(d.path()).await;
            // The agent's own repository elsewhere in the checkout, full of planted config.
            std::fs::rename(dest.join(".git"), dest.join(".evil")).unwrap();
            plant(&dest.join(".evil"), &marker);
            if how == "gitdir" {
                std::fs::write(dest.join(".git"), "gitdir: .evil\n").unwrap();
            } else {
                std::os::unix::fs::symlink(".evil", dest.join(".git")).unwrap();
            }
            let o = finish(&c, "g1", false);
            assert!(o.not_safe.is_none(), "{o:?}");
            assert!(o.notes.join("\n").contains("replaced its `.git`"), "{o:?}");
            assert!(dest.join(".git").is_dir() && !dest.join(".git").is_symlink());
            assert_eq!(git(&dest, &["rev-parse", "HEAD"]).trim(), c.start_commit);
            for dir in [&dest, &dest.join(".evil"), &dest.join("sub")] {
                user_runs_git(dir);
            }
            assert!(!marker.exists(), "{how}: a planted command ran");
        }
    }

    /// Writes an object as is (`--literally`: no checks) and returns its id.
    fn write_object(dest: &Path, kind: &str, bytes: &[u8]) -> String {
        let mut child = Cmd::git(dest)
            .args(["hash-object", "-t", kind, "--literally", "-w", "--stdin"])
            .std_command()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A commit (made HEAD) that git's fsck rejects, and the message id it reports.
    fn bad_commit(dest: &Path, kind: &str) -> (String, &'static str) {
        let oid = |hex: &str| hex::decode(hex).unwrap();
        let blob = oid(&write_object(dest, "blob", b"hi\n"));
        let gitmodules = oid(&write_object(
            dest,
            "blob",
            b"[submodule \"x\"]\n\tpath = x\n\turl = --upload-pack=touch /tmp/pwned\n",
        ));
        let entry = |mode: &str, name: &str, id: &[u8]| {
            [format!("{mode} {name}\0").into_bytes(), id.to_vec()].concat()
        };
        let (tree, why) = match kind {
            "unsorted" => (
                [entry("100644", "b", &blob), entry("100644", "a", &blob)].concat(),
                "treeNotSorted",
            ),
            "dotgit" => (
                [entry("100644", ".git", &blob), entry("100644", "x", &blob)].concat(),
                "hasDotgit",
            ),
            "mode" => (entry("100664", "a", &blob), "badFilemode"),
            "gitmodules" => (entry("100644", ".gitmodules", &gitmodules), "gitmodulesUrl"),
            "ident" => (entry("100644", "a", &blob), "zeroPaddedDate"),
            // A header libgit2 cannot parse: refused before git is asked.
            _ => (entry("100644", "a", &blob), "could not read"),
        };
        let tree = write_object(dest, "tree", &tree);
        let parent = git(dest, &["rev-parse", "HEAD"]);
        let author = match kind {
            "ident" => "<a@example.com> 01 +0000",
            "garbled" => "<a@example.com 1 +0000",
            _ => "<a@example.com> 1 +0000",
        };
        let commit = write_object(
            dest,
            "commit",
            format!(
                "tree {tree}\nparent {}\nauthor A {author}\ncommitter A <a@example.com> 1 +0000\n\nbad\n",
                parent.trim()
            )
            .as_bytes(),
        );
        git(dest, &["update-ref", "HEAD", &commit]);
        (commit, why)
    }

    #[tokio::test]
    async fn commits_git_fsck_rejects_are_refused_and_kept_for_inspection() {
        for kind in [
            "unsorted",
            "dotgit",
            "mode",
            "gitmodules",
            "ident",
            "garbled",
        ] {
            let d = tempfile::tempdir().unwrap();
            let (host, dest, c) = isolated(d.path()).await;
            let packs = git(&host, &["count-objects", "-v"]);
            let (bad, expect) = bad_commit(&dest, kind);
            let o = finish(&c, "b1", false);
            assert_eq!(o.branch, None, "{kind}: {o:?}");
            assert!(o.not_safe.is_none(), "{o:?}");
            let why = o.kept.clone().unwrap();
            assert!(why.contains(expect), "{kind}: {why}");
            assert!(
                kind == "garbled" || why.contains("git refused them"),
                "{why}"
            );
            git(&host, &["fsck", "--full", "--strict"]);
            assert_eq!(git(&host, &["branch", "--list", "sbx/*"]), "");
            // Not even a temporary pack of it reached the host's object folder.
            assert_eq!(git(&host, &["count-objects", "-v"]), packs, "{kind}");
            let objects = std::fs::read_dir(host.join(".git/objects")).unwrap();
            assert!(
                objects
                    .flatten()
                    .all(|e| !e.file_name().to_string_lossy().starts_with("incoming")),
                "{kind}"
            );
            assert_eq!(git(&dest, &["rev-parse", REFUSED_REF]).trim(), bad);
            assert_eq!(git(&dest, &["rev-parse", "HEAD"]).trim(), c.start_commit);
            assert_eq!(git(&dest, &["cat-file", "-t", &bad]).trim(), "commit");
        }
    }

    #[test]
    fn alternates_with_colons_are_quoted_for_git() {
        assert_eq!(alternate_entry(Path::new("/a/b")), "/a/b");
        assert_eq!(
            alternate_entry(Path::new("/a:b/\"q\"\\")),
            "\"/a:b/\\\"q\\\"\\\\\""
        );
    }

    #[tokio::test]
    async fn a_host_path_with_a_colon_still_imports() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("a:b");
        std::fs::create_dir(&base).unwrap();
        let (host, dest, c) = isolated(&base).await;
        std::fs::write(dest.join("n.txt"), "n\n").unwrap();
        git(&dest, &["add", "."]);
        git(&dest, &["commit", "-q", "-m", "inside"]);
        let o = finish(&c, "c1", false);
        assert_eq!(o.branch.as_deref(), Some("sbx/c1"), "{o:?}");
        git(&host, &["fsck", "--full", "--strict"]);
    }

    #[tokio::test]
    async fn an_interrupted_finish_is_taken_up_again() {
        let d = tempfile::tempdir().unwrap();
        let (host, dest, c) = isolated(d.path()).await;
        std::fs::write(dest.join("n.txt"), "n\n").unwrap();
        git(&dest, &["add", "."]);
        git(&dest, &["commit", "-q", "-m", "inside"]);
        let head = git(&dest, &["rev-parse", "HEAD"]);
        // As if sbx died right after moving the agent's `.git` aside, mid-way through the new
        // one.
        let repos = dest.parent().unwrap();
        std::fs::rename(dest.join(".git"), repos.join(".sbx-quarantine-host")).unwrap();
        std::fs::create_dir_all(repos.join(".sbx-git-host/objects")).unwrap();
        let o = finish(&c, "i1", false);
        assert_eq!(o.branch.as_deref(), Some("sbx/i1"), "{o:?}");
        assert_eq!(git(&host, &["rev-parse", "sbx/i1"]), head);
        assert!(!repos.join(".sbx-quarantine-host").exists());
        assert!(!repos.join(".sbx-git-host").exists());
    }

    #[tokio::test]
    async fn a_tracked_bare_repository_fixture_does_not_keep_a_clean_checkout() {
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("host");
        std::fs::create_dir(&host).unwrap();
        repo_with_commit(&host);
        let fixture = host.join("tests/fixture.git");
        for sub in ["objects/info", "refs/heads"] {
            std::fs::create_dir_all(fixture.join(sub)).unwrap();
            std::fs::write(fixture.join(sub).join("keep"), "").unwrap();
        }
        std::fs::write(fixture.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        git(&host, &["add", "."]);
        git(&host, &["commit", "-q", "-m", "fixture"]);
        let repo = discover(&host).unwrap();
        let dest = d.path().join("s/repos/host");
        let mut c = Checkout::plan(&repo, "host", &dest, GitMode::Isolated);
        create(&mut c, None).await.unwrap();
        let o = finish(&c, "t1", false);
        assert_eq!((o.kept.clone(), o.not_safe.clone()), (None, None), "{o:?}");
        assert!(!dest.exists());
        // Kept for another reason, it is disabled like any other.
        let mut c = Checkout::plan(&repo, "host", &dest, GitMode::Isolated);
        create(&mut c, None).await.unwrap();
        std::fs::write(dest.join("wip"), "x").unwrap();
        let o = finish(&c, "t2", false);
        assert!(o.kept.is_some() && o.not_safe.is_none(), "{o:?}");
        assert!(!dest.join("tests/fixture.git/HEAD").exists());
        assert!(
            o.notes.join("\n").contains("tests/fixture.git/HEAD"),
            "{o:?}"
        );
    }

    #[tokio::test]
    async fn a_tree_too_deep_to_check_is_kept_as_not_safe_with_its_commits_home() {
        let d = tempfile::tempdir().unwrap();
        let (host, dest, c) = isolated(d.path()).await;
        std::fs::write(dest.join("n.txt"), "n\n").unwrap();
        git(&dest, &["add", "."]);
        git(&dest, &["commit", "-q", "-m", "inside"]);
        let deep: PathBuf = std::iter::repeat_n("d", crate::safefs::MAX_DEPTH + 5).collect();
        std::fs::create_dir_all(dest.join(&deep)).unwrap();
        plant(&dest.join(".git"), &d.path().join("pwned"));
        let o = finish(&c, "d1", false);
        assert!(
            o.not_safe.as_deref().unwrap_or("").contains("deeper"),
            "{o:?}"
        );
        assert!(o.kept.is_some() && dest.exists(), "{o:?}");
        assert_eq!(o.branch.as_deref(), Some("sbx/d1"));
        assert_eq!(
            git(&host, &["log", "-1", "--format=%s", "sbx/d1"]).trim(),
            "inside"
        );
        // The top `.git` is sbx's all the same.
        assert!(!dest.join(".git/hooks").exists());
    }

    #[tokio::test]
    async fn worktree_checkout_keeps_dirty_and_prunes_clean() {
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("host");
        std::fs::create_dir(&host).unwrap();
        repo_with_commit(&host);
        let repo = discover(&host).unwrap();
        let dest = d.path().join("s/repos/host");
        let mut c = Checkout::plan(&repo, "host", &dest, GitMode::Worktree);
        create(&mut c, None).await.unwrap();
        assert!(
            c.mounts
                .iter()
                .any(|m| m.host == repo.common_dir && !m.read_only)
        );
        std::fs::write(dest.join("new.txt"), "x").unwrap();
        let o = finish(&c, "w1", false);
        assert!(o.kept.is_some() && dest.exists());
        std::fs::remove_file(dest.join("new.txt")).unwrap();
        let o = finish(&c, "w1", false);
        assert_eq!(o.kept, None);
        assert!(!dest.exists());
        assert_eq!(
            git(&host, &["worktree", "list", "--porcelain"])
                .matches("worktree ")
                .count(),
            1
        );
    }
}
