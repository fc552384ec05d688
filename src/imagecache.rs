//! A host-side copy of the session images for VMs that start with an empty engine (Colima boots
//! every session in a fresh VM): the first such session builds the images in its VM and saves
//! them here (`docker save`) before anything of the session runs there; later ones load them
//! instead of rebuilding. An entry is keyed by the images' build fingerprints (which cover every
//! build input: Dockerfile, context, CA certificates, build arguments) and the engine's platform;
//! its tarball's sha256 is checked before loading, and what was loaded must carry the expected
//! fingerprints. Entries are written privately (0600 files in a 0700 folder) and atomically, in
//! a folder no VM mounts.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::engine::{Engine, EngineError};
use crate::image::ImageSpec;

/// Bumped when the entry format changes (old entries then never match).
const FORMAT: &str = "sbx-image-cache-v1";
/// A manifest is a few hundred bytes; anything larger is not one of sbx's.
const MANIFEST_MAX: u64 = 64 * 1024;
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot use `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` does not match its record ({why})")]
    Corrupt { path: PathBuf, why: String },
    #[error("the images loaded from `{path}` are not the ones it was saved for")]
    Mismatch { path: PathBuf },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + use<> {
    let path = path.to_owned();
    move |source| CacheError::Io { path, source }
}

/// What an entry holds, written beside its tarball.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Manifest {
    format: String,
    key: String,
    platform: String,
    /// (tag, fingerprint) of every image in the tarball, sorted.
    images: Vec<(String, String)>,
    sha256: String,
    bytes: u64,
}

/// (tag, fingerprint) of each image, sorted.
fn images(specs: &[ImageSpec]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = specs
        .iter()
        .map(|s| (s.tag.clone(), s.fingerprint.clone()))
        .collect();
    v.sort();
    v
}

/// The entry's key: the format, the engine's platform and every image's tag and fingerprint.
pub fn key(specs: &[ImageSpec], platform: &str) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT.as_bytes());
    h.update(b"\0");
    h.update(platform.as_bytes());
    for (tag, fp) in images(specs) {
        h.update(b"\0");
        h.update(tag.as_bytes());
        h.update(b"=");
        h.update(fp.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Opens a file of the cache for reading: never through a symlink, only a regular file of this
/// user's.
fn open_private(path: &Path) -> Result<std::fs::File, CacheError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io(path))?;
    let m = f.metadata().map_err(io(path))?;
    if !m.is_file() || m.uid() != rustix::process::getuid().as_raw() {
        return Err(CacheError::Corrupt {
            path: path.to_owned(),
            why: "not a regular file of yours".into(),
        });
    }
    Ok(f)
}

/// sha256 and length of a file, read in chunks.
fn digest(mut f: std::fs::File, path: &Path) -> Result<(String, u64), CacheError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io(path))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// The cache in one folder (`<cache>/vm/images`).
#[derive(Debug, Clone)]
pub struct ImageCache {
    pub dir: PathBuf,
}

impl ImageCache {
    pub fn new(dir: PathBuf) -> Self {
        ImageCache { dir }
    }

    fn tar(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.tar"))
    }

