//! sbx runs an AI coding agent (or any command) in a throwaway sandbox: per-session checkouts of
//! the user's repositories, an ephemeral hardened container, and an egress firewall.

pub mod allowlist;
pub mod attach;
pub mod audit;
pub mod caches;
pub mod cast;
pub mod claude;
pub mod cli;
pub mod commands;
pub mod config;
pub mod container;
pub mod context;
pub mod engine;
pub mod error;
pub mod firewall;
pub mod guest;
pub mod hostids;
pub mod image;
pub mod imagecache;
pub mod imagegc;
pub mod keychain;
pub mod leaks;
pub mod paths;
pub mod process;
pub mod progress;
pub mod safefs;
pub mod session;
pub mod spare;
pub mod ssh;
pub mod state;
pub mod terminal;
pub mod text;
pub mod trust;
pub mod vm;
pub mod worktree;
