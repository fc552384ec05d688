//! Making a checkout safe to hand back after the agent is gone: a sweep of its files (special
//! files removed, nested repositories disabled, owner permissions restored) and a `.git` that sbx
//! writes afresh, taking from the agent's only objects, `HEAD` and refs, each validated.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::safefs::{Dir, Kind, MAX_DEPTH, Meta, Refused};

/// What a sweep should do besides removing FIFOs, sockets and devices.
#[derive(Debug, Clone, Copy)]
pub struct SweepOptions {
    /// Disable nested repositories (`.git` below the top, folders that git would take for a bare
    /// repository).
    pub disarm_nested: bool,
    /// Give every entry to this uid/gid (sbx runs as root and the checkout was the agent's).
    pub owner: Option<(u32, u32)>,
}

/// What a sweep changed, for the user (paths escaped).
#[derive(Debug, Default)]
pub struct Swept {
    pub specials: Vec<String>,
    pub disarmed: Vec<(String, String)>,
    /// Folders git would open as a bare repository (path from the top, and whether it is a
    /// nested `.git` already reported), left for [`disarm_bare`].
    bare: Vec<(Vec<u8>, bool)>,
}

impl Swept {
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.specials.is_empty() {
            out.push(format!(
                "removed {} that git cannot track: {}",
                plural(
                    self.specials.len(),
                    "FIFO, socket or device node",
                    "FIFOs, sockets or device nodes"
                ),
                listing(self.specials.iter().map(|p| format!("`{p}`")))
            ));
        }
        if !self.disarmed.is_empty() {
            out.push(format!(
                "disabled {} the agent left (git would have run its configuration): {}",
                plural(
                    self.disarmed.len(),
                    "nested repository",
                    "nested repositories"
                ),
                listing(
                    self.disarmed
                        .iter()
                        .map(|(a, b)| format!("`{a}` is now `{b}`"))
                )
            ));
        }
        out
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn listing(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    let shown = items.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    match items.len() {
        0..=5 => shown,
        n => format!("{shown} and {} more", n - 5),
    }
}

/// An agent-chosen name made printable: control characters and the invisible or
/// direction-changing code points that could disguise it on a terminal are escaped.
pub fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .flat_map(|c| {
            let hidden = c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}');
            let v: Vec<char> = if hidden {
                c.escape_unicode().collect()
            } else {
                vec![c]
            };
            v
        })
        .collect()
}

/// Code points HFS+ ignores in names, so `.g\u{200c}it` is `.git` there (git's `next_hfs_char`).
fn hfs_ignored(c: char) -> bool {
    matches!(
        c,
        '\u{200c}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{206a}'..='\u{206f}' | '\u{feff}'
    )
}

/// Whether `name` is `needle` (lowercase ASCII) to a case-insensitive file system that ignores
/// the code points HFS+ ignores: how git's `is_hfs_dotgit` compares.
fn hfs_is(name: &[u8], needle: &str) -> bool {
    let Ok(s) = std::str::from_utf8(name) else {
        return false;
    };
    let mut it = s.chars().filter(|c| !hfs_ignored(*c));
    for n in needle.chars() {
        match it.next() {
            Some(c) if c.is_ascii() && c.to_ascii_lowercase() == n => {}
            _ => return false,
        }
    }
    it.next().is_none()
}

/// git's `is_ntfs_dotgit`: `.git` or `git~1` in any case, followed only by dots and spaces
/// (or an NTFS stream suffix `:...`).
fn ntfs_is_dotgit(name: &[u8]) -> bool {
    let lower: Vec<u8> = name.iter().map(u8::to_ascii_lowercase).collect();
    let rest = if let Some(r) = lower.strip_prefix(b".git") {
        r
    } else if let Some(r) = lower.strip_prefix(b"git~1") {
        r
    } else {
        return false;
    };
    for &c in rest {
        if c == b':' || c == b'\\' {
            return true;
        }
        if c != b'.' && c != b' ' {
            return false;
        }
    }
    true
}

/// Whether git on some file system (case-insensitive APFS/HFS+ on macOS, where kept checkouts
/// live, or NTFS) would take `name` for `.git`.
pub fn is_dotgit(name: &[u8]) -> bool {
    hfs_is(name, ".git") || ntfs_is_dotgit(name)
}

