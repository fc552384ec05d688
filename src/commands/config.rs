//! `sbx config show`: every setting, its value and where it came from.

use crate::config::Layer;
use crate::session::Context;

pub fn show(ctx: &Context, json: bool, docker_host: Option<String>) -> anyhow::Result<i32> {
    let flags = Layer {
        docker_host,
        ..Layer::default()
    };
    let settings = super::load_settings(ctx, super::project_root().as_deref(), flags)?;
    let rows = settings.rows();
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(k, v)| {
                serde_json::json!({
                    "key": k, "value": v, "source": settings.source_of(k).to_string()
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(10);
        for (k, v) in &rows {
            println!("{k:<width$}  {v}  # {}", settings.source_of(k));
        }
    }
    Ok(0)
}
