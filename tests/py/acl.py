"""S3 ACLs end to end: canned and explicit ACLs on buckets and objects,
object ownership, public access block.

Run by tests/acl.rs against `kura dev` with KURA_S3, KURA_DIR (cluster.json),
KURA_BIN (for `kura admin`), the root key in AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY and an aws CLI config in AWS_CONFIG_FILE.

acme/alice owns the buckets; acme/bob and globex/carol are strangers to them
unless an ACL says otherwise. Anonymous requests are plain HTTP (urllib, no
signature), as `curl` would send them.
"""
import json
import os
import subprocess

from kura_kit import ENDPOINT, admin, anon, check, client, expect_error, key_of

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def grants(acl):
    """{(grantee id or group URI, permission)} of a Get*Acl answer."""
    return {(g["Grantee"].get("ID") or g["Grantee"].get("URI"), g["Permission"]) for g in acl["Grants"]}


admin("tenant", "create", "acme")
admin("tenant", "create", "globex")
alice_u = admin("user", "create", "--tenant", "acme", "--name", "alice")
bob_u = admin("user", "create", "--tenant", "acme", "--name", "bob")
carol_u = admin("user", "create", "--tenant", "globex", "--name", "carol", "--id", "carol-canonical-id")


alice, bob, carol = (client(*key_of(u)) for u in (alice_u, bob_u, carol_u))
ALICE, CAROL = alice_u["id"], carol_u["id"]

alice.create_bucket(Bucket="photos")
alice.put_object(Bucket="photos", Key="priv.txt", Body=b"private")
carol.create_bucket(Bucket="mine")


def public_read_bucket():
    alice.create_bucket(Bucket="pub", ACL="public-read")
    alice.put_object(Bucket="pub", Key="x.txt", Body=b"x")
    acl = alice.get_bucket_acl(Bucket="pub")
    assert acl["Owner"]["ID"] == ALICE, acl
    assert grants(acl) == {(ALICE, "FULL_CONTROL"), (ALL_USERS, "READ")}, acl
    status, body = anon("GET", "/acme:pub")
    assert status == 200 and b"<Key>x.txt</Key>" in body, (status, body)
    status, body = anon("GET", "/acme:pub?list-type=2")
    assert status == 200 and b"<Key>x.txt</Key>" in body, (status, body)
    # READ on a bucket lists it; its objects keep their own (private) ACLs.
    assert anon("GET", "/acme:pub/x.txt")[0] == 403
    status, body = anon("PUT", "/acme:pub/evil", data=b"evil")
    assert status == 403 and b"AccessDenied" in body, (status, body)
    assert anon("GET", "/acme:pub?acl")[0] == 403, "READ is not READ_ACP"
    assert anon("PUT", "/acme:pub?acl", data=b"")[0] == 403
    # Signed-in strangers list it too, and still can't write.
    assert [o["Key"] for o in carol.list_objects_v2(Bucket="acme:pub")["Contents"]] == ["x.txt"]
    expect_error("AccessDenied", carol.put_object, Bucket="acme:pub", Key="c", Body=b"c")


check("a public-read bucket is listed anonymously, never written", public_read_bucket)


def public_read_object():
    alice.put_object(Bucket="photos", Key="pub.txt", Body=b"for everyone", ACL="public-read")
    status, body = anon("GET", "/acme:photos/pub.txt")
    assert (status, body) == (200, b"for everyone"), (status, body)
    assert anon("HEAD", "/acme:photos/pub.txt")[0] == 200
    # Its neighbour is private; a missing key is no 404 to whoever can't list.
    assert anon("GET", "/acme:photos/priv.txt")[0] == 403
    assert anon("GET", "/acme:photos/missing.txt")[0] == 403
    assert anon("GET", "/acme:photos")[0] == 403, "anonymous LIST of a private bucket"
    status, body = anon("PUT", "/acme:photos/pub.txt", data=b"evil")
    assert status == 403 and b"AccessDenied" in body, (status, body)
    assert anon("GET", "/acme:photos/pub.txt?acl")[0] == 403, "READ is not READ_ACP"
    assert anon("DELETE", "/acme:photos/pub.txt")[0] == 403
    assert alice.get_object(Bucket="photos", Key="pub.txt")["Body"].read() == b"for everyone"
    acl = alice.get_object_acl(Bucket="photos", Key="pub.txt")
    assert acl["Owner"]["ID"] == ALICE and grants(acl) == {(ALICE, "FULL_CONTROL"), (ALL_USERS, "READ")}, acl


