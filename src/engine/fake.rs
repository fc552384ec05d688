//! A fake engine for unit tests: it records every call (`verb name`), replays scripted replies
//! and keeps just enough state to answer like Docker (containers and networks with their session
//! and owner labels, images by tag), the way youki's network client fake does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::api::{EngineApi, OutputStream};
use super::{BuildProgress, Capacity, EngineError, ExecSpec, Labelled, LocalImage};
use crate::container::{ContainerSpec, OWNER_LABEL, SESSION_LABEL};
use crate::engine::attach::{ExecResult, Output};
use crate::image::ImageSpec;

/// A resource the fake engine holds: its name and its session and owner labels.
#[derive(Debug, Clone)]
pub struct Held {
    pub name: String,
    pub session: String,
    pub owner: String,
}

type Hook = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
struct State {
    calls: Vec<String>,
    /// `verb name` → the error that call returns.
    fail: HashMap<String, String>,
    images: HashMap<String, LocalImage>,
    containers: Vec<Held>,
    networks: Vec<Held>,
    running: HashSet<String>,
    /// What a container prints when attached (by name suffix).
    output: HashMap<String, String>,
    exec_code: i64,
    /// Runs at each call, after it is recorded (a test's window onto the world at that moment).
    hook: Option<Hook>,
}

#[derive(Clone, Default)]
pub struct FakeEngine {
    state: Arc<Mutex<State>>,
}

fn refused(call: &str, message: &str) -> EngineError {
    EngineError::Api {
        action: call.to_owned(),
        source: bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: message.to_owned(),
        },
    }
}

impl FakeEngine {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        f(&mut s)
    }

    /// Records a call, runs the hook, and returns the scripted failure for it, if any.
    fn call(&self, verb: &str, name: &str) -> Result<(), EngineError> {
        let call = format!("{verb} {name}");
        let (hook, fail) = self.with(|s| {
            s.calls.push(call.clone());
            (s.hook.clone(), s.fail.get(&call).cloned())
        });
        if let Some(h) = hook {
            h(&call);
        }
        match fail {
            Some(m) => Err(refused(&call, &m)),
            None => Ok(()),
        }
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    /// Makes `verb name` fail with `message`.
    pub fn fail(&self, call: &str, message: &str) {
        self.with(|s| s.fail.insert(call.to_owned(), message.to_owned()));
    }

    /// What every container whose name ends in `suffix` prints once attached (`-gate`:
    /// `sbx-gate: ready`).
    pub fn prints(&self, suffix: &str, text: &str) {
        self.with(|s| s.output.insert(suffix.to_owned(), text.to_owned()));
    }

    /// Adds an event of the test's own (a placement's) to the call record.
    pub fn note(&self, event: &str) {
        self.with(|s| s.calls.push(event.to_owned()));
    }

    /// Images present, up to date for these specs.
    pub fn has_images(&self, specs: &[ImageSpec]) {
        self.with(|s| {
            for spec in specs {
                s.images.insert(
                    spec.tag.clone(),
                    LocalImage {
                        id: format!("sha256:{}", spec.fingerprint),
                        tags: vec![spec.tag.clone(), spec.alias.clone()],
                        fingerprint: spec.fingerprint.clone(),
                        last_tagged: Some(crate::state::now() as i64),
                    },
                );
            }
        });
    }

    pub fn holds_container(&self, held: Held) {
        self.with(|s| s.containers.push(held));
    }

    pub fn holds_network(&self, held: Held) {
        self.with(|s| s.networks.push(held));
    }

    pub fn on_call(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        self.with(|s| s.hook = Some(Arc::new(hook)));
    }

    pub fn exits_with(&self, code: i64) {
        self.with(|s| s.exec_code = code);
    }
}

fn labels_of(spec: &ContainerSpec) -> (String, String) {
    let get = |k: &str| spec.labels.get(k).cloned().unwrap_or_default();
    (get(SESSION_LABEL), get(OWNER_LABEL))
}

