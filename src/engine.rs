//! The container engine adapter: finding the Docker endpoint, and the thin calls sbx makes through
//! bollard (images, networks, containers, execs). It performs what the planners decided and knows
//! nothing of sessions or terminals; long operations report through [`BuildProgress`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as ApiError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ExecConfig, HostConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, BuildImageOptionsBuilder, CreateContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    RemoveVolumeOptionsBuilder, ResizeExecOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;

use crate::container::{ContainerSpec, OWNER_LABEL, SESSION_LABEL};

mod api;
pub mod attach;
#[cfg(test)]
pub mod fake;
use crate::image::{FINGERPRINT_LABEL, ImageSpec, ROLE_LABEL};
pub use api::{EngineApi, OutputStream};

/// The most [`Engine::run_once`] keeps of a command's output.
const RUN_ONCE_OUTPUT: usize = 64 << 10;

/// What [`Engine::capacity`] reports.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub cpus: u32,
    pub memory: u64,
    pub seccomp: bool,
}

/// Whether the engine's security options (`docker info`) say containers run under a seccomp
/// filter: present and not `unconfined`. Without it the agent could call `keyctl` and read the
/// user's kernel keyring, where `sbx token` keeps tokens when sbx runs as the agent's uid.
pub fn seccomp_on(security_options: &[String]) -> bool {
    security_options
        .iter()
        .any(|o| o.contains("name=seccomp") && !o.contains("profile=unconfined"))
}

/// A connected engine.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    pub endpoint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no container engine answers at `{endpoint}`")]
    Unavailable {
        endpoint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the engine refused to {action}")]
    Api {
        action: String,
        #[source]
        source: ApiError,
    },
    /// The engine answered without an error, but not as asked (the network it just created is
    /// not in its list, a command it started is not attached to): there is no cause to show.
    #[error("the engine refused to {action}")]
    Unexpected { action: String },
    #[error("building the {role} image `{tag}` failed at `{step}`:\n{output}")]
    Build {
        role: String,
        tag: String,
        step: String,
        output: String,
    },
    #[error("the {role} image `{tag}` is missing")]
    ImageMissing { role: String, tag: String },
    #[error("{what} did not finish within {secs} s")]
    Timeout { what: String, secs: u64 },
}

impl crate::error::Hint for EngineError {
    fn hint(&self) -> Option<String> {
        match self {
            EngineError::Unavailable { .. } => Some(
                "start Docker (on Linux `sudo systemctl start docker`, on macOS `colima start`), \
                 or point sbx at an engine with `--docker-host` or `DOCKER_HOST`"
                    .into(),
            ),
            EngineError::Build { step, .. } if step.contains("FROM") => Some(
                "the base image could not be found or pulled: `docker pull` it, or set `image.base`"
                    .into(),
            ),
            EngineError::Build { .. } => Some(
                "fix the step above (for a TLS-intercepting proxy, add its CA with `image.extra_ca_certs`), then run `sbx setup`"
                    .into(),
            ),
            EngineError::ImageMissing { .. } => Some("run `sbx setup`".into()),
            _ => None,
        }
    }
}

fn api(action: impl Into<String>) -> impl FnOnce(ApiError) -> EngineError {
    let action = action.into();
    move |source| EngineError::Api { action, source }
}

