//! Whole-document tests: parsing and validation errors, and evaluation.

use super::*;

fn doc(statements: &str) -> String {
    format!(r#"{{"Version":"2012-10-17","Statement":[{statements}]}}"#)
}

fn parse(json: &str) -> Policy {
    Policy::parse(json).unwrap_or_else(|e| panic!("{e}\n{json}"))
}

fn policy(statements: &str) -> Policy {
    parse(&doc(statements))
}

fn parse_err(json: &str) -> String {
    match Policy::parse(json) {
        Ok(_) => panic!("parsed: {json}"),
        Err(e) => e.to_string(),
    }
}

fn stmt_err(statements: &str) -> String {
    parse_err(&doc(statements))
}

const ALICE: Principal<'static> = Principal::User {
    tenant: "",
    name: "alice",
    id: "id-alice",
};
const BOB_T1: Principal<'static> = Principal::User {
    tenant: "t1",
    name: "bob",
    id: "id-bob",
};

/// A request to evaluate; bucket `photos` of the root tenant, bucket policy.
struct Req {
    principal: Principal<'static>,
    action: &'static str,
    tenant: &'static str,
    bucket: &'static str,
    key: Option<&'static str>,
    ctx: ConditionContext,
    principal_required: bool,
}

fn req(principal: Principal<'static>, action: &'static str, key: Option<&'static str>) -> Req {
    Req {
        principal,
        action,
        tenant: "",
        bucket: "photos",
        key,
        ctx: ConditionContext::new(),
        principal_required: true,
    }
}

impl Req {
    fn tenant(mut self, tenant: &'static str) -> Self {
        self.tenant = tenant;
        self
    }

    fn ctx(mut self, key: &str, value: &str) -> Self {
        self.ctx.set(key, value);
        self
    }

    fn user_policy(mut self) -> Self {
        self.principal_required = false;
        self
    }

    fn on(&self, p: &Policy) -> Decision {
        p.evaluate(&Request {
            principal: self.principal,
            action: self.action,
            tenant: self.tenant,
            bucket: self.bucket,
            key: self.key,
            context: &self.ctx,
            principal_required: self.principal_required,
        })
    }

    fn allowed(&self, p: &Policy) -> bool {
        matches!(self.on(p), Decision::Allow { .. })
    }

    fn denied(&self, p: &Policy) -> bool {
        matches!(self.on(p), Decision::ExplicitDeny { .. })
    }
}

