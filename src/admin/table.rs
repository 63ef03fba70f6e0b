//! `kura admin` output: the API's JSON re-indented in its own field order,
//! or with `--table` one layout per answer [`Shape`], in pdctl's style
//! (left-aligned columns two spaces apart, `-` for none, `""` for the root
//! tenant's empty name). Byte counts read as `1.5 GiB` (usage) or exactly,
//! in the largest unit that divides them (limits: `10 GiB`, as set with `10G`).

use kura_pd::pdctl::table::grid;
use serde_json::Value;

/// What an answer holds, so `--table` knows its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    Tenant,
    Tenants,
    User,
    Users,
    Key,
    Keys,
    Bucket,
    Quota,
    RateLimits,
    Usage,
    /// A policy document: JSON even with `--table`.
    Policy,
    /// `{}` (a delete): nothing to show in a table.
    Empty,
}

/// What to print for an answer: `text` as the API sent it, re-indented,
/// or a table from its parsed form `v`.
pub(super) fn render(shape: Shape, text: &str, v: &Value, table: bool) -> String {
    if !table {
        return pretty(text);
    }
    let list = |key: &str| {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match shape {
        Shape::Tenant => tenant_grid(std::slice::from_ref(v)),
        Shape::Tenants => tenant_grid(&list("tenants")),
        Shape::User => user_block(v),
        Shape::Users => grid(
            &["ID", "TENANT", "NAME", "DISPLAY NAME", "EMAIL", "KEYS"],
            list("users").iter().map(|u| {
                let mut row = cells(u, &["/id", "/tenant", "/name", "/display_name", "/email"]);
                let keys: Vec<String> = u
                    .get("keys")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|k| text_of(k.get("access_key")))
                    .collect();
                row.push(if keys.is_empty() {
                    "-".into()
                } else {
                    keys.join(",")
                });
                row
            }),
        ),
        Shape::Key => with_secrets(key_grid(std::slice::from_ref(v)), std::slice::from_ref(v)),
        Shape::Keys => key_grid(&list("keys")),
        Shape::Bucket => field_block(
            v,
            &[
                "name",
                "tenant",
                "id",
                "owner",
                "created",
                "storage_class",
                "policy",
            ],
            &[],
        ),
        Shape::Quota => grid(
            &[
                "SCOPE",
                "TENANT",
                "USER",
                "BUCKET",
                "MAX BYTES",
                "MAX OBJECTS",
                "MAX BUCKETS",
            ],
            std::iter::once({
                let mut row = cells(v, &["/scope", "/tenant", "/user", "/bucket"]);
                row.push(exact_bytes(v.get("max_bytes")));
                row.extend(cells(v, &["/max_objects", "/max_buckets"]));
                row
            }),
        ),
        Shape::RateLimits => grid(
            &[
                "SCOPE",
                "TENANT",
                "USER/BUCKET",
                "MAX READ OPS",
                "MAX WRITE OPS",
                "MAX LIST OPS",
                "MAX DELETE OPS",
                "MAX READ BYTES",
                "MAX WRITE BYTES",
            ],
            std::iter::once({
                let mut row = cells(v, &["/scope", "/tenant"]);
                let named = |k: &str| v.get(k).filter(|x| !x.is_null());
                row.push(text_of(named("user").or_else(|| named("bucket"))));
                row.extend(cells(
                    v,
                    &[
                        "/max_read_ops",
                        "/max_write_ops",
                        "/max_list_ops",
                        "/max_delete_ops",
                    ],
                ));
                row.push(exact_bytes(v.get("max_read_bytes")));
                row.push(exact_bytes(v.get("max_write_bytes")));
                row
            }),
        ),
        Shape::Usage => usage_tables(&list("tenants"), &list("users"), &list("buckets")),
        Shape::Policy => pretty(text),
        Shape::Empty => String::new(),
    }
}