fn is_not_found(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Seconds since the epoch of an RFC 3339 time as the engine writes it
/// (`2026-11-28T01:01:36.102420864Z`); `None` for anything else and for the zero time
/// (`0001-01-01T00:00:00Z`, "never tagged").
pub fn parse_time(s: &str) -> Option<i64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time
        .strip_suffix('Z')
        .or_else(|| time.strip_suffix("+00:00"))?;
    let hms = time.split('.').next()?;
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if y < 1970 || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Reports an image build as it goes.
pub trait BuildProgress: Send + Sync {
    /// A Dockerfile step started (`step` of `total`).
    fn step(&self, step: u64, total: u64, text: &str);
    /// Any output line of the build.
    fn line(&self, text: &str);
}

/// What finding the engine reads from the environment, as a value (so that it can be tested
/// whatever the environment of the test).
#[derive(Debug, Clone)]
pub struct EndpointEnv {
    /// `$DOCKER_HOST`
    pub docker_host: Option<String>,
    /// `$DOCKER_CONTEXT`
    pub docker_context: Option<String>,
    /// `$DOCKER_CONFIG`
    pub docker_config: Option<PathBuf>,
    /// Where the user's Colima is (holds the home).
    pub colima: crate::paths::ColimaEnv,
}

impl EndpointEnv {
    /// This process's environment, for the user whose home is `home`.
    pub fn from_env(home: &Path) -> Self {
        use crate::env;
        EndpointEnv {
            docker_host: env::var(env::DOCKER_HOST),
            docker_context: env::var(env::DOCKER_CONTEXT),
            docker_config: env::var_os(env::DOCKER_CONFIG).map(PathBuf::from),
            colima: crate::paths::ColimaEnv::from_env(home),
        }
    }
}

/// Where the engine is, in the order a user expects: the setting or flag, `DOCKER_HOST`, the
/// current docker context (Colima registers one), Colima's default socket, the system socket.
pub fn resolve_endpoint(setting: Option<&str>, env: &EndpointEnv) -> String {
    if let Some(h) = setting.filter(|h| !h.is_empty()) {
        return h.to_owned();
    }
    if let Some(h) = env.docker_host.clone().filter(|h| !h.is_empty()) {
        return h;
    }
    let docker_config = env
        .docker_config
        .clone()
        .unwrap_or_else(|| env.colima.home.join(".docker"));
    let context = env.docker_context.clone().or_else(|| {
        let text = std::fs::read_to_string(docker_config.join("config.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("currentContext")?.as_str().map(str::to_owned)
    });
    if let Some(ctx) = context.filter(|c| c != "default") {
        let id = hex::encode(Sha256::digest(ctx.as_bytes()));
        let meta = docker_config
            .join("contexts/meta")
            .join(id)
            .join("meta.json");
        if let Some(host) = std::fs::read_to_string(meta).ok().and_then(|t| {
            let v: serde_json::Value = serde_json::from_str(&t).ok()?;
            v.pointer("/Endpoints/docker/Host")?
                .as_str()
                .map(str::to_owned)
        }) {
            return host;
        }
    }
    let colima_home = crate::paths::colima_home(&env.colima, |p| p.exists());
    let colima = colima_home.join("default/docker.sock");
    if colima.exists() {
        return format!("unix://{}", colima.display());
    }
    "unix:///var/run/docker.sock".into()
}

/// The start of an attached exec: its output, its stdin, and its id (for resize and exit code).
pub struct ExecStreams {
    pub id: String,
    pub output: Pin<Box<dyn Stream<Item = Result<bollard::container::LogOutput, ApiError>> + Send>>,
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
}

/// What an exec should run.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    pub user: String,
    /// `KEY=value`. Exec environment is not part of the container's config, so secrets here do
    /// not show in `docker inspect`.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub tty: bool,
    pub stdin: bool,
    /// `(rows, cols)` at start, for TTY execs.
    pub size: Option<(u16, u16)>,
}

/// A network to create.
#[derive(Debug, Clone, Default)]
pub struct NetworkSpec {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Turns off traffic between the network's containers.
    pub isolate_containers: bool,
    /// No route beyond the host (Docker's `--internal`).
    pub internal: bool,
    pub ipv6_subnet: Option<String>,
}

/// A container or network sbx made, found by its session label.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub name: String,
    pub session: String,
}

/// A local image: its id, names and [`FINGERPRINT_LABEL`] (empty when it has none).
#[derive(Debug, Clone)]
pub struct LocalImage {
    pub id: String,
    pub tags: Vec<String>,
    pub fingerprint: String,
    /// When a name was last put on it (seconds since the epoch), if ever.
    pub last_tagged: Option<i64>,
}

/// An image sbx built ([`ROLE_LABEL`]), as `sbx gc` sees it.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub id: String,
    pub tags: Vec<String>,
    pub role: String,
    /// Seconds since the epoch.
    pub created: i64,
    pub last_tagged: Option<i64>,
}