const ALLOW_GET_ALL: &str = r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::photos/*"}"#;

// --- parsing

#[test]
fn parses_minimal_and_full_documents() {
    // Statement as a single object, no Version.
    parse(
        r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"*"}}"#,
    );
    parse(
        r#"{
        "Version": "2008-10-17",
        "Id": "PolicyForPhotos",
        "Statement": [{
            "Sid": "ReadAll",
            "Effect": "Allow",
            "Principal": {"AWS": ["arn:aws:iam:::user/alice", "arn:aws:iam::t1:root", "id-carol"], "CanonicalUser": "id-dave"},
            "Action": ["s3:GetObject", "s3:List*"],
            "Resource": ["arn:aws:s3:::photos", "arn:aws:s3:::photos/*"],
            "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}
        }, {
            "Effect": "Deny",
            "NotPrincipal": {"AWS": "*"},
            "NotAction": "s3:*",
            "NotResource": "arn:aws:s3::t1:photos/*"
        }]
    }"#,
    );
}

#[test]
fn parse_errors_name_the_problem() {
    assert!(parse_err("").starts_with("Policies must be valid JSON"));
    assert!(parse_err(r#"{"Statement": [}"#).starts_with("Policies must be valid JSON"));
    assert!(parse_err(r#"{"Statement":[]} trailing"#).starts_with("Policies must be valid JSON"));
    assert_eq!(
        parse_err("[]"),
        "a policy must be a JSON object, found an array"
    );
    assert_eq!(
        parse_err(r#"{"Version":"2012-10-17"}"#),
        "missing required field Statement"
    );
    assert_eq!(
        parse_err(r#"{"Statement":[]}"#),
        "Statement must not be an empty list"
    );
    assert_eq!(
        parse_err(r#"{"Statement":"x"}"#),
        "Statement must be an object or a list of objects, found a string"
    );
    assert_eq!(
        parse_err(&format!(r#"{{"Statement":[{ALLOW_GET_ALL}],"Extra":1}}"#)),
        "unknown field \"Extra\" in policy"
    );
    assert_eq!(
        parse_err(&format!(
            r#"{{"Version":"2012-10-18","Statement":[{ALLOW_GET_ALL}]}}"#
        )),
        "Version must be \"2012-10-17\" or \"2008-10-17\", found \"2012-10-18\""
    );
    assert!(
        parse_err(&format!(r#"{{"Id":5,"Statement":[{ALLOW_GET_ALL}]}}"#))
            .contains("Id must be a string")
    );
    assert_eq!(
        stmt_err(r#""x""#),
        "Statement[0] must be an object, found a string"
    );
}

#[test]
fn statement_errors() {
    assert_eq!(
        stmt_err(r#"{"Principal":"*","Action":"s3:GetObject","Resource":"*"}"#),
        "Statement[0]: missing required field Effect"
    );
    assert_eq!(
        stmt_err(r#"{"Effect":"allow","Principal":"*","Action":"s3:GetObject","Resource":"*"}"#),
        "Statement[0].Effect must be \"Allow\" or \"Deny\", found \"allow\""
    );
    assert!(
        stmt_err(r#"{"Effect":true,"Principal":"*","Action":"s3:GetObject","Resource":"*"}"#)
            .contains("found a boolean")
    );
    assert_eq!(
        stmt_err(&format!(
            r#"{ALLOW_GET_ALL},{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","NotAction":"s3:PutObject","Resource":"*"}}"#
        )),
        "Statement[1]: Action and NotAction cannot both be present"
    );
    assert_eq!(
        stmt_err(
            r#"{"Effect":"Allow","Principal":"*","Resource":"*","NotResource":"*","Action":"*"}"#
        ),
        "Statement[0]: Resource and NotResource cannot both be present"
    );
    assert_eq!(
        stmt_err(
            r#"{"Effect":"Allow","Principal":"*","NotPrincipal":"*","Action":"*","Resource":"*"}"#
        ),
        "Statement[0]: Principal and NotPrincipal cannot both be present"
    );
    assert_eq!(
        stmt_err(r#"{"Effect":"Allow","Principal":"*","Resource":"*"}"#),
        "Statement[0]: missing required field Action (or NotAction)"
    );
    assert_eq!(
        stmt_err(r#"{"Effect":"Allow","Principal":"*","Action":"*"}"#),
        "Statement[0]: missing required field Resource (or NotResource)"
    );
    assert_eq!(
        stmt_err(
            r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*","Resources":"*"}"#
        ),
        "Statement[0]: unknown field \"Resources\""
    );
    assert!(
        stmt_err(r#"{"Sid":1,"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}"#)
            .contains("Statement[0].Sid must be a string")
    );
    assert_eq!(
        stmt_err(
            r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*","Condition":{"StringEqualz":{"s3:prefix":"a"}}}"#
        ),
        "Statement[0].Condition: unknown condition operator \"StringEqualz\""
    );
    assert!(
        stmt_err(r#"{"Effect":"Allow","Principal":"*","Action":[],"Resource":"*"}"#)
            .contains("Statement[0].Action must not be an empty list")
    );
}

#[test]
fn duplicate_keys_are_refused() {
    let e = parse_err(
        r#"{"Statement":[{"Effect":"Deny","Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}"#,
    );
    assert!(e.contains("duplicate key \"Effect\""), "{e}");
}

#[test]
fn invalid_actions() {
    for bad in [
        "GetObject",
        "s3:",
        ":GetObject",
        "s3:Get Object",
        "s3:Get/Object",
        "**",
        "s3*:Get",
        "",
    ] {
        let e = stmt_err(&format!(
            r#"{{"Effect":"Allow","Principal":"*","Action":"{bad}","Resource":"*"}}"#
        ));
        assert!(e.starts_with("Policy has invalid action: "), "{bad}: {e}");
    }
}

#[test]
fn invalid_resources() {
    for bad in [
        "photos",
        "arn:aws:iam::t1:user/x",
        "arn:aws:s3",
        "arn:aws:s3:::",
        "arn:aws:s3::t1",
        "arn:aws:s3:us-east-1::photos",
        "arn:aws:s3:photos",
        "",
    ] {
        let e = stmt_err(&format!(
            r#"{{"Effect":"Allow","Principal":"*","Action":"*","Resource":"{bad}"}}"#
        ));
        assert!(e.starts_with("Policy has invalid resource: "), "{bad}: {e}");
    }
}

#[test]
fn invalid_principals() {
    for bad in [
        r#""alice""#,
        r#"{}"#,
        r#"["*"]"#,
        r#"{"AWS":"arn:aws:iam::t1:role/admin"}"#,
        r#"{"AWS":"arn:aws:iam::t1:user/"}"#,
        r#"{"AWS":"arn:aws:iam::*:root"}"#,
        r#"{"AWS":"arn:aws:iam::t1:user/al*"}"#,
        r#"{"AWS":"arn:aws:sts::t1:assumed-role/x"}"#,
        r#"{"AWS":""}"#,
        r#"{"CanonicalUser":"*"}"#,
        r#"{"Group":"x"}"#,
    ] {
        let e = stmt_err(&format!(
            r#"{{"Effect":"Allow","Principal":{bad},"Action":"*","Resource":"*"}}"#
        ));
        assert!(
            e.starts_with("Invalid principal in policy") || e.contains("must be a string"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn size_limit() {
    let base = doc(ALLOW_GET_ALL);
    let at_limit = format!("{base}{}", " ".repeat(MAX_POLICY_BYTES - base.len()));
    assert_eq!(at_limit.len(), MAX_POLICY_BYTES);
    Policy::parse(&at_limit).unwrap();
    let over = format!("{at_limit} ");
    assert_eq!(Policy::parse(&over).unwrap_err(), PolicyError::TooLarge);
    assert_eq!(
        PolicyError::TooLarge.to_string(),
        "Policy exceeds the maximum allowed size of 20480 bytes"
    );
}

#[test]
fn text_is_kept_as_sent() {
    let text = format!("  {}\n", doc(ALLOW_GET_ALL));
    assert_eq!(parse(&text).text(), text);
}

#[test]
fn hostile_input_is_an_error_not_a_panic() {
    for text in [
        "{".repeat(5000),
        format!("{}{}", "[".repeat(200), "]".repeat(200)),
        "\"\\ud800\"".to_string(),
        r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"arn:aws:s3:::b/${","Condition":{"StringLike":{"a:b":"${}${"}}}}"#.to_string(),
        "\u{feff}{}".to_string(),
    ] {
        let _ = Policy::parse(&text);
    }
}

// --- evaluation

#[test]
fn deny_wins_over_allow_in_any_order() {
    let deny = r#"{"Sid":"NoDeletes","Effect":"Deny","Principal":"*","Action":"s3:DeleteObject","Resource":"arn:aws:s3:::photos/*"}"#;
    let allow = r#"{"Sid":"All","Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::photos/*"}"#;
    for p in [
        policy(&format!("{allow},{deny}")),
        policy(&format!("{deny},{allow}")),
    ] {
        let r = req(ALICE, "s3:DeleteObject", Some("a.jpg"));
        match r.on(&p) {
            Decision::ExplicitDeny { reason } => {
                assert!(reason.contains("\"NoDeletes\""), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            req(ALICE, "s3:GetObject", Some("a.jpg")).on(&p),
            Decision::Allow {
                reason: if p.statements[0].sid.as_deref() == Some("All") {
                    "Statement[0] (Sid \"All\")".into()
                } else {
                    "Statement[1] (Sid \"All\")".into()
                }
            }
        );
        assert_eq!(
            req(ALICE, "s3:ListBucket", None).on(&p),
            Decision::NotApplicable
        );
    }
    // Without a Sid the reason is the index.
    let p = policy(ALLOW_GET_ALL);
    assert_eq!(
        req(ALICE, "s3:GetObject", Some("k")).on(&p),
        Decision::Allow {
            reason: "Statement[0]".into()
        }
    );
}

#[test]
fn actions_match_case_insensitively_with_wildcards() {
    let p = policy(
        r#"{"Effect":"Allow","Principal":"*","Action":["s3:Get*","S3:LIST?UCKET"],"Resource":"*"}"#,
    );
    assert!(req(ALICE, "s3:GetObject", Some("k")).allowed(&p));
    assert!(req(ALICE, "S3:getobjectversion", Some("k")).allowed(&p));
    assert!(req(ALICE, "s3:ListBucket", None).allowed(&p));
    assert!(!req(ALICE, "s3:ListBuckets", None).allowed(&p));
    assert!(!req(ALICE, "s3:PutObject", Some("k")).allowed(&p));
    assert!(!req(ALICE, "iam:GetObject", Some("k")).allowed(&p));
    let all = policy(r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}"#);
    assert!(req(ALICE, "s3:PutObject", Some("k")).allowed(&all));
    let s3 = policy(r#"{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*"}"#);
    assert!(req(ALICE, "s3:PutObject", Some("k")).allowed(&s3));
    assert!(!req(ALICE, "iam:CreateUser", None).allowed(&s3));
}

#[test]
fn not_action() {
    let p = policy(
        r#"{"Effect":"Deny","Principal":"*","NotAction":["s3:Get*","s3:ListBucket"],"Resource":"*"}"#,
    );
    assert!(req(ALICE, "s3:PutObject", Some("k")).denied(&p));
    assert_eq!(
        req(ALICE, "s3:GetObject", Some("k")).on(&p),
        Decision::NotApplicable
    );
    assert_eq!(
        req(ALICE, "s3:listbucket", None).on(&p),
        Decision::NotApplicable
    );
}

#[test]
fn resources_bucket_and_object_level() {
    let objects = policy(ALLOW_GET_ALL);
    assert!(req(ALICE, "s3:GetObject", Some("a/b/c.jpg")).allowed(&objects));
    assert!(req(ALICE, "s3:GetObject", Some("")).allowed(&objects));
    // `photos/*` is the objects, not the bucket.
    assert!(!req(ALICE, "s3:GetObject", None).allowed(&objects));
    let bucket = policy(
        r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":"arn:aws:s3:::photos"}"#,
    );
    assert!(req(ALICE, "s3:ListBucket", None).allowed(&bucket));
    assert!(!req(ALICE, "s3:GetObject", Some("k")).allowed(&bucket));
    let mut other = req(ALICE, "s3:ListBucket", None);
    other.bucket = "photos2";
    assert!(!other.allowed(&bucket));
    // Resources are case-sensitive; `?` is one character; `*` crosses `/`.
    let p = policy(
        r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":["arn:aws:s3:::photos/Public/*","arn:aws:s3:::photos/img-?.png","arn:aws:s3:::photos/*/thumbs/*"]}"#,
    );
    assert!(req(ALICE, "s3:GetObject", Some("Public/x")).allowed(&p));
    assert!(!req(ALICE, "s3:GetObject", Some("public/x")).allowed(&p));
    assert!(req(ALICE, "s3:GetObject", Some("img-1.png")).allowed(&p));
    assert!(!req(ALICE, "s3:GetObject", Some("img-12.png")).allowed(&p));
    assert!(req(ALICE, "s3:GetObject", Some("2024/06/thumbs/a.png")).allowed(&p));
    assert!(!req(ALICE, "s3:GetObject", Some("thumbs/a.png")).allowed(&p));
    // Keys with colons, unicode and `*` are plain subjects.
    let any = policy(
        r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":"arn:aws:s3:::photos/a:b/*"}"#,
    );
    assert!(req(ALICE, "s3:GetObject", Some("a:b/日本*?")).allowed(&any));
}

#[test]
fn not_resource() {
    let p = policy(
        r#"{"Effect":"Deny","Principal":"*","Action":"s3:GetObject","NotResource":["arn:aws:s3:::photos/public/*","arn:aws:s3:::photos"]}"#,
    );
    assert!(req(ALICE, "s3:GetObject", Some("private/x")).denied(&p));
    assert_eq!(
        req(ALICE, "s3:GetObject", Some("public/x")).on(&p),
        Decision::NotApplicable
    );
    assert_eq!(
        req(ALICE, "s3:GetObject", None).on(&p),
        Decision::NotApplicable
    );
}

#[test]
fn tenant_qualified_resources() {
    let qualified = policy(
        r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":"arn:aws:s3::t1:photos/*"}"#,
    );
    assert!(req(ALICE, "s3:GetObject", Some("k"))
        .tenant("t1")
        .allowed(&qualified));
    assert!(!req(ALICE, "s3:GetObject", Some("k"))
        .tenant("t2")
        .allowed(&qualified));
    assert!(!req(ALICE, "s3:GetObject", Some("k")).allowed(&qualified));
    // Without a tenant the ARN means this bucket, whichever tenant holds it.
    let plain = policy(ALLOW_GET_ALL);
    assert!(req(ALICE, "s3:GetObject", Some("k"))
        .tenant("t1")
        .allowed(&plain));
    assert!(req(ALICE, "s3:GetObject", Some("k")).allowed(&plain));
    let star = policy(r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}"#);
    assert!(req(ALICE, "s3:GetObject", Some("k"))
        .tenant("t9")
        .allowed(&star));
}

#[test]
fn principal_forms() {
    let with = |principal: &str| {
        policy(&format!(
            r#"{{"Effect":"Allow","Principal":{principal},"Action":"*","Resource":"*"}}"#
        ))
    };
    let get = |who| req(who, "s3:GetObject", Some("k"));
    for star in [
        r#""*""#,
        r#"{"AWS":"*"}"#,
        r#"{"AWS":["arn:aws:iam::t9:root","*"]}"#,
    ] {
        let p = with(star);
        assert!(get(Principal::Anonymous).allowed(&p), "{star}");
        assert!(get(ALICE).allowed(&p), "{star}");
        assert!(get(BOB_T1).allowed(&p), "{star}");
    }
    let p = with(r#"{"AWS":"arn:aws:iam:::user/alice"}"#);
    assert!(get(ALICE).allowed(&p));
    assert!(!get(Principal::User {
        tenant: "t1",
        name: "alice",
        id: "x"
    })
    .allowed(&p));
    assert!(!get(Principal::Anonymous).allowed(&p));
    let p = with(r#"{"AWS":["arn:aws:iam::t1:user/bob"]}"#);
    assert!(get(BOB_T1).allowed(&p));
    assert!(!get(Principal::User {
        tenant: "",
        name: "bob",
        id: "id-bob2"
    })
    .allowed(&p));
    let p = with(r#"{"AWS":"arn:aws:iam::t1:root"}"#);
    assert!(get(BOB_T1).allowed(&p));
    assert!(get(Principal::User {
        tenant: "t1",
        name: "carol",
        id: "c"
    })
    .allowed(&p));
    assert!(!get(ALICE).allowed(&p));
    let p = with(r#"{"AWS":"arn:aws:iam:::root"}"#);
    assert!(get(ALICE).allowed(&p));
    assert!(!get(BOB_T1).allowed(&p));
    for by_id in [
        r#"{"AWS":"id-alice"}"#,
        r#"{"CanonicalUser":["x","id-alice"]}"#,
    ] {
        let p = with(by_id);
        assert!(get(ALICE).allowed(&p), "{by_id}");
        assert!(!get(BOB_T1).allowed(&p), "{by_id}");
        assert!(!get(Principal::Anonymous).allowed(&p), "{by_id}");
    }
    // Valid AWS principal types that no Kura caller can be.
    let p = with(r#"{"Service":"cloudtrail.amazonaws.com"}"#);
    assert!(!get(ALICE).allowed(&p));
    assert!(!get(Principal::Anonymous).allowed(&p));
}

#[test]
fn not_principal() {
    let p = policy(
        r#"{"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:iam:::user/alice","id-bob"]},"Action":"*","Resource":"*"}"#,
    );
    assert_eq!(
        req(ALICE, "s3:GetObject", Some("k")).on(&p),
        Decision::NotApplicable
    );
    assert_eq!(
        req(BOB_T1, "s3:GetObject", Some("k")).on(&p),
        Decision::NotApplicable
    );
    assert!(req(
        Principal::User {
            tenant: "",
            name: "eve",
            id: "id-eve"
        },
        "s3:GetObject",
        Some("k")
    )
    .denied(&p));
    assert!(req(Principal::Anonymous, "s3:GetObject", Some("k")).denied(&p));
    let nobody = policy(r#"{"Effect":"Deny","NotPrincipal":"*","Action":"*","Resource":"*"}"#);
    assert_eq!(
        req(Principal::Anonymous, "s3:GetObject", Some("k")).on(&nobody),
        Decision::NotApplicable
    );
}

#[test]
fn principal_required_for_bucket_policies_ignored_for_user_policies() {
    let no_principal = policy(r#"{"Effect":"Allow","Action":"s3:*","Resource":"*"}"#);
    assert_eq!(
        req(ALICE, "s3:GetObject", Some("k")).on(&no_principal),
        Decision::NotApplicable
    );
    assert!(req(ALICE, "s3:GetObject", Some("k"))
        .user_policy()
        .allowed(&no_principal));
    // In a user policy, a Principal does not narrow anything.
    let named = policy(
        r#"{"Effect":"Deny","Principal":{"AWS":"id-someone-else"},"Action":"s3:*","Resource":"*"}"#,
    );
    assert!(req(ALICE, "s3:GetObject", Some("k"))
        .user_policy()
        .denied(&named));
    assert_eq!(
        req(ALICE, "s3:GetObject", Some("k")).on(&named),
        Decision::NotApplicable
    );
}

#[test]
fn has_principals_and_names_any_principal() {
    let both = policy(&format!(
        r#"{ALLOW_GET_ALL},{{"Effect":"Deny","NotPrincipal":"*","Action":"*","Resource":"*"}}"#
    ));
    assert!(both.has_principals() && both.names_any_principal());
    let mixed = policy(&format!(
        r#"{ALLOW_GET_ALL},{{"Effect":"Deny","Action":"*","Resource":"*"}}"#
    ));
    assert!(!mixed.has_principals() && mixed.names_any_principal());
    let none = policy(r#"{"Effect":"Deny","Action":"*","Resource":"*"}"#);
    assert!(!none.has_principals() && !none.names_any_principal());
}

#[test]
fn grants_anonymous_is_aws_public() {
    let public = |statements: &str| policy(statements).grants_anonymous();
    assert!(public(ALLOW_GET_ALL));
    assert!(public(
        r#"{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"*","Resource":"*"}"#
    ));
    assert!(public(
        r#"{"Effect":"Allow","NotPrincipal":{"AWS":"id-x"},"Action":"*","Resource":"*"}"#
    ));
    assert!(public(
        r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*","Condition":{"StringLike":{"aws:SourceVpc":"vpc-*"}}}"#
    ));
    assert!(!public(
        r#"{"Effect":"Deny","Principal":"*","Action":"*","Resource":"*"}"#
    ));
    assert!(!public(
        r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::t1:root"},"Action":"*","Resource":"*"}"#
    ));
    assert!(!public(
        r#"{"Effect":"Allow","NotPrincipal":"*","Action":"*","Resource":"*"}"#
    ));
    assert!(!public(
        r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"192.0.2.0/24"}}}"#
    ));
    assert!(!public(r#"{"Effect":"Allow","Action":"*","Resource":"*"}"#));
}

#[test]
fn policy_variables_in_resources() {
    let p = policy(
        r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":["arn:aws:s3:::photos/home/${aws:username}/*","arn:aws:s3:::photos/ids/${aws:userid}"]}"#,
    );
    assert!(req(ALICE, "s3:GetObject", Some("home/alice/a.jpg")).allowed(&p));
    assert!(!req(ALICE, "s3:GetObject", Some("home/bob/a.jpg")).allowed(&p));
    assert!(req(ALICE, "s3:GetObject", Some("ids/id-alice")).allowed(&p));
    assert!(req(BOB_T1, "s3:GetObject", Some("home/bob/a.jpg")).allowed(&p));
    // Anonymous callers have no user name: the statement does not apply,
    // even to the part that does not use the variable.
    assert_eq!(
        req(Principal::Anonymous, "s3:GetObject", Some("home//a.jpg")).on(&p),
        Decision::NotApplicable
    );
    // The context cannot stand in for the principal's identity.
    let spoof = req(Principal::Anonymous, "s3:GetObject", Some("home/alice/a"))
        .ctx("aws:username", "alice");
    assert_eq!(spoof.on(&p), Decision::NotApplicable);
    // Escapes.
    let lit = policy(
        r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":"arn:aws:s3:::photos/${*}${?}${$}"}"#,
    );
    assert!(req(ALICE, "s3:GetObject", Some("*?$")).allowed(&lit));
    assert!(!req(ALICE, "s3:GetObject", Some("ab$")).allowed(&lit));
    // Other single-valued context keys work as variables too.
    let ctx_var = policy(
        r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":"arn:aws:s3:::photos/${s3:prefix}*"}"#,
    );
    assert!(req(ALICE, "s3:GetObject", Some("docs/x"))
        .ctx("s3:prefix", "docs/")
        .allowed(&ctx_var));
    assert_eq!(
        req(ALICE, "s3:GetObject", Some("docs/x")).on(&ctx_var),
        Decision::NotApplicable
    );
}

#[test]
fn variables_are_literal_before_version_2012() {
    for version in [r#""Version":"2008-10-17","#, ""] {
        let p = parse(&format!(
            r#"{{{version}"Statement":{{"Effect":"Allow","Principal":"*","Action":"*","Resource":"arn:aws:s3:::photos/${{aws:username}}/*"}}}}"#
        ));
        assert!(
            !req(ALICE, "s3:GetObject", Some("alice/x")).allowed(&p),
            "{version}"
        );
        assert!(
            req(ALICE, "s3:GetObject", Some("${aws:username}/x")).allowed(&p),
            "{version}"
        );
    }
}

#[test]
fn policy_variables_in_conditions() {
    let p = policy(
        r#"{"Effect":"Allow","Principal":"*","Action":"s3:ListBucket","Resource":"arn:aws:s3:::photos","Condition":{"StringLike":{"s3:prefix":["home/${aws:username}/*",""]}}}"#,
    );
    assert!(req(ALICE, "s3:ListBucket", None)
        .ctx("s3:prefix", "home/alice/2024/")
        .allowed(&p));
    assert!(req(ALICE, "s3:ListBucket", None)
        .ctx("s3:prefix", "")
        .allowed(&p));
    assert!(!req(ALICE, "s3:ListBucket", None)
        .ctx("s3:prefix", "home/bob/")
        .allowed(&p));
    assert!(!req(Principal::Anonymous, "s3:ListBucket", None)
        .ctx("s3:prefix", "")
        .allowed(&p));
}

#[test]
fn conditions_in_statements() {
    let p = policy(
        r#"{"Sid":"OfficeOnly","Effect":"Deny","Principal":"*","Action":"s3:*","Resource":["arn:aws:s3:::photos","arn:aws:s3:::photos/*"],
            "Condition":{"NotIpAddress":{"aws:SourceIp":["192.0.2.0/24","2001:db8::/32"]}}},
           {"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::photos/*",
            "Condition":{"Bool":{"aws:SecureTransport":"true"},"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}}"#,
    );
    let get = || req(Principal::Anonymous, "s3:GetObject", Some("k"));
    let good = get()
        .ctx("aws:SourceIp", "192.0.2.10")
        .ctx("aws:SecureTransport", "true")
        .ctx("aws:CurrentTime", "2026-11-30T10:00:00Z");
    assert!(good.allowed(&p));
    let v6 = get()
        .ctx("aws:SourceIp", "2001:db8::1")
        .ctx("aws:SecureTransport", "true")
        .ctx("aws:CurrentTime", "2026-11-30T10:00:00Z");
    assert!(v6.allowed(&p));
    let outside = get()
        .ctx("aws:SourceIp", "198.51.100.1")
        .ctx("aws:SecureTransport", "true")
        .ctx("aws:CurrentTime", "2026-11-30T10:00:00Z");
    assert!(outside.denied(&p));
    let plain_http = get()
        .ctx("aws:SourceIp", "192.0.2.10")
        .ctx("aws:SecureTransport", "false");
    assert_eq!(plain_http.on(&p), Decision::NotApplicable);
    let late = get()
        .ctx("aws:SourceIp", "192.0.2.10")
        .ctx("aws:SecureTransport", "true")
        .ctx("aws:CurrentTime", "2031-01-01T00:00:00Z");
    assert_eq!(late.on(&p), Decision::NotApplicable);
    // No source address at all: NotIpAddress holds on an absent key (AWS), so the Deny applies.
    assert!(get().ctx("aws:SecureTransport", "true").denied(&p));
}

#[test]
fn condition_context_keys_are_case_insensitive() {
    let mut c = ConditionContext::new();
    c.set("AWS:SourceIp", "10.0.0.1");
    assert_eq!(c.get("aws:sourceip"), Some(&["10.0.0.1".to_string()][..]));
    c.set_many("s3:ExistingObjectTag/Team", vec!["a".into(), "b".into()]);
    assert_eq!(
        c.get("S3:EXISTINGOBJECTTAG/TEAM").map(<[String]>::len),
        Some(2)
    );
    assert_eq!(c.get("s3:prefix"), None);
    c.set("aws:sourceIP", "10.0.0.2");
    assert_eq!(c.get("aws:SourceIp"), Some(&["10.0.0.2".to_string()][..]));
}

#[test]
fn check_resources_in_bucket() {
    let with = |resources: &str| {
        policy(&format!(
            r#"{{"Effect":"Allow","Principal":"*","Action":"*","Resource":{resources}}},{{"Effect":"Deny","Principal":"*","Action":"*","NotResource":"arn:aws:s3:::photos/private/*"}}"#
        ))
    };
    for ok in [
        r#""*""#,
        r#""arn:aws:s3:::photos""#,
        r#"["arn:aws:s3:::photos","arn:aws:s3:::photos/*"]"#,
        r#""arn:aws:s3:::photos/""#,
        r#""arn:aws:s3:::photos/home/${aws:username}/*""#,
        r#""arn:aws:s3::t1:photos/*""#,
    ] {
        with(ok)
            .check_resources_in_bucket("t1", "photos")
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        r#""arn:aws:s3:::other/*""#,
        r#""arn:aws:s3:::photos2""#,
        r#""arn:aws:s3:::photos2/*""#,
        r#""arn:aws:s3:::photo*""#,
        r#""arn:aws:s3:::photos*""#,
        r#""arn:aws:s3:::*""#,
        r#""arn:aws:s3:::photo?/x""#,
        r#""arn:aws:s3:::${aws:username}/x""#,
        r#""arn:aws:s3::t2:photos/*""#,
        r#""arn:aws:s3::*:photos/*""#,
        r#"["arn:aws:s3:::photos","arn:aws:s3:::PHOTOS"]"#,
    ] {
        let e = with(bad)
            .check_resources_in_bucket("t1", "photos")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("Policy has invalid resource: "), "{bad}: {e}");
    }
    // A tenant-qualified ARN is fine only for its own tenant; the root tenant's is "".
    let root = policy(
        r#"{"Effect":"Allow","Principal":"*","Action":"*","Resource":"arn:aws:s3::t1:photos"}"#,
    );
    assert!(root.check_resources_in_bucket("", "photos").is_err());
    // NotResource is checked too.
    let not = policy(
        r#"{"Effect":"Deny","Principal":"*","Action":"*","NotResource":"arn:aws:s3:::other/*"}"#,
    );
    let e = not
        .check_resources_in_bucket("", "photos")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "Policy has invalid resource: \"arn:aws:s3:::other/*\" in Statement[0] is not bucket \"photos\" or its objects"
    );
}

#[test]
fn evaluation_tolerates_any_request() {
    let p = policy(&format!(
        r#"{ALLOW_GET_ALL},{{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::photos/${{aws:username}}?*","Condition":{{"StringLike":{{"s3:prefix":"*"}}}}}}"#
    ));
    for key in ["", "/", "é", "\u{10FFFF}", "a\0b", "*", "${aws:username}"] {
        for who in [
            ALICE,
            Principal::Anonymous,
            Principal::User {
                tenant: "",
                name: "",
                id: "",
            },
        ] {
            let _ = req(who, "", Some(key)).on(&p);
            let _ = req(who, "s3:GetObject", Some(key))
                .ctx("s3:prefix", key)
                .on(&p);
        }
    }
}
