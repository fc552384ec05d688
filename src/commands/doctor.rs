//! `sbx doctor`: checks what sbx needs and says what to do about anything missing.

use crate::cli::DoctorArgs;
use crate::config::Layer;
use crate::engine::Engine;
use crate::process::Cmd;
use crate::session::{self, Context};

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
    hint: Option<String>,
}

pub async fn run(
    ctx: &Context,
    _args: DoctorArgs,
    docker_host: Option<String>,
) -> anyhow::Result<i32> {
    let mut checks = Vec::new();
    let settings = super::load_settings(ctx, super::project_root().as_deref(), Layer::default());
    checks.push(match &settings {
        Ok(_) => Check {
            name: "settings",
            ok: true,
            detail: "valid".into(),
            hint: None,
        },
        Err(e) => Check {
            name: "settings",
            ok: false,
            detail: format!("{e:#}"),
            hint: e.chain().find_map(super::hint_for),
        },
    });
    let settings = settings.unwrap_or_default();
    checks.push(match Cmd::new("git").arg("--version").run().await {
        Ok(v) => Check {
            name: "git",
            ok: true,
            detail: v.trim().to_owned(),
            hint: None,
        },
        Err(e) => Check {
            name: "git",
            ok: false,
            detail: e.to_string(),
            hint: Some("install git".into()),
        },
    });
    let endpoint = super::endpoint(ctx, &settings, docker_host);
    match Engine::connect(&endpoint).await {
        Ok(engine) => {
            let version = engine.version().await.unwrap_or_default();
            checks.push(Check {
                name: "engine",
                ok: true,
                detail: format!("Docker {version} at {endpoint}"),
                hint: None,
            });
            match session::image_specs(&settings) {
                Ok(specs) => {
                    for s in specs {
                        let fp = engine.image_fingerprint(&s.tag).await.ok().flatten();
                        let (ok, detail) = match fp {
                            Some(f) if f == s.fingerprint => {
                                (true, format!("`{}` up to date", s.tag))
                            }
                            Some(_) => (false, format!("`{}` is out of date", s.tag)),
                            None => (false, format!("`{}` is not built", s.tag)),
                        };
                        checks.push(Check {
                            name: if s.role == "gate" {
                                "gate image"
                            } else {
                                "sandbox image"
                            },
                            ok,
                            detail,
                            hint: (!ok).then(|| "run `sbx setup`".into()),
                        });
                    }
                }
                Err(e) => checks.push(Check {
                    name: "images",
                    ok: false,
                    detail: format!("{e:#}"),
                    hint: e.chain().find_map(super::hint_for),
                }),
            }
        }
        Err(e) => checks.push(Check {
            name: "engine",
            ok: false,
            detail: e.to_string(),
            hint: e.hint(),
        }),
    }
    let cache = ctx.dirs.sessions();
    let writable = crate::state::create_private_dir(&cache).is_ok();
    checks.push(Check {
        name: "session folder",
        ok: writable,
        detail: cache.display().to_string(),
        hint: (!writable).then(|| "make the folder writable, or set `XDG_CACHE_HOME`".into()),
    });

    let mut failed = 0;
    for c in &checks {
        println!(
            "{:<4} {:<15} {}",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.detail
        );
        if let Some(h) = &c.hint {
            println!("     {:<15} hint: {h}", "");
        }
        failed += usize::from(!c.ok);
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