impl Engine {
    /// Connects and checks the engine answers (within a few seconds).
    pub async fn connect(endpoint: &str) -> Result<Engine, EngineError> {
        let unavailable =
            |source: Box<dyn std::error::Error + Send + Sync>| EngineError::Unavailable {
                endpoint: endpoint.to_owned(),
                source,
            };
        let docker = if let Some(path) = endpoint.strip_prefix("unix://") {
            Docker::connect_with_socket(path, 600, bollard::API_DEFAULT_VERSION)
        } else if endpoint.starts_with('/') {
            Docker::connect_with_socket(endpoint, 600, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_host(endpoint)
        }
        .map_err(|e| unavailable(e.into()))?;
        match tokio::time::timeout(Duration::from_secs(5), docker.ping()).await {
            Ok(Ok(_)) => Ok(Engine {
                docker,
                endpoint: endpoint.to_owned(),
            }),
            Ok(Err(e)) => Err(unavailable(e.into())),
            Err(_) => Err(unavailable("no answer within 5 s".into())),
        }
    }

    /// CPUs and bytes of memory the engine has.
    /// What the engine offers a session: its CPUs and memory, and whether it filters containers'
    /// system calls (seccomp).
    pub async fn capacity(&self) -> Result<Capacity, EngineError> {
        let info = self.docker.info().await.map_err(api("describe itself"))?;
        Ok(Capacity {
            cpus: info.ncpu.unwrap_or(1).max(1) as u32,
            memory: info.mem_total.unwrap_or(2 << 30).max(0) as u64,
            seccomp: seccomp_on(&info.security_options.unwrap_or_default()),
        })
    }

    pub async fn version(&self) -> Result<String, EngineError> {
        let v = self
            .docker
            .version()
            .await
            .map_err(api("report its version"))?;
        Ok(v.version.unwrap_or_else(|| "unknown".into()))
    }

    /// The engine's platform as `os/arch` (`linux/arm64`): what its images are built for.
    pub async fn platform(&self) -> Result<String, EngineError> {
        let v = self
            .docker
            .version()
            .await
            .map_err(api("report its version"))?;
        Ok(format!(
            "{}/{}",
            v.os.unwrap_or_default(),
            v.arch.unwrap_or_default()
        ))
    }

    /// `docker save` of these images: one tar of them all, as it streams out of the engine.
    pub fn save_images(
        &self,
        tags: &[&str],
    ) -> impl Stream<Item = Result<bytes::Bytes, EngineError>> + use<> {
        let action = format!("save the images {}", tags.join(", "));
        self.docker
            .export_images(tags)
            .map(move |r| r.map_err(api(action.clone())))
    }

    /// `docker load` of a tar that [`Engine::save_images`] made, streamed in.
    pub async fn load_images(
        &self,
        tar: impl Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
    ) -> Result<(), EngineError> {
        let opts = bollard::query_parameters::ImportImageOptionsBuilder::new()
            .quiet(true)
            .build();
        let mut out = self.docker.import_image_stream(opts, tar, None);
        while let Some(item) = out.next().await {
            let info = item.map_err(api("load images"))?;
            if let Some(d) = info.error_detail {
                return Err(EngineError::Api {
                    action: "load images".into(),
                    source: ApiError::DockerStreamError {
                        error: d.message.unwrap_or_default(),
                    },
                });
            }
        }
        Ok(())
    }

    /// The fingerprint label of a local image, `None` when the image is absent.
    pub async fn image_fingerprint(&self, tag: &str) -> Result<Option<String>, EngineError> {
        Ok(self.local_image(tag).await?.map(|i| i.fingerprint))
    }

    /// A local image by name, `None` when it is absent.
    pub async fn local_image(&self, name: &str) -> Result<Option<LocalImage>, EngineError> {
        match self.docker.inspect_image(name).await {
            Ok(img) => Ok(Some(LocalImage {
                id: img.id.unwrap_or_default(),
                tags: img.repo_tags.unwrap_or_default(),
                last_tagged: img
                    .metadata
                    .and_then(|m| m.last_tag_time)
                    .and_then(|t| parse_time(&t)),
                fingerprint: img
                    .config
                    .and_then(|c| c.labels)
                    .and_then(|l| l.get(FINGERPRINT_LABEL).cloned())
                    .unwrap_or_default(),
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api(format!("inspect the image `{name}`"))(e)),
        }
    }

    /// `docker tag SOURCE TARGET`; a name that was on another image moves.
    pub async fn tag_image(&self, source: &str, target: &str) -> Result<(), EngineError> {
        let (repo, tag) = match target.rfind(':').filter(|&i| !target[i..].contains('/')) {
            Some(i) => (&target[..i], &target[i + 1..]),
            None => (target, "latest"),
        };
        let opts = TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        self.docker
            .tag_image(source, Some(opts))
            .await
            .map_err(api(format!("tag the image `{source}` as `{target}`")))
    }

    /// Every image sbx built, on this engine.
    pub async fn built_images(&self) -> Result<Vec<BuiltImage>, EngineError> {
        let list = self.images_labelled(ROLE_LABEL).await?;
        // The last tag time is only in an image's inspection.
        let mut out = Vec::new();
        for i in list {
            let last_tagged = match self.local_image(&i.id).await? {
                Some(l) => l.last_tagged,
                None => continue,
            };
            out.push(BuiltImage {
                role: i.labels.get(ROLE_LABEL).cloned().unwrap_or_default(),
                id: i.id,
                tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                created: i.created,
                last_tagged,
            });
        }
        Ok(out)
    }

    /// The id of an image sbx built with this fingerprint, under whatever name.
    pub async fn image_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<String>, EngineError> {
        let list = self
            .images_labelled(&format!("{FINGERPRINT_LABEL}={fingerprint}"))
            .await?;
        Ok(list.into_iter().next().map(|i| i.id))
    }

    /// The local images matching a label filter (`key` or `key=value`).
    async fn images_labelled(
        &self,
        label: &str,
    ) -> Result<Vec<bollard::models::ImageSummary>, EngineError> {
        let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        self.docker
            .list_images(Some(
                ListImagesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(api("list images"))
    }

    /// The image id of every container on the engine, running or not, whoever made it.
    pub async fn images_in_use(&self) -> Result<std::collections::HashSet<String>, EngineError> {
        let cs = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default().all(true).build(),
            ))
            .await
            .map_err(api("list containers"))?;
        Ok(cs.into_iter().filter_map(|c| c.image_id).collect())
    }

    /// `docker rmi NAME`, never forced: a name on an image with other names only goes, and an
    /// image a container uses (one made since it was listed) stays.
    pub async fn remove_image(&self, name: &str) -> Result<(), EngineError> {
        let opts = RemoveImageOptionsBuilder::default().force(false).build();
        match self.docker.remove_image(name, Some(opts), None).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api(format!("remove the image `{name}`"))(e)),
        }
    }

    /// Builds an image from its spec, streaming progress; on failure the error carries the
    /// failing step and its output.
    pub async fn build(
        &self,
        spec: &ImageSpec,
        progress: &dyn BuildProgress,
    ) -> Result<(), EngineError> {
        let labels = HashMap::from([
            (FINGERPRINT_LABEL.to_owned(), spec.fingerprint.clone()),
            (ROLE_LABEL.to_owned(), spec.role.to_owned()),
        ]);
        let args: HashMap<String, String> = spec.build_args.clone().into_iter().collect();
        let opts = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(&spec.tag)
            .labels(&labels)
            .buildargs(&args)
            .rm(true)
            .forcerm(true)
            .build();
        let body = bollard::body_full(spec.context.clone().into());
        let mut stream = self.docker.build_image(opts, None, Some(body));
        let mut step = String::from("the start");
        let mut output: Vec<String> = Vec::new();
        let fail = |step: &str, output: &[String], extra: Option<String>| {
            let mut out: Vec<String> = output.iter().rev().take(40).rev().cloned().collect();
            out.extend(extra);
            EngineError::Build {
                role: spec.role.into(),
                tag: spec.tag.clone(),
                step: step.to_owned(),
                output: out.join("\n"),
            }
        };
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(i) => i,
                Err(ApiError::DockerStreamError { error }) => {
                    return Err(fail(&step, &output, Some(error)));
                }
                Err(e) => return Err(fail(&step, &output, Some(e.to_string()))),
            };
            if let Some(d) = info.error_detail {
                return Err(fail(&step, &output, d.message));
            }
            let Some(text) = info.stream.or(info.status) else {
                continue;
            };
            let text = strip_ansi(&text);
            for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                if let Some((n, total, what)) = parse_step(line) {
                    step = what.to_owned();
                    output.clear();
                    progress.step(n, total, what);
                } else {
                    output.push(line.to_owned());
                }
                progress.line(line);
            }
        }
        match self.image_fingerprint(&spec.tag).await? {
            Some(fp) if fp == spec.fingerprint => Ok(()),
            _ => Err(fail(
                &step,
                &output,
                Some("the build ended without an image".into()),
            )),
        }
    }

    /// A session's own network: containers on it cannot talk to each other; with one network
    /// per session, sessions cannot reach each other either.
    pub async fn create_network(
        &self,
        name: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        self.create_network_with(&NetworkSpec {
            name: name.to_owned(),
            labels: labels.clone(),
            isolate_containers: true,
            internal: false,
            ipv6_subnet: None,
        })
        .await
    }

    pub async fn create_network_with(&self, spec: &NetworkSpec) -> Result<(), EngineError> {
        let name = &spec.name;
        let req = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            internal: Some(spec.internal),
            enable_ipv6: spec.ipv6_subnet.as_ref().map(|_| true),
            ipam: spec
                .ipv6_subnet
                .as_ref()
                .map(|subnet| bollard::models::Ipam {
                    config: Some(vec![bollard::models::IpamConfig {
                        subnet: Some(subnet.clone()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            options: spec.isolate_containers.then(|| {
                HashMap::from([(
                    "com.docker.network.bridge.enable_icc".to_owned(),
                    "false".to_owned(),
                )])
            }),
            ..Default::default()
        };
        self.docker
            .create_network(req)
            .await
            .map(|_| ())
            .map_err(api(format!("create the network `{name}`")))
    }

    /// The id of the network named `name` carrying `labels`, created when missing. Docker
    /// allows two networks with one name, so the oldest wins and callers use the id.
    pub async fn ensure_network(
        &self,
        name: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        let find = || async {
            let filters = HashMap::from([("name".to_owned(), vec![name.to_owned()])]);
            let mut found: Vec<_> = self
                .docker
                .list_networks(Some(
                    ListNetworksOptionsBuilder::default()
                        .filters(&filters)
                        .build(),
                ))
                .await
                .map_err(api("list networks"))?
                .into_iter()
                .filter(|n| n.name.as_deref() == Some(name))
                .collect();
            found.sort_by(|a, b| a.created.cmp(&b.created));
            Ok::<_, EngineError>(found.into_iter().find_map(|n| n.id))
        };
        if let Some(id) = find().await? {
            return Ok(id);
        }
        self.create_network(name, labels).await?;
        find().await?.ok_or_else(|| EngineError::Unexpected {
            action: format!("find the network `{name}` it just created"),
        })
    }

    /// A container's IPv4 and IPv6 addresses on a network.
    pub async fn container_ips(
        &self,
        name: &str,
        network: &str,
    ) -> Result<(Option<IpAddr>, Option<IpAddr>), EngineError> {
        let c = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(api(format!("inspect `{name}`")))?;
        let ep = c
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(network));
        let parse = |s: Option<String>| s.filter(|s| !s.is_empty()).and_then(|s| s.parse().ok());
        Ok(match ep {
            Some(e) => (parse(e.ip_address), parse(e.global_ipv6_address)),
            None => (None, None),
        })
    }

    /// Whether a container exists and runs.
    pub async fn is_running(&self, name: &str) -> Result<bool, EngineError> {
        match self.docker.inspect_container(name, None).await {
            Ok(c) => Ok(c.state.and_then(|s| s.running).unwrap_or(false)),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(api(format!("inspect `{name}`"))(e)),
        }
    }

    /// A container's output so far (stdout and stderr).
    pub async fn logs(&self, name: &str) -> Result<String, EngineError> {
        let opts = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .build();
        let mut s = self.docker.logs(name, Some(opts));
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(
                &chunk
                    .map_err(api(format!("read the output of `{name}`")))?
                    .into_bytes(),
            );
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The IPv4 gateway of a network (an address of this machine).
    pub async fn network_gateway(&self, name: &str) -> Result<Option<IpAddr>, EngineError> {
        let n = self
            .docker
            .inspect_network(name, None)
            .await
            .map_err(api(format!("inspect the network `{name}`")))?;
        Ok(n.ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.gateway?.parse::<IpAddr>().ok())
            .find(IpAddr::is_ipv4))
    }

    pub async fn network_driver(&self, name: &str) -> Result<Option<String>, EngineError> {
        match self.docker.inspect_network(name, None).await {
            Ok(n) => Ok(Some(n.driver.unwrap_or_default())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api(format!("inspect the network `{name}`"))(e)),
        }
    }

    /// Removes a network; a missing one is fine.
    pub async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api(format!("remove the network `{name}`"))(e)),
        }
    }

    pub async fn create_container(&self, spec: &ContainerSpec) -> Result<(), EngineError> {
        let binds = spec
            .mounts
            .iter()
            .map(|m| {
                format!(
                    "{}:{}:{}",
                    m.host.display(),
                    m.container.display(),
                    if m.read_only { "ro" } else { "rw" }
                )
            })
            .chain(spec.volumes.iter().map(|(v, at)| format!("{v}:{at}:rw")))
            .collect();
        let host = HostConfig {
            binds: Some(binds),
            cap_add: Some(spec.cap_add.clone()),
            cap_drop: Some(spec.cap_drop.clone()),
            security_opt: Some(spec.security_opt.clone()),
            network_mode: Some(spec.network_mode.clone()),
            dns: (!spec.dns.is_empty()).then(|| spec.dns.clone()),
            sysctls: (!spec.sysctls.is_empty()).then(|| spec.sysctls.clone().into_iter().collect()),
            memory: spec.memory,
            memory_swap: spec.memory,
            nano_cpus: spec.nano_cpus,
            pids_limit: Some(spec.pids_limit),
            init: Some(spec.init),
            auto_remove: Some(spec.auto_remove),
            readonly_rootfs: Some(spec.read_only_rootfs),
            log_config: spec
                .log_driver
                .as_ref()
                .map(|d| bollard::models::HostConfigLogConfig {
                    typ: Some(d.clone()),
                    config: None,
                }),
            tmpfs: (!spec.tmpfs.is_empty()).then(|| spec.tmpfs.clone().into_iter().collect()),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            user: Some(spec.user.clone()),
            // Exactly the planned command runs: an image's ENTRYPOINT or HEALTHCHECK (a custom
            // agent image is the user's, or a session's edit of it) never runs on its own.
            entrypoint: Some(vec![String::new()]),
            healthcheck: Some(bollard::models::HealthConfig {
                test: Some(vec!["NONE".into()]),
                ..Default::default()
            }),
            cmd: Some(spec.cmd.clone()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            hostname: spec.hostname.clone(),
            working_dir: spec.working_dir.clone(),
            host_config: Some(host),
            networking_config: (!spec.aliases.is_empty()).then(|| {
                bollard::models::NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        spec.network_mode.clone(),
                        bollard::models::EndpointSettings {
                            aliases: Some(spec.aliases.clone()),
                            ..Default::default()
                        },
                    )])),
                }
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        self.docker
            .create_container(Some(opts), body)
            .await
            .map(|_| ())
            .map_err(api(format!("create the container `{}`", spec.name)))
    }

    /// Runs a short command to its end in a throwaway container and returns its output
    /// (stdout and stderr); the container is removed whatever happens.
    pub async fn run_once(
        &self,
        spec: &ContainerSpec,
        limit: std::time::Duration,
    ) -> Result<String, EngineError> {
        self.create_container(spec).await?;
        let run = async {
            let mut output = self.attach_output(&spec.name).await?;
            self.start_container(&spec.name).await?;
            // An image's command may print without end: the first 64 KiB are plenty.
            let mut out = Vec::new();
            while let Some(Ok(chunk)) = output.next().await {
                let bytes = chunk.into_bytes();
                let room = RUN_ONCE_OUTPUT.saturating_sub(out.len());
                out.extend_from_slice(&bytes[..bytes.len().min(room)]);
                if out.len() >= RUN_ONCE_OUTPUT {
                    break;
                }
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        };
        let r = tokio::time::timeout(limit, run).await;
        let _ = self.remove_container(&spec.name).await;
        r.unwrap_or_else(|_| {
            Err(EngineError::Timeout {
                what: format!("the container `{}`", spec.name),
                secs: limit.as_secs(),
            })
        })
    }

    pub async fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        let req = bollard::models::VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels.clone().into_iter().collect()),
            ..Default::default()
        };
        self.docker
            .create_volume(req)
            .await
            .map(|_| ())
            .map_err(api(format!("create the volume `{name}`")))
    }

    /// Volumes carrying every `label` (`key` or `key=value`), with their labels.
    pub async fn volumes(
        &self,
        labels: &[String],
    ) -> Result<Vec<(String, HashMap<String, String>)>, EngineError> {
        let filters = HashMap::from([("label".to_owned(), labels.to_vec())]);
        let r = self
            .docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(api("list volumes"))?;
        Ok(r.volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| (v.name, v.labels))
            .collect())
    }

    /// Removes a volume; a missing one is fine, one in use is an error.
    pub async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        let opts = RemoveVolumeOptionsBuilder::default().force(false).build();
        match self.docker.remove_volume(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api(format!("remove the volume `{name}`"))(e)),
        }
    }

    /// Attaches to a created container's output; call before starting it to miss nothing.
    pub async fn attach_output(
        &self,
        name: &str,
    ) -> Result<
        Pin<Box<dyn Stream<Item = Result<bollard::container::LogOutput, ApiError>> + Send>>,
        EngineError,
    > {
        let opts = AttachContainerOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        let r = self
            .docker
            .attach_container(name, Some(opts))
            .await
            .map_err(api(format!("attach to `{name}`")))?;
        Ok(r.output)
    }

    pub async fn start_container(&self, name: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(name, None)
            .await
            .map_err(api(format!("start the container `{name}`")))
    }

    /// Kills and removes a container; a missing one is fine.
    pub async fn remove_container(&self, name: &str) -> Result<(), EngineError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // Removal already under way (a concurrent cleanup): the container is going.
            Err(ApiError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(api(format!("remove the container `{name}`"))(e)),
        }
    }

    /// Stops a container at once (SIGKILL); a missing or stopped one is fine.
    pub async fn kill_container(&self, name: &str) -> Result<(), EngineError> {
        match self.docker.kill_container(name, None).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(ApiError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(api(format!("stop the container `{name}`"))(e)),
        }
    }

    /// Starts an exec with attached streams.
    pub async fn start_exec(
        &self,
        container: &str,
        spec: &ExecSpec,
    ) -> Result<ExecStreams, EngineError> {
        let config = ExecConfig {
            attach_stdin: Some(spec.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(spec.tty),
            console_size: spec.size.map(|(r, c)| vec![r as usize, c as usize]),
            env: Some(spec.env.clone()),
            cmd: Some(spec.cmd.clone()),
            user: Some(spec.user.clone()),
            working_dir: spec.working_dir.clone(),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(container, config)
            .await
            .map_err(api(format!("run a command in `{container}`")))?;
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: spec.tty,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(api(format!("run a command in `{container}`")))?;
        match started {
            StartExecResults::Attached { output, input } => Ok(ExecStreams {
                id: created.id,
                output,
                input,
            }),
            StartExecResults::Detached => Err(EngineError::Unexpected {
                action: format!("attach to a command in `{container}`"),
            }),
        }
    }

    pub async fn resize_exec(&self, id: &str, rows: u16, cols: u16) -> Result<(), EngineError> {
        let opts = ResizeExecOptionsBuilder::default()
            .h(i32::from(rows))
            .w(i32::from(cols))
            .build();
        self.docker
            .resize_exec(id, opts)
            .await
            .map_err(api("resize the terminal"))
    }

    /// The exit code of a finished exec (`None` while it runs).
    pub async fn exec_exit_code(&self, id: &str) -> Result<Option<i64>, EngineError> {
        let r = self
            .docker
            .inspect_exec(id)
            .await
            .map_err(api("read a command's exit code"))?;
        Ok(if r.running == Some(true) {
            None
        } else {
            r.exit_code
        })
    }

    /// Runs a command to completion, capturing its combined output.
    pub async fn exec_output(
        &self,
        container: &str,
        cmd: Vec<String>,
        user: &str,
    ) -> Result<(i64, String), EngineError> {
        let spec = ExecSpec {
            cmd,
            user: user.to_owned(),
            ..Default::default()
        };
        let mut s = self.start_exec(container, &spec).await?;
        let mut out = Vec::new();
        while let Some(chunk) = s.output.next().await {
            match chunk {
                Ok(o) => out.extend_from_slice(&o.into_bytes()),
                Err(e) => return Err(api(format!("run a command in `{container}`"))(e)),
            }
        }
        let code = self.exec_exit_code(&s.id).await?.unwrap_or(-1);
        Ok((code, String::from_utf8_lossy(&out).into_owned()))
    }

    /// Every container (running or not) and network of this owner's sessions.
    pub async fn labelled(
        &self,
        owner: &str,
    ) -> Result<(Vec<Labelled>, Vec<Labelled>), EngineError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![SESSION_LABEL.to_owned(), format!("{OWNER_LABEL}={owner}")],
        )]);
        let cs = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(api("list containers"))?;
        let containers = cs
            .into_iter()
            .filter_map(|c| {
                let name = c.names?.first()?.trim_start_matches('/').to_owned();
                let session = c.labels?.get(SESSION_LABEL)?.clone();
                Some(Labelled { name, session })
            })
            .collect();
        let ns = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(api("list networks"))?;
        let networks = ns
            .into_iter()
            .filter_map(|n| {
                Some(Labelled {
                    name: n.name?,
                    session: n.labels?.get(SESSION_LABEL)?.clone(),
                })
            })
            .collect();
        Ok((containers, networks))
    }
}

