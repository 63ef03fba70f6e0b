//! `kura admin`: the command-line client of a gateway's admin API (tenants,
//! users, access keys, user policies, bucket info, quotas, rate limits and
//! usage). The HTTP contract is
//! docs/admin-api.md; the command line is DESIGN.md §6. Each command is one
//! route ([`call_for`]); requests are SigV4-signed over the exact body
//! (`client.rs`); answers print as the API's JSON, or as tables with
//! `--table` (`table.rs`).
//!
//! The cluster is found from `--cluster` (a cluster.json: its `s3` endpoint
//! and the credentials file it names), else `--endpoint` plus credentials
//! in the environment, else `./kura-data/cluster.json` (what `make dev`
//! writes).

mod client;
mod table;

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use self::client::{AdminError, Call, Client, Endpoint};
use self::table::{render, Shape};
use crate::bench::sigv4::Signer;
use crate::dev::Credentials;

/// Where `make dev` leaves its cluster file, used when no flag says where.
const DEFAULT_CLUSTER: &str = "./kura-data/cluster.json";

/// The help section of the flags every subcommand takes.
const GLOBAL: &str = "Global options";

// No `///` here: the `Command::Admin` doc comment in main.rs is the about.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 on success, 1 when the gateway is unreachable or answers \
                  with an error (printed as `kura admin: CODE: message`), 2 on bad usage.\n\n\
                  Examples:\n  kura admin tenant create acme\n  \
                  kura admin user create --tenant acme --name alice\n  \
                  kura admin --table user list --tenant acme\n  \
                  kura admin user info --access-key KURA0123456789ABCDEF\n  \
                  kura admin user policy set --id ID --file policy.json\n  \
                  kura admin key disable --access-key KURA0123456789ABCDEF\n  \
                  kura admin bucket info acme:photos\n  \
                  kura admin quota set --scope tenant --tenant acme --max-bytes 100G --max-buckets 10\n  \
                  kura admin quota set --scope user --tenant acme --user alice --max-objects none\n  \
                  kura admin ratelimit set --scope bucket --tenant acme --bucket photos \
                  --max-read-ops 100 --max-write-bytes 10M\n  \
                  kura admin --table usage --tenant acme\n  \
                  kura admin tls revoke --cert kura-data/tls/admin.pem\n  \
                  kura admin --endpoint http://gw:9000 tenant list"
)]
pub struct AdminArgs {
    /// A cluster.json (or its directory): endpoint from its `s3`, admin
    /// credentials from its `credentials_file` [default: ./kura-data/cluster.json]
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        conflicts_with = "endpoint",
        help_heading = GLOBAL
    )]
    cluster: Option<PathBuf>,
    /// Gateway S3 endpoint (http://HOST:PORT); credentials from
    /// KURA_ADMIN_ACCESS_KEY/KURA_ADMIN_SECRET_KEY, else KURA_ROOT_ACCESS_KEY/KURA_ROOT_SECRET_KEY
    #[arg(long, global = true, value_name = "URL", help_heading = GLOBAL)]
    endpoint: Option<String>,
    /// CA certificate (PEM) to trust for an https:// endpoint [default: the
    /// `tls.ca` of --cluster's cluster.json]
    #[arg(long, global = true, value_name = "PEM", help_heading = GLOBAL)]
    cacert: Option<PathBuf>,
    /// SigV4 region: the gateway's.
    #[arg(
        long,
        global = true,
        default_value = "us-east-1",
        help_heading = GLOBAL
    )]
    region: String,
    /// Print readable tables instead of the API's JSON.
    #[arg(long, global = true, help_heading = GLOBAL)]
    table: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Tenants: create, list, delete.
    Tenant {
        #[command(subcommand)]
        cmd: TenantCmd,
    },
    /// Users: create, info, list, delete, and their policies (`user policy`).
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Access keys: create, list, enable, disable, delete.
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Buckets: info.
    Bucket {
        #[command(subcommand)]
        cmd: BucketCmd,
    },
    /// Storage quotas of a tenant, user or bucket: set, get.
    Quota {
        #[command(subcommand)]
        cmd: QuotaCmd,
    },
    /// Rate limits (per second, cluster-wide) of a tenant, user or bucket: set, get.
    Ratelimit {
        #[command(subcommand)]
        cmd: RatelimitCmd,
    },
    /// Usage by tenant, user and bucket: bytes, objects and buckets stored; requests, bytes in and out.
    Usage {
        /// Only this tenant's usage (`""`: the root tenant's).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Cluster TLS of a `kura dev --tls` cluster (local files, no gateway): revoke.
    Tls {
        #[command(subcommand)]
        cmd: TlsCmd,
    },
}

