//! The two images a session uses, as data: the agent's sandbox image (the embedded Dockerfile in
//! `sandbox/`, or the user's) and the gate image (`sandbox/gate/`). Builds a deterministic tar
//! context and its sha256 fingerprint; the engine module builds it only when the fingerprint
//! stored on the image differs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::Settings;

pub const FINGERPRINT_LABEL: &str = "dev.sbx.fingerprint";
/// The image's role (`sandbox` or `gate`), on every image sbx builds: what `sbx gc` looks for.
pub const ROLE_LABEL: &str = "dev.sbx.image";
/// The gate image's friendly name; sessions use its fingerprint tag.
pub const GATE_ALIAS: &str = "sbx-gate:latest";

const AGENT_DOCKERFILE: &str = include_str!("../sandbox/Dockerfile");
const CA_README: &str = include_str!("../sandbox/ca/README");
const GATE_DOCKERFILE: &str = include_str!("../sandbox/gate/Dockerfile");
const GATE_SCRIPT: &str = include_str!("../sandbox/gate/gate");
/// The start-up self-check, run with `bash -c` so custom images need no sbx files.
pub const SELFCHECK: &str = include_str!("../sandbox/selfcheck.sh");

/// An image to ensure: its tag, build context and fingerprint.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// `sandbox` or `gate`, for messages.
    pub role: &'static str,
    /// What sessions use: the alias's repository, tagged by the fingerprint
    /// (`sbx-sandbox:fp-0123456789abcdef`). Settings that differ (extra CAs, a Dockerfile, a
    /// `setup --update` stamp) make different tags, so two users or projects on one engine never
    /// rebuild each other's images, and a session never runs another's.
    pub tag: String,
    /// The friendly name (`image.tag`, or `sbx-gate:latest`): moved to the image each session
    /// uses, for people; sbx never runs it.
    pub alias: String,
    pub context: Vec<u8>,
    pub build_args: BTreeMap<String, String>,
    pub fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read the CA certificate file `{path}`")]
    CaRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    CaEmpty { path: PathBuf },
    #[error("cannot read the Dockerfile folder `{path}`")]
    Context {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` has no `Dockerfile`")]
    NoDockerfile { path: PathBuf },
}

impl crate::error::Hint for ImageError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            ImageError::CaRead { .. } | ImageError::CaEmpty { .. } => {
                "point `image.extra_ca_certs` at PEM files".into()
            }
            ImageError::Context { .. } | ImageError::NoDockerfile { .. } => {
                "point `image.dockerfile` at a folder with a Dockerfile".into()
            }
        })
    }
}

/// One file of a build context.
struct File {
    path: String,
    data: Vec<u8>,
    mode: u32,
}

/// Both images for the current settings. Neither depends on who runs sbx: the agent's account
/// is mounted per session.
pub fn specs(settings: &Settings) -> Result<Vec<ImageSpec>, ImageError> {
    Ok(vec![gate_image(settings)?, agent_image(settings)?])
}

/// The tag sessions use for the image of this role (`gate` or `sandbox`) among `specs`.
pub fn tag_of<'a>(specs: &'a [ImageSpec], role: &str) -> &'a str {
    specs
        .iter()
        .find(|s| s.role == role)
        .map_or("", |s| s.tag.as_str())
}

/// The agent's image.
pub fn agent_image(settings: &Settings) -> Result<ImageSpec, ImageError> {
    let mut files = match &settings.image.dockerfile {
        Some(dir) => read_context(dir)?,
        None => vec![
            file("Dockerfile", AGENT_DOCKERFILE, 0o644),
            file("ca/README", CA_README, 0o644),
        ],
    };
    files.extend(ca_files(&settings.image.extra_ca_certs)?);
    let mut build_args = BTreeMap::from([("BASE_IMAGE".to_owned(), settings.image.base.clone())]);
    if let Some(r) = &settings.image.claude_code_refresh {
        // A custom Dockerfile may use it too (`ARG CLAUDE_CODE_REFRESH` before its install).
        build_args.insert("CLAUDE_CODE_REFRESH".to_owned(), r.clone());
    }
    Ok(spec("sandbox", &settings.image.tag, files, build_args))
}

/// The gate image (firewall, DNS filter, logger).
pub fn gate_image(settings: &Settings) -> Result<ImageSpec, ImageError> {
    let mut files = vec![
        file("Dockerfile", GATE_DOCKERFILE, 0o644),
        file("ca/README", CA_README, 0o644),
        file("gate", GATE_SCRIPT, 0o755),
    ];
    files.extend(ca_files(&settings.image.extra_ca_certs)?);
    let build_args = BTreeMap::from([("BASE_IMAGE".to_owned(), settings.image.base.clone())]);
    Ok(spec("gate", GATE_ALIAS, files, build_args))
}

/// A digest of what a Dockerfile folder and CA certificate files put into an image: what an
/// approval of a project file that names them binds to (`trust`), besides the file itself.
pub fn inputs_digest(
    dockerfile: Option<&Path>,
    extra_ca_certs: &[PathBuf],
) -> Result<String, ImageError> {
    let mut files = match dockerfile {
        Some(dir) => read_context(dir)?,
        None => Vec::new(),
    };
    files.extend(ca_files(extra_ca_certs)?);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(hex::encode(Sha256::digest(deterministic_tar(&files))))
}

fn file(path: &str, text: &str, mode: u32) -> File {
    File {
        path: path.to_owned(),
        data: text.as_bytes().to_vec(),
        mode,
    }
}

/// `alias`'s repository (a registry's `host:port/` kept) tagged `fp-` and the fingerprint's first
/// 16 hex digits.
pub fn fingerprint_tag(alias: &str, fingerprint: &str) -> String {
    let name_start = alias.rfind('/').map_or(0, |i| i + 1);
    let repo = match alias[name_start..].rfind(':') {
        Some(i) => &alias[..name_start + i],
        None => alias,
    };
    let repo = repo.split('@').next().unwrap_or(repo);
    format!("{repo}:fp-{}", &fingerprint[..16.min(fingerprint.len())])
}

fn spec(
    role: &'static str,
    alias: &str,
    mut files: Vec<File>,
    build_args: BTreeMap<String, String>,
) -> ImageSpec {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let context = deterministic_tar(&files);
    let mut h = Sha256::new();
    h.update(&context);
    for (k, v) in &build_args {
        h.update(format!("\0{k}={v}").as_bytes());
    }
    let fingerprint = hex::encode(h.finalize());
    ImageSpec {
        role,
        tag: fingerprint_tag(alias, &fingerprint),
        alias: alias.to_owned(),
        context,
        build_args,
        fingerprint,
    }
}

/// A tar whose bytes depend only on the files' paths, contents and modes: sorted entries, zero
/// mtimes and owners, no symlinks followed.
fn deterministic_tar(files: &[File]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Deterministic);
    for f in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(f.data.len() as u64);
        h.set_mode(f.mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        // Paths are relative and short; a bad one only fails the build that uses it.
        if b.append_data(&mut h, &f.path, f.data.as_slice()).is_err() {
            continue;
        }
    }
    b.into_inner().unwrap_or_default()
}

/// Every certificate of every extra CA file, one `.crt` per certificate (what
/// `update-ca-certificates` expects), named by content so the order of files does not matter.
fn ca_files(paths: &[PathBuf]) -> Result<Vec<File>, ImageError> {
    let mut out = BTreeMap::new();
    for p in paths {
        let text = std::fs::read_to_string(p).map_err(|source| ImageError::CaRead {
            path: p.clone(),
            source,
        })?;
        let certs = split_pem(&text);
        if certs.is_empty() {
            return Err(ImageError::CaEmpty { path: p.clone() });
        }
        for c in certs {
            let name = format!(
                "ca/sbx-{}.crt",
                &hex::encode(Sha256::digest(c.as_bytes()))[..16]
            );
            out.insert(name, c);
        }
    }
    Ok(out
        .into_iter()
        .map(|(path, data)| File {
            path,
            data: data.into_bytes(),
            mode: 0o644,
        })
        .collect())
}

fn split_pem(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

/// A user's Dockerfile folder (or a Dockerfile path, whose folder is the context). `.git` and the
/// lines of `.dockerignore` that name top-level entries are left out.
fn read_context(path: &Path) -> Result<Vec<File>, ImageError> {
    let err = |source| ImageError::Context {
        path: path.to_owned(),
        source,
    };
    let (dir, dockerfile) = if path.is_file() {
        (
            path.parent().unwrap_or(Path::new(".")).to_owned(),
            Some(path.to_owned()),
        )
    } else {
        (path.to_owned(), None)
    };
    let ignore: Vec<String> = std::fs::read_to_string(dir.join(".dockerignore"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_owned()
        })
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut files = Vec::new();
    let mut todo = vec![dir.clone()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).map_err(err)? {
            let entry = entry.map_err(err)?;
            let p = entry.path();
            let rel = p
                .strip_prefix(&dir)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if rel == ".git" || ignore.contains(&rel) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).map_err(err)?;
            if meta.is_dir() {
                todo.push(p);
            } else if meta.is_file() {
                use std::os::unix::fs::PermissionsExt;
                let data = std::fs::read(&p).map_err(err)?;
                let exec = meta.permissions().mode() & 0o111 != 0;
                files.push(File {
                    path: rel,
                    data,
                    mode: if exec { 0o755 } else { 0o644 },
                });
            }
        }
    }
    if let Some(df) = dockerfile {
        let data = std::fs::read(&df).map_err(err)?;
        files.retain(|f| f.path != "Dockerfile");
        files.push(File {
            path: "Dockerfile".into(),
            data,
            mode: 0o644,
        });
    }
    if !files.iter().any(|f| f.path == "Dockerfile") {
        return Err(ImageError::NoDockerfile { path: dir });
    }
    if !files.iter().any(|f| f.path.starts_with("ca/")) {
        files.push(file("ca/README", CA_README, 0o644));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn fingerprint_is_stable_and_follows_inputs() {
        let s = Settings::default();
        let a = agent_image(&s).unwrap();
        let b = agent_image(&s).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.context, b.context);
        let mut s2 = Settings::default();
        s2.image.base = "debian:bookworm-slim".into();
        assert_ne!(a.fingerprint, agent_image(&s2).unwrap().fingerprint);
        assert_ne!(gate_image(&s).unwrap().fingerprint, a.fingerprint);
        // `sbx setup --update`'s stamp rebuilds the agent's image, not the gate's.
        let mut s3 = Settings::default();
        s3.image.claude_code_refresh = Some("1234".into());
        let updated = agent_image(&s3).unwrap();
        assert_ne!(updated.fingerprint, a.fingerprint);
        assert_eq!(updated.build_args["CLAUDE_CODE_REFRESH"], "1234");
        assert_eq!(
            gate_image(&s3).unwrap().fingerprint,
            gate_image(&s).unwrap().fingerprint
        );
    }

    #[test]
    fn sessions_use_a_tag_named_by_the_fingerprint() {
        let fp = "0123456789abcdef0123";
        for (alias, want) in [
            ("sbx-sandbox:latest", "sbx-sandbox:fp-0123456789abcdef"),
            ("mine", "mine:fp-0123456789abcdef"),
            (
                "reg.example:5000/team/img:dev",
                "reg.example:5000/team/img:fp-0123456789abcdef",
            ),
            (
                "reg.example:5000/img",
                "reg.example:5000/img:fp-0123456789abcdef",
            ),
        ] {
            assert_eq!(fingerprint_tag(alias, fp), want, "{alias}");
        }
        let s = Settings::default();
        let a = agent_image(&s).unwrap();
        assert_eq!(a.alias, "sbx-sandbox:latest");
        assert_eq!(a.tag, format!("sbx-sandbox:fp-{}", &a.fingerprint[..16]));
        let g = gate_image(&s).unwrap();
        assert_eq!(g.alias, GATE_ALIAS);
        assert!(g.tag.starts_with("sbx-gate:fp-"), "{}", g.tag);
        // Different settings, different tags: neither rebuilds the other's image.
        let mut s2 = Settings::default();
        s2.image.claude_code_refresh = Some("1".into());
        assert_ne!(agent_image(&s2).unwrap().tag, a.tag);
    }

    #[test]
    fn extra_ca_certificates_are_split_and_change_the_fingerprint() {
        let d = tempfile::tempdir().unwrap();
        let bundle = d.path().join("bundle.pem");
        std::fs::write(
            &bundle,
            format!("junk\n{CERT}{}", CERT.replace("MIIB", "MIIC")),
        )
        .unwrap();
        let mut s = Settings::default();
        let plain = agent_image(&s).unwrap().fingerprint;
        s.image.extra_ca_certs = vec![bundle];
        let img = agent_image(&s).unwrap();
        assert_ne!(img.fingerprint, plain);
        let mut ar = tar::Archive::new(img.context.as_slice());
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names.iter().filter(|n| n.ends_with(".crt")).count(),
            2,
            "{names:?}"
        );
        let empty = d.path().join("empty.pem");
        std::fs::write(&empty, "nothing").unwrap();
        s.image.extra_ca_certs = vec![empty];
        assert!(matches!(agent_image(&s), Err(ImageError::CaEmpty { .. })));
    }

    #[test]
    fn custom_dockerfile_folder() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Settings::default();
        s.image.dockerfile = Some(d.path().to_owned());
        assert!(matches!(
            agent_image(&s),
            Err(ImageError::NoDockerfile { .. })
        ));
        std::fs::write(d.path().join("Dockerfile"), "FROM x\n").unwrap();
        std::fs::write(d.path().join("big.bin"), "x").unwrap();
        std::fs::write(d.path().join(".dockerignore"), "big.bin\n").unwrap();
        let img = agent_image(&s).unwrap();
        let mut ar = tar::Archive::new(img.context.as_slice());
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, [".dockerignore", "Dockerfile", "ca/README"]);
    }
}