/// Usage as three tables: tenants, users, buckets; stored bytes, then the
/// traffic (requests, bytes in and out) when the answer carries it.
fn usage_tables(tenants: &[Value], users: &[Value], buckets: &[Value]) -> String {
    let row = |v: &Value, before: &[&str], after: &[&str]| {
        let mut row = cells(v, before);
        row.push(human_bytes(v.get("bytes")));
        row.extend(cells(v, after));
        row.extend(cells(v, &["/requests"]));
        row.push(human_bytes(v.get("bytes_in")));
        row.push(human_bytes(v.get("bytes_out")));
        row
    };
    const TRAFFIC: [&str; 3] = ["REQUESTS", "IN", "OUT"];
    let head = |cols: &[&'static str]| -> Vec<&'static str> {
        cols.iter().copied().chain(TRAFFIC).collect()
    };
    let tenants = grid(
        &head(&["TENANT", "BYTES", "OBJECTS", "BUCKETS"]),
        tenants
            .iter()
            .map(|t| row(t, &["/tenant"], &["/objects", "/buckets"])),
    );
    let users = grid(
        &head(&["TENANT", "NAME", "ID", "BYTES", "OBJECTS", "BUCKETS"]),
        users
            .iter()
            .map(|u| row(u, &["/tenant", "/name", "/id"], &["/objects", "/buckets"])),
    );
    let buckets = grid(
        &head(&["TENANT", "BUCKET", "ID", "OWNER", "BYTES", "OBJECTS"]),
        buckets
            .iter()
            .map(|b| row(b, &["/tenant", "/name", "/id", "/owner"], &["/objects"])),
    );
    format!("{tenants}\n\n{users}\n\n{buckets}")
}

const BINARY_UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// A byte count for reading, rounded to one decimal: `512 B`, `1.5 GiB`.
fn human_bytes(v: Option<&Value>) -> String {
    let Some(n) = v.and_then(Value::as_u64) else {
        return text_of(v);
    };
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64 / 1024.0;
    let mut unit = 0;
    // 1023.96 KiB would print as "1024.0 KiB": that is 1.0 MiB.
    while x >= 1023.95 && unit + 1 < BINARY_UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    format!("{x:.1} {}", BINARY_UNITS[unit])
}

/// A byte limit exactly, in the largest unit up to TiB that divides it:
/// `10 GiB`, `1536 MiB`, `1000 B` (all of which `--max-bytes` accepts).
fn exact_bytes(v: Option<&Value>) -> String {
    let Some(n) = v.and_then(Value::as_u64) else {
        return text_of(v);
    };
    let unit = (1..=4)
        .rev()
        .find(|&i| n != 0 && n % (1u64 << (10 * i)) == 0);
    match unit {
        Some(i) => format!("{} {}", n >> (10 * i), BINARY_UNITS[i - 1]),
        None => format!("{n} B"),
    }
}

fn tenant_grid(tenants: &[Value]) -> String {
    grid(
        &["NAME", "CREATED"],
        tenants.iter().map(|t| cells(t, &["/name", "/created"])),
    )
}

fn key_grid(keys: &[Value]) -> String {
    grid(
        &[
            "ACCESS KEY",
            "USER",
            "TENANT",
            "STATUS",
            "CREATED",
            "EXPIRES",
        ],
        keys.iter().map(|k| {
            cells(
                k,
                &[
                    "/access_key",
                    "/user",
                    "/tenant",
                    "/status",
                    "/created",
                    "/expires",
                ],
            )
        }),
    )
}

/// A user: its fields, then its keys, then any secret just created.
fn user_block(u: &Value) -> String {
    let fields = field_block(
        u,
        &[
            "id",
            "tenant",
            "name",
            "display_name",
            "email",
            "admin",
            "created",
            "policy",
        ],
        &["keys"],
    );
    let keys: Vec<Value> = u
        .get("keys")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let table = grid(
        &["ACCESS KEY", "STATUS", "CREATED", "EXPIRES"],
        keys.iter()
            .map(|k| cells(k, &["/access_key", "/status", "/created", "/expires"])),
    );
    with_secrets(format!("{fields}\n\n{table}"), &keys)
}

/// `table`, then one line per key that carries its new secret.
fn with_secrets(table: String, keys: &[Value]) -> String {
    let lines: Vec<String> = keys
        .iter()
        .filter_map(|k| {
            let secret = k.get("secret_key")?.as_str()?;
            Some(format!(
                "secret key of {}: {secret} (shown only this once)",
                text_of(k.get("access_key"))
            ))
        })
        .collect();
    if lines.is_empty() {
        table
    } else {
        format!("{table}\n\n{}", lines.join("\n"))
    }
}

/// FIELD/VALUE rows: `known` fields in that order, then any others the
/// answer has (a newer gateway's), except `skip`.
fn field_block(v: &Value, known: &[&str], skip: &[&str]) -> String {
    let obj = v.as_object();
    let extra = obj
        .into_iter()
        .flatten()
        .filter(|(k, _)| !known.contains(&k.as_str()) && !skip.contains(&k.as_str()))
        .map(|(k, val)| vec![k.clone(), text_of(Some(val))]);
    let rows = known
        .iter()
        .map(|k| vec![k.to_string(), text_of(v.get(*k))])
        .chain(extra);
    grid(&["FIELD", "VALUE"], rows)
}

fn text_of(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "\"\"".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn cells(v: &Value, pointers: &[&str]) -> Vec<String> {
    pointers.iter().map(|p| text_of(v.pointer(p))).collect()
}

/// Valid JSON `text` indented as `serde_json::to_string_pretty` would,
/// but in the sender's field order and with its exact numbers (a parsed
/// `Value` here sorts keys).
pub(super) fn pretty(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while chars.peek().is_some_and(|n| n.is_ascii_whitespace()) {
                    chars.next();
                }
                out.push(c);
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(shape: Shape, v: &Value) -> String {
        render(shape, &v.to_string(), v, true)
    }

    fn user() -> Value {
        json!({"id": "3f2a", "tenant": "acme", "name": "alice", "display_name": "Alice",
               "email": "alice@example.com", "created": "2026-12-05T08:00:00Z", "admin": false,
               "keys": [{"access_key": "KURAAAAA", "status": "active",
                         "created": "2026-12-05T08:00:00Z", "expires": null,
                         "secret_key": "s3cr3t"}],
               "policy": null})
    }

    #[test]
    fn tenants_table_lists_name_and_created() {
        let v = json!({"count": 2, "tenants": [
            {"name": "acme", "created": "2026-12-05T08:00:00Z"},
            {"name": "globex", "created": "2026-12-06T09:30:00Z"}]});
        assert_eq!(
            table(Shape::Tenants, &v),
            "NAME    CREATED\n\
             acme    2026-12-05T08:00:00Z\n\
             globex  2026-12-06T09:30:00Z"
        );
        let one = json!({"name": "acme", "created": "2026-12-05T08:00:00Z"});
        assert_eq!(
            table(Shape::Tenant, &one),
            "NAME  CREATED\nacme  2026-12-05T08:00:00Z"
        );
    }

    #[test]
    fn users_table_shows_keys_and_the_root_tenant() {
        let mut bob = json!({"id": "9c1b", "tenant": "", "name": "bob", "display_name": null,
                             "email": null, "keys": []});
        bob["created"] = json!("t");
        let mut alice = user();
        alice["keys"]
            .as_array_mut()
            .expect("keys")
            .push(json!({"access_key": "KURABBBB", "status": "inactive"}));
        let v = json!({"count": 2, "users": [alice, bob]});
        assert_eq!(
            table(Shape::Users, &v),
            "ID    TENANT  NAME   DISPLAY NAME  EMAIL              KEYS\n\
             3f2a  acme    alice  Alice         alice@example.com  KURAAAAA,KURABBBB\n\
             9c1b  \"\"      bob    -             -                  -"
        );
    }

    #[test]
    fn one_user_is_a_field_block_then_its_keys_then_the_new_secret() {
        assert_eq!(
            table(Shape::User, &user()),
            "FIELD         VALUE\n\
             id            3f2a\n\
             tenant        acme\n\
             name          alice\n\
             display_name  Alice\n\
             email         alice@example.com\n\
             admin         false\n\
             created       2026-12-05T08:00:00Z\n\
             policy        -\n\
             \n\
             ACCESS KEY  STATUS  CREATED               EXPIRES\n\
             KURAAAAA    active  2026-12-05T08:00:00Z  -\n\
             \n\
             secret key of KURAAAAA: s3cr3t (shown only this once)"
        );
        // Without a secret (`user info`), a policy, and a field this client
        // does not know yet.
        let mut u = user();
        u["keys"][0]
            .as_object_mut()
            .expect("key")
            .remove("secret_key");
        u["policy"] = json!({"Version": "2012-10-17", "Statement": []});
        u["quota"] = json!(5);
        let t = table(Shape::User, &u);
        assert!(!t.contains("secret"), "{t}");
        assert!(
            t.contains(
                "policy        {\"Statement\":[],\"Version\":\"2012-10-17\"}\nquota         5\n\n"
            ),
            "{t}"
        );
    }

    #[test]
    fn keys_table_and_a_new_key_with_its_secret() {
        let v = json!({"count": 2, "keys": [
            {"access_key": "KURAAAAA", "user": "3f2a", "tenant": "acme", "status": "active",
             "created": "2026-12-05T08:00:00Z", "expires": null},
            {"access_key": "KURABBBB", "user": "9c1b", "tenant": "", "status": "inactive",
             "created": "2026-12-05T08:00:00Z", "expires": "2027-01-01T00:00:00Z"}]});
        assert_eq!(
            table(Shape::Keys, &v),
            "ACCESS KEY  USER  TENANT  STATUS    CREATED               EXPIRES\n\
             KURAAAAA    3f2a  acme    active    2026-12-05T08:00:00Z  -\n\
             KURABBBB    9c1b  \"\"      inactive  2026-12-05T08:00:00Z  2027-01-01T00:00:00Z"
        );
        let mut k = v["keys"][0].clone();
        k["secret_key"] = json!("s3cr3t");
        assert_eq!(
            table(Shape::Key, &k),
            "ACCESS KEY  USER  TENANT  STATUS  CREATED               EXPIRES\n\
             KURAAAAA    3f2a  acme    active  2026-12-05T08:00:00Z  -\n\
             \n\
             secret key of KURAAAAA: s3cr3t (shown only this once)"
        );
    }

    #[test]
    fn bucket_is_a_field_block() {
        let v = json!({"name": "photos", "tenant": "acme", "id": 7, "owner": "3f2a",
                       "created": "2026-12-05T08:00:00Z", "storage_class": "EC_4_2",
                       "policy": null});
        assert_eq!(
            table(Shape::Bucket, &v),
            "FIELD          VALUE\n\
             name           photos\n\
             tenant         acme\n\
             id             7\n\
             owner          3f2a\n\
             created        2026-12-05T08:00:00Z\n\
             storage_class  EC_4_2\n\
             policy         -"
        );
    }

    #[test]
    fn quota_is_one_row_with_dashes_for_no_limit() {
        let v = json!({"scope": "user", "tenant": "acme", "user": "alice", "bucket": null,
                       "max_bytes": 1073741824, "max_objects": null, "max_buckets": 10});
        assert_eq!(
            table(Shape::Quota, &v),
            "SCOPE  TENANT  USER   BUCKET  MAX BYTES  MAX OBJECTS  MAX BUCKETS\n\
             user   acme    alice  -       1 GiB      -            10"
        );
        // The root tenant; a bucket has no max_buckets (null or absent).
        let v = json!({"scope": "bucket", "tenant": "", "user": null, "bucket": "photos",
                       "max_bytes": 1000, "max_objects": 0});
        assert_eq!(
            table(Shape::Quota, &v),
            "SCOPE   TENANT  USER  BUCKET  MAX BYTES  MAX OBJECTS  MAX BUCKETS\n\
             bucket  \"\"      -     photos  1000 B     0            -"
        );
    }

    #[test]
    fn rate_limits_are_one_row_naming_the_user_or_bucket() {
        let v = json!({"scope": "bucket", "tenant": "acme", "user": null, "bucket": "photos",
                       "max_read_ops": 100, "max_write_ops": null, "max_list_ops": null,
                       "max_delete_ops": 0, "max_read_bytes": null,
                       "max_write_bytes": 10485760});
        assert_eq!(
            table(Shape::RateLimits, &v),
            "SCOPE   TENANT  USER/BUCKET  MAX READ OPS  MAX WRITE OPS  MAX LIST OPS  \
             MAX DELETE OPS  MAX READ BYTES  MAX WRITE BYTES\n\
             bucket  acme    photos       100           -              -             \
             0               -               10 MiB"
        );
        // The second row's cells (none holds a space except the byte limits).
        let row = |v: Value| -> Vec<String> {
            let t = table(Shape::RateLimits, &v);
            let line = t.lines().nth(1).expect("a row").replace(" MiB", "MiB");
            line.split_whitespace().map(str::to_string).collect()
        };
        assert_eq!(
            row(
                json!({"scope": "user", "tenant": "acme", "user": "alice", "bucket": null,
                       "max_read_bytes": 1610612736})
            ),
            ["user", "acme", "alice", "-", "-", "-", "-", "1536MiB", "-"]
        );
        assert_eq!(
            row(json!({"scope": "tenant", "tenant": "", "user": null, "bucket": null})),
            ["tenant", "\"\"", "-", "-", "-", "-", "-", "-", "-"]
        );
    }

    #[test]
    fn usage_is_three_tables_with_readable_bytes() {
        let v = json!({
            "tenants": [{"tenant": "acme", "bytes": 1610612736u64, "objects": 3, "buckets": 2,
                         "requests": 12, "bytes_in": 2048, "bytes_out": 0},
                        {"tenant": "", "bytes": 0, "objects": 0, "buckets": 0}],
            "users": [{"id": "3f2a", "tenant": "acme", "name": "alice", "bytes": 1610612736u64,
                       "objects": 3, "buckets": 2, "requests": 12, "bytes_in": 2048, "bytes_out": 0}],
            "buckets": [{"tenant": "acme", "name": "photos", "id": 7, "owner": "3f2a",
                         "bytes": 1536, "objects": 2, "requests": 5, "bytes_in": 1536,
                         "bytes_out": 1536}]});
        assert_eq!(
            table(Shape::Usage, &v),
            "TENANT  BYTES    OBJECTS  BUCKETS  REQUESTS  IN       OUT\n\
             acme    1.5 GiB  3        2        12        2.0 KiB  0 B\n\
             \"\"      0 B      0        0        -         -        -\n\
             \n\
             TENANT  NAME   ID    BYTES    OBJECTS  BUCKETS  REQUESTS  IN       OUT\n\
             acme    alice  3f2a  1.5 GiB  3        2        12        2.0 KiB  0 B\n\
             \n\
             TENANT  BUCKET  ID  OWNER  BYTES    OBJECTS  REQUESTS  IN       OUT\n\
             acme    photos  7   3f2a   1.5 KiB  2        5         1.5 KiB  1.5 KiB"
        );
        // Nothing stored yet: the headers alone.
        assert_eq!(
            table(
                Shape::Usage,
                &json!({"tenants": [], "users": [], "buckets": []})
            ),
            "TENANT  BYTES  OBJECTS  BUCKETS  REQUESTS  IN  OUT\n\n\
             TENANT  NAME  ID  BYTES  OBJECTS  BUCKETS  REQUESTS  IN  OUT\n\n\
             TENANT  BUCKET  ID  OWNER  BYTES  OBJECTS  REQUESTS  IN  OUT"
        );
    }

    #[test]
    fn bytes_read_rounded_for_usage_and_exact_for_limits() {
        let human = |n: u64| human_bytes(Some(&json!(n)));
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1024), "1.0 KiB");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human((1 << 20) - 1), "1.0 MiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(human(5 << 40), "5.0 TiB");
        assert_eq!(human(u64::MAX), "16.0 EiB");
        let exact = |n: u64| exact_bytes(Some(&json!(n)));
        assert_eq!(exact(0), "0 B");
        assert_eq!(exact(1000), "1000 B");
        assert_eq!(exact(1 << 10), "1 KiB");
        assert_eq!(exact((1 << 20) + 1), "1048577 B");
        assert_eq!(exact(3 << 29), "1536 MiB");
        assert_eq!(exact(1 << 50), "1024 TiB");
        for missing in [None, Some(&Value::Null)] {
            assert_eq!(human_bytes(missing), "-");
            assert_eq!(exact_bytes(missing), "-");
        }
    }

    #[test]
    fn deletes_print_nothing_and_policies_stay_json_in_tables() {
        assert_eq!(table(Shape::Empty, &json!({})), "");
        let p = json!({"Version": "2012-10-17"});
        assert_eq!(
            table(Shape::Policy, &p),
            "{\n  \"Version\": \"2012-10-17\"\n}"
        );
    }

    #[test]
    fn pretty_keeps_field_order_and_matches_serde_json_layout() {
        let text = r#"{"name":"a\"{,:}b", "created" : "t","keys":[ ],"x":{},
                       "n":[1,2.50,{"z":null,"a":true}]}"#;
        assert_eq!(
            pretty(text),
            "{\n  \"name\": \"a\\\"{,:}b\",\n  \"created\": \"t\",\n  \"keys\": [],\n  \
             \"x\": {},\n  \"n\": [\n    1,\n    2.50,\n    {\n      \"z\": null,\n      \
             \"a\": true\n    }\n  ]\n}"
        );
        // Sorted input comes out exactly as serde_json's pretty printer does it.
        let v = json!({"a": [1, {"b": "c\\d"}], "e": {}, "f": []});
        let expected = serde_json::to_string_pretty(&v).expect("serializable");
        assert_eq!(pretty(&v.to_string()), expected);
        // JSON mode ignores the shape.
        assert_eq!(render(Shape::Empty, "{}", &json!({}), false), "{}");
    }
}
