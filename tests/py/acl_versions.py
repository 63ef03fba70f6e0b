"""Object ACLs address versions in a versioned bucket (GetObjectAcl /
PutObjectAcl with `versionId`).

Run by tests/list_versions_cost.rs against `kura dev` with KURA_S3, KURA_DIR,
KURA_BIN, the root key in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and an
aws CLI config in AWS_CONFIG_FILE. Anonymous requests are unsigned HTTP.
"""
import json
import os
import subprocess

from kura_kit import ENDPOINT, anon, check, client, expect_error

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
s3 = client(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
B = "aclvers"


def aws(*args):
    p = subprocess.run(["aws", "--endpoint-url", ENDPOINT, "s3api", *args], capture_output=True, text=True)
    assert p.returncode == 0, f"aws {args}: {p.stderr}"
    return json.loads(p.stdout) if p.stdout.strip() else {}


def public(acl):
    return any(g["Grantee"].get("URI") == ALL_USERS and g["Permission"] == "READ" for g in acl["Grants"])


s3.create_bucket(Bucket=B)
s3.put_bucket_versioning(Bucket=B, VersioningConfiguration={"Status": "Enabled"})
V1 = s3.put_object(Bucket=B, Key="k", Body=b"one")["VersionId"]
V2 = s3.put_object(Bucket=B, Key="k", Body=b"two")["VersionId"]
assert V1 != V2


def acl_on_an_old_version_leaves_the_latest_alone():
    s3.put_object_acl(Bucket=B, Key="k", VersionId=V1, ACL="public-read")
    assert public(s3.get_object_acl(Bucket=B, Key="k", VersionId=V1))
    assert not public(s3.get_object_acl(Bucket=B, Key="k", VersionId=V2))
    assert not public(s3.get_object_acl(Bucket=B, Key="k")), "the latest keeps its ACL"
    # The ACL decides per version: anonymous reads of v1 pass, of the latest not.
    assert anon("GET", f"/{B}/k?versionId={V1}") == (200, b"one")
    assert anon("GET", f"/{B}/k")[0] == 403
    assert anon("GET", f"/{B}/k?versionId={V2}")[0] == 403
    # The body and the version list are untouched.
    assert s3.get_object(Bucket=B, Key="k", VersionId=V1)["Body"].read() == b"one"
    assert s3.get_object(Bucket=B, Key="k")["Body"].read() == b"two"
    vs = s3.list_object_versions(Bucket=B, Prefix="k")["Versions"]
    assert [v["VersionId"] for v in vs] == [V2, V1], vs


check("PutObjectAcl on an old version leaves the latest's ACL alone", acl_on_an_old_version_leaves_the_latest_alone)


def acl_without_version_id_is_the_latest():
    s3.put_object_acl(Bucket=B, Key="k", ACL="public-read")
    assert public(s3.get_object_acl(Bucket=B, Key="k", VersionId=V2))
    assert anon("GET", f"/{B}/k") == (200, b"two")
    # Back to private on the latest only; v1 stays public.
    s3.put_object_acl(Bucket=B, Key="k", VersionId=V2, ACL="private")
    assert not public(s3.get_object_acl(Bucket=B, Key="k"))
    assert public(s3.get_object_acl(Bucket=B, Key="k", VersionId=V1))
    # A new version starts with its own (private) ACL.
    v3 = s3.put_object(Bucket=B, Key="k", Body=b"three")["VersionId"]
    assert not public(s3.get_object_acl(Bucket=B, Key="k"))
    assert not public(s3.get_object_acl(Bucket=B, Key="k", VersionId=v3))
    assert public(s3.get_object_acl(Bucket=B, Key="k", VersionId=V1))


check("PutObjectAcl without versionId sets the latest version's", acl_without_version_id_is_the_latest)


def aws_cli_by_version_id():
    aws("put-object-acl", "--bucket", B, "--key", "k", "--version-id", V2,
        "--grant-read", f"uri={ALL_USERS}")
    got = aws("get-object-acl", "--bucket", B, "--key", "k", "--version-id", V2)
    assert public(got), got
    got = aws("get-object-acl", "--bucket", B, "--key", "k")
    assert not public(got), "v3 is the latest and private"


check("aws CLI get/put-object-acl --version-id", aws_cli_by_version_id)


def refusals():
    missing = "0000000000000001"
    expect_error("NoSuchVersion", s3.get_object_acl, Bucket=B, Key="k", VersionId=missing, status=404)
    expect_error("NoSuchVersion", s3.put_object_acl, Bucket=B, Key="k", VersionId=missing, ACL="public-read",
                 status=404)
    expect_error("InvalidArgument", s3.get_object_acl, Bucket=B, Key="k", VersionId="not-a-version", status=400)
    # A delete marker has no ACL (AWS: 405 MethodNotAllowed), also when it is the latest.
    dm = s3.delete_object(Bucket=B, Key="k")["VersionId"]
    expect_error("MethodNotAllowed", s3.get_object_acl, Bucket=B, Key="k", VersionId=dm, status=405)
    expect_error("MethodNotAllowed", s3.put_object_acl, Bucket=B, Key="k", VersionId=dm, ACL="public-read",
                 status=405)
    expect_error("NoSuchKey", s3.get_object_acl, Bucket=B, Key="k", status=404)
    # The older versions keep their ACLs behind the marker.
    assert public(s3.get_object_acl(Bucket=B, Key="k", VersionId=V1))


check("unknown versions, bad ids and delete markers are refused as AWS", refusals)
print("all acl_versions checks passed")
