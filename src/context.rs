//! What every command gets.

use crate::paths::Dirs;
use crate::progress::Ui;

/// What every command gets: where files live and how to talk to the user.
pub struct Context {
    pub dirs: Dirs,
    pub ui: Ui,
}
