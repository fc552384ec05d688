//! Where sbx keeps its files: XDG cache, config and data directories on Linux and macOS alike (the
//! CLI convention), session folders under the cache, project-file approvals under the data folder.
//! Pure path arithmetic, no I/O beyond reading env.

use std::path::{Path, PathBuf};

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
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .ok_or(DirsError::NoHome)?;
        let xdg = |var: &str, fallback: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| home.join(fallback))
        };
        Ok(Self {
            config: xdg("XDG_CONFIG_HOME", ".config").join("sbx"),
            cache: xdg("XDG_CACHE_HOME", ".cache").join("sbx"),
            data: xdg("XDG_DATA_HOME", ".local/share").join("sbx"),
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
