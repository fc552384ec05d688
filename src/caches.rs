//! Package caches that outlive a session: per project (the primary repository, for this HOME),
//! one engine volume per package manager, mounted under `/cache` in the agent's container and
//! linked from where the tools look in its home. Never shared between projects, never given a
//! token (sbx's tokens are environment variables of the command, never files). Listed and
//! removed with `sbx cache ls|rm`; `caches: false` turns them off.
//!
//! A cache is state one session leaves to the next sessions of the same project: what one
//! session's agent puts there, a later one's tools may use (see the README's security model).

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::container;
use crate::engine::EngineApi;

/// Each cache: its kind (the volume's suffix) and where the tools look for it, under the home.
pub const KINDS: &[(&str, &str)] = &[
    ("npm", ".npm"),
    ("pip", ".cache/pip"),
    ("uv", ".cache/uv"),
    ("cargo-registry", ".cargo/registry"),
    ("cargo-git", ".cargo/git"),
    ("go-mod", "go/pkg/mod"),
];

/// Where the volumes are mounted in the agent's container.
pub const MOUNT_ROOT: &str = "/cache";
/// The label naming the project (its repository) a cache volume belongs to.
pub const PROJECT_LABEL: &str = "dev.sbx.cache.project";
/// The label holding a cache's kind.
pub const KIND_LABEL: &str = "dev.sbx.cache.kind";
/// The label holding the `uid:gid` a volume's top folder was given to.
pub const USER_LABEL: &str = "dev.sbx.cache.user";

/// One project's caches for one agent user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `(volume name, mount point, kind)`.
    pub volumes: Vec<(String, String, &'static str)>,
    pub labels: BTreeMap<String, String>,
    /// For the start-up script: `TARGET=HOME_PATH ...`.
    pub links: String,
}

/// The key of a project's caches: this HOME's owner tag and the repository's `.git` folder.
pub fn project_key(owner: &str, common_dir: &Path) -> String {
    let mut h = Sha256::new();
    h.update(owner.as_bytes());
    h.update(b"\0");
    h.update(common_dir.as_os_str().as_encoded_bytes());
    hex::encode(h.finalize())[..16].to_owned()
}

pub fn volume_name(key: &str, kind: &str) -> String {
    format!("sbx-cache-{key}-{kind}")
}

pub fn plan(owner: &str, project: &Path, (uid, gid): (u32, u32)) -> Plan {
    let key = project_key(owner, project);
    let volumes = KINDS
        .iter()
        .map(|(kind, _)| {
            (
                volume_name(&key, kind),
                format!("{MOUNT_ROOT}/{kind}"),
                *kind,
            )
        })
        .collect();
    let links = KINDS
        .iter()
        .map(|(kind, home)| format!("{MOUNT_ROOT}/{kind}={home}"))
        .collect::<Vec<_>>()
        .join(" ");
    let labels = BTreeMap::from([
        (crate::container::OWNER_LABEL.to_owned(), owner.to_owned()),
        (PROJECT_LABEL.to_owned(), project.display().to_string()),
        (USER_LABEL.to_owned(), format!("{uid}:{gid}")),
    ]);
    Plan {
        volumes,
        labels,
        links,
    }
}

/// Makes the project's cache volumes that do not exist yet, and gives the top folder of each
/// new one (or one made for other ids) to the agent's ids: `chown` in sbx's own gate image, as
/// root with only `CAP_CHOWN` and `CAP_DAC_OVERRIDE`, no network, only those volumes mounted.
pub async fn prepare<E: EngineApi>(
    engine: &E,
    plan: &Plan,
    (uid, gid): (u32, u32),
    gate_image: &str,
) -> anyhow::Result<()> {
    let user = format!("{uid}:{gid}");
    // One listing of this HOME's cache volumes, not a question per volume: this is the start
    // path. (The owner tag is hex; a project path may hold anything a label filter mishandles.)
    let owner = &plan.labels[container::OWNER_LABEL];
    let existing: std::collections::HashMap<_, _> = engine
        .volumes(&[
            format!("{}={owner}", container::OWNER_LABEL),
            KIND_LABEL.to_owned(),
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
        name: format!("sbx-cache-prep-{}", crate::state::new_id()),
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
    let out = engine
        .run_once(&spec, std::time::Duration::from_secs(120))
        .await?;
    anyhow::ensure!(
        out.trim().is_empty(),
        "could not prepare the package caches: {}",
        out.trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_are_per_project_and_per_home() {
        let a = plan("owner1", Path::new("/src/a/.git"), (1000, 1000));
        let b = plan("owner1", Path::new("/src/b/.git"), (1000, 1000));
        let other_home = plan("owner2", Path::new("/src/a/.git"), (1000, 1000));
        assert_eq!(a.volumes.len(), KINDS.len());
        for (x, y) in [(&a, &b), (&a, &other_home)] {
            assert!(
                x.volumes
                    .iter()
                    .all(|v| !y.volumes.iter().any(|w| w.0 == v.0))
            );
        }
        assert_eq!(a, plan("owner1", Path::new("/src/a/.git"), (1000, 1000)));
        assert!(
            a.volumes
                .iter()
                .any(|(n, m, k)| n.ends_with("-npm") && m == "/cache/npm" && *k == "npm")
        );
        assert!(
            a.links.contains("/cache/npm=.npm") && a.links.contains("/cache/go-mod=go/pkg/mod")
        );
    }
}
