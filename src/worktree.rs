//! The session's copies of the user's repositories ("checkouts") and what happens to them at the
//! end. Two modes: `isolated` (a per-session repository that borrows the host's objects through a
//! read-only alternate, so nothing of the host's `.git` is writable from inside) and `worktree` (a
//! plain `git worktree`, whose `.git` is shared and writable). At the end, new commits become the
//! host branch `sbx/<session-id>`, clean checkouts are removed and dirty ones kept.
//!
//! Safety rule: after the sandbox has run, a checkout is attacker-controlled data. sbx then only
//! reads it through libgit2 (which runs no hooks, filters or config-defined commands) and never
//! starts the git CLI inside it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::GitMode;
use crate::process::Cmd;

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
    #[error("cannot bring the session's commits back into `{repo}`")]
    Import {
        repo: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("cannot remove the checkout `{path}`")]
    Remove {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl GitError {
    pub fn hint(&self) -> Option<String> {
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
            chown_tree(&d, uid, gid)?;
            if let Some(g) = gitdir {
                chown_tree(&g, uid, gid)?;
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

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Lets libgit2 open repositories owned by another uid (checkouts handed to the agent's uid).
/// Safe here because sbx only reads them with libgit2, which runs no hooks, filters or commands.
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

/// Ends a checkout: brings new commits home as `sbx/<session-id>`, then removes the checkout when
/// it is clean, keeps it when it holds uncommitted work (or when `keep` is set). Idempotent: a
/// checkout that is already gone is reported as removed. Blocking (libgit2).
pub fn finish(c: &Checkout, session_id: &str, keep: bool) -> Outcome {
    trust_checkout_owners();
    let mut out = Outcome {
        name: c.name.clone(),
        branch: None,
        kept: None,
        path: c.path.clone(),
        host_root: c.host_root.clone(),
    };
    if !c.path.exists() {
        return out;
    }
    if !c.ready {
        // Interrupted while being made: it holds nothing of the user's.
        if let Err(e) = remove(c) {
            out.kept = Some(e.to_string());
        }
        return out;
    }
    let branch = session_branch(session_id);
    let state = match c.mode {
        GitMode::Isolated => inspect_isolated(c),
        GitMode::Worktree => inspect_worktree(c),
    };
    let state = match state {
        Ok(s) => s,
        Err(reason) => {
            defang(c);
            out.kept = Some(reason);
            return out;
        }
    };
    if let Some(head) = state.head.filter(|h| h.to_string() != c.start_commit) {
        match import(c, head, &branch) {
            Ok(()) => out.branch = Some(branch),
            Err(e) => {
                out.kept = Some(format!("{e}: {}", e.source_message()));
                return out;
            }
        }
    }
    if keep {
        out.kept = Some("kept as asked (`--keep`)".into());
    } else if state.dirty {
        out.kept = Some("it has uncommitted changes".into());
    } else if let Err(e) = remove(c) {
        out.kept = Some(e.to_string());
    }
    if out.kept.is_some() {
        defang(c);
    }
    out
}

/// A kept session repository invites `cd` and `git status`, which would run hooks and
/// config-defined commands (`core.fsmonitor`, filters) the sandbox planted. Before it is handed
/// back: no hooks, and the config sbx wrote. (Worktree mode shares the host's `.git`, which the
/// sandbox could write anyway: that mode's documented weakness.)
fn defang(c: &Checkout) {
    let gitdir = c.path.join(".git");
    let is_dir = std::fs::symlink_metadata(&gitdir).is_ok_and(|m| m.is_dir());
    if c.mode != GitMode::Isolated || !is_dir {
        return;
    }
    let hooks = gitdir.join("hooks");
    match std::fs::symlink_metadata(&hooks) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(&hooks);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(&hooks);
        }
        Err(_) => {}
    }
    if let Some(config) = &c.git_config {
        let path = gitdir.join("config");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::write(&path, config);
    }
}

trait SourceMessage {
    fn source_message(&self) -> String;
}

impl SourceMessage for GitError {
    fn source_message(&self) -> String {
        std::error::Error::source(self)
            .map(|s| s.to_string())
            .unwrap_or_default()
    }
}

struct State {
    head: Option<git2::Oid>,
    dirty: bool,
}

fn open_checkout(path: &Path) -> Result<git2::Repository, String> {
    let repo = git2::Repository::open_ext(
        path,
        git2::RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
    .map_err(|e| format!("its repository cannot be read ({})", e.message()))?;
    // A config inside the checkout may point `core.worktree` elsewhere; look only here.
    repo.set_workdir(path, false)
        .map_err(|e| format!("its repository cannot be read ({})", e.message()))?;
    Ok(repo)
}

fn head_and_dirty(repo: &git2::Repository) -> Result<State, String> {
    let head = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .map(|c| c.id());
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(false)
        .exclude_submodules(true)
        .include_ignored(false);
    let dirty = !repo
        .statuses(Some(&mut opts))
        .map_err(|e| format!("its status cannot be read ({})", e.message()))?
        .is_empty();
    Ok(State { head, dirty })
}

fn inspect_isolated(c: &Checkout) -> Result<State, String> {
    let gitdir = c.path.join(".git");
    let meta =
        std::fs::symlink_metadata(&gitdir).map_err(|_| "its `.git` folder is gone".to_owned())?;
    if !meta.is_dir() {
        return Err("its `.git` is not a folder any more".into());
    }
    // The sandbox could have rewritten these to borrow from another repository on the host;
    // sbx decides what the session repository reads, not the session.
    let _ = std::fs::remove_file(gitdir.join("commondir"));
    let own = object_dirs(&c.common_dir)
        .into_iter()
        .next()
        .unwrap_or_else(|| c.common_dir.join("objects"));
    let _ = std::fs::create_dir_all(gitdir.join("objects/info"));
    std::fs::write(
        gitdir.join("objects/info/alternates"),
        format!("{}\n", own.display()),
    )
    .map_err(|e| format!("its `.git` cannot be repaired ({e})"))?;
    let repo = open_checkout(&c.path)?;
    head_and_dirty(&repo)
}

fn inspect_worktree(c: &Checkout) -> Result<State, String> {
    let repo = open_checkout(&c.path)?;
    head_and_dirty(&repo)
}

/// Copies the commits reachable from `head` (and not from the start commit) into the host
/// repository and points `branch` at `head`.
fn import(c: &Checkout, head: git2::Oid, branch: &str) -> Result<(), GitError> {
    let err = |source| GitError::Import {
        repo: c.host_root.clone(),
        source,
    };
    let host = git2::Repository::open_bare(&c.common_dir).map_err(err)?;
    if c.mode == GitMode::Isolated && host.find_commit(head).is_err() {
        let session = open_checkout(&c.path).map_err(|m| err(git2::Error::from_str(&m)))?;
        let mut walk = session.revwalk().map_err(err)?;
        walk.push(head).map_err(err)?;
        if let Ok(start) = git2::Oid::from_str(&c.start_commit) {
            // The start commit may be missing from a shallow or damaged history.
            let _ = walk.hide(start);
        }
        let mut pb = session.packbuilder().map_err(err)?;
        pb.insert_walk(&mut walk).map_err(err)?;
        let odb = host.odb().map_err(err)?;
        let mut writer = odb.packwriter().map_err(err)?;
        let mut io_error = None;
        pb.foreach(
            |chunk| match std::io::Write::write_all(&mut writer, chunk) {
                Ok(()) => true,
                Err(e) => {
                    io_error = Some(e);
                    false
                }
            },
        )
        .map_err(err)?;
        if let Some(e) = io_error {
            return Err(err(git2::Error::from_str(&e.to_string())));
        }
        writer.commit().map_err(err)?;
    }
    let commit = host.find_commit(head).map_err(err)?;
    let refname = format!("refs/heads/{branch}");
    match host.find_reference(&refname) {
        Ok(existing) if existing.target() == Some(head) => Ok(()),
        _ => host
            .reference(&refname, commit.id(), true, "sbx: session commits")
            .map(|_| ())
            .map_err(err),
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
    match std::fs::remove_dir_all(&c.path) {
        Ok(()) => Ok(()),
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

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
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
