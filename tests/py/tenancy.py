"""Multi-tenancy end to end: two tenants, three users, every operation.

Run by tests/tenancy.rs against `kura dev --gateways 2` with KURA_S3, KURA_DIR
(cluster.json, credentials), KURA_BIN (the kura binary, for `kura admin`) and
the root key in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.

- acme/alice owns acme:photos; acme/bob and globex/carol own nothing there.
- The isolation matrix: bob and carol try every implemented operation on
  alice's bucket and objects and get AccessDenied, and nothing changes.
- A bucket policy grant lets carol read one prefix of alice's bucket and
  nothing more; a public-read policy serves anonymous GETs (plain HTTP, no
  signature) but never anonymous PUTs; an explicit Deny beats ownership.
- A user policy lets bob read in his own tenant.
- A disabled key is refused by both gateways within 5 s, presigned URLs too.
"""
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from kura_kit import CLUSTER, DIR, ENDPOINT, KURA, admin, anon, check, client, expect_error, key_of


root = client(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])

# --- identities
admin("tenant", "create", "acme")
admin("tenant", "create", "globex")
alice_u = admin("user", "create", "--tenant", "acme", "--name", "alice", "--email", "alice@acme.example")
bob_u = admin("user", "create", "--tenant", "acme", "--name", "bob")
carol_u = admin("user", "create", "--tenant", "globex", "--name", "carol", "--id", "carol-canonical-id")
assert carol_u["id"] == "carol-canonical-id", carol_u


alice = client(*key_of(alice_u))
bob = client(*key_of(bob_u))
carol = client(*key_of(carol_u))
ALICE_ID, BOB_ID = alice_u["id"], bob_u["id"]


def identities():
    tenants = [t["name"] for t in admin("tenant", "list")["tenants"]]
    assert "acme" in tenants and "globex" in tenants, tenants
    users = admin("user", "list", "--tenant", "acme")["users"]
    assert sorted(u["name"] for u in users) == ["alice", "bob"], users
    assert all("secret_key" not in k for u in users for k in u["keys"]), "list shows no secrets"
    info = admin("user", "info", "--access-key", key_of(alice_u)[0])
    assert info["id"] == ALICE_ID and info["tenant"] == "acme" and info["email"] == "alice@acme.example", info
    root_info = admin("user", "info", "--access-key", os.environ["AWS_ACCESS_KEY_ID"])
    assert root_info["admin"] is True and root_info["tenant"] == "", root_info
    # Names are unique within a tenant, not across tenants.
    p = admin("user", "create", "--tenant", "acme", "--name", "alice", ok=False)
    assert p.returncode != 0 and "UserExists" in p.stderr, p.stderr
    admin("user", "create", "--tenant", "globex", "--name", "alice")
    p = admin("tenant", "delete", "acme", ok=False)
    assert p.returncode != 0 and "TenantNotEmpty" in p.stderr, p.stderr
    # Non-admins can't use the admin API.
    env = dict(os.environ, KURA_ADMIN_ACCESS_KEY=key_of(bob_u)[0], KURA_ADMIN_SECRET_KEY=key_of(bob_u)[1])
    p = subprocess.run([KURA, "admin", "--endpoint", ENDPOINT, "tenant", "list"], capture_output=True, text=True, env=env)
    assert p.returncode != 0, p.stdout
    # Secrets are sealed at rest: never in the metadata's files in the clear.
    secret = key_of(bob_u)[1].encode()
    for d, _, files in os.walk(DIR):
        if "metashard" not in d:
            continue
        for f in files:
            try:
                with open(os.path.join(d, f), "rb") as fh:
                    assert secret not in fh.read(), f"secret in clear in {d}/{f}"
            except (FileNotFoundError, PermissionError):
                pass


check("identities and admin API", identities)