impl EngineApi for FakeEngine {
    async fn capacity(&self) -> Result<Capacity, EngineError> {
        self.call("capacity", "")?;
        Ok(Capacity {
            cpus: 4,
            memory: 8 << 30,
            seccomp: true,
        })
    }
    async fn local_image(&self, name: &str) -> Result<Option<LocalImage>, EngineError> {
        self.call("local_image", name)?;
        Ok(self.with(|s| s.images.get(name).cloned()))
    }
    async fn image_by_fingerprint(&self, fingerprint: &str) -> Result<Option<String>, EngineError> {
        self.call("image_by_fingerprint", fingerprint)?;
        Ok(None)
    }
    async fn tag_image(&self, source: &str, target: &str) -> Result<(), EngineError> {
        self.call("tag_image", &format!("{source} {target}"))
    }
    async fn build(&self, spec: &ImageSpec, _: &dyn BuildProgress) -> Result<(), EngineError> {
        self.call("build", &spec.tag)?;
        self.has_images(std::slice::from_ref(spec));
        Ok(())
    }
    async fn ensure_network(
        &self,
        name: &str,
        _: &BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        self.call("ensure_network", name)?;
        Ok(name.to_owned())
    }
    async fn network_driver(&self, name: &str) -> Result<Option<String>, EngineError> {
        self.call("network_driver", name)?;
        Ok(Some("bridge".into()))
    }
    async fn network_gateway(&self, name: &str) -> Result<Option<IpAddr>, EngineError> {
        self.call("network_gateway", name)?;
        Ok(Some(IpAddr::from([172, 30, 0, 1])))
    }
    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        self.call("remove_network", name)?;
        self.with(|s| s.networks.retain(|n| n.name != name));
        Ok(())
    }
    async fn create_container(&self, spec: &ContainerSpec) -> Result<(), EngineError> {
        self.call("create_container", &spec.name)?;
        let (session, owner) = labels_of(spec);
        self.holds_container(Held {
            name: spec.name.clone(),
            session,
            owner,
        });
        Ok(())
    }
    async fn output(&self, name: &str) -> Result<OutputStream, EngineError> {
        self.call("output", name)?;
        let text = self.with(|s| {
            s.output
                .iter()
                .find(|(suffix, _)| name.ends_with(suffix.as_str()))
                .map(|(_, t)| t.clone())
                .unwrap_or_default()
        });
        Ok(Box::pin(futures_util::stream::iter([
            Ok(text.into_bytes()),
        ])))
    }
    async fn start_container(&self, name: &str) -> Result<(), EngineError> {
        self.call("start_container", name)?;
        self.with(|s| s.running.insert(name.to_owned()));
        Ok(())
    }
    async fn is_running(&self, name: &str) -> Result<bool, EngineError> {
        self.call("is_running", name)?;
        Ok(self.with(|s| s.running.contains(name)))
    }
    async fn kill_container(&self, name: &str) -> Result<(), EngineError> {
        self.call("kill_container", name)?;
        self.with(|s| s.running.remove(name));
        Ok(())
    }
    async fn remove_container(&self, name: &str) -> Result<(), EngineError> {
        self.call("remove_container", name)?;
        self.with(|s| {
            s.running.remove(name);
            s.containers.retain(|c| c.name != name);
        });
        Ok(())
    }
    async fn exec_output(
        &self,
        container: &str,
        cmd: Vec<String>,
        _: &str,
    ) -> Result<(i64, String), EngineError> {
        self.call("exec_output", &format!("{container} {}", cmd.join(" ")))?;
        Ok((0, "sbx-gate: reloaded".into()))
    }
    async fn exec_attached(
        &self,
        container: &str,
        _: ExecSpec,
        _: Output,
        _: Option<crate::cast::Recorder>,
    ) -> Result<ExecResult, EngineError> {
        self.call("exec_attached", container)?;
        Ok(ExecResult {
            code: self.with(|s| s.exec_code),
            captured: Vec::new(),
            first_output: None,
        })
    }
    async fn volumes(
        &self,
        _: &[String],
    ) -> Result<Vec<(String, HashMap<String, String>)>, EngineError> {
        self.call("volumes", "")?;
        Ok(Vec::new())
    }
    async fn create_volume(
        &self,
        name: &str,
        _: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        self.call("create_volume", name)
    }
    async fn run_once(&self, spec: &ContainerSpec, _: Duration) -> Result<String, EngineError> {
        self.call("run_once", &spec.name)?;
        Ok(String::new())
    }
    /// Filters by the owner label as the engine's label filter does.
    async fn labelled(&self, owner: &str) -> Result<(Vec<Labelled>, Vec<Labelled>), EngineError> {
        self.call("labelled", owner)?;
        let pick = |held: &[Held]| {
            held.iter()
                .filter(|h| h.owner == owner && !h.session.is_empty())
                .map(|h| Labelled {
                    name: h.name.clone(),
                    session: h.session.clone(),
                })
                .collect()
        };
        Ok(self.with(|s| (pick(&s.containers), pick(&s.networks))))
    }
}