#[derive(Debug, Subcommand)]
enum TlsCmd {
    /// Revoke certificates: adds them to the dev CA's CRL (DIR/tls/crl.pem),
    /// which every process of the cluster reloads within seconds; prints
    /// every serial revoked.
    #[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["cert", "serial"])))]
    Revoke {
        /// A certificate (PEM) to revoke; repeatable.
        #[arg(long, value_name = "PEM")]
        cert: Vec<PathBuf>,
        /// A serial number (hex) to revoke; repeatable.
        #[arg(long, value_name = "HEX")]
        serial: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCmd {
    /// Create a tenant.
    Create {
        /// Tenant name: 1-32 of a-z 0-9 _ -.
        name: String,
    },
    /// All tenants (the root tenant, named "", always exists and is not listed).
    List,
    /// Delete a tenant (refused while it has users or buckets).
    Delete {
        /// Tenant name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Create a user with a first access key; prints the user with the key's
    /// secret (shown only this once).
    Create {
        /// Tenant [default: the root tenant].
        #[arg(long)]
        tenant: Option<String>,
        /// User name, unique within the tenant.
        #[arg(long)]
        name: String,
        /// Canonical user id (1-64 of A-Z a-z 0-9 _ -) [default: generated].
        #[arg(long, value_name = "CANONICAL_ID")]
        id: Option<String>,
        /// Display name.
        #[arg(long, value_name = "D")]
        display_name: Option<String>,
        /// Email address.
        #[arg(long, value_name = "E")]
        email: Option<String>,
    },
    /// One user, by canonical id or by one of its access keys.
    #[command(group(clap::ArgGroup::new("who").required(true).args(["id", "access_key"])))]
    Info {
        /// Canonical user id.
        #[arg(long)]
        id: Option<String>,
        /// One of the user's access keys.
        #[arg(long, value_name = "AK")]
        access_key: Option<String>,
    },
    /// All users, or one tenant's (`--tenant ""`: the root tenant's).
    List {
        /// Only this tenant's users.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Delete a user and its keys (refused while it owns buckets).
    Delete {
        /// Canonical user id.
        #[arg(long)]
        id: String,
    },
    /// The user's policy document: set, get, delete.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Attach the policy document in FILE (`-`: stdin), sent as is.
    Set {
        /// Canonical user id.
        #[arg(long)]
        id: String,
        /// JSON policy document; `-` reads stdin.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the user's policy document (NotFound when it has none).
    Get {
        /// Canonical user id.
        #[arg(long)]
        id: String,
    },
    /// Remove the user's policy document.
    Delete {
        /// Canonical user id.
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCmd {
    /// Create an access key for user ID; prints it with its secret (shown
    /// only this once). Without --access-key/--secret-key both are generated.
    Create {
        /// Canonical id of the key's user.
        #[arg(long, value_name = "ID")]
        user: String,
        /// Access key to use (16-128 of A-Z a-z 0-9).
        #[arg(long, value_name = "AK", requires = "secret_key")]
        access_key: Option<String>,
        /// Secret to use (16-128 printable ASCII, no spaces; visible to
        /// `ps` while this runs).
        #[arg(long, value_name = "SK", requires = "access_key")]
        secret_key: Option<String>,
        /// When the key stops working (RFC 3339, e.g. 2027-01-01T00:00:00Z).
        #[arg(long, value_name = "RFC3339")]
        expires: Option<String>,
    },
    /// All access keys, or one user's.
    List {
        /// Only this user's keys (canonical id).
        #[arg(long, value_name = "ID")]
        user: Option<String>,
    },
    /// Let a disabled key sign requests again.
    Enable {
        /// The access key.
        #[arg(long, value_name = "AK")]
        access_key: String,
    },
    /// Stop a key from signing requests (every gateway within 5 s).
    Disable {
        /// The access key.
        #[arg(long, value_name = "AK")]
        access_key: String,
    },
    /// Delete a key.
    Delete {
        /// The access key.
        #[arg(long, value_name = "AK")]
        access_key: String,
    },
}

#[derive(Debug, Subcommand)]
enum BucketCmd {
    /// A bucket's tenant, id, owner, storage class and policy.
    Info {
        /// `bucket` (root tenant) or `tenant:bucket`.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum QuotaCmd {
    /// Set limits: N sets one (0 allows nothing), `none` removes it; limits
    /// not given are kept.
    Set {
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        limits: QuotaLimits,
    },
    /// Print the quota (null: no limit).
    Get {
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

#[derive(Debug, Subcommand)]
enum RatelimitCmd {
    /// Set limits: N sets one (0 allows nothing), `none` removes it; limits
    /// not given are kept.
    Set {
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        limits: RateLimits,
    },
    /// Print the rate limits (null: no limit).
    Get {
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

/// What a quota or rate limit is on (the `SCOPE` query of docs/admin-api.md).
#[derive(Debug, clap::Args)]
struct ScopeArgs {
    /// What the limits apply to.
    #[arg(long, value_enum)]
    scope: Scope,
    /// Tenant [default: the root tenant].
    #[arg(long)]
    tenant: Option<String>,
    /// User name in the tenant (--scope user).
    #[arg(
        long,
        value_name = "NAME",
        required_if_eq("scope", "user"),
        conflicts_with = "bucket"
    )]
    user: Option<String>,
    /// Bucket name in the tenant (--scope bucket).
    #[arg(long, value_name = "B", required_if_eq("scope", "bucket"))]
    bucket: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scope {
    Tenant,
    User,
    Bucket,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Tenant => "tenant",
            Scope::User => "user",
            Scope::Bucket => "bucket",
        }
    }
}

/// `quota set`'s limits: at least one.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = true)]
struct QuotaLimits {
    /// Bytes stored (suffix K, M, G, T: powers of 1024).
    #[arg(long, value_name = "N", value_parser = size_limit, allow_negative_numbers = true)]
    max_bytes: Option<Limit>,
    /// Objects stored.
    #[arg(long, value_name = "N", value_parser = count_limit, allow_negative_numbers = true)]
    max_objects: Option<Limit>,
    /// Buckets (tenant and user scopes only).
    #[arg(long, value_name = "N", value_parser = count_limit, allow_negative_numbers = true)]
    max_buckets: Option<Limit>,
}

/// `ratelimit set`'s limits, per second across the cluster: at least one.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = true)]
struct RateLimits {
    /// Read requests per second.
    #[arg(long, value_name = "N", value_parser = count_limit, allow_negative_numbers = true)]
    max_read_ops: Option<Limit>,
    /// Write requests per second.
    #[arg(long, value_name = "N", value_parser = count_limit, allow_negative_numbers = true)]
    max_write_ops: Option<Limit>,
    /// List requests per second.
    #[arg(long, value_name = "N", value_parser = count_limit, allow_negative_numbers = true)]
    max_list_ops: Option<Limit>,
    /// Delete requests per second.
    #[arg(long, value_name = "N", value_parser = count_limit, allow_negative_numbers = true)]
    max_delete_ops: Option<Limit>,
    /// Bytes read per second (suffix K, M, G, T: powers of 1024).
    #[arg(long, value_name = "N", value_parser = size_limit, allow_negative_numbers = true)]
    max_read_bytes: Option<Limit>,
    /// Bytes written per second (suffix K, M, G, T: powers of 1024).
    #[arg(long, value_name = "N", value_parser = size_limit, allow_negative_numbers = true)]
    max_write_bytes: Option<Limit>,
}

/// One limit given to `set`: sent as a number, or as `null` to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Set(u64),
    Remove,
}

/// A plain count limit: N, or `none` (also `-1`).
fn count_limit(s: &str) -> Result<Limit, String> {
    parse_limit(s, false)
}

/// A byte limit: N, N with a K, M, G or T suffix (powers of 1024, also
/// written KiB, MiB...; B for bytes), or `none` (also `-1`).
fn size_limit(s: &str) -> Result<Limit, String> {
    parse_limit(s, true)
}

fn parse_limit(s: &str, sized: bool) -> Result<Limit, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("none") || t == "-1" {
        return Ok(Limit::Remove);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = (&t[..split], t[split..].trim_start());
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => Some(0),
        _ if !sized => None,
        "B" => Some(0),
        "K" | "KIB" => Some(10),
        "M" | "MIB" => Some(20),
        "G" | "GIB" => Some(30),
        "T" | "TIB" => Some(40),
        _ => None,
    };
    let bad = || {
        if sized {
            "not a size: give a whole number of bytes, optionally with K, M, G or T \
             (powers of 1024, e.g. 10G), or `none` to remove the limit"
                .to_string()
        } else {
            "not a count: give a whole number, or `none` to remove the limit".to_string()
        }
    };
    let (Some(shift), false) = (shift, digits.is_empty()) else {
        return Err(bad());
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift)
        .map(Limit::Set)
        .ok_or_else(|| format!("too large: at most {} bytes", u64::MAX))
}

/// Runs one `kura admin` command; the process exit code.
pub fn run(args: AdminArgs) -> i32 {
    if let AdminCommand::Tls { cmd } = &args.command {
        return tls_command(&args, cmd);
    }
    let env = |k: &str| std::env::var(k).ok();
    let prepared = prepare(&args, &env, &mut std::io::stdin());
    let result = prepared.and_then(|(client, call, shape)| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AdminError::Setup(format!("cannot start a runtime: {e}")))?;
        rt.block_on(execute(&client, &call, shape, args.table))
    });
    match result {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            0
        }
        Err(e) => {
            eprintln!("kura admin: {e}");
            if matches!(e, AdminError::Usage(_)) {
                2
            } else {
                1
            }
        }
    }
}

/// The client for the chosen cluster and the request for the command,
/// before any network traffic (so bad input fails fast).
fn prepare(
    args: &AdminArgs,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
) -> Result<(Client, Call, Shape), AdminError> {
    let (call, shape) = call_for(&args.command, stdin)?;
    let (endpoint, creds) = target(args, env)?;
    let signer = Signer {
        access_key: creds.access_key,
        secret_key: creds.secret_key,
        region: args.region.clone(),
    };
    let ca = args.cacert.clone().or_else(|| cluster_ca(args));
    Ok((Client::new(endpoint, signer, ca.as_deref())?, call, shape))
}

/// `kura admin tls …`: works on the dev CA's files beside cluster.json's
/// `tls.ca` (`crate::dev::certs`), not through a gateway.
fn tls_command(args: &AdminArgs, cmd: &TlsCmd) -> i32 {
    let TlsCmd::Revoke { cert, serial } = cmd;
    let Some(ca) = cluster_ca(args) else {
        eprintln!("kura admin: tls: --cluster must name a `kura dev --tls` cluster.json (it has no \"tls\" section)");
        return 2;
    };
    let dir = ca.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut serials = Vec::new();
    for s in serial {
        match crate::dev::certs::parse_serial(s) {
            Ok(s) => serials.push(s),
            Err(e) => {
                eprintln!("kura admin: --serial {e}");
                return 2;
            }
        }
    }
    for c in cert {
        match crate::dev::certs::cert_serials(c) {
            Ok(s) => serials.extend(s.into_iter().take(1)),
            Err(e) => {
                eprintln!("kura admin: --cert {e}");
                return 2;
            }
        }
    }
    match crate::dev::certs::revoke(&dir, &serials) {
        Ok(all) => {
            let crl = dir.join(crate::dev::certs::CRL_FILE);
            println!("{}", serde_json::json!({ "crl": crl, "revoked": all }));
            0
        }
        Err(e) => {
            eprintln!("kura admin: tls revoke: {e}");
            1
        }
    }
}

/// The CA of `kura dev --tls`'s cluster.json, if --cluster (or the default)
/// names one with a `"tls"` section.
fn cluster_ca(args: &AdminArgs) -> Option<PathBuf> {
    if args.endpoint.is_some() {
        return None;
    }
    let path = args
        .cluster
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CLUSTER));
    let path = if path.is_dir() {
        path.join("cluster.json")
    } else {
        path
    };
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["tls"]["ca"].as_str().map(PathBuf::from)
}

async fn execute(
    client: &Client,
    call: &Call,
    shape: Shape,
    table: bool,
) -> Result<String, AdminError> {
    let answer = client.send(call).await?;
    Ok(render(shape, &answer.text, &answer.json, table))
}

/// The route, query and body for a command (docs/admin-api.md, "Routes"),
/// and how to show its answer.
fn call_for(cmd: &AdminCommand, stdin: &mut dyn Read) -> Result<(Call, Shape), AdminError> {
    use Method as M;
    let out = match cmd {
        AdminCommand::Tls { .. } => {
            return Err(AdminError::Usage("tls commands run locally".into()))
        }
        AdminCommand::Tenant { cmd } => match cmd {
            TenantCmd::Create { name } => (
                with_body(Call::new(M::POST, &["tenants"]), &[("name", Some(name))])?,
                Shape::Tenant,
            ),
            TenantCmd::List => (Call::new(M::GET, &["tenants"]), Shape::Tenants),
            TenantCmd::Delete { name } => (
                Call::new(M::DELETE, &["tenants", segment("tenant name", name)?]),
                Shape::Empty,
            ),
        },
        AdminCommand::User { cmd } => match cmd {
            UserCmd::Create {
                tenant,
                name,
                id,
                display_name,
                email,
            } => (
                with_body(
                    Call::new(M::POST, &["users"]),
                    &[
                        ("tenant", tenant.as_ref()),
                        ("name", Some(name)),
                        ("id", id.as_ref()),
                        ("display_name", display_name.as_ref()),
                        ("email", email.as_ref()),
                    ],
                )?,
                Shape::User,
            ),
            UserCmd::Info { id, access_key } => {
                let mut call = Call::new(M::GET, &["user"]);
                // clap's required group guarantees one of them.
                match (id, access_key) {
                    (Some(id), _) => call.query.push(("id", id.clone())),
                    (None, Some(ak)) => call.query.push(("access_key", ak.clone())),
                    (None, None) => {
                        return Err(AdminError::Setup("give --id or --access-key".into()))
                    }
                }
                (call, Shape::User)
            }
            UserCmd::List { tenant } => {
                let mut call = Call::new(M::GET, &["users"]);
                if let Some(t) = tenant {
                    call.query.push(("tenant", t.clone()));
                }
                (call, Shape::Users)
            }
            UserCmd::Delete { id } => (
                Call::new(M::DELETE, &["users", segment("user id", id)?]),
                Shape::Empty,
            ),
            UserCmd::Policy { cmd } => match cmd {
                PolicyCmd::Set { id, file } => {
                    let mut call = Call::new(M::PUT, &["users", segment("user id", id)?, "policy"]);
                    call.body = Some(read_policy(file, stdin)?);
                    (call, Shape::User)
                }
                PolicyCmd::Get { id } => (
                    Call::new(M::GET, &["users", segment("user id", id)?, "policy"]),
                    Shape::Policy,
                ),
                PolicyCmd::Delete { id } => (
                    Call::new(M::DELETE, &["users", segment("user id", id)?, "policy"]),
                    Shape::Empty,
                ),
            },
        },
        AdminCommand::Key { cmd } => match cmd {
            KeyCmd::Create {
                user,
                access_key,
                secret_key,
                expires,
            } => {
                if let Some(t) = expires {
                    let parsed = time::OffsetDateTime::parse(
                        t,
                        &time::format_description::well_known::Rfc3339,
                    );
                    if parsed.is_err() {
                        return Err(AdminError::Setup(format!(
                            "--expires {t:?} is not an RFC 3339 time (e.g. 2027-01-01T00:00:00Z)"
                        )));
                    }
                }
                (
                    with_body(
                        Call::new(M::POST, &["keys"]),
                        &[
                            ("user", Some(user)),
                            ("access_key", access_key.as_ref()),
                            ("secret_key", secret_key.as_ref()),
                            ("expires", expires.as_ref()),
                        ],
                    )?,
                    Shape::Key,
                )
            }
            KeyCmd::List { user } => {
                let mut call = Call::new(M::GET, &["keys"]);
                if let Some(u) = user {
                    call.query.push(("user", u.clone()));
                }
                (call, Shape::Keys)
            }
            KeyCmd::Enable { access_key } => (
                Call::new(
                    M::POST,
                    &["keys", segment("access key", access_key)?, "enable"],
                ),
                Shape::Key,
            ),
            KeyCmd::Disable { access_key } => (
                Call::new(
                    M::POST,
                    &["keys", segment("access key", access_key)?, "disable"],
                ),
                Shape::Key,
            ),
            KeyCmd::Delete { access_key } => (
                Call::new(M::DELETE, &["keys", segment("access key", access_key)?]),
                Shape::Empty,
            ),
        },
        AdminCommand::Bucket { cmd } => match cmd {
            BucketCmd::Info { name } => (
                Call::new(M::GET, &["buckets", segment("bucket name", name)?]),
                Shape::Bucket,
            ),
        },
        AdminCommand::Quota { cmd } => match cmd {
            QuotaCmd::Set { scope, limits } => {
                if scope.scope == Scope::Bucket && limits.max_buckets.is_some() {
                    return Err(AdminError::Usage(
                        "--max-buckets applies to tenants and users, not to --scope bucket".into(),
                    ));
                }
                let call = scoped(M::PUT, "quota", scope)?;
                let fields = [
                    ("max_bytes", limits.max_bytes),
                    ("max_objects", limits.max_objects),
                    ("max_buckets", limits.max_buckets),
                ];
                (with_limits(call, &fields)?, Shape::Quota)
            }
            QuotaCmd::Get { scope } => (scoped(M::GET, "quota", scope)?, Shape::Quota),
        },
        AdminCommand::Ratelimit { cmd } => match cmd {
            RatelimitCmd::Set { scope, limits } => {
                let call = scoped(M::PUT, "ratelimit", scope)?;
                let fields = [
                    ("max_read_ops", limits.max_read_ops),
                    ("max_write_ops", limits.max_write_ops),
                    ("max_list_ops", limits.max_list_ops),
                    ("max_delete_ops", limits.max_delete_ops),
                    ("max_read_bytes", limits.max_read_bytes),
                    ("max_write_bytes", limits.max_write_bytes),
                ];
                (with_limits(call, &fields)?, Shape::RateLimits)
            }
            RatelimitCmd::Get { scope } => (scoped(M::GET, "ratelimit", scope)?, Shape::RateLimits),
        },
        AdminCommand::Usage { tenant } => {
            let mut call = Call::new(M::GET, &["usage"]);
            if let Some(t) = tenant {
                call.query.push(("tenant", t.clone()));
            }
            (call, Shape::Usage)
        }
    };
    Ok(out)
}

/// A quota or rate-limit route with its `SCOPE` query: `scope`, `tenant`
/// (empty for the root tenant) and the user's or bucket's name.
fn scoped(method: Method, route: &str, s: &ScopeArgs) -> Result<Call, AdminError> {
    let mut call = Call::new(method, &[route]);
    call.query.push(("scope", s.scope.as_str().to_string()));
    call.query
        .push(("tenant", s.tenant.clone().unwrap_or_default()));
    // clap requires --user for `user` and --bucket for `bucket`, and
    // refuses both at once; what it cannot express is checked here.
    match (s.scope, &s.user, &s.bucket) {
        (Scope::Tenant, None, None) => {}
        (Scope::Tenant, _, _) => {
            return Err(AdminError::Usage(
                "--scope tenant takes neither --user nor --bucket (use --scope user or \
                 --scope bucket for theirs)"
                    .into(),
            ))
        }
        (Scope::User, Some(user), None) => call.query.push(("user", user.clone())),
        (Scope::Bucket, None, Some(bucket)) => call.query.push(("bucket", bucket.clone())),
        (Scope::User, _, _) => {
            return Err(AdminError::Usage(
                "--scope user takes --user NAME only".into(),
            ))
        }
        (Scope::Bucket, _, _) => {
            return Err(AdminError::Usage(
                "--scope bucket takes --bucket B only".into(),
            ))
        }
    }
    Ok(call)
}

/// `call` with a JSON object body of the limits given: a number sets one,
/// `null` removes it, and limits not given are left out (kept).
fn with_limits(mut call: Call, fields: &[(&str, Option<Limit>)]) -> Result<Call, AdminError> {
    let obj: Map<String, Value> = fields
        .iter()
        .filter_map(|(k, v)| {
            let v = match (*v)? {
                Limit::Set(n) => Value::from(n),
                Limit::Remove => Value::Null,
            };
            Some((k.to_string(), v))
        })
        .collect();
    if obj.is_empty() {
        // clap's required group makes this unreachable from the command line.
        return Err(AdminError::Usage("give at least one limit to set".into()));
    }
    let body = serde_json::to_vec(&Value::Object(obj))
        .map_err(|e| AdminError::Setup(format!("cannot encode the request: {e}")))?;
    call.body = Some(body);
    Ok(call)
}

/// `s` as one path segment. Empty, `.` and `..` cannot be one: HTTP stacks
/// drop or resolve them, so the request would reach another route.
fn segment<'a>(what: &str, s: &'a str) -> Result<&'a str, AdminError> {
    match s {
        "" => Err(AdminError::Setup(format!("the {what} must not be empty"))),
        "." | ".." => Err(AdminError::Setup(format!("{s:?} is not a valid {what}"))),
        _ => Ok(s),
    }
}