# --- alice's bucket and state
alice.create_bucket(Bucket="photos")
alice.put_object(Bucket="photos", Key="a.txt", Body=b"alice's")
alice.put_object(Bucket="photos", Key="shared/s.txt", Body=b"shared")
alice.put_object(Bucket="photos", Key="public/p.txt", Body=b"public")
upload = alice.create_multipart_upload(Bucket="photos", Key="big")["UploadId"]
alice.upload_part(Bucket="photos", Key="big", UploadId=upload, PartNumber=1, Body=b"x" * 100)
carol.create_bucket(Bucket="photos")  # same name, other tenant
carol.put_object(Bucket="photos", Key="c.txt", Body=b"carol's")
bob.create_bucket(Bucket="bobs")
bob.put_object(Bucket="bobs", Key="b.txt", Body=b"bob's")


def state():
    objs = sorted((o["Key"], o["ETag"]) for o in alice.list_objects_v2(Bucket="photos").get("Contents", []))
    ups = [u["UploadId"] for u in alice.list_multipart_uploads(Bucket="photos").get("Uploads", [])]
    parts = [p["PartNumber"] for p in alice.list_parts(Bucket="photos", Key="big", UploadId=upload).get("Parts", [])]
    acls = (alice.get_bucket_acl(Bucket="photos")["Grants"], alice.get_object_acl(Bucket="photos", Key="a.txt")["Grants"])
    return objs, ups, parts, alice.get_object(Bucket="photos", Key="a.txt")["Body"].read(), acls


before = state()


def buckets_are_per_tenant():
    names = lambda c: [b["Name"] for b in c.list_buckets()["Buckets"]]
    assert names(alice) == ["photos"], names(alice)
    assert names(bob) == ["bobs"], names(bob)
    assert names(carol) == ["photos"], names(carol)
    assert "photos" not in names(root) and "bobs" not in names(root), names(root)
    assert carol.get_object(Bucket="photos", Key="c.txt")["Body"].read() == b"carol's"
    expect_error("NoSuchKey", carol.get_object, Bucket="photos", Key="a.txt")
    assert alice.list_buckets()["Owner"]["ID"] == ALICE_ID
    # Paging: max-buckets and the continuation token.
    for i in range(3):
        bob.create_bucket(Bucket=f"page-{i}")
    r = bob.list_buckets(MaxBuckets=2)
    assert [b["Name"] for b in r["Buckets"]] == ["bobs", "page-0"], r["Buckets"]
    r = bob.list_buckets(MaxBuckets=2, ContinuationToken=r["ContinuationToken"])
    assert [b["Name"] for b in r["Buckets"]] == ["page-1", "page-2"], r["Buckets"]
    assert "ContinuationToken" not in r, r
    for i in range(3):
        bob.delete_bucket(Bucket=f"page-{i}")
    # The root admin reaches a tenant's bucket by its qualified name.
    assert root.head_object(Bucket="acme:photos", Key="a.txt")["ContentLength"] == 7


check("ListBuckets shows each user its own buckets", buckets_are_per_tenant)


