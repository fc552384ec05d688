//! sbx's integration tests, one binary (`cargo test --test it`) with a module per subject;
//! `cargo test --test it session::` runs one module, and a test's name or part of it one test.
//! Every test goes through the harness: a `TestEnv` per test, and `needs!`/`needs_docker!` for
//! what the machine may lack (a `skipping: <why>` line, or a failure under the need's
//! `SBX_TEST_REQUIRE_*` variable).

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
