//! `kura admin`: the command-line client of a gateway's admin API (tenants,
//! users, access keys, user policies, bucket info). The HTTP contract is
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

/// Runs one `kura admin` command; the process exit code.
pub fn run(args: AdminArgs) -> i32 {
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
            1
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
    Ok((Client::new(endpoint, signer)?, call, shape))
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
    };
    Ok(out)
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
