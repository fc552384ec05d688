//! Which of the images sbx built an engine still needs. Sessions use images tagged by their
//! fingerprint, so every change of settings (extra CAs, a Dockerfile, a `setup --update` stamp)
//! leaves the old image behind; `sbx gc` removes those nobody uses.
//!
//! An image is kept when a container (running or stopped, anyone's) uses it, when it is one of the
//! images the current settings need, or when it was built or used less than [`KEEP_DAYS`] ago:
//! another project, or another user of the engine, may need it tomorrow. "Used" is the engine's
//! own record, seen by every user: the image's last tag time, which every session that uses an
//! image refreshes once a day ([`needs_refresh`]). `sbx gc --images` drops that grace.

use std::collections::HashSet;

use crate::engine::BuiltImage;

/// How long an image nobody uses is kept after it was last built or used.
pub const KEEP_DAYS: i64 = 14;
const DAY: i64 = 24 * 60 * 60;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whether a session using an image last tagged at `last_tagged` should tag it again, to tell
/// every user's `sbx gc` it is in use: at most once a day, so most sessions write nothing.
pub fn needs_refresh(last_tagged: Option<i64>) -> bool {
    last_tagged.is_none_or(|t| now() - t >= DAY)
}

pub use crate::engine::parse_time;

/// The images to remove: built by sbx, used by no container, not needed by the current settings
/// (`current`: tags), and (unless `all`) neither built nor tagged in the last [`KEEP_DAYS`].
pub fn unused<'a>(
    images: &'a [BuiltImage],
    in_use: &HashSet<String>,
    current: &[&str],
    now: i64,
    all: bool,
) -> Vec<&'a BuiltImage> {
    images
        .iter()
        .filter(|i| !in_use.contains(&i.id))
        .filter(|i| !i.tags.iter().any(|t| current.contains(&t.as_str())))
        .filter(|i| all || now - i.created.max(i.last_tagged.unwrap_or(0)) >= KEEP_DAYS * DAY)
        .collect()
}

/// Removes what [`unused`] picks; returns the names removed. An image that gained a container in
/// the meantime stays (removal is never forced), and says so.
pub async fn prune(
    engine: &crate::engine::Engine,
    current: &[&str],
    all: bool,
    ui: &crate::progress::Ui,
) -> anyhow::Result<Vec<String>> {
    let (images, in_use) = tokio::try_join!(engine.built_images(), engine.images_in_use())?;
    let mut removed = Vec::new();
    for img in unused(&images, &in_use, current, now(), all) {
        let names: Vec<&str> = if img.tags.is_empty() {
            vec![img.id.as_str()]
        } else {
            img.tags.iter().map(String::as_str).collect()
        };
        for name in names {
            match engine.remove_image(name).await {
                Ok(()) => removed.push(name.to_owned()),
                Err(e) => ui.warn(format!("kept the image `{name}`: {e}")),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(id: &str, tags: &[&str], created: i64, last_tagged: Option<i64>) -> BuiltImage {
        BuiltImage {
            id: id.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            role: "sandbox".into(),
            created,
            last_tagged,
        }
    }

    #[test]
    fn keeps_what_is_used_current_or_recent() {
        let now = 100 * DAY;
        let old = now - KEEP_DAYS * DAY;
        let images = [
            img("a", &["sbx-sandbox:fp-a"], old, None),
            img(
                "b",
                &["sbx-sandbox:fp-b", "sbx-sandbox:latest"],
                old,
                Some(old),
            ),
            img("c", &["sbx-gate:fp-c"], old, None),
            img("d", &["sbx-sandbox:fp-d"], now - DAY, None),
            img("e", &["mine:fp-e"], old, Some(now - 2 * DAY)),
            img("f", &[], old, None),
        ];
        let in_use = HashSet::from(["a".to_owned()]);
        let ids = |v: Vec<&BuiltImage>| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        // a: a container uses it; c: current; d: built yesterday; e: used two days ago.
        assert_eq!(
            ids(unused(&images, &in_use, &["sbx-gate:fp-c"], now, false)),
            ["b", "f"]
        );
        // --images: only the containers' and the current settings' images stay.
        assert_eq!(
            ids(unused(&images, &in_use, &["sbx-gate:fp-c"], now, true)),
            ["b", "d", "e", "f"]
        );
    }

    #[test]
    fn engine_times() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_time("2026-11-28T01:01:36.102420864Z"),
            Some(1_795_827_696)
        );
        assert_eq!(parse_time("2000-03-01T00:00:00+00:00"), Some(951_868_800));
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_time("2026-11-28T01:01:36+02:00"), None);
        assert_eq!(parse_time("junk"), None);
        assert!(needs_refresh(None));
        assert!(needs_refresh(Some(now() - DAY)));
        assert!(!needs_refresh(Some(now() - 60)));
    }
}
