//! The `kura` binary: thin dispatch to each role of a Kura cluster.
//!
//! `kura dev` runs a whole local cluster; `kura pd|metashard|datanode|gateway`
//! run one process of a role (what `kura dev` starts as its children);
//! `kura pdctl` is the PD admin CLI; `kura admin` manages tenants, users and
//! keys through a gateway's admin API; `kura bench` measures a running cluster.
//! Role behaviour lives in the role crates; this crate owns only flags, logging,
//! the status endpoints and process lifecycle (see `roles.rs`, `status.rs`).

mod admin;
mod bench;
mod dev;
#[cfg(feature = "failpoints")]
mod failpoints;
mod roles;
mod status;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kura",
    version,
    about = "Kura: a distributed S3-compatible object store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Start a whole local cluster (1 PD or 3 with --pd-replicas 3, 3 metashard stores, 6 data nodes, 1 gateway).
    Dev(dev::DevArgs),
    /// Run a placement driver.
    Pd(roles::PdArgs),
    /// Run a metashard store (metadata Raft regions).
    Metashard(roles::MetashardArgs),
    /// Run a data node (fragment storage).
    Datanode(roles::DatanodeArgs),
    /// Run an S3 gateway.
    Gateway(roles::GatewayArgs),
    /// PD admin CLI (same as the `pdctl` binary): `kura pdctl -u URL store`.
    #[command(disable_help_flag = true)]
    Pdctl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Manage tenants, users, access keys, user policies, quotas, rate limits and usage through a gateway's admin API.
    Admin(admin::AdminArgs),
    /// Benchmark a running cluster, or load any S3 endpoint (put, get, mixed, list, stat,
    /// delete, multipart): throughput and latency beside this machine's limits.
    Bench(bench::BenchArgs),
}

/// glibc's allocator hands blocks of 128 KiB and up (after a few frees, up to
/// 32 MiB) to fresh `mmap`s and gives freed heap tops back to the kernel: every
/// 256 KiB fragment buffer then costs page faults and the kernel zeroing fresh
/// pages. Profiled, that was two thirds of a data node's CPU under 1 MiB PUTs.
/// Keeping blocks under 4 MiB in the heap, and up to 128 MiB of freed heap
/// before trimming, reuses warm pages (decision 0040). Set before any thread
/// starts; other allocators ignore it.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

fn main() {
    tune_allocator();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Dev(args) => match dev::run(args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("kura dev: {e}");
                1
            }
        },
        Command::Pd(args) => roles::run_pd(args),
        Command::Metashard(args) => roles::run_metashard(args),
        Command::Datanode(args) => roles::run_datanode(args),
        Command::Gateway(args) => roles::run_gateway(args),
        Command::Pdctl { args } => {
            let mut argv = vec!["pdctl".to_string()];
            argv.extend(args);
            kura_pd::pdctl_main(argv)
        }
        Command::Admin(args) => admin::run(args),
        Command::Bench(args) => bench::run(args),
    };
    std::process::exit(code);
}