/// Build output colours stderr with escape sequences; messages are plain text.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `Step 3/12 : RUN apt-get ...` → (3, 12, "RUN apt-get ...")
fn parse_step(line: &str) -> Option<(u64, u64, &str)> {
    let rest = line.strip_prefix("Step ")?;
    let (frac, what) = rest.split_once(" : ")?;
    let (n, total) = frac.split_once('/')?;
    Some((n.parse().ok()?, total.parse().ok()?, what.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seccomp_must_be_on_and_not_unconfined() {
        let o = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(seccomp_on(&o(&[
            "name=apparmor",
            "name=seccomp,profile=default"
        ])));
        assert!(seccomp_on(&o(&[
            "name=seccomp,profile=builtin",
            "name=cgroupns"
        ])));
        assert!(!seccomp_on(&o(&["name=seccomp,profile=unconfined"])));
        assert!(!seccomp_on(&o(&["name=apparmor"])));
    }

    #[test]
    fn parses_classic_builder_steps() {
        assert_eq!(
            parse_step("Step 3/12 : RUN apt-get update"),
            Some((3, 12, "RUN apt-get update"))
        );
        assert_eq!(parse_step(" ---> Running in abc"), None);
    }

    #[test]
    fn strips_colour_codes() {
        assert_eq!(strip_ansi("\x1b[91mred\x1b[0m plain"), "red plain");
    }

    /// An environment with nothing set, for a home that holds nothing.
    fn bare(home: &Path) -> EndpointEnv {
        EndpointEnv {
            docker_host: None,
            docker_context: None,
            docker_config: None,
            colima: crate::paths::ColimaEnv {
                colima_home: None,
                xdg_config_home: None,
                home: home.to_owned(),
                macos: false,
            },
        }
    }

    #[test]
    fn endpoint_prefers_the_setting_then_docker_host() {
        let home = tempfile::tempdir().unwrap();
        let env = EndpointEnv {
            docker_host: Some("tcp://d:2376".into()),
            ..bare(home.path())
        };
        assert_eq!(resolve_endpoint(Some("tcp://h:2375"), &env), "tcp://h:2375");
        assert_eq!(resolve_endpoint(Some(""), &env), "tcp://d:2376");
        assert_eq!(resolve_endpoint(None, &env), "tcp://d:2376");
        assert_eq!(
            resolve_endpoint(None, &bare(home.path())),
            "unix:///var/run/docker.sock"
        );
    }

    #[test]
    fn endpoint_reads_the_current_docker_context() {
        let home = tempfile::tempdir().unwrap();
        let cfg = home.path().join(".docker");
        let id = hex::encode(Sha256::digest(b"colima"));
        std::fs::create_dir_all(cfg.join("contexts/meta").join(&id)).unwrap();
        std::fs::write(cfg.join("config.json"), r#"{"currentContext":"colima"}"#).unwrap();
        std::fs::write(
            cfg.join("contexts/meta").join(&id).join("meta.json"),
            r#"{"Name":"colima","Endpoints":{"docker":{"Host":"unix:///x/colima.sock"}}}"#,
        )
        .unwrap();
        let env = bare(home.path());
        assert_eq!(resolve_endpoint(None, &env), "unix:///x/colima.sock");
        // `DOCKER_CONTEXT` names the context; `default` is the engine's own socket.
        let named = |c: &str| EndpointEnv {
            docker_context: Some(c.into()),
            ..bare(home.path())
        };
        assert_eq!(
            resolve_endpoint(None, &named("colima")),
            "unix:///x/colima.sock"
        );
        assert_eq!(
            resolve_endpoint(None, &named("default")),
            "unix:///var/run/docker.sock"
        );
        // `DOCKER_CONFIG` moves the contexts; `DOCKER_HOST` wins over them.
        let moved = EndpointEnv {
            docker_config: Some(home.path().join("elsewhere")),
            ..bare(home.path())
        };
        assert_eq!(
            resolve_endpoint(None, &moved),
            "unix:///var/run/docker.sock"
        );
        let host = EndpointEnv {
            docker_host: Some("tcp://d:2376".into()),
            ..bare(home.path())
        };
        assert_eq!(resolve_endpoint(None, &host), "tcp://d:2376");
    }

    #[test]
    fn endpoint_finds_the_users_colima() {
        let home = tempfile::tempdir().unwrap();
        let sock = home.path().join(".colima/default/docker.sock");
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        std::fs::write(&sock, "").unwrap();
        assert_eq!(
            resolve_endpoint(None, &bare(home.path())),
            format!("unix://{}", sock.display())
        );
    }
}
