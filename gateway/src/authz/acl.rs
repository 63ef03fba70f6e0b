//! S3 access control lists: the model, canned ACLs, the `x-amz-grant-*`
//! headers, and which permission an action needs (pure; no I/O).
//!
//! An ACL is an owner (canonical user id) and grants of a permission to a
//! grantee: a canonical user id, every caller (`AllUsers`, anonymous ones
//! included) or every signed-in caller of any tenant (`AuthenticatedUsers`).
//! Grants to an email address are refused (`UnresolvableGrantByEmailAddress`)
//! and the `LogDelivery` group is not supported.
//!
//! ACLs are one more source of Allow in `authz::decide_with`, after
//! ownership and the policies, and never override an explicit Deny. The
//! owner of an ACL always keeps READ_ACP and WRITE_ACP (as in S3), whatever
//! its grants say. A record without an ACL is private to its owner.

use kura_proto::meta as pb;

use crate::error::{GwError, GwResult};

pub const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
pub const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    Read,
    Write,
    ReadAcp,
    WriteAcp,
    FullControl,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "READ",
            Permission::Write => "WRITE",
            Permission::ReadAcp => "READ_ACP",
            Permission::WriteAcp => "WRITE_ACP",
            Permission::FullControl => "FULL_CONTROL",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        Some(match s {
            "READ" => Permission::Read,
            "WRITE" => Permission::Write,
            "READ_ACP" => Permission::ReadAcp,
            "WRITE_ACP" => Permission::WriteAcp,
            "FULL_CONTROL" => Permission::FullControl,
            _ => return None,
        })
    }

    /// Whether a grant of `self` gives `needed`.
    fn covers(self, needed: Permission) -> bool {
        self == needed || self == Permission::FullControl
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grantee {
    /// A canonical user id.
    User(String),
    /// Everyone, anonymous callers included.
    AllUsers,
    /// Every signed-in caller, of any tenant.
    AuthenticatedUsers,
}

impl Grantee {
    /// A group grantee by its URI.
    pub fn group(uri: &str) -> GwResult<Grantee> {
        match uri {
            ALL_USERS => Ok(Grantee::AllUsers),
            AUTHENTICATED_USERS => Ok(Grantee::AuthenticatedUsers),
            _ => Err(GwError::InvalidArgument(format!(
                "Invalid group uri (supported: {ALL_USERS}, {AUTHENTICATED_USERS})"
            ))),
        }
    }

    pub fn uri(&self) -> Option<&'static str> {
        match self {
            Grantee::User(_) => None,
            Grantee::AllUsers => Some(ALL_USERS),
            Grantee::AuthenticatedUsers => Some(AUTHENTICATED_USERS),
        }
    }

    /// Grants to a group are public (S3 counts AuthenticatedUsers as public too).
    pub fn is_public(&self) -> bool {
        !matches!(self, Grantee::User(_))
    }

    /// `caller`: the canonical id of a signed-in caller, `None` when anonymous.
    fn matches(&self, caller: Option<&str>) -> bool {
        match self {
            Grantee::User(id) => caller == Some(id.as_str()),
            Grantee::AllUsers => true,
            Grantee::AuthenticatedUsers => caller.is_some(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub grantee: Grantee,
    pub permission: Permission,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    /// The owner's canonical id.
    pub owner: String,
    pub grants: Vec<Grant>,
}

impl Acl {
    /// The `private` canned ACL: the owner has FULL_CONTROL.
    pub fn private(owner: &str) -> Acl {
        Acl {
            owner: owner.to_string(),
            grants: vec![Grant {
                grantee: Grantee::User(owner.to_string()),
                permission: Permission::FullControl,
            }],
        }
    }

    /// Some grant goes to AllUsers or AuthenticatedUsers.
    pub fn is_public(&self) -> bool {
        self.grants.iter().any(|g| g.grantee.is_public())
    }

    /// Some grant goes to anyone but the owner.
    pub fn grants_to_others(&self) -> bool {
        self.grants
            .iter()
            .any(|g| g.grantee != Grantee::User(self.owner.clone()))
    }

    /// Whether the ACL gives `caller` (canonical id; `None` = anonymous)
    /// `needed`. With `ignore_public` (IgnorePublicAcls) group grants count
    /// for nothing.
    pub fn allows(&self, caller: Option<&str>, needed: Permission, ignore_public: bool) -> bool {
        if caller == Some(self.owner.as_str())
            && matches!(needed, Permission::ReadAcp | Permission::WriteAcp)
        {
            return true;
        }
        self.grants.iter().any(|g| {
            !(ignore_public && g.grantee.is_public())
                && g.grantee.matches(caller)
                && g.permission.covers(needed)
        })
    }

    /// The stored form.
    pub fn to_record(&self) -> pb::Acl {
        pb::Acl {
            owner: self.owner.clone(),
            grants: self
                .grants
                .iter()
                .map(|g| {
                    let (user_id, group) = match &g.grantee {
                        Grantee::User(id) => (id.clone(), String::new()),
                        other => (String::new(), other.uri().unwrap_or_default().to_string()),
                    };
                    pb::AclGrant {
                        user_id,
                        group,
                        permission: match g.permission {
                            Permission::Read => pb::AclPermission::Read,
                            Permission::Write => pb::AclPermission::Write,
                            Permission::ReadAcp => pb::AclPermission::ReadAcp,
                            Permission::WriteAcp => pb::AclPermission::WriteAcp,
                            Permission::FullControl => pb::AclPermission::FullControl,
                        } as i32,
                    }
                })
                .collect(),
        }
    }

    /// From the stored form; grants this version does not understand are
    /// dropped (they can only grant less).
    pub fn from_record(rec: &pb::Acl) -> Acl {
        let grants = rec
            .grants
            .iter()
            .filter_map(|g| {
                let permission = match pb::AclPermission::try_from(g.permission).ok()? {
                    pb::AclPermission::Read => Permission::Read,
                    pb::AclPermission::Write => Permission::Write,
                    pb::AclPermission::ReadAcp => Permission::ReadAcp,
                    pb::AclPermission::WriteAcp => Permission::WriteAcp,
                    pb::AclPermission::FullControl => Permission::FullControl,
                    pb::AclPermission::Unspecified => return None,
                };
                let grantee = if !g.user_id.is_empty() {
                    Grantee::User(g.user_id.clone())
                } else {
                    Grantee::group(&g.group).ok()?
                };
                Some(Grant {
                    grantee,
                    permission,
                })
            })
            .collect();
        Acl {
            owner: rec.owner.clone(),
            grants,
        }
    }

    /// The ACL a record holds, or the private one of `default_owner`.
    pub fn of_record(rec: Option<&pb::Acl>, default_owner: &str) -> Acl {
        rec.map_or_else(|| Acl::private(default_owner), Acl::from_record)
    }
}

/// A canned ACL (`x-amz-acl`) expanded as S3 documents it. `owner` owns
/// the resource, `bucket_owner` the bucket it is in (the same for a bucket).
pub fn canned(name: &str, owner: &str, bucket_owner: &str) -> GwResult<Acl> {
    let mut acl = Acl::private(owner);
    let mut add = |grantee: Grantee, permission: Permission| {
        acl.grants.push(Grant {
            grantee,
            permission,
        })
    };
    match name {
        // aws-exec-read also grants EC2 READ, which means nothing here.
        "private" | "aws-exec-read" => {}
        "public-read" => add(Grantee::AllUsers, Permission::Read),
        "public-read-write" => {
            add(Grantee::AllUsers, Permission::Read);
            add(Grantee::AllUsers, Permission::Write);
        }
        "authenticated-read" => add(Grantee::AuthenticatedUsers, Permission::Read),
        "bucket-owner-read" => {
            if bucket_owner != owner {
                add(Grantee::User(bucket_owner.to_string()), Permission::Read);
            }
        }
        "bucket-owner-full-control" => {
            if bucket_owner != owner {
                add(
                    Grantee::User(bucket_owner.to_string()),
                    Permission::FullControl,
                );
            }
        }
        "log-delivery-write" => {
            return Err(GwError::InvalidArgument(
                "the log-delivery-write canned ACL is not supported (no server access logging)"
                    .into(),
            ))
        }
        other => {
            return Err(GwError::InvalidArgument(format!(
                "unknown canned ACL {other:?}"
            )))
        }
    }
    Ok(acl)
}

/// The grantees of one `x-amz-grant-*` header:
/// `id="canonical-id", uri="http://acs.amazonaws.com/groups/global/AllUsers"`.
pub fn parse_grantees(header: &str) -> GwResult<Vec<Grantee>> {
    let mut out = Vec::new();
    for item in header.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (kind, value) = item.split_once('=').ok_or_else(|| {
            GwError::InvalidArgument(format!(
                "grantee {item:?} is not of the form type=\"value\""
            ))
        })?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if value.is_empty() {
            return Err(GwError::InvalidArgument(format!(
                "empty grantee in {item:?}"
            )));
        }
        match kind.trim().to_ascii_lowercase().as_str() {
            "id" => out.push(Grantee::User(value.to_string())),
            "uri" => out.push(Grantee::group(value)?),
            "emailaddress" => return Err(GwError::UnresolvableGrantByEmailAddress),
            other => {
                return Err(GwError::InvalidArgument(format!(
                    "unknown grantee type {other:?} (id, uri or emailAddress)"
                )))
            }
        }
    }
    Ok(out)
}

/// The ACL headers of a request: `x-amz-acl` and `x-amz-grant-*`.
#[derive(Clone, Copy, Debug, Default)]
pub struct AclHeaders<'a> {
    pub canned: Option<&'a str>,
    pub read: Option<&'a str>,
    pub write: Option<&'a str>,
    pub read_acp: Option<&'a str>,
    pub write_acp: Option<&'a str>,
    pub full_control: Option<&'a str>,
}

impl AclHeaders<'_> {
    fn grant_headers(&self) -> [(Option<&str>, Permission); 5] {
        [
            (self.read, Permission::Read),
            (self.write, Permission::Write),
            (self.read_acp, Permission::ReadAcp),
            (self.write_acp, Permission::WriteAcp),
            (self.full_control, Permission::FullControl),
        ]
    }

    pub fn has_grants(&self) -> bool {
        self.grant_headers().iter().any(|(h, _)| h.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.canned.is_none() && !self.has_grants()
    }

    /// Exactly `x-amz-acl: bucket-owner-full-control` (what a bucket with
    /// ACLs disabled still accepts on writes), or nothing.
    pub fn is_none_or_bucket_owner_full_control(&self) -> bool {
        !self.has_grants() && matches!(self.canned, None | Some("bucket-owner-full-control"))
    }

    /// The ACL the headers ask for, owned by `owner`; `None` when they ask
    /// for none. A canned ACL together with grant headers is InvalidRequest.
    pub fn to_acl(&self, owner: &str, bucket_owner: &str) -> GwResult<Option<Acl>> {
        if let Some(name) = self.canned {
            if self.has_grants() {
                return Err(GwError::InvalidRequest(
                    "Specifying both Canned ACLs and Header Grants is not allowed".into(),
                ));
            }
            return canned(name, owner, bucket_owner).map(Some);
        }
        if !self.has_grants() {
            return Ok(None);
        }
        let mut grants = Vec::new();
        for (header, permission) in self.grant_headers() {
            for grantee in parse_grantees(header.unwrap_or_default())? {
                grants.push(Grant {
                    grantee,
                    permission,
                });
            }
        }
        Ok(Some(Acl {
            owner: owner.to_string(),
            grants,
        }))
    }
}

/// The permission a bucket ACL must grant for `action` (on the bucket or
/// on its objects), if a bucket ACL can grant it at all.
pub fn bucket_permission(action: &str) -> Option<Permission> {
    Some(match action {
        "s3:ListBucket" | "s3:ListBucketVersions" | "s3:ListBucketMultipartUploads" => {
            Permission::Read
        }
        "s3:PutObject"
        | "s3:DeleteObject"
        | "s3:DeleteObjectVersion"
        | "s3:AbortMultipartUpload"
        | "s3:ListMultipartUploadParts" => Permission::Write,
        "s3:GetBucketAcl" => Permission::ReadAcp,
        "s3:PutBucketAcl" => Permission::WriteAcp,
        _ => return None,
    })
}

/// The permission an object ACL must grant for `action` on that object,
/// if an object ACL can grant it at all.
pub fn object_permission(action: &str) -> Option<Permission> {
    Some(match action {
        "s3:GetObject" | "s3:GetObjectVersion" => Permission::Read,
        "s3:GetObjectAcl" | "s3:GetObjectVersionAcl" => Permission::ReadAcp,
        "s3:PutObjectAcl" | "s3:PutObjectVersionAcl" => Permission::WriteAcp,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Grantee {
        Grantee::User(id.into())
    }

    #[test]
    fn canned_acls_expand_as_aws() {
        let perms = |acl: &Acl| {
            acl.grants
                .iter()
                .map(|g| (g.grantee.clone(), g.permission))
                .collect::<Vec<_>>()
        };
        let fc = (user("o"), Permission::FullControl);
        assert_eq!(
            perms(&canned("private", "o", "b").unwrap()),
            vec![fc.clone()]
        );
        assert_eq!(
            perms(&canned("aws-exec-read", "o", "b").unwrap()),
            vec![fc.clone()]
        );
        assert_eq!(
            perms(&canned("public-read", "o", "b").unwrap()),
            vec![fc.clone(), (Grantee::AllUsers, Permission::Read)]
        );
        assert_eq!(
            perms(&canned("public-read-write", "o", "b").unwrap()),
            vec![
                fc.clone(),
                (Grantee::AllUsers, Permission::Read),
                (Grantee::AllUsers, Permission::Write)
            ]
        );
        assert_eq!(
            perms(&canned("authenticated-read", "o", "b").unwrap()),
            vec![fc.clone(), (Grantee::AuthenticatedUsers, Permission::Read)]
        );
        assert_eq!(
            perms(&canned("bucket-owner-read", "o", "b").unwrap()),
            vec![fc.clone(), (user("b"), Permission::Read)]
        );
        assert_eq!(
            perms(&canned("bucket-owner-full-control", "o", "b").unwrap()),
            vec![fc.clone(), (user("b"), Permission::FullControl)]
        );
        // Written by the bucket owner itself: just private.
        assert_eq!(
            canned("bucket-owner-full-control", "o", "o").unwrap(),
            Acl::private("o")
        );
        assert!(canned("log-delivery-write", "o", "o").is_err());
        assert!(matches!(
            canned("nonsense", "o", "o"),
            Err(GwError::InvalidArgument(_))
        ));
    }

    #[test]
    fn grant_headers_parse() {
        assert_eq!(
            parse_grantees(r#"id="abc", uri="http://acs.amazonaws.com/groups/global/AllUsers""#)
                .unwrap(),
            vec![user("abc"), Grantee::AllUsers]
        );
        assert_eq!(
            parse_grantees(&format!("uri={AUTHENTICATED_USERS},ID=x")).unwrap(),
            vec![Grantee::AuthenticatedUsers, user("x")]
        );
        assert!(matches!(
            parse_grantees(r#"emailAddress="a@b.c""#),
            Err(GwError::UnresolvableGrantByEmailAddress)
        ));
        assert!(parse_grantees(r#"uri="http://acs.amazonaws.com/groups/s3/LogDelivery""#).is_err());
        assert!(parse_grantees("garbage").is_err());
        assert!(parse_grantees(r#"id="""#).is_err());
        assert!(parse_grantees(r#"name="x""#).is_err());
    }

    #[test]
    fn request_headers() {
        let none = AclHeaders::default();
        assert!(none.is_empty() && none.is_none_or_bucket_owner_full_control());
        assert_eq!(none.to_acl("o", "o").unwrap(), None);
        let both = AclHeaders {
            canned: Some("public-read"),
            read: Some(r#"id="x""#),
            ..Default::default()
        };
        assert!(matches!(
            both.to_acl("o", "o"),
            Err(GwError::InvalidRequest(_))
        ));
        let grants = AclHeaders {
            read: Some(r#"id="carol", id="dave""#),
            full_control: Some(r#"id="o""#),
            ..Default::default()
        };
        let acl = grants.to_acl("o", "o").unwrap().unwrap();
        assert_eq!(acl.owner, "o");
        assert_eq!(acl.grants.len(), 3);
        assert!(acl.allows(Some("carol"), Permission::Read, false));
        assert!(!acl.allows(Some("carol"), Permission::ReadAcp, false));
        assert!(!grants.is_none_or_bucket_owner_full_control());
        let bfc = AclHeaders {
            canned: Some("bucket-owner-full-control"),
            ..Default::default()
        };
        assert!(bfc.is_none_or_bucket_owner_full_control());
    }

    #[test]
    fn evaluation() {
        let acl = canned("public-read", "o", "o").unwrap();
        assert!(acl.is_public());
        assert!(acl.allows(None, Permission::Read, false));
        assert!(
            !acl.allows(None, Permission::Read, true),
            "IgnorePublicAcls"
        );
        assert!(!acl.allows(None, Permission::Write, false));
        assert!(!acl.allows(Some("x"), Permission::ReadAcp, false));
        assert!(
            acl.allows(Some("o"), Permission::Write, true),
            "owner FULL_CONTROL"
        );
        let auth = canned("authenticated-read", "o", "o").unwrap();
        assert!(!auth.allows(None, Permission::Read, false));
        assert!(auth.allows(Some("x"), Permission::Read, false));
        // The owner keeps READ_ACP and WRITE_ACP without any grant.
        let bare = Acl {
            owner: "o".into(),
            grants: vec![],
        };
        assert!(bare.allows(Some("o"), Permission::ReadAcp, false));
        assert!(bare.allows(Some("o"), Permission::WriteAcp, false));
        assert!(!bare.allows(Some("o"), Permission::Read, false));
        assert!(!Acl::private("o").is_public());
        assert!(!Acl::private("o").grants_to_others());
        assert!(canned("bucket-owner-read", "w", "o")
            .unwrap()
            .grants_to_others());
    }

    #[test]
    fn records_roundtrip() {
        let acl = Acl {
            owner: "o".into(),
            grants: vec![
                Grant {
                    grantee: user("x"),
                    permission: Permission::WriteAcp,
                },
                Grant {
                    grantee: Grantee::AllUsers,
                    permission: Permission::Read,
                },
                Grant {
                    grantee: Grantee::AuthenticatedUsers,
                    permission: Permission::FullControl,
                },
            ],
        };
        assert_eq!(Acl::from_record(&acl.to_record()), acl);
        assert_eq!(Acl::of_record(None, "b"), Acl::private("b"));
    }

    #[test]
    fn permissions_of_actions() {
        assert_eq!(bucket_permission("s3:ListBucket"), Some(Permission::Read));
        assert_eq!(
            bucket_permission("s3:ListBucketMultipartUploads"),
            Some(Permission::Read)
        );
        assert_eq!(bucket_permission("s3:PutObject"), Some(Permission::Write));
        assert_eq!(
            bucket_permission("s3:DeleteObject"),
            Some(Permission::Write)
        );
        assert_eq!(
            bucket_permission("s3:GetBucketAcl"),
            Some(Permission::ReadAcp)
        );
        assert_eq!(
            bucket_permission("s3:PutBucketAcl"),
            Some(Permission::WriteAcp)
        );
        assert_eq!(bucket_permission("s3:GetObject"), None);
        assert_eq!(bucket_permission("s3:PutBucketPolicy"), None);
        assert_eq!(object_permission("s3:GetObject"), Some(Permission::Read));
        assert_eq!(
            object_permission("s3:GetObjectAcl"),
            Some(Permission::ReadAcp)
        );
        assert_eq!(
            object_permission("s3:PutObjectAcl"),
            Some(Permission::WriteAcp)
        );
        assert_eq!(object_permission("s3:PutObject"), None);
        for p in [
            Permission::Read,
            Permission::Write,
            Permission::ReadAcp,
            Permission::WriteAcp,
            Permission::FullControl,
        ] {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
            assert!(Permission::FullControl.covers(p));
        }
    }
}