check("a public-read object in a private bucket: anonymous GET yes, PUT no", public_read_object)


def grant_to_another_tenant():
    alice.put_object(Bucket="photos", Key="for-carol.txt", Body=b"hi carol", GrantRead=f'id="{CAROL}"')
    assert carol.get_object(Bucket="acme:photos", Key="for-carol.txt")["Body"].read() == b"hi carol"
    assert carol.head_object(Bucket="acme:photos", Key="for-carol.txt")["ContentLength"] == 8
    # Nothing else: not the neighbours, not the listing, not the ACL, no writes.
    expect_error("AccessDenied", carol.get_object, Bucket="acme:photos", Key="priv.txt")
    expect_error("AccessDenied", carol.get_object, Bucket="acme:photos", Key="missing.txt")
    expect_error("AccessDenied", carol.list_objects_v2, Bucket="acme:photos")
    expect_error("AccessDenied", carol.get_object_acl, Bucket="acme:photos", Key="for-carol.txt")
    expect_error("AccessDenied", carol.put_object_acl, Bucket="acme:photos", Key="for-carol.txt", ACL="public-read")
    expect_error("AccessDenied", carol.put_object, Bucket="acme:photos", Key="for-carol.txt", Body=b"x")
    expect_error("AccessDenied", carol.delete_object, Bucket="acme:photos", Key="for-carol.txt")
    expect_error("AccessDenied", bob.get_object, Bucket="photos", Key="for-carol.txt")
    assert anon("GET", "/acme:photos/for-carol.txt")[0] == 403
    # Explicit grant headers replace the canned default: no owner grant unless named.
    acl = alice.get_object_acl(Bucket="photos", Key="for-carol.txt")
    assert grants(acl) == {(CAROL, "READ")}, acl
    # ... yet the owner keeps READ_ACP and WRITE_ACP, and the bucket owner everything.
    alice.put_object_acl(Bucket="photos", Key="for-carol.txt", GrantRead=f'id="{CAROL}"', GrantReadACP=f'id="{CAROL}"')
    assert grants(carol.get_object_acl(Bucket="acme:photos", Key="for-carol.txt")) == {(CAROL, "READ"), (CAROL, "READ_ACP")}
    assert alice.get_object(Bucket="photos", Key="for-carol.txt")["Body"].read() == b"hi carol"


check("a grant lets another tenant's user read one object, nothing else", grant_to_another_tenant)


