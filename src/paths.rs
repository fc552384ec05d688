//! Where sbx keeps its files: XDG cache, config and data directories on Linux and macOS alike (the
//! CLI convention), session folders under the cache, project-file approvals under the data folder.
//! Pure path arithmetic, no I/O beyond reading env.

use std::path::{Path, PathBuf};

use crate::env;

/// The directories sbx uses, resolved once from the environment.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub config: PathBuf,
    pub cache: PathBuf,
    /// `$XDG_DATA_HOME/sbx`: what sbx must keep and no sandbox may touch (approvals).
    pub data: PathBuf,
    pub home: PathBuf,
}

impl Dirs {
    /// Reads `XDG_CONFIG_HOME`, `XDG_CACHE_HOME`, `XDG_DATA_HOME` and `HOME`. Relative XDG values are ignored, as the
    /// XDG spec requires.
    pub fn from_env() -> Result<Self, DirsError> {
        let home = env::non_empty(env::HOME)
            .map(PathBuf::from)
            .ok_or(DirsError::NoHome)?;
        let xdg = |var: &str, fallback: &str| {
            env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| home.join(fallback))
        };
        Ok(Self {
            config: xdg(env::XDG_CONFIG_HOME, ".config").join("sbx"),
            cache: xdg(env::XDG_CACHE_HOME, ".cache").join("sbx"),
            data: xdg(env::XDG_DATA_HOME, ".local/share").join("sbx"),
            home,
        })
    }

    /// `$XDG_CONFIG_HOME/sbx/config.yaml`
    pub fn user_config_file(&self) -> PathBuf {
        self.config.join("config.yaml")
    }

    /// `$XDG_DATA_HOME/sbx/trust`: one approval per project file. Not under the cache (a cache may
    /// be wiped, and approvals are decisions) and never inside a repository, where the agent
    /// could write its own.
    pub fn trust(&self) -> PathBuf {
        self.data.join("trust")
    }

    /// `$XDG_CACHE_HOME/sbx/sessions`
    pub fn sessions(&self) -> PathBuf {
        self.cache.join("sessions")
    }

    pub fn session(&self, id: &str) -> PathBuf {
        self.sessions().join(id)
    }

    /// A short tag naming this session folder, carried as a label by everything sbx creates.
    pub fn owner_tag(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.sessions().to_string_lossy().as_bytes());
        hex::encode(digest)[..12].to_owned()
    }
}

/// What Colima reads to find its home.
#[derive(Debug, Clone)]
pub struct ColimaEnv {
    /// `$COLIMA_HOME`
    pub colima_home: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME` (empty counts as unset, as in Colima)
    pub xdg_config_home: Option<PathBuf>,
    pub home: PathBuf,
    pub macos: bool,
}

impl ColimaEnv {
    /// This process's environment, for the user whose home is `home`.
    pub fn from_env(home: &Path) -> Self {
        let var = |v: &str| env::non_empty(v).map(PathBuf::from);
        ColimaEnv {
            colima_home: var(env::COLIMA_HOME),
            xdg_config_home: var(env::XDG_CONFIG_HOME),
            home: home.to_owned(),
            macos: cfg!(target_os = "macos"),
        }
    }
}

/// The user's own Colima home, decided the way Colima 0.10 does (`config/files.go`, where
/// `exists` is `os.Stat`): `$COLIMA_HOME` when it exists; `~/.colima` when it exists;
/// `$XDG_CONFIG_HOME/colima` when that variable is set; `~/.config/colima` when it exists;
/// otherwise `~/.colima` on macOS and `~/.config/colima` elsewhere. (sbx's own sessions use a
/// Colima home of their own; this finds the user's Colima, whose Docker socket a container
/// session may use.)
pub fn colima_home(env: &ColimaEnv, exists: impl Fn(&Path) -> bool) -> PathBuf {
    if let Some(h) = env.colima_home.as_ref().filter(|h| exists(h)) {
        return h.clone();
    }
    let dot = env.home.join(".colima");
    if exists(&dot) {
        return dot;
    }
    if let Some(xdg) = &env.xdg_config_home {
        return xdg.join("colima");
    }
    let config = env.home.join(".config/colima");
    if exists(&config) || !env.macos {
        return config;
    }
    dot
}

#[derive(Debug, thiserror::Error)]
pub enum DirsError {
    #[error("`HOME` is not set, so sbx cannot find its config and cache folders")]
    NoHome,
}

/// The last path component as a string, for naming things after a folder.
pub fn base_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repo".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colima_home_is_found_the_way_colima_finds_it() {
        let env = |colima: Option<&str>, xdg: Option<&str>, macos: bool| ColimaEnv {
            colima_home: colima.map(PathBuf::from),
            xdg_config_home: xdg.map(PathBuf::from),
            home: "/h".into(),
            macos,
        };
        let existing =
            |list: &'static [&'static str]| move |p: &Path| list.iter().any(|e| p == Path::new(e));
        let none: &[&str] = &[];
        // `$COLIMA_HOME` only when it exists.
        let e = env(Some("/c"), None, true);
        assert_eq!(colima_home(&e, existing(&["/c"])), Path::new("/c"));
        assert_eq!(colima_home(&e, existing(none)), Path::new("/h/.colima"));
        // `~/.colima` when it exists, even with `$XDG_CONFIG_HOME` set.
        let e = env(None, Some("/x"), false);
        assert_eq!(
            colima_home(&e, existing(&["/h/.colima"])),
            Path::new("/h/.colima")
        );
        assert_eq!(colima_home(&e, existing(none)), Path::new("/x/colima"));
        // Without either: `~/.config/colima` if it exists, else by platform.
        let mac = env(None, None, true);
        let linux = env(None, None, false);
        assert_eq!(
            colima_home(&mac, existing(&["/h/.config/colima"])),
            Path::new("/h/.config/colima")
        );
        assert_eq!(colima_home(&mac, existing(none)), Path::new("/h/.colima"));
        assert_eq!(
            colima_home(&linux, existing(none)),
            Path::new("/h/.config/colima")
        );
    }
}
