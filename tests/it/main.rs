//! sbx's integration tests, one binary (`cargo test --test it`) with a module per subject;
//! `cargo test --test it session::` runs one module, and a test's name or part of it one test.
//! Every test goes through the harness: a `TestEnv` per test, and `needs!`/`needs_docker!` for
//! what the machine may lack (a `skipping: <why>` line, or a failure under the need's
//! `SBX_TEST_REQUIRE_*` variable).

// A test crate, not sbx: it may unwrap (a panic is the failed test, with its message), and it
// starts `docker`, `git` and the rest itself (sbx's rule that every program starts from
// `sbx::process` is for sbx's own code; `clippy.toml`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

#[macro_use]
mod harness;

mod cli;
mod colima;
mod containment;
mod containment_git;
mod egress;
mod firewall;
mod git;
mod session;
mod tokens;
mod trust;
mod vm;
mod vm_qemu;