/// Whether a folder holding these names is one git would open as a bare repository when the
/// user runs it there (`HEAD` next to `objects`, `refs` or `commondir`), reading its config.
fn looks_like_git_dir(names: &[OsString]) -> bool {
    let has = |n: &str| names.iter().any(|x| hfs_is(x.as_bytes(), n));
    has("head") && (has("objects") || has("refs") || has("commondir"))
}

/// The in-tree files libgit2 opens by following symbolic links while it reads a status.
fn followed_by_status(name: &[u8]) -> bool {
    [".gitignore", ".gitattributes", ".gitmodules", ".mailmap"]
        .iter()
        .any(|n| hfs_is(name, n))
}

/// Walks the whole checkout below `root` (never its top-level `.git`, which the caller
/// replaces), never following a symbolic link. What it did is in `out` even when it fails.
pub fn sweep(root: &Dir, opts: SweepOptions, out: &mut Swept) -> io::Result<()> {
    sweep_dir(root, &[], 0, false, opts, out)
}

/// Renames `HEAD` in the folders the sweep found that git would open as a bare repository
/// (reading their config) when the user runs git in them or below them.
pub fn disarm_bare(root: &Dir, swept: &mut Swept) -> io::Result<()> {
    for (path, quiet) in std::mem::take(&mut swept.bare) {
        let mut dir = None;
        for part in path.split(|b| *b == b'/') {
            let parent = dir.as_ref().unwrap_or(root);
            dir = Some(parent.open_dir(OsStr::from_bytes(part))?);
        }
        let Some(dir) = dir else { continue };
        for name in dir.names()? {
            if hfs_is(name.as_bytes(), "head") {
                let to = disabled_name(&dir, &name)?;
                dir.rename(&name, &dir, &to)?;
                if !quiet {
                    swept.disarmed.push((
                        shown(&join(&path, name.as_bytes())),
                        shown(&join(&path, to.as_bytes())),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = rel.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A free name `<name>.sbx-disabled` (or `-2`, `-3`...) in `dir`.
fn disabled_name(dir: &Dir, name: &OsStr) -> io::Result<OsString> {
    for n in 1..1000 {
        let mut cand = name.to_owned();
        cand.push(if n == 1 {
            ".sbx-disabled".to_owned()
        } else {
            format!(".sbx-disabled-{n}")
        });
        if dir.meta(&cand)?.is_none() {
            return Ok(cand);
        }
    }
    Err(io::Error::other(
        "no free name to disable a nested repository",
    ))
}

fn sweep_dir(
    dir: &Dir,
    rel: &[u8],
    depth: usize,
    was_dotgit: bool,
    opts: SweepOptions,
    out: &mut Swept,
) -> io::Result<()> {
    if depth >= MAX_DEPTH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            Refused::TooDeep(MAX_DEPTH),
        ));
    }
    let names = dir.names()?;
    // A folder below the top that git would open as a bare repository (the agent's config,
    // `core.pager`, `gpg.program`...) when the user runs git in it or below it: without its
    // `HEAD` git does not recognise it.
    if opts.disarm_nested && depth > 0 && looks_like_git_dir(&names) {
        out.bare.push((rel.to_vec(), was_dotgit));
    }
    for name in names {
        if depth == 0 && name.as_bytes() == b".git" {
            continue;
        }
        let Some(meta) = dir.meta(&name)? else {
            continue;
        };
        let path = join(rel, name.as_bytes());
        if meta.kind.is_special() {
            // git cannot track them, and opening one blocks (a FIFO named `.gitignore` hung
            // every status check).
            dir.remove(&name)?;
            out.specials.push(shown(&path));
            continue;
        }
        if let Some((uid, gid)) = opts.owner
            && (meta.uid != uid)
        {
            dir.chown(&name, uid, gid)?;
        }
        let mut name = name;
        let disarm = opts.disarm_nested && is_dotgit(name.as_bytes());
        if disarm {
            let to = disabled_name(dir, &name)?;
            dir.rename(&name, dir, &to)?;
            out.disarmed
                .push((shown(&path), shown(&join(rel, to.as_bytes()))));
            name = to;
        }
        match meta.kind {
            Kind::Dir => {
                let sub = dir.open_dir(&name)?;
                let rel = join(rel, name.as_bytes());
                sweep_dir(&sub, &rel, depth + 1, disarm, opts, out)?;
            }
            Kind::File => strip_id_bits(dir, &name, &meta)?,
            // libgit2 follows these while reading a status; one pointing at a FIFO outside the
            // checkout would block it.
            Kind::Symlink
                if followed_by_status(name.as_bytes())
                    && dir.target_kind(&name)?.is_some_and(Kind::is_special) =>
            {
                dir.remove(&name)?;
                out.specials.push(shown(&path));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Set-user-id and set-group-id bits mean nothing to git and are dangerous on a file sbx (as
/// root) has just given to root.
fn strip_id_bits(dir: &Dir, name: &OsStr, meta: &Meta) -> io::Result<()> {
    if meta.mode & 0o6000 != 0 {
        dir.set_mode(name, meta.mode & 0o1777)?;
    }
    Ok(())
}

/// Where the agent's `HEAD` pointed, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    Branch(String),
    Detached(String),
}

impl Head {
    pub fn file_text(&self) -> String {
        match self {
            Head::Branch(b) => format!("ref: {b}\n"),
            Head::Detached(oid) => format!("{oid}\n"),
        }
    }
}

/// Refs sbx carries over from the agent's repository: branches, tags, remote-tracking
/// branches, the stash, and sbx's own.
fn wanted_ref(name: &str) -> bool {
    (["refs/heads/", "refs/tags/", "refs/remotes/", "refs/sbx/"]
        .iter()
        .any(|p| name.starts_with(p))
        || name == "refs/stash")
        && git2::Reference::is_valid_name(name)
}

pub fn is_oid(s: &str, hexlen: usize) -> bool {
    s.len() == hexlen
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `HEAD` as git writes it: `ref: refs/heads/<branch>` or an object id.
pub fn parse_head(bytes: &[u8], hexlen: usize) -> Option<Head> {
    let text = std::str::from_utf8(bytes).ok()?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    if let Some(target) = line.strip_prefix("ref: ") {
        return (target.starts_with("refs/heads/") && wanted_ref(target))
            .then(|| Head::Branch(target.to_owned()));
    }
    is_oid(line, hexlen).then(|| Head::Detached(line.to_owned()))
}

/// The refs of a `packed-refs` file (peeled `^` lines and comments skipped).
pub fn parse_packed_refs(bytes: &[u8], hexlen: usize, out: &mut BTreeMap<String, String>) {
    for line in bytes.split(|b| *b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let Some((oid, name)) = line.split_once(' ') else {
            continue;
        };
        if is_oid(oid, hexlen) && wanted_ref(name) && out.len() < MAX_REFS {
            out.insert(name.to_owned(), oid.to_owned());
        }
    }
}

const MAX_REFS: usize = 200_000;
const REF_CAP: u64 = 4096;
const PACKED_REFS_CAP: u64 = 256 << 20;

/// The validated `HEAD` and refs of the agent's git folder (loose refs win over packed ones).
pub fn read_refs(git: &Dir, hexlen: usize) -> (Option<Head>, BTreeMap<String, String>) {
    let head = git
        .read_file(OsStr::new("HEAD"), REF_CAP)
        .ok()
        .and_then(|b| parse_head(&b, hexlen));
    let mut refs = BTreeMap::new();
    if let Ok(b) = git.read_file(OsStr::new("packed-refs"), PACKED_REFS_CAP) {
        parse_packed_refs(&b, hexlen, &mut refs);
    }
    if let Ok(dir) = git.open_dir(OsStr::new("refs")) {
        loose_refs(&dir, "refs", 0, hexlen, &mut refs);
    }
    (head, refs)
}

fn loose_refs(
    dir: &Dir,
    prefix: &str,
    depth: usize,
    hexlen: usize,
    out: &mut BTreeMap<String, String>,
) {
    if depth > 32 {
        return;
    }
    let Ok(names) = dir.names() else { return };
    for name in names {
        let Some(name) = name.to_str() else { continue };
        let full = format!("{prefix}/{name}");
        match dir.meta(OsStr::new(name)) {
            Ok(Some(m)) if m.kind == Kind::Dir => {
                if let Ok(sub) = dir.open_dir(OsStr::new(name)) {
                    loose_refs(&sub, &full, depth + 1, hexlen, out);
                }
            }
            Ok(Some(m)) if m.kind == Kind::File && wanted_ref(&full) && out.len() < MAX_REFS => {
                let Ok(b) = dir.read_file(OsStr::new(name), REF_CAP) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&b);
                let oid = text.strip_suffix('\n').unwrap_or(&text);
                if is_oid(oid, hexlen) {
                    out.insert(full, oid.to_owned());
                }
            }
            _ => {}
        }
    }
}

/// The `packed-refs` file sbx writes (sorted by name, as its header says).
pub fn packed_refs_text(refs: &BTreeMap<String, String>) -> String {
    let mut text = String::from("# pack-refs with: sorted \n");
    for (name, oid) in refs {
        text.push_str(&format!("{oid} {name}\n"));
    }
    text
}

fn is_hex(b: &[u8]) -> bool {
    b.iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Brings the agent's objects into sbx's new object folder as hard links (cheap, and the
/// agent's folder stays intact until the new one is complete): only loose objects and pack
/// files with the names git gives them, only regular files. Everything else (`info/alternates`,
/// `info/http-alternates`, commit-graphs, multi-pack indexes, bitmaps, promisor and keep files,
/// temporary files, symbolic links, FIFOs) stays behind. Returns how many files came over.
pub fn link_objects(
    from: &Dir,
    to: &Dir,
    hexlen: usize,
    owner: Option<(u32, u32)>,
) -> io::Result<usize> {
    let mut n = 0;
    let link = |src: &Dir, dst: &Dir, name: &OsStr, meta: &Meta| -> io::Result<()> {
        if let Err(e) = src.hard_link(name, dst, name) {
            // Too many links already (an agent can make 65,000), or a file system without
            // them: a copy does as well.
            if crate::safefs::refusal(&e).is_some() {
                return Err(e);
            }
            src.copy_file(name, dst, name, 0o444)?;
            return Ok(());
        }
        if let Some((uid, gid)) = owner
            && meta.uid != uid
        {
            dst.chown(name, uid, gid)?;
        }
        if meta.mode != 0o444 {
            dst.set_mode(name, 0o444)?;
        }
        Ok(())
    };
    for name in from.names()? {
        let b = name.as_bytes();
        let Some(meta) = from.meta(&name)? else {
            continue;
        };
        if meta.kind != Kind::Dir {
            continue;
        }
        if b.len() == 2 && is_hex(b) {
            let src = from.open_dir(&name)?;
            let dst = to.create_dir(&name, 0o755)?;
            for f in src.names()? {
                let fb = f.as_bytes();
                if fb.len() + 2 != hexlen || !is_hex(fb) {
                    continue;
                }
                if let Some(m) = src.meta(&f)?
                    && m.kind == Kind::File
                {
                    link(&src, &dst, &f, &m)?;
                    n += 1;
                }
            }
        } else if b == b"pack" {
            let src = from.open_dir(&name)?;
            let dst = match to.open_dir(&name) {
                Ok(d) => d,
                Err(_) => to.create_dir(&name, 0o755)?,
            };
            let names = src.names()?;
            let pack_ids: Vec<&[u8]> = names
                .iter()
                .filter_map(|f| {
                    let id = f
                        .as_bytes()
                        .strip_prefix(b"pack-")?
                        .strip_suffix(b".pack")?;
                    (id.len() == hexlen && is_hex(id)).then_some(id)
                })
                .collect();
            for id in pack_ids {
                let pack = OsString::from_vec([b"pack-", id, b".pack"].concat());
                let idx = OsString::from_vec([b"pack-", id, b".idx"].concat());
                let (Some(pm), Some(im)) = (src.meta(&pack)?, src.meta(&idx)?) else {
                    continue;
                };
                if pm.kind == Kind::File && im.kind == Kind::File {
                    link(&src, &dst, &pack, &pm)?;
                    link(&src, &dst, &idx, &im)?;
                    n += 2;
                }
            }
        }
    }
    Ok(n)
}

/// The `.git` sbx writes for a kept checkout.
pub struct NewGit<'a> {
    pub config: &'a str,
    pub head: Head,
    pub refs: BTreeMap<String, String>,
    /// The host's own object folder, borrowed read-only as at creation.
    pub alternates: String,
    pub exclude: Option<Vec<u8>>,
    pub shallow: Option<Vec<u8>>,
}

/// Writes a git folder `name` in `parent` (which must not have one), with the agent's objects
/// from `agent_objects` when given. `HEAD` comes last: a half-written folder is no repository.
pub fn write_git(
    parent: &Dir,
    name: &OsStr,
    new: &NewGit,
    agent_objects: Option<&Dir>,
    hexlen: usize,
    owner: Option<(u32, u32)>,
) -> io::Result<usize> {
    let os = OsStr::new;
    let git = parent.create_dir(name, 0o755)?;
    let objects = git.create_dir(os("objects"), 0o755)?;
    let info = objects.create_dir(os("info"), 0o755)?;
    objects.create_dir(os("pack"), 0o755)?;
    let linked = match agent_objects {
        Some(from) => link_objects(from, &objects, hexlen, owner)?,
        None => 0,
    };
    info.write_file(os("alternates"), new.alternates.as_bytes(), 0o644)?;
    let refs = git.create_dir(os("refs"), 0o755)?;
    refs.create_dir(os("heads"), 0o755)?;
    refs.create_dir(os("tags"), 0o755)?;
    git.write_file(
        os("packed-refs"),
        packed_refs_text(&new.refs).as_bytes(),
        0o644,
    )?;
    git.write_file(os("config"), new.config.as_bytes(), 0o644)?;
    if let Some(exclude) = &new.exclude {
        git.create_dir(os("info"), 0o755)?
            .write_file(os("exclude"), exclude, 0o644)?;
    }
    if let Some(shallow) = &new.shallow {
        git.write_file(os("shallow"), shallow, 0o644)?;
    }
    git.write_file(os("HEAD"), new.head.file_text().as_bytes(), 0o644)?;
    Ok(linked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotgit_names_as_git_compares_them() {
        for yes in [
            ".git",
            ".GIT",
            ".Git",
            ".git.",
            ".git ",
            ".git. . ",
            "git~1",
            "GIT~1",
            ".git::$INDEX_ALLOCATION",
            ".g\u{200c}it",
            "\u{feff}.git",
            ".gi\u{202e}t",
        ] {
            assert!(is_dotgit(yes.as_bytes()), "{yes:?}");
        }
        for no in [
            ".gitignore",
            ".git.sbx-disabled",
            "git",
            ".gi",
            ".gitx",
            "git~2",
            "a.git",
            ".g\u{200b}it",
        ] {
            assert!(!is_dotgit(no.as_bytes()), "{no:?}");
        }
        assert!(!is_dotgit(b".g\xffit"));
    }

    #[test]
    fn bare_repository_lookalikes() {
        let n = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(looks_like_git_dir(&n(&[
            "HEAD", "objects", "refs", "config"
        ])));
        assert!(looks_like_git_dir(&n(&["head", "commondir"])));
        assert!(!looks_like_git_dir(&n(&["HEAD", "src"])));
        assert!(!looks_like_git_dir(&n(&["objects", "refs"])));
    }

    #[test]
    fn head_and_refs_are_validated() {
        let oid = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            parse_head(b"ref: refs/heads/main\n", 40),
            Some(Head::Branch("refs/heads/main".into()))
        );
        assert_eq!(
            parse_head(format!("{oid}\n").as_bytes(), 40),
            Some(Head::Detached(oid.into()))
        );
        for bad in [
            "ref: refs/heads/../../config\n",
            "ref: refs/tags/v1\n",
            "ref: /etc/passwd\n",
            "0123\n",
            "ref: refs/heads/a\nb\n",
        ] {
            assert_eq!(parse_head(bad.as_bytes(), 40), None, "{bad:?}");
        }
        let packed = format!(
            "# pack-refs with: peeled fully-peeled sorted \n{oid} refs/heads/main\n^{oid}\n\
             {oid} refs/heads/a..b\n{oid} refs/hooks/x\nzz refs/heads/z\n{oid} refs/tags/v1\n\
             {oid} refs/heads/with\tTAB\n"
        );
        let mut refs = BTreeMap::new();
        parse_packed_refs(packed.as_bytes(), 40, &mut refs);
        assert_eq!(
            refs.keys().collect::<Vec<_>>(),
            ["refs/heads/main", "refs/tags/v1"]
        );
        assert!(packed_refs_text(&refs).ends_with(&format!("{oid} refs/tags/v1\n")));
    }

    #[test]
    fn names_are_shown_escaped() {
        assert_eq!(shown(b"a\x1b[31mb"), "a\\u{1b}[31mb");
        assert_eq!(shown("x\u{202e}y".as_bytes()), "x\\u{202e}y");
        assert_eq!(shown(b"plain/path"), "plain/path");
    }
}
