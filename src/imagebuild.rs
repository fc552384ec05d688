//! Brings images up to date on an engine: what is missing or stale (by fingerprint) is built,
//! an image already there under another name is tagged instead, and each friendly alias moves to
//! the image in use. Sessions, `sbx setup` and the golden VM's provisioning use it.

use futures_util::future::join_all;

use crate::engine::{EngineApi, EngineError};
use crate::image::ImageSpec;
use crate::progress::Ui;

/// Brings the session's images up to date, building what changed, and moves each friendly alias
/// to the image this session uses. An image with the same fingerprint under another name (an
/// older sbx's alias, another `image.tag`) is given the fingerprint tag instead of being rebuilt.
pub async fn ensure<E: EngineApi>(
    ui: &Ui,
    engine: &E,
    specs: &[ImageSpec],
) -> anyhow::Result<bool> {
    let found = join_all(specs.iter().map(|s| async move {
        let have = engine.local_image(&s.tag).await?;
        if have
            .as_ref()
            .is_some_and(|i| i.fingerprint == s.fingerprint)
        {
            return Ok::<_, EngineError>(have);
        }
        match engine.image_by_fingerprint(&s.fingerprint).await? {
            Some(id) => {
                engine.tag_image(&id, &s.tag).await?;
                Ok(engine.local_image(&s.tag).await?)
            }
            None => Ok(None),
        }
    }))
    .await;
    let mut to_build = Vec::new();
    for (s, have) in specs.iter().zip(found) {
        match have? {
            Some(i) if i.fingerprint == s.fingerprint => {
                // Only a name for people, and a sign of use for `sbx gc` (`imagegc`): a failure
                // here costs nothing. Moving the alias tags the image too.
                if !i.tags.contains(&s.alias) {
                    let _ = engine.tag_image(&s.tag, &s.alias).await;
                } else if crate::imagegc::needs_refresh(i.last_tagged) {
                    let _ = engine.tag_image(&s.tag, &s.tag).await;
                }
            }
            _ => to_build.push(s),
        }
    }
    if to_build.is_empty() {
        return Ok(false);
    }
    let builds = to_build.iter().map(|s| async move {
        let bar = ui.bar(&format!("{} image", s.role));
        ui.info(format!(
            "building the {} image `{}` (only when its inputs change)",
            s.role, s.alias
        ));
        let r = engine.build(s, &bar).await;
        match &r {
            Ok(()) => {
                bar.finish("built");
                let _ = engine.tag_image(&s.tag, &s.alias).await;
            }
            Err(_) => bar.abandon(),
        }
        r
    });
    for r in join_all(builds).await {
        r?;
    }
    Ok(true)
}
