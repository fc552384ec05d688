//! Colima, the other VM provider: a session boots its own profile (Colima has no supported
//! clone). Argument building is pure and unit-tested; every call goes through the process module.

use std::time::Duration;

use super::{Instance, Lima, VmError, VmMount, default_vm_type, format_gib};
use crate::config::VmSettings;
use crate::process::Cmd;

/// `colima start` for a session's own profile: no docker-context switch, no `~/.ssh/config`
/// edits, only the given mounts, Docker as the runtime.
pub fn colima_start_args(profile: &str, s: &VmSettings, mounts: &[VmMount]) -> Vec<String> {
    let mut a: Vec<String> = [
        "start",
        "--profile",
        profile,
        "--activate=false",
        "--ssh-config=false",
        "--runtime",
        "docker",
        "--vm-type",
        default_vm_type(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    a.extend([
        "--cpus".into(),
        s.cpus.to_string(),
        "--memory".into(),
        format_gib(s.memory_gib),
        "--disk".into(),
        format_gib(s.disk_gib),
    ]);
    if mounts.is_empty() {
        a.extend(["--mount".into(), "none".into()]);
    }
    for m in mounts {
        a.push("--mount".into());
        a.push(format!(
            "{}{}",
            m.path.display(),
            if m.writable { ":w" } else { "" }
        ));
    }
    a
}

/// `colima delete` with its data disk, so nothing piles up.
pub fn colima_delete_args(profile: &str) -> Vec<String> {
    ["delete", "--profile", profile, "--force", "--data"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// The Lima instance behind a Colima profile.
pub fn colima_instance(profile: &str) -> String {
    format!("colima-{profile}")
}

impl Lima {
    /// Boots a session's own Colima profile (Colima has no supported clone, so every session
    /// boots from scratch: slower than Lima) and returns its Lima instance.
    pub async fn colima_start(
        &self,
        profile: &str,
        settings: &VmSettings,
        mounts: &[VmMount],
    ) -> Result<Instance, VmError> {
        let a = colima_start_args(profile, settings, mounts);
        Cmd::new("colima")
            .args(&a)
            .timeout(Duration::from_secs(1800))
            .run()
            .await
            .map_err(|e| VmError::Boot {
                name: profile.to_owned(),
                message: VmError::from(e).to_string(),
            })?;
        self.get(&colima_instance(profile))
            .await?
            .filter(|i| i.status == "Running")
            .ok_or_else(|| VmError::Boot {
                name: profile.to_owned(),
                message: "Colima reports it is not running".into(),
            })
    }

    pub async fn colima_delete(&self, profile: &str) -> Result<(), VmError> {
        Cmd::new("colima")
            .args(colima_delete_args(profile))
            .timeout(Duration::from_secs(180))
            .run()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VmProvider;

    fn settings() -> VmSettings {
        VmSettings {
            provider: VmProvider::Colima,
            cpus: 4,
            memory_gib: 8.0,
            disk_gib: 64.0,
        }
    }

    #[test]
    fn colima_arguments() {
        let m = [VmMount {
            path: "/s/abc".into(),
            writable: true,
        }];
        let a = colima_start_args("sbx-abc", &settings(), &m);
        for want in [
            "--activate=false",
            "--ssh-config=false",
            "--runtime",
            "--mount",
            "/s/abc:w",
        ] {
            assert!(a.contains(&want.to_owned()), "{a:?}");
        }
        assert_eq!(a[..3], ["start", "--profile", "sbx-abc"]);
        assert_eq!(
            colima_delete_args("sbx-abc"),
            ["delete", "--profile", "sbx-abc", "--force", "--data"]
        );
        assert_eq!(colima_instance("sbx-abc"), "colima-sbx-abc");
    }
}