/// `call` with a JSON object body of the given fields; absent ones are left
/// out rather than sent as null.
fn with_body(mut call: Call, fields: &[(&str, Option<&String>)]) -> Result<Call, AdminError> {
    let obj: Map<String, Value> = fields
        .iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), Value::String(v.clone()))))
        .collect();
    let body = serde_json::to_vec(&Value::Object(obj))
        .map_err(|e| AdminError::Setup(format!("cannot encode the request: {e}")))?;
    call.body = Some(body);
    Ok(call)
}

/// The bytes of a policy file (`-`: stdin), unchanged: the gateway parses
/// and validates policies, so what it checks is exactly what was written.
fn read_policy(file: &Path, stdin: &mut dyn Read) -> Result<Vec<u8>, AdminError> {
    let mut buf = Vec::new();
    if file == Path::new("-") {
        stdin
            .read_to_end(&mut buf)
            .map_err(|e| AdminError::Setup(format!("reading the policy from stdin: {e}")))?;
    } else {
        buf = std::fs::read(file).map_err(|e| {
            AdminError::Setup(format!("reading policy file {}: {e}", file.display()))
        })?;
    }
    Ok(buf)
}

/// The two fields of cluster.json (`crate::dev::layout::ClusterFile`)
/// this client needs; the rest may differ between deployments.
#[derive(Deserialize)]
struct ClusterRef {
    s3: String,
    credentials_file: PathBuf,
}