def round_trips():
    alice.put_object(Bucket="photos", Key="rt.txt", Body=b"rt")
    acl = alice.get_object_acl(Bucket="photos", Key="rt.txt")
    assert grants(acl) == {(ALICE, "FULL_CONTROL")}, acl
    alice.put_object_acl(Bucket="photos", Key="rt.txt", ACL="public-read")
    assert anon("GET", "/acme:photos/rt.txt") == (200, b"rt")
    # An AccessControlPolicy body.
    alice.put_object_acl(Bucket="photos", Key="rt.txt", AccessControlPolicy={
        "Owner": {"ID": ALICE},
        "Grants": [
            {"Grantee": {"Type": "CanonicalUser", "ID": ALICE}, "Permission": "FULL_CONTROL"},
            {"Grantee": {"Type": "CanonicalUser", "ID": CAROL}, "Permission": "READ"},
        ]})
    assert grants(alice.get_object_acl(Bucket="photos", Key="rt.txt")) == {(ALICE, "FULL_CONTROL"), (CAROL, "READ")}
    assert anon("GET", "/acme:photos/rt.txt")[0] == 403
    assert carol.get_object(Bucket="acme:photos", Key="rt.txt")["Body"].read() == b"rt"
    # The object's body and metadata are untouched by ACL changes.
    assert alice.head_object(Bucket="photos", Key="rt.txt")["ContentLength"] == 2
    # Bucket ACLs: grant headers and bodies.
    alice.put_bucket_acl(Bucket="photos", GrantRead=f'id="{CAROL}"', GrantFullControl=f'id="{ALICE}"')
    assert grants(alice.get_bucket_acl(Bucket="photos")) == {(CAROL, "READ"), (ALICE, "FULL_CONTROL")}
    assert "priv.txt" in [o["Key"] for o in carol.list_objects_v2(Bucket="acme:photos")["Contents"]]
    expect_error("AccessDenied", carol.get_object, Bucket="acme:photos", Key="priv.txt")
    alice.put_bucket_acl(Bucket="photos", AccessControlPolicy={
        "Owner": {"ID": ALICE},
        "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": ALICE}, "Permission": "FULL_CONTROL"}]})
    expect_error("AccessDenied", carol.list_objects_v2, Bucket="acme:photos")
    # Refusals: canned and grants together, email grantees, another owner, nothing at all.
    expect_error("InvalidRequest", alice.put_object_acl, Bucket="photos", Key="rt.txt", ACL="private", GrantRead=f'id="{CAROL}"')
    expect_error("InvalidRequest", alice.put_object, Bucket="photos", Key="bad", Body=b"", ACL="private", GrantRead=f'id="{CAROL}"')
    expect_error("UnresolvableGrantByEmailAddress", alice.put_bucket_acl, Bucket="photos", GrantRead='emailAddress="x@example.com"')
    expect_error("AccessDenied", alice.put_object_acl, Bucket="photos", Key="rt.txt", AccessControlPolicy={
        "Owner": {"ID": CAROL}, "Grants": []})
    expect_error("NoSuchKey", alice.get_object_acl, Bucket="photos", Key="missing")
    expect_error("InvalidArgument", alice.get_object_acl, Bucket="photos", Key="rt.txt", VersionId="3")
    expect_error("NoSuchKey", alice.get_object, Bucket="photos", Key="bad")

    # The aws CLI.
    alice.put_object(Bucket="photos", Key="cli.txt", Body=b"cli")
    ak, sk = key_of(alice_u)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ak, AWS_SECRET_ACCESS_KEY=sk)

    def aws(*args):
        p = subprocess.run(["aws", "--endpoint-url", ENDPOINT, "s3api", *args], capture_output=True, text=True, env=env)
        assert p.returncode == 0, f"aws {args}: {p.stderr}"
        return json.loads(p.stdout) if p.stdout.strip() else {}

    aws("put-object-acl", "--bucket", "photos", "--key", "cli.txt", "--acl", "public-read")
    got = aws("get-object-acl", "--bucket", "photos", "--key", "cli.txt")
    assert grants(got) == {(ALICE, "FULL_CONTROL"), (ALL_USERS, "READ")}, got
    assert anon("GET", "/acme:photos/cli.txt") == (200, b"cli")
    aws("put-bucket-acl", "--bucket", "photos", "--acl", "private")
    assert grants(aws("get-bucket-acl", "--bucket", "photos")) == {(ALICE, "FULL_CONTROL")}


check("Get/Put{Bucket,Object}Acl round trips (boto3, aws CLI)", round_trips)