    fn manifest(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// Makes the folder (0700) and checks it is a folder of this user's, not a link.
    fn ensure_dir(&self) -> Result<(), CacheError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(&self.dir))?;
        let m = std::fs::symlink_metadata(&self.dir).map_err(io(&self.dir))?;
        if !m.is_dir() || m.uid() != rustix::process::getuid().as_raw() {
            return Err(CacheError::Corrupt {
                path: self.dir.clone(),
                why: "not a folder of yours".into(),
            });
        }
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&self.dir))
    }

    /// Loads the cached images into `engine` when it lacks them and an entry for exactly these
    /// images exists. `Ok(false)`: nothing to load (then the caller builds as usual).
    pub async fn restore(&self, engine: &Engine, specs: &[ImageSpec]) -> Result<bool, CacheError> {
        if present(engine, specs).await? {
            return Ok(false);
        }
        let platform = engine.platform().await?;
        let key = key(specs, &platform);
        let mpath = self.manifest(&key);
        let manifest = match open_private(&mpath) {
            Err(CacheError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(false);
            }
            other => other?,
        };
        let mut text = String::new();
        manifest
            .take(MANIFEST_MAX)
            .read_to_string(&mut text)
            .map_err(io(&mpath))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| CacheError::Corrupt {
            path: mpath.clone(),
            why: e.to_string(),
        })?;
        if m.format != FORMAT || m.key != key || m.platform != platform || m.images != images(specs)
        {
            return Err(CacheError::Corrupt {
                path: mpath,
                why: "it is for other images".into(),
            });
        }
        let tpath = self.tar(&key);
        // Hashed first, then loaded: a truncated or altered tarball is never handed to the
        // engine. (The folder is this user's and no VM mounts it, so the file cannot change
        // between the two reads but by the user's own hand.)
        let f = open_private(&tpath)?;
        let reader = f.try_clone().map_err(io(&tpath))?;
        let p = tpath.clone();
        let (sha, n) = tokio::task::spawn_blocking(move || digest(reader, &p))
            .await
            .map_err(|e| CacheError::Io {
                path: tpath.clone(),
                source: std::io::Error::other(e),
            })??;
        if sha != m.sha256 || n != m.bytes {
            return Err(CacheError::Corrupt {
                path: tpath,
                why: format!(
                    "sha256 {sha} and {n} bytes, recorded {} and {}",
                    m.sha256, m.bytes
                ),
            });
        }
        let mut file = tokio::fs::File::from_std(f);
        file.rewind().await.map_err(io(&tpath))?;
        let stream = futures_util::stream::unfold(file, |mut file| async move {
            let mut buf = vec![0u8; CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(k) => {
                    buf.truncate(k);
                    Some((Ok(bytes::Bytes::from(buf)), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        });
        engine.load_images(stream).await?;
        if !present(engine, specs).await? {
            return Err(CacheError::Mismatch { path: tpath });
        }
        Ok(true)
    }

    /// Saves the engine's images for `specs` as this cache's only entry; returns the tarball.
    /// Call it only while the engine holds nothing but what sbx built: the tarball seeds every
    /// later session's VM.
    pub async fn store(&self, engine: &Engine, specs: &[ImageSpec]) -> Result<PathBuf, CacheError> {
        self.ensure_dir()?;
        let platform = engine.platform().await?;
        let key = key(specs, &platform);
        let tpath = self.tar(&key);
        // A temporary file is created 0600 and renamed into place once complete and synced, so
        // a reader never sees half a tarball.
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)
            .map_err(io(&self.dir))?;
        let mut file = tokio::fs::File::from_std(tmp.as_file().try_clone().map_err(io(&tpath))?);
        let tags: Vec<&str> = specs.iter().map(|s| s.tag.as_str()).collect();
        let mut out = std::pin::pin!(engine.save_images(&tags));
        let mut h = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = out.next().await {
            let chunk = chunk?;
            h.update(&chunk);
            n += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io(&tpath))?;
        }
        file.sync_all().await.map_err(io(&tpath))?;
        drop(file);
        tmp.persist(&tpath).map_err(|e| CacheError::Io {
            path: tpath.clone(),
            source: e.error,
        })?;
        let manifest = Manifest {
            format: FORMAT.into(),
            key: key.clone(),
            platform,
            images: images(specs),
            sha256: hex::encode(h.finalize()),
            bytes: n,
        };
        let mpath = self.manifest(&key);
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)
            .map_err(io(&self.dir))?;
        let text = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other);
        std::io::Write::write_all(&mut tmp, &text.map_err(io(&mpath))?).map_err(io(&mpath))?;
        tmp.as_file().sync_all().map_err(io(&mpath))?;
        tmp.persist(&mpath).map_err(|e| CacheError::Io {
            path: mpath.clone(),
            source: e.error,
        })?;
        self.prune(&key);
        Ok(tpath)
    }

    /// Removes entries for other images (settings changed since) and temporary files a crash
    /// left (older than an hour, so a concurrent save is never cut short).
    fn prune(&self, keep: &str) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale_tmp = name.starts_with(".tmp-")
                && e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > Duration::from_secs(3600));
            let other_entry = (name.ends_with(".tar") || name.ends_with(".json"))
                && name.rsplit_once('.').map(|(k, _)| k) != Some(keep);
            if stale_tmp || other_entry {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Whether the engine already holds every image with its expected fingerprint.
async fn present(engine: &Engine, specs: &[ImageSpec]) -> Result<bool, EngineError> {
    for s in specs {
        if engine.image_fingerprint(&s.tag).await?.as_deref() != Some(s.fingerprint.as_str()) {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(tag: &str, fp: &str) -> ImageSpec {
        ImageSpec {
            role: "gate",
            tag: tag.into(),
            alias: tag.into(),
            context: Vec::new(),
            build_args: Default::default(),
            fingerprint: fp.into(),
        }
    }

    #[test]
    fn the_key_binds_every_fingerprint_and_the_platform_not_the_order() {
        let a = [
            spec("sbx-gate:latest", "f1"),
            spec("sbx-sandbox:latest", "f2"),
        ];
        let b = [
            spec("sbx-sandbox:latest", "f2"),
            spec("sbx-gate:latest", "f1"),
        ];
        let k = key(&a, "linux/arm64");
        assert_eq!(k, key(&b, "linux/arm64"));
        assert_ne!(k, key(&a, "linux/amd64"));
        assert_ne!(
            k,
            key(
                &[
                    spec("sbx-gate:latest", "f1"),
                    spec("sbx-sandbox:latest", "f3")
                ],
                "linux/arm64"
            )
        );
        assert_ne!(
            k,
            key(
                &[spec("sbx-gate:latest", "f1"), spec("other:latest", "f2")],
                "linux/arm64"
            )
        );
        assert_eq!(k.len(), 64);
    }

    #[test]
    fn folder_is_private_and_prune_keeps_only_the_current_entry() {
        let d = tempfile::tempdir().unwrap();
        let c = ImageCache::new(d.path().join("vm/images"));
        c.ensure_dir().unwrap();
        let mode = std::fs::metadata(&c.dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        for f in ["old.tar", "old.json", "new.tar", "new.json", ".tmp-fresh"] {
            std::fs::write(c.dir.join(f), "x").unwrap();
        }
        c.prune("new");
        let mut left: Vec<String> = std::fs::read_dir(&c.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".tmp-fresh", "new.json", "new.tar"]);
    }

    #[test]
    fn a_link_is_never_followed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("real"), "x").unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("link.json")).unwrap();
        assert!(open_private(&d.path().join("link.json")).is_err());
        assert!(open_private(&d.path().join("real")).is_ok());
        let c = ImageCache::new(d.path().join("linked"));
        std::os::unix::fs::symlink(d.path(), &c.dir).unwrap();
        assert!(c.ensure_dir().is_err());
    }
}