/// The endpoint and admin credentials the flags (or defaults) point at.
fn target(
    args: &AdminArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Endpoint, Credentials), AdminError> {
    match (&args.cluster, &args.endpoint) {
        (_, Some(url)) => Ok((Endpoint::parse(url)?, env_credentials(env)?)),
        (Some(path), None) => from_cluster(path, false),
        (None, None) => from_cluster(Path::new(DEFAULT_CLUSTER), true),
    }
}

fn from_cluster(path: &Path, defaulted: bool) -> Result<(Endpoint, Credentials), AdminError> {
    let path = if path.is_dir() {
        path.join("cluster.json")
    } else {
        path.to_path_buf()
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && defaulted => {
            return Err(AdminError::Setup(format!(
                "no --cluster or --endpoint given, and {DEFAULT_CLUSTER} does not exist \
                 (start a local cluster with `make dev`, or pass --cluster DIR/cluster.json \
                 or --endpoint URL)"
            )))
        }
        Err(e) => return Err(AdminError::Setup(format!("{}: {e}", path.display()))),
    };
    let cluster: ClusterRef = serde_json::from_slice(&bytes)
        .map_err(|e| AdminError::Setup(format!("{}: not a cluster.json: {e}", path.display())))?;
    // A relative credentials path is relative to the cluster file (kura dev
    // writes absolute ones).
    let creds_path = match path.parent() {
        Some(dir) if cluster.credentials_file.is_relative() => dir.join(&cluster.credentials_file),
        _ => cluster.credentials_file.clone(),
    };
    let creds = match crate::dev::load_credentials(&creds_path) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(AdminError::Setup(format!(
                "{} (credentials_file of {}) does not exist",
                creds_path.display(),
                path.display()
            )))
        }
        // The parser's message may quote the file's contents: a secret.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(AdminError::Setup(format!(
                "{}: not a credentials file ({{\"access_key\": ..., \"secret_key\": ...}})",
                creds_path.display()
            )))
        }
        Err(e) => return Err(AdminError::Setup(format!("{}: {e}", creds_path.display()))),
    };
    Ok((Endpoint::parse(&cluster.s3)?, creds))
}