def matrix(who, bucket):
    """Every implemented operation on alice's bucket, as `who`."""
    ops = [
        ("ListObjects", lambda: who.list_objects(Bucket=bucket)),
        ("ListObjectsV2", lambda: who.list_objects_v2(Bucket=bucket)),
        ("HeadBucket", lambda: who.head_bucket(Bucket=bucket)),
        ("GetBucketLocation", lambda: who.get_bucket_location(Bucket=bucket)),
        ("GetBucketVersioning", lambda: who.get_bucket_versioning(Bucket=bucket)),
        ("GetObject", lambda: who.get_object(Bucket=bucket, Key="a.txt")),
        ("HeadObject", lambda: who.head_object(Bucket=bucket, Key="a.txt")),
        ("PutObject", lambda: who.put_object(Bucket=bucket, Key="a.txt", Body=b"evil")),
        ("PutObject new", lambda: who.put_object(Bucket=bucket, Key="new.txt", Body=b"evil")),
        ("CopyObject into", lambda: who.copy_object(Bucket=bucket, Key="a.txt", CopySource=own_source(who))),
        ("CopyObject out of", lambda: who.copy_object(Bucket=own_bucket(who), Key="stolen", CopySource=source(bucket, "a.txt"))),
        ("DeleteObject", lambda: who.delete_object(Bucket=bucket, Key="a.txt")),
        ("CreateMultipartUpload", lambda: who.create_multipart_upload(Bucket=bucket, Key="m")),
        ("UploadPart", lambda: who.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=2, Body=b"evil")),
        ("UploadPartCopy", lambda: who.upload_part_copy(Bucket=bucket, Key="big", UploadId=upload, PartNumber=2, CopySource=own_source(who))),
        ("ListParts", lambda: who.list_parts(Bucket=bucket, Key="big", UploadId=upload)),
        ("CompleteMultipartUpload", lambda: who.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": "x"}]})),
        ("AbortMultipartUpload", lambda: who.abort_multipart_upload(Bucket=bucket, Key="big", UploadId=upload)),
        ("ListMultipartUploads", lambda: who.list_multipart_uploads(Bucket=bucket)),
        ("GetBucketPolicy", lambda: who.get_bucket_policy(Bucket=bucket)),
        ("PutBucketPolicy", lambda: who.put_bucket_policy(Bucket=bucket, Policy=open_policy(bucket))),
        ("DeleteBucketPolicy", lambda: who.delete_bucket_policy(Bucket=bucket)),
        ("GetBucketAcl", lambda: who.get_bucket_acl(Bucket=bucket)),
        ("PutBucketAcl", lambda: who.put_bucket_acl(Bucket=bucket, ACL="public-read-write")),
        ("GetObjectAcl", lambda: who.get_object_acl(Bucket=bucket, Key="a.txt")),
        ("PutObjectAcl", lambda: who.put_object_acl(Bucket=bucket, Key="a.txt", ACL="public-read")),
        ("GetObjectAcl missing", lambda: who.get_object_acl(Bucket=bucket, Key="missing")),
        ("GetBucketOwnershipControls", lambda: who.get_bucket_ownership_controls(Bucket=bucket)),
        ("PutBucketOwnershipControls", lambda: who.put_bucket_ownership_controls(
            Bucket=bucket, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})),
        ("DeleteBucketOwnershipControls", lambda: who.delete_bucket_ownership_controls(Bucket=bucket)),
        ("GetPublicAccessBlock", lambda: who.get_public_access_block(Bucket=bucket)),
        ("PutPublicAccessBlock", lambda: who.put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration={"BlockPublicAcls": True})),
        ("DeletePublicAccessBlock", lambda: who.delete_public_access_block(Bucket=bucket)),
        ("DeleteBucket", lambda: who.delete_bucket(Bucket=bucket)),
    ]
    for name, op in ops:
        # s3s refuses a `tenant:bucket` copy source before any access check.
        code = "InvalidArgument" if name == "CopyObject out of" and ":" in bucket else "AccessDenied"
        try:
            expect_error(code, op)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}")
    # DeleteObjects answers 200 with a per-key AccessDenied.
    r = who.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a.txt"}, {"Key": "shared/s.txt"}]})
    assert not r.get("Deleted") and [e["Code"] for e in r["Errors"]] == ["AccessDenied"] * 2, r


def source(bucket, key):
    """A copy source. Another tenant's bucket can only be named as an
    access point ARN with the tenant as account, which s3s accepts for
    12-digit (AWS account id) tenant names; `tenant:bucket/key` itself is
    refused by s3s's header parser (400 InvalidArgument)."""
    if ":" in bucket:
        tenant, name = bucket.split(":")
        if len(tenant) == 12 and tenant.isdigit():
            return f"arn:aws:s3:us-east-1:{tenant}:accesspoint/{name}/object/{key}"
    return f"{bucket}/{key}"


def own_bucket(who):
    return "bobs" if who is bob else "photos"


def own_source(who):
    return "bobs/b.txt" if who is bob else "photos/c.txt"


