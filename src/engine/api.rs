//! The engine calls a session, `sbx gc`, `sbx allow` and the spare gate make, as a trait: the
//! real engine implements it by delegating to [`Engine`]; tests use a fake that records each call
//! and replays scripted replies (`engine::fake`), so the order of a teardown or what `gc` removes
//! is checked without Docker. The real engine stays the proof in the integration tests.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};

use super::{BuildProgress, Capacity, Engine, EngineError, ExecSpec, Labelled, LocalImage};
use crate::container::ContainerSpec;
use crate::engine::attach::{ExecResult, Output};
use crate::image::ImageSpec;

/// A container's output as it comes (stdout and stderr together).
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, EngineError>> + Send>>;

/// Volumes by name, with their labels.
pub type Volumes = Vec<(String, HashMap<String, String>)>;

/// What sbx asks of a container engine while it runs and cleans up sessions.
pub trait EngineApi: Clone + Send + Sync + 'static {
    fn capacity(&self) -> impl Future<Output = Result<Capacity, EngineError>> + Send;
    fn local_image(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<LocalImage>, EngineError>> + Send;
    fn image_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> impl Future<Output = Result<Option<String>, EngineError>> + Send;
    fn tag_image(
        &self,
        source: &str,
        target: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn build(
        &self,
        spec: &ImageSpec,
        progress: &dyn BuildProgress,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<String, EngineError>> + Send;
    fn network_driver(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, EngineError>> + Send;
    fn network_gateway(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<IpAddr>, EngineError>> + Send;
    fn remove_network(&self, name: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn create_container(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Attaches to a created container's output; call before starting it to miss nothing.
    fn output(&self, name: &str) -> impl Future<Output = Result<OutputStream, EngineError>> + Send;
    fn start_container(&self, name: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn is_running(&self, name: &str) -> impl Future<Output = Result<bool, EngineError>> + Send;
    /// Returns once the container no longer runs.
    fn kill_container(&self, name: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Removes a container, running or not; a missing one is fine.
    fn remove_container(&self, name: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Runs a command to completion as `user`, with its combined output.
    fn exec_output(
        &self,
        container: &str,
        cmd: Vec<String>,
        user: &str,
    ) -> impl Future<Output = Result<(i64, String), EngineError>> + Send;
    /// Runs the session's command attached to this process's terminal (see `attach`).
    fn exec_attached(
        &self,
        container: &str,
        spec: ExecSpec,
        output: Output,
        record: Option<crate::cast::Recorder>,
    ) -> impl Future<Output = Result<ExecResult, EngineError>> + Send;
    fn volumes(
        &self,
        labels: &[String],
    ) -> impl Future<Output = Result<Volumes, EngineError>> + Send;
    fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Runs a short command to its end in a throwaway container (removed whatever happens).
    fn run_once(
        &self,
        spec: &ContainerSpec,
        limit: Duration,
    ) -> impl Future<Output = Result<String, EngineError>> + Send;
    /// Every container and network of this owner's sessions (by their labels).
    fn labelled(
        &self,
        owner: &str,
    ) -> impl Future<Output = Result<(Vec<Labelled>, Vec<Labelled>), EngineError>> + Send;
}

impl EngineApi for Engine {
    async fn capacity(&self) -> Result<Capacity, EngineError> {
        Engine::capacity(self).await
    }
    async fn local_image(&self, name: &str) -> Result<Option<LocalImage>, EngineError> {
        Engine::local_image(self, name).await
    }
    async fn image_by_fingerprint(&self, fingerprint: &str) -> Result<Option<String>, EngineError> {
        Engine::image_by_fingerprint(self, fingerprint).await
    }
    async fn tag_image(&self, source: &str, target: &str) -> Result<(), EngineError> {
        Engine::tag_image(self, source, target).await
    }
    async fn build(
        &self,
        spec: &ImageSpec,
        progress: &dyn BuildProgress,
    ) -> Result<(), EngineError> {
        Engine::build(self, spec, progress).await
    }
    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        Engine::ensure_network(self, name, labels).await
    }
    async fn network_driver(&self, name: &str) -> Result<Option<String>, EngineError> {
        Engine::network_driver(self, name).await
    }
    async fn network_gateway(&self, name: &str) -> Result<Option<IpAddr>, EngineError> {
        Engine::network_gateway(self, name).await
    }
    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        Engine::remove_network(self, name).await
    }
    async fn create_container(&self, spec: &ContainerSpec) -> Result<(), EngineError> {
        Engine::create_container(self, spec).await
    }
    async fn output(&self, name: &str) -> Result<OutputStream, EngineError> {
        let name = name.to_owned();
        let raw = self.attach_output(&name).await?;
        Ok(Box::pin(raw.map(move |chunk| {
            chunk
                .map(|c| c.into_bytes().to_vec())
                .map_err(|e| super::api(format!("read the output of `{name}`"))(e))
        })))
    }
    async fn start_container(&self, name: &str) -> Result<(), EngineError> {
        Engine::start_container(self, name).await
    }
    async fn is_running(&self, name: &str) -> Result<bool, EngineError> {
        Engine::is_running(self, name).await
    }
    async fn kill_container(&self, name: &str) -> Result<(), EngineError> {
        Engine::kill_container(self, name).await
    }
    async fn remove_container(&self, name: &str) -> Result<(), EngineError> {
        Engine::remove_container(self, name).await
    }
    async fn exec_output(
        &self,
        container: &str,
        cmd: Vec<String>,
        user: &str,
    ) -> Result<(i64, String), EngineError> {
        Engine::exec_output(self, container, cmd, user).await
    }
    async fn exec_attached(
        &self,
        container: &str,
        spec: ExecSpec,
        output: Output,
        record: Option<crate::cast::Recorder>,
    ) -> Result<ExecResult, EngineError> {
        crate::engine::attach::run(self, container, spec, output, record).await
    }
    async fn volumes(
        &self,
        labels: &[String],
    ) -> Result<Vec<(String, HashMap<String, String>)>, EngineError> {
        Engine::volumes(self, labels).await
    }
    async fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        Engine::create_volume(self, name, labels).await
    }
    async fn run_once(&self, spec: &ContainerSpec, limit: Duration) -> Result<String, EngineError> {
        Engine::run_once(self, spec, limit).await
    }
    async fn labelled(&self, owner: &str) -> Result<(Vec<Labelled>, Vec<Labelled>), EngineError> {
        Engine::labelled(self, owner).await
    }
}