/// Admin credentials for `--endpoint`: the KURA_ADMIN_* pair, else the
/// KURA_ROOT_* pair. A half-set pair is an error, not a silent fallback.
fn env_credentials(env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials, AdminError> {
    let pairs = [
        ("KURA_ADMIN_ACCESS_KEY", "KURA_ADMIN_SECRET_KEY"),
        ("KURA_ROOT_ACCESS_KEY", "KURA_ROOT_SECRET_KEY"),
    ];
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    for (ak, sk) in pairs {
        match (get(ak), get(sk)) {
            (Some(access_key), Some(secret_key)) => {
                return Ok(Credentials {
                    access_key,
                    secret_key,
                })
            }
            (None, None) => continue,
            (Some(_), None) => {
                return Err(AdminError::Setup(format!("{ak} is set but {sk} is not")))
            }
            (None, Some(_)) => {
                return Err(AdminError::Setup(format!("{sk} is set but {ak} is not")))
            }
        }
    }
    Err(AdminError::Setup(
        "--endpoint needs admin credentials: set KURA_ADMIN_ACCESS_KEY and \
         KURA_ADMIN_SECRET_KEY (or KURA_ROOT_ACCESS_KEY and KURA_ROOT_SECRET_KEY)"
            .into(),
    ))
}

#[cfg(test)]
mod tests;