def open_policy(bucket):
    name = bucket.split(":")[-1]
    return json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:*",
                                      "Resource": [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"]}]})


check("isolation: bob (same tenant) is refused everything", lambda: matrix(bob, "photos"))
check("isolation: carol (other tenant) is refused everything", lambda: matrix(carol, "acme:photos"))


def nothing_changed():
    after = state()
    assert after == before, f"{before} != {after}"
    expect_error("NoSuchKey", carol.get_object, Bucket="photos", Key="stolen")
    expect_error("NoSuchKey", bob.get_object, Bucket="bobs", Key="stolen")


check("isolation: nothing changed", nothing_changed)


def policy_grant():
    policy = {"Version": "2012-10-17", "Statement": [
        {"Sid": "carol-reads-shared", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::globex:user/carol"},
         "Action": "s3:GetObject", "Resource": "arn:aws:s3:::photos/shared/*"}]}
    alice.put_bucket_policy(Bucket="photos", Policy=json.dumps(policy))
    got = json.loads(alice.get_bucket_policy(Bucket="photos")["Policy"])
    assert got["Statement"][0]["Sid"] == "carol-reads-shared", got
    assert carol.get_object(Bucket="acme:photos", Key="shared/s.txt")["Body"].read() == b"shared"
    expect_error("AccessDenied", carol.get_object, Bucket="acme:photos", Key="a.txt")
    expect_error("AccessDenied", carol.list_objects_v2, Bucket="acme:photos")
    expect_error("AccessDenied", carol.put_object, Bucket="acme:photos", Key="shared/x", Body=b"x")
    expect_error("AccessDenied", carol.delete_object, Bucket="acme:photos", Key="shared/s.txt")
    expect_error("AccessDenied", bob.get_object, Bucket="photos", Key="shared/s.txt")
    # Carol may copy what she may read into her own bucket.
    # Malformed policies are refused, the old one stays.
    expect_error("MalformedPolicy", alice.put_bucket_policy, Bucket="photos", Policy="{not json")
    expect_error("MalformedPolicy", alice.put_bucket_policy, Bucket="photos",
                 Policy=json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                   "Resource": "arn:aws:s3:::otherbucket/*"}]}))
    assert json.loads(alice.get_bucket_policy(Bucket="photos")["Policy"]) == got


check("a bucket policy grants another tenant one prefix, nothing more", policy_grant)


def cross_tenant_copy():
    # A tenant named like an AWS account id: its buckets can be a copy
    # source as `arn:aws:s3:REGION:ACCOUNT:accesspoint/BUCKET/object/KEY`.
    admin("tenant", "create", "123456789012")
    dave = client(*key_of(admin("user", "create", "--tenant", "123456789012", "--name", "dave")))
    dave.create_bucket(Bucket="vault")
    dave.put_object(Bucket="vault", Key="open/o.txt", Body=b"open")
    dave.put_object(Bucket="vault", Key="closed.txt", Body=b"closed")
    expect_error("AccessDenied", carol.copy_object, Bucket="photos", Key="o", CopySource=source("123456789012:vault", "open/o.txt"))
    dave.put_bucket_policy(Bucket="vault", Policy=json.dumps({"Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::globex:user/carol"},
        "Action": "s3:GetObject", "Resource": "arn:aws:s3:::vault/open/*"}]}))
    carol.copy_object(Bucket="photos", Key="o", CopySource=source("123456789012:vault", "open/o.txt"))
    assert carol.get_object(Bucket="photos", Key="o")["Body"].read() == b"open"
    expect_error("AccessDenied", carol.copy_object, Bucket="photos", Key="c", CopySource=source("123456789012:vault", "closed.txt"))
    # The destination needs s3:PutObject: a grant to read is no grant to write.
    expect_error("AccessDenied", carol.copy_object, Bucket="123456789012:vault", Key="x", CopySource="photos/c.txt")


check("CopyObject needs read on the source, write on the destination", cross_tenant_copy)


