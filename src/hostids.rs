//! Which user and group ids belong to someone on this host: accounts and groups known to the
//! system's name service (files, LDAP, systemd, ...) and the subordinate ranges of
//! `/etc/subuid` and `/etc/subgid`. sbx uses it to give the agent, when sbx runs as root, ids that
//! no host account owns: an account with the agent's uid could read the agent's
//! `/proc/<pid>/environ` (its tokens), signal it or trace it.

use std::path::Path;

/// The agent's ids when sbx runs as root: the first free pair scanning down from here. Below
/// Debian's on-demand system range (60000-64999) and systemd's dynamic users (61184-65519),
/// above where `adduser` starts handing out accounts, so a collision is rare and is skipped.
const FREE_ID_TOP: u32 = 59_999;
const FREE_ID_BOTTOM: u32 = 50_000;

/// Whether a host account has this uid.
pub fn uid_taken(uid: u32) -> bool {
    // SAFETY: getpwuid_r writes only into the entry and the buffer, whose size is passed.
    found(|pw: &mut libc::passwd, buf, out| unsafe {
        libc::getpwuid_r(uid, pw, buf.as_mut_ptr(), buf.len(), out)
    }) || in_subordinate_ranges(Path::new("/etc/subuid"), uid)
}

/// Whether a host group has this gid.
pub fn gid_taken(gid: u32) -> bool {
    // SAFETY: as for getpwuid_r.
    found(|gr: &mut libc::group, buf, out| unsafe {
        libc::getgrgid_r(gid, gr, buf.as_mut_ptr(), buf.len(), out)
    }) || in_subordinate_ranges(Path::new("/etc/subgid"), gid)
}

/// Runs a `get*_r` lookup with a growing buffer; true when it found an entry. A lookup that
/// fails for another reason counts as found, so sbx never picks an id it could not check.
fn found<T>(mut call: impl FnMut(&mut T, &mut [libc::c_char], &mut *mut T) -> libc::c_int) -> bool {
    let mut buf: Vec<libc::c_char> = vec![0; 4096];
    loop {
        // SAFETY: passwd and group are C structs of integers and pointers; all-zero is valid.
        let mut entry: T = unsafe { std::mem::zeroed() };
        let mut out: *mut T = std::ptr::null_mut();
        match call(&mut entry, &mut buf, &mut out) {
            0 => return !out.is_null(),
            libc::ERANGE if buf.len() < (1 << 20) => buf.resize(buf.len() * 2, 0),
            // "Not found" on some C libraries.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return false,
            _ => return true,
        }
    }
}

/// Whether `id` lies in one of the `name:start:count` ranges of a subuid/subgid file.
fn in_subordinate_ranges(file: &Path, id: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    subordinate_ranges(&text)
        .iter()
        .any(|&(start, count)| u64::from(id) >= start && u64::from(id) < start + count)
}

fn subordinate_ranges(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.trim().split(':');
            let _name = parts.next()?;
            let start = parts.next()?.trim().parse().ok()?;
            let count = parts.next()?.trim().parse().ok()?;
            Some((start, count))
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
#[error(
    "no free user id between {FREE_ID_BOTTOM} and {FREE_ID_TOP} for the agent: host accounts own them all"
)]
pub struct NoFreeIds;

/// The uid/gid the agent runs as: the user's own, so files in the checkouts keep their owner;
/// when sbx runs as root (the agent never does), ids no host account owns. A root primary group
/// is replaced the same way.
pub fn agent_ids() -> Result<(u32, u32), NoFreeIds> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    match (uid, gid) {
        (0, _) => free_ids().ok_or(NoFreeIds),
        (u, 0) => Ok((u, free_ids().ok_or(NoFreeIds)?.1)),
        ids => Ok(ids),
    }
}

/// The first uid and gid, scanning down from [`FREE_ID_TOP`], that no host account or group
/// owns (the same number for both when possible). `None` when the whole range is taken.
pub fn free_ids() -> Option<(u32, u32)> {
    pick(uid_taken, gid_taken)
}

fn pick(uid_taken: impl Fn(u32) -> bool, gid_taken: impl Fn(u32) -> bool) -> Option<(u32, u32)> {
    let range = || (FREE_ID_BOTTOM..=FREE_ID_TOP).rev();
    if let Some(id) = range().find(|&i| !uid_taken(i) && !gid_taken(i)) {
        return Some((id, id));
    }
    Some((
        range().find(|&i| !uid_taken(i))?,
        range().find(|&i| !gid_taken(i))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_nobody_are_taken() {
        assert!(uid_taken(0));
        assert!(gid_taken(0));
    }

    #[test]
    fn picks_the_first_pair_no_one_owns() {
        assert_eq!(pick(|_| false, |_| false), Some((59_999, 59_999)));
        assert_eq!(
            pick(|u| u >= 59_998, |g| g == 59_997),
            Some((59_996, 59_996))
        );
        // No common free number: separate ones.
        assert_eq!(pick(|u| u % 2 == 1, |g| g % 2 == 0), Some((59_998, 59_999)));
        assert_eq!(pick(|_| true, |_| false), None);
    }

    #[test]
    fn subordinate_ranges_parse() {
        let r = subordinate_ranges("alice:100000:65536\n# x\nbob:165536:65536\nbad\n");
        assert_eq!(r, [(100_000, 65_536), (165_536, 65_536)]);
    }

    #[test]
    fn the_agent_is_never_root_nor_a_host_account_when_sbx_is_root() {
        let (uid, gid) = agent_ids().unwrap();
        assert_ne!(uid, 0);
        assert_ne!(gid, 0);
        if rustix::process::getuid().is_root() {
            assert!(!uid_taken(uid) && !gid_taken(gid));
        }
    }

    #[test]
    fn the_picked_ids_are_free_here() {
        let (u, g) = free_ids().unwrap();
        assert!(!uid_taken(u) && !gid_taken(g));
    }
}