def copies_and_multipart():
    # A copy gets the request's ACL or private, never the source's.
    alice.copy_object(Bucket="photos", Key="copy.txt", CopySource="photos/pub.txt")
    assert anon("GET", "/acme:photos/copy.txt")[0] == 403
    assert grants(alice.get_object_acl(Bucket="photos", Key="copy.txt")) == {(ALICE, "FULL_CONTROL")}
    alice.copy_object(Bucket="photos", Key="copy2.txt", CopySource="photos/priv.txt", ACL="public-read")
    assert anon("GET", "/acme:photos/copy2.txt") == (200, b"private")
    # Multipart: the ACL given at creation is the object's at completion.
    up = alice.create_multipart_upload(Bucket="photos", Key="mp.bin", ACL="public-read")["UploadId"]
    etag = alice.upload_part(Bucket="photos", Key="mp.bin", UploadId=up, PartNumber=1, Body=b"m" * 100)["ETag"]
    assert anon("GET", "/acme:photos/mp.bin")[0] == 403, "not there yet"
    alice.complete_multipart_upload(Bucket="photos", Key="mp.bin", UploadId=up,
                                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert anon("GET", "/acme:photos/mp.bin") == (200, b"m" * 100)


check("copies and multipart uploads store the request's ACL", copies_and_multipart)


def strangers_cannot_touch_acls():
    for who, bucket in ((bob, "photos"), (carol, "acme:photos")):
        expect_error("AccessDenied", who.get_bucket_acl, Bucket=bucket)
        expect_error("AccessDenied", who.put_bucket_acl, Bucket=bucket, ACL="public-read-write")
        expect_error("AccessDenied", who.get_object_acl, Bucket=bucket, Key="priv.txt")
        expect_error("AccessDenied", who.put_object_acl, Bucket=bucket, Key="priv.txt", ACL="public-read")
        expect_error("AccessDenied", who.get_bucket_ownership_controls, Bucket=bucket)
        expect_error("AccessDenied", who.put_bucket_ownership_controls, Bucket=bucket,
                     OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
        expect_error("AccessDenied", who.put_public_access_block, Bucket=bucket,
                     PublicAccessBlockConfiguration={"BlockPublicAcls": True})
        expect_error("AccessDenied", who.delete_public_access_block, Bucket=bucket)
    assert grants(alice.get_bucket_acl(Bucket="photos")) == {(ALICE, "FULL_CONTROL")}
    assert anon("GET", "/acme:photos/priv.txt")[0] == 403


check("a non-owner can't read or change ACLs or settings", strangers_cannot_touch_acls)


def write_grants_and_ownership():
    alice.create_bucket(Bucket="drop")
    alice.put_bucket_acl(Bucket="drop", GrantWrite=f'id="{CAROL}"', GrantFullControl=f'id="{ALICE}"')
    carol.put_object(Bucket="acme:drop", Key="c.txt", Body=b"from carol")
    # The writer owns what it writes (ObjectWriter): it may read it back and see its ACL.
    acl = carol.get_object_acl(Bucket="acme:drop", Key="c.txt")
    assert acl["Owner"]["ID"] == CAROL and grants(acl) == {(CAROL, "FULL_CONTROL")}, acl
    assert carol.get_object(Bucket="acme:drop", Key="c.txt")["Body"].read() == b"from carol"
    assert alice.get_object(Bucket="drop", Key="c.txt")["Body"].read() == b"from carol"
    expect_error("AccessDenied", bob.get_object, Bucket="drop", Key="c.txt")
    expect_error("AccessDenied", carol.list_objects_v2, Bucket="acme:drop")
    # BucketOwnerPreferred: with bucket-owner-full-control the bucket owner owns it.
    alice.put_bucket_ownership_controls(Bucket="drop", OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]})
    got = alice.get_bucket_ownership_controls(Bucket="drop")["OwnershipControls"]["Rules"]
    assert got == [{"ObjectOwnership": "BucketOwnerPreferred"}], got
    carol.put_object(Bucket="acme:drop", Key="given.txt", Body=b"given", ACL="bucket-owner-full-control")
    assert alice.get_object_acl(Bucket="drop", Key="given.txt")["Owner"]["ID"] == ALICE
    expect_error("AccessDenied", carol.get_object, Bucket="acme:drop", Key="given.txt")
    carol.put_object(Bucket="acme:drop", Key="kept.txt", Body=b"kept")
    assert carol.get_object_acl(Bucket="acme:drop", Key="kept.txt")["Owner"]["ID"] == CAROL
    alice.delete_bucket_ownership_controls(Bucket="drop")
    got = alice.get_bucket_ownership_controls(Bucket="drop")["OwnershipControls"]["Rules"]
    assert got == [{"ObjectOwnership": "ObjectWriter"}], got


check("a WRITE grant lets another tenant write; object ownership", write_grants_and_ownership)