def anonymous():
    policy = {"Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::photos/public/*"},
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::globex:user/carol"},
         "Action": "s3:GetObject", "Resource": "arn:aws:s3:::photos/shared/*"}]}
    alice.put_bucket_policy(Bucket="photos", Policy=json.dumps(policy))
    assert alice.get_bucket_policy_status(Bucket="photos")["PolicyStatus"]["IsPublic"] is True
    with urllib.request.urlopen(f"{ENDPOINT}/acme:photos/public/p.txt") as r:
        assert r.status == 200 and r.read() == b"public"

    assert anon("GET", "/acme:photos/a.txt")[0] == 403
    status, body = anon("PUT", "/acme:photos/public/evil", data=b"evil")
    assert status == 403 and b"AccessDenied" in body, (status, body)
    assert anon("GET", "/acme:photos")[0] == 403, "anonymous LIST"
    assert anon("GET", "/")[0] == 403, "anonymous ListBuckets"
    assert anon("GET", "/acme:nosuchbucket/x")[0] == 403, "anonymous learns nothing of names"
    expect_error("NoSuchKey", alice.get_object, Bucket="photos", Key="public/evil")


check("anonymous GET through a public policy, never PUT", anonymous)


def explicit_deny_wins():
    policy = {"Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::photos/a.txt"}]}
    alice.put_bucket_policy(Bucket="photos", Policy=json.dumps(policy))
    expect_error("AccessDenied", alice.delete_object, Bucket="photos", Key="a.txt")
    r = alice.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": "a.txt"}]})
    assert [e["Code"] for e in r.get("Errors", [])] == ["AccessDenied"], r
    alice.delete_bucket_policy(Bucket="photos")
    expect_error("NoSuchBucketPolicy", alice.get_bucket_policy, Bucket="photos")


check("an explicit deny beats ownership", explicit_deny_wins)


def user_policy():
    doc = {"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                          "Resource": ["arn:aws:s3:::photos", "arn:aws:s3:::photos/*"]}]}
    path = os.path.join(DIR, "bob-policy.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    admin("user", "policy", "set", "--id", BOB_ID, "--file", path)
    deadline = time.time() + 5
    while True:
        try:
            assert bob.get_object(Bucket="photos", Key="a.txt")["Body"].read() == b"alice's"
            break
        except ClientError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    assert len(bob.list_objects_v2(Bucket="photos")["Contents"]) >= 3
    expect_error("AccessDenied", bob.put_object, Bucket="photos", Key="x", Body=b"x")
    # A user policy reaches only its own tenant's buckets.
    expect_error("AccessDenied", bob.get_object, Bucket="globex:photos", Key="c.txt")
    # A user policy naming a Principal is refused.
    with open(path, "w") as f:
        json.dump({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "*"}]}, f)
    p = admin("user", "policy", "set", "--id", BOB_ID, "--file", path, ok=False)
    assert p.returncode != 0 and "MalformedPolicy" in p.stderr, p.stderr
    admin("user", "policy", "delete", "--id", BOB_ID)


check("a user policy grants within its tenant", user_policy)


def disabled_key_everywhere():
    other = json.load(open(CLUSTER))
    endpoints = [c["s3"] for c in other["components"] if c["role"] == "gateway"]
    assert len(endpoints) == 2, endpoints
    k = admin("key", "create", "--user", BOB_ID)
    ak, sk = k["access_key"], k["secret_key"]
    clients = [client(ak, sk, e) for e in endpoints]
    for c in clients:  # both gateways now cache the key as valid
        c.head_object(Bucket="bobs", Key="b.txt")
    presigned = clients[1].generate_presigned_url("get_object", Params={"Bucket": "bobs", "Key": "b.txt"}, ExpiresIn=600)
    with urllib.request.urlopen(presigned) as r:
        assert r.read() == b"bob's"
    admin("key", "disable", "--access-key", ak)
    t0 = time.time()
    refused = [False, False]
    while not all(refused):
        assert time.time() - t0 < 5, f"disabled key still accepted after 5 s: {refused}"
        for i, c in enumerate(clients):
            if not refused[i]:
                try:
                    c.head_object(Bucket="bobs", Key="b.txt")
                except ClientError as e:
                    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403, e
                    refused[i] = True
        time.sleep(0.1)
    print(f"     disabled key refused by both gateways after {time.time() - t0:.2f} s")
    try:
        urllib.request.urlopen(presigned)
        raise AssertionError("presigned URL of a disabled key still works")
    except urllib.error.HTTPError as e:
        assert e.code == 403, e.code
    # Enabled again, then deleted: the same on both gateways.
    admin("key", "enable", "--access-key", ak)
    deadline = time.time() + 5
    while True:
        try:
            for c in clients:
                c.head_object(Bucket="bobs", Key="b.txt")
            break
        except ClientError:
            assert time.time() < deadline, "re-enabled key still refused after 5 s"
            time.sleep(0.1)
    admin("key", "delete", "--access-key", ak)
    deadline = time.time() + 5
    for c in clients:
        while True:
            try:
                c.head_object(Bucket="bobs", Key="b.txt")
                assert time.time() < deadline, "deleted key still accepted after 5 s"
                time.sleep(0.1)
            except ClientError as e:
                assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403, e
                break
    keys = [x["access_key"] for x in admin("key", "list", "--user", BOB_ID)["keys"]]
    assert ak not in keys and len(keys) == 1, keys


check("a disabled or deleted key is refused on every gateway within 5 s", disabled_key_everywhere)


def long_presign_refused():
    ak, sk = key_of(alice_u)
    for version in ["s3v4", "s3"]:
        c = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id=ak,
                         aws_secret_access_key=sk,
                         config=Config(signature_version=version, s3={"addressing_style": "path"}))
        ok = c.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "a.txt"}, ExpiresIn=604800 - 60)
        with urllib.request.urlopen(ok) as r:
            assert r.read() == b"alice's", version
        url = c.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "a.txt"}, ExpiresIn=604801 + 60)
        try:
            urllib.request.urlopen(url)
            raise AssertionError(f"a {version} presigned URL valid for more than 7 days was served")
        except urllib.error.HTTPError as e:
            assert e.code == 400 and b"AuthorizationQueryParametersError" in e.read(), (version, e.code)


check("presigned URLs live at most 7 days", long_presign_refused)


def sigv2_replay_refused():
    import base64
    import hashlib
    import hmac
    from email.utils import formatdate

    ak, sk = key_of(alice_u)

    def v2_get(date):
        sig = base64.b64encode(hmac.new(sk.encode(), f"GET\n\n\n{date}\n/photos/a.txt".encode(), hashlib.sha1).digest()).decode()
        req = urllib.request.Request(f"{ENDPOINT}/photos/a.txt", headers={"Date": date, "Authorization": f"AWS {ak}:{sig}"})
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    assert v2_get(formatdate(usegmt=True)) == (200, b"alice's")
    status, body = v2_get(formatdate(time.time() - 16 * 60, usegmt=True))
    assert status == 403 and b"RequestTimeTooSkewed" in body, (status, body)


check("SigV2 requests older than 15 minutes are refused", sigv2_replay_refused)


def cleanup_rules():
    p = admin("user", "delete", "--id", ALICE_ID, ok=False)
    assert p.returncode != 0 and "UserOwnsBuckets" in p.stderr, p.stderr
    info = admin("bucket", "info", "acme:photos")
    assert info["owner"] == ALICE_ID and info["tenant"] == "acme", info


check("users with buckets can't be deleted; bucket info", cleanup_rules)


def traffic_is_counted():
    rep = admin("usage", "--tenant", "acme")
    photos = [b for b in rep["buckets"] if b["name"] == "photos"][0]
    alice_use = [u for u in rep["users"] if u["id"] == ALICE_ID][0]
    acme = rep["tenants"][0]
    # Requests this script made as alice on her bucket; carol's reads count on the bucket too.
    assert photos["requests"] >= 10 and photos["bytes_in"] >= len(b"alice's"), photos
    assert photos["bytes_out"] > 0, photos
    assert alice_use["requests"] >= 10 and acme["requests"] >= alice_use["requests"], (alice_use, acme)
    status = [c["status"] for c in json.load(open(CLUSTER))["components"] if c["id"] == "gateway-1"][0]
    with urllib.request.urlopen(f"http://{status}/metrics") as r:
        text = r.read().decode()
    assert 'kura_tenant_requests_total{tenant="acme"}' in text, "per-tenant series"
    assert 'kura_tenant_requests_total{tenant="other"}' in text, "the bounded rest"


check("requests and bytes are counted per tenant, user and bucket", traffic_is_counted)
print("all tenancy checks passed")