def bucket_owner_enforced():
    alice.create_bucket(Bucket="enforced", ObjectOwnership="BucketOwnerEnforced")
    got = alice.get_bucket_ownership_controls(Bucket="enforced")["OwnershipControls"]["Rules"]
    assert got == [{"ObjectOwnership": "BucketOwnerEnforced"}], got
    expect_error("AccessControlListNotSupported", alice.put_object, Bucket="enforced", Key="p", Body=b"p", ACL="public-read")
    expect_error("AccessControlListNotSupported", alice.put_object, Bucket="enforced", Key="p", Body=b"p", GrantRead=f'id="{CAROL}"')
    expect_error("AccessControlListNotSupported", alice.create_multipart_upload, Bucket="enforced", Key="p", ACL="public-read")
    alice.put_object(Bucket="enforced", Key="ok.txt", Body=b"ok", ACL="bucket-owner-full-control")
    alice.put_object(Bucket="enforced", Key="plain.txt", Body=b"plain")
    expect_error("AccessControlListNotSupported", alice.put_bucket_acl, Bucket="enforced", ACL="public-read")
    expect_error("AccessControlListNotSupported", alice.put_object_acl, Bucket="enforced", Key="ok.txt", ACL="public-read")
    assert grants(alice.get_bucket_acl(Bucket="enforced")) == {(ALICE, "FULL_CONTROL")}
    assert grants(alice.get_object_acl(Bucket="enforced", Key="ok.txt")) == {(ALICE, "FULL_CONTROL")}
    expect_error("InvalidBucketAclWithObjectOwnership", alice.create_bucket, Bucket="enforced2",
                 ACL="public-read", ObjectOwnership="BucketOwnerEnforced")
    # Back to ObjectWriter, ACLs count again; a bucket ACL granting others blocks Enforced.
    alice.put_bucket_ownership_controls(Bucket="enforced", OwnershipControls={"Rules": [{"ObjectOwnership": "ObjectWriter"}]})
    alice.put_bucket_acl(Bucket="enforced", ACL="public-read")
    assert anon("GET", "/acme:enforced")[0] == 200
    expect_error("InvalidBucketAclWithObjectOwnership", alice.put_bucket_ownership_controls, Bucket="enforced",
                 OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
    alice.put_bucket_acl(Bucket="enforced", ACL="private")
    alice.put_bucket_ownership_controls(Bucket="enforced", OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
    # Enforced: an object ACL stored before counts for nothing.
    alice.put_bucket_ownership_controls(Bucket="photos", OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
    assert anon("GET", "/acme:photos/pub.txt")[0] == 403
    expect_error("AccessDenied", carol.get_object, Bucket="acme:photos", Key="for-carol.txt")
    alice.delete_bucket_ownership_controls(Bucket="photos")
    assert anon("GET", "/acme:photos/pub.txt")[0] == 200


check("BucketOwnerEnforced disables ACLs as AWS does", bucket_owner_enforced)


def public_access_block():
    expect_error("NoSuchPublicAccessBlockConfiguration", alice.get_public_access_block, Bucket="photos")
    alice.put_public_access_block(Bucket="photos", PublicAccessBlockConfiguration={"BlockPublicAcls": True})
    got = alice.get_public_access_block(Bucket="photos")["PublicAccessBlockConfiguration"]
    assert got == {"BlockPublicAcls": True, "IgnorePublicAcls": False, "BlockPublicPolicy": False,
                   "RestrictPublicBuckets": False}, got
    expect_error("AccessDenied", alice.put_object, Bucket="photos", Key="p2", Body=b"p", ACL="public-read")
    expect_error("AccessDenied", alice.put_object, Bucket="photos", Key="p2", Body=b"p", GrantRead=f'uri="{ALL_USERS}"')
    expect_error("AccessDenied", alice.put_object_acl, Bucket="photos", Key="priv.txt", ACL="authenticated-read")
    expect_error("AccessDenied", alice.put_bucket_acl, Bucket="photos", ACL="public-read")
    expect_error("AccessDenied", alice.copy_object, Bucket="photos", Key="p3", CopySource="photos/priv.txt", ACL="public-read")
    alice.put_object(Bucket="photos", Key="p2", Body=b"p", GrantRead=f'id="{CAROL}"')  # not public
    # Existing public ACLs still work until IgnorePublicAcls.
    assert anon("GET", "/acme:photos/pub.txt")[0] == 200
    alice.put_public_access_block(Bucket="photos", PublicAccessBlockConfiguration={"IgnorePublicAcls": True})
    assert anon("GET", "/acme:photos/pub.txt")[0] == 403
    assert carol.get_object(Bucket="acme:photos", Key="p2")["Body"].read() == b"p", "grants to users still count"
    # BlockPublicPolicy refuses a public policy, not a private one.
    public_policy = json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                               "Resource": "arn:aws:s3:::photos/*"}]})
    alice.put_public_access_block(Bucket="photos", PublicAccessBlockConfiguration={"BlockPublicPolicy": True})
    expect_error("AccessDenied", alice.put_bucket_policy, Bucket="photos", Policy=public_policy)
    alice.put_bucket_policy(Bucket="photos", Policy=json.dumps({"Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::globex:user/carol"}, "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::photos/*"}]}))
    # RestrictPublicBuckets: a public policy serves only the bucket's tenant.
    alice.put_public_access_block(Bucket="photos", PublicAccessBlockConfiguration={"RestrictPublicBuckets": True})
    alice.put_bucket_policy(Bucket="photos", Policy=public_policy)
    assert anon("GET", "/acme:photos/priv.txt")[0] == 403
    expect_error("AccessDenied", carol.get_object, Bucket="acme:photos", Key="priv.txt")
    assert bob.get_object(Bucket="photos", Key="priv.txt")["Body"].read() == b"private"
    alice.delete_public_access_block(Bucket="photos")
    expect_error("NoSuchPublicAccessBlockConfiguration", alice.get_public_access_block, Bucket="photos")
    assert anon("GET", "/acme:photos/priv.txt") == (200, b"private")
    alice.delete_bucket_policy(Bucket="photos")
    assert anon("GET", "/acme:photos/priv.txt")[0] == 403


check("PublicAccessBlock: block and ignore public ACLs, block and restrict public policies", public_access_block)
print("all acl checks passed")
