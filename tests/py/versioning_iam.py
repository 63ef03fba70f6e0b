"""Versioning under IAM and skewed clocks (docs/decisions/0035).

Run by tests/versioning_iam.rs against `kura dev --gateways 2` with KURA_S3,
KURA_DIR (cluster.json), KURA_BIN (for `kura admin`), the root key in
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. With SKEWED=1 gateway-2's version
clock runs an hour behind (failpoint gateway::clock_offset_ms).

acme/alice owns a versioned bucket. acme/bob's user policy allows only the
plain actions (s3:GetObject, s3:DeleteObject, s3:ListBucket, ...), acme/carol's
only their *Version forms (s3:GetObjectVersion, s3:DeleteObjectVersion,
s3:ListBucketVersions, ...): each may do exactly what AWS lets it do.
"""
import json
import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import ClientError
from kura_kit import CLUSTER, DIR, admin, check, client, expect_error, key_of

B = "vers"
ROOT = client(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])

admin("tenant", "create", "acme")
alice_u = admin("user", "create", "--tenant", "acme", "--name", "alice")
bob_u = admin("user", "create", "--tenant", "acme", "--name", "bob")
carol_u = admin("user", "create", "--tenant", "acme", "--name", "carol")
alice, bob, carol = (client(*key_of(u)) for u in (alice_u, bob_u, carol_u))

PLAIN = ["s3:GetObject", "s3:DeleteObject", "s3:ListBucket", "s3:GetBucketVersioning",
         "s3:GetObjectTagging", "s3:PutObjectTagging", "s3:DeleteObjectTagging",
         "s3:GetObjectAcl", "s3:PutObjectAcl", "s3:GetObjectAttributes", "s3:PutObject"]
VERSION = ["s3:GetObjectVersion", "s3:DeleteObjectVersion", "s3:ListBucketVersions",
           "s3:PutBucketVersioning", "s3:GetObjectVersionTagging", "s3:PutObjectVersionTagging",
           "s3:DeleteObjectVersionTagging", "s3:GetObjectVersionAcl", "s3:PutObjectVersionAcl",
           "s3:GetObjectVersionAttributes", "s3:PutObject"]


def set_policy(user, actions):
    doc = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": actions,
        "Resource": [f"arn:aws:s3:::{B}", f"arn:aws:s3:::{B}/*"]}]}
    path = os.path.join(DIR, f"{user['name']}-policy.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    admin("user", "policy", "set", "--id", user["id"], "--file", path)


alice.create_bucket(Bucket=B)
alice.put_bucket_versioning(Bucket=B, VersioningConfiguration={"Status": "Enabled"})
V1 = alice.put_object(Bucket=B, Key="k", Body=b"one")["VersionId"]
V2 = alice.put_object(Bucket=B, Key="k", Body=b"two")["VersionId"]
alice.put_object_tagging(Bucket=B, Key="k", VersionId=V1, Tagging={"TagSet": [{"Key": "t", "Value": "v1"}]})
set_policy(bob_u, PLAIN)
set_policy(carol_u, VERSION)
# `kura admin` changed the policies through this gateway: in force at once,
# but allow the documented 2 s cache anyway.
deadline = time.time() + 5
while True:
    try:
        bob.get_object(Bucket=B, Key="k")
        carol.get_object(Bucket=B, Key="k", VersionId=V1)
        break
    except ClientError:
        if time.time() > deadline:
            raise
        time.sleep(0.2)


def tags(resp):
    return {t["Key"]: t["Value"] for t in resp["TagSet"]}


def plain_reads():
    # The latest, unnamed: allowed to bob, refused to carol.
    assert bob.get_object(Bucket=B, Key="k")["Body"].read() == b"two"
    assert bob.head_object(Bucket=B, Key="k")["VersionId"] == V2
    expect_error("AccessDenied", carol.get_object, Bucket=B, Key="k")
    expect_error("AccessDenied", carol.head_object, Bucket=B, Key="k")
    # A named version, even the latest one: the other way round.
    for v in (V1, V2):
        expect_error("AccessDenied", bob.get_object, Bucket=B, Key="k", VersionId=v)
        expect_error("AccessDenied", bob.head_object, Bucket=B, Key="k", VersionId=v)
    assert carol.get_object(Bucket=B, Key="k", VersionId=V1)["Body"].read() == b"one"
    assert carol.head_object(Bucket=B, Key="k", VersionId=V2)["ContentLength"] == 3
    # versionId=null names a version too; a missing version is news only
    # to whoever may list versions (bob may list keys, not versions).
    expect_error("AccessDenied", bob.get_object, Bucket=B, Key="k", VersionId="null")
    expect_error("AccessDenied", bob.get_object, Bucket=B, Key="k", VersionId="0000000000000001")
    expect_error("NoSuchVersion", carol.get_object, Bucket=B, Key="k", VersionId="0000000000000001")
    # GetObjectAttributes: s3:GetObjectVersionAttributes for a named version.
    got = bob.get_object_attributes(Bucket=B, Key="k", ObjectAttributes=["ObjectSize"])
    assert got["ObjectSize"] == 3 and got["VersionId"] == V2, got
    expect_error("AccessDenied", bob.get_object_attributes, Bucket=B, Key="k", VersionId=V1,
                 ObjectAttributes=["ObjectSize"])
    got = carol.get_object_attributes(Bucket=B, Key="k", VersionId=V1, ObjectAttributes=["ObjectSize"])
    assert got["ObjectSize"] == 3 and got["VersionId"] == V1, got


check("GetObject / HeadObject vs GetObjectVersion", plain_reads)


def listing():
    assert [o["Key"] for o in bob.list_objects_v2(Bucket=B)["Contents"]] == ["k"]
    assert [o["Key"] for o in bob.list_objects(Bucket=B)["Contents"]] == ["k"]
    expect_error("AccessDenied", bob.list_object_versions, Bucket=B)
    got = carol.list_object_versions(Bucket=B)
    assert [(v["VersionId"], v["IsLatest"]) for v in got["Versions"]] == [(V2, True), (V1, False)], got
    expect_error("AccessDenied", carol.list_objects_v2, Bucket=B)
    expect_error("AccessDenied", carol.list_objects, Bucket=B)


check("ListBucket vs ListBucketVersions", listing)


def bucket_versioning():
    assert bob.get_bucket_versioning(Bucket=B)["Status"] == "Enabled"
    expect_error("AccessDenied", bob.put_bucket_versioning, Bucket=B,
                 VersioningConfiguration={"Status": "Suspended"})
    expect_error("AccessDenied", carol.get_bucket_versioning, Bucket=B)
    carol.put_bucket_versioning(Bucket=B, VersioningConfiguration={"Status": "Suspended"})
    assert alice.get_bucket_versioning(Bucket=B)["Status"] == "Suspended"
    carol.put_bucket_versioning(Bucket=B, VersioningConfiguration={"Status": "Enabled"})
    assert alice.get_bucket_versioning(Bucket=B)["Status"] == "Enabled"


check("GetBucketVersioning vs PutBucketVersioning", bucket_versioning)


def tagging():
    # Bob tags and reads the latest's tags; never a named version's.
    bob.put_object_tagging(Bucket=B, Key="k", Tagging={"TagSet": [{"Key": "t", "Value": "bob"}]})
    assert tags(bob.get_object_tagging(Bucket=B, Key="k")) == {"t": "bob"}
    expect_error("AccessDenied", bob.get_object_tagging, Bucket=B, Key="k", VersionId=V1)
    expect_error("AccessDenied", bob.put_object_tagging, Bucket=B, Key="k", VersionId=V1,
                 Tagging={"TagSet": [{"Key": "t", "Value": "evil"}]})
    expect_error("AccessDenied", bob.delete_object_tagging, Bucket=B, Key="k", VersionId=V1)
    # Carol the reverse; her writes land on the version she names.
    assert tags(carol.get_object_tagging(Bucket=B, Key="k", VersionId=V1)) == {"t": "v1"}
    carol.put_object_tagging(Bucket=B, Key="k", VersionId=V1,
                             Tagging={"TagSet": [{"Key": "t", "Value": "carol"}]})
    assert tags(alice.get_object_tagging(Bucket=B, Key="k", VersionId=V1)) == {"t": "carol"}
    assert tags(alice.get_object_tagging(Bucket=B, Key="k")) == {"t": "bob"}
    expect_error("AccessDenied", carol.get_object_tagging, Bucket=B, Key="k")
    expect_error("AccessDenied", carol.put_object_tagging, Bucket=B, Key="k",
                 Tagging={"TagSet": [{"Key": "t", "Value": "evil"}]})
    expect_error("AccessDenied", carol.delete_object_tagging, Bucket=B, Key="k")
    carol.delete_object_tagging(Bucket=B, Key="k", VersionId=V1)
    assert tags(alice.get_object_tagging(Bucket=B, Key="k", VersionId=V1)) == {}
    bob.delete_object_tagging(Bucket=B, Key="k")
    assert tags(alice.get_object_tagging(Bucket=B, Key="k")) == {}


check("object tagging vs its Version actions", tagging)


def acls():
    owner = alice_u["id"]
    assert bob.get_object_acl(Bucket=B, Key="k")["Owner"]["ID"] == owner
    expect_error("AccessDenied", bob.get_object_acl, Bucket=B, Key="k", VersionId=V1)
    expect_error("AccessDenied", bob.put_object_acl, Bucket=B, Key="k", VersionId=V1, ACL="public-read")
    assert carol.get_object_acl(Bucket=B, Key="k", VersionId=V1)["Owner"]["ID"] == owner
    expect_error("AccessDenied", carol.get_object_acl, Bucket=B, Key="k")
    expect_error("AccessDenied", carol.put_object_acl, Bucket=B, Key="k", ACL="public-read")
    carol.put_object_acl(Bucket=B, Key="k", VersionId=V1, ACL="public-read")
    uris = {g["Grantee"].get("URI") for g in alice.get_object_acl(Bucket=B, Key="k", VersionId=V1)["Grants"]}
    assert "http://acs.amazonaws.com/groups/global/AllUsers" in uris, uris
    # Only the named version changed.
    assert len(alice.get_object_acl(Bucket=B, Key="k")["Grants"]) == 1
    bob.put_object_acl(Bucket=B, Key="k", ACL="private")
    carol.put_object_acl(Bucket=B, Key="k", VersionId=V1, ACL="private")
    assert len(alice.get_object_acl(Bucket=B, Key="k", VersionId=V1)["Grants"]) == 1


check("object ACLs vs GetObjectVersionAcl / PutObjectVersionAcl", acls)


def copies():
    # A named copy source needs s3:GetObjectVersion on it.
    expect_error("AccessDenied", bob.copy_object, Bucket=B, Key="c",
                 CopySource={"Bucket": B, "Key": "k", "VersionId": V1})
    bob.copy_object(Bucket=B, Key="c", CopySource={"Bucket": B, "Key": "k"})
    assert alice.get_object(Bucket=B, Key="c")["Body"].read() == b"two"
    expect_error("AccessDenied", carol.copy_object, Bucket=B, Key="c", CopySource={"Bucket": B, "Key": "k"})
    carol.copy_object(Bucket=B, Key="c", CopySource={"Bucket": B, "Key": "k", "VersionId": V1})
    assert alice.get_object(Bucket=B, Key="c")["Body"].read() == b"one"


check("CopyObject sources: GetObject vs GetObjectVersion", copies)


def deletes():
    # Bob may not remove a version (and nothing changes when refused)...
    expect_error("AccessDenied", bob.delete_object, Bucket=B, Key="k", VersionId=V1)
    got = bob.delete_objects(Bucket=B, Delete={"Objects": [{"Key": "k", "VersionId": V1}]})
    assert [e["Code"] for e in got.get("Errors", [])] == ["AccessDenied"], got
    assert alice.get_object(Bucket=B, Key="k", VersionId=V1)["Body"].read() == b"one"
    # ...carol may not hide the object under a delete marker.
    expect_error("AccessDenied", carol.delete_object, Bucket=B, Key="k")
    got = carol.delete_objects(Bucket=B, Delete={"Objects": [{"Key": "k"}]})
    assert [e["Code"] for e in got.get("Errors", [])] == ["AccessDenied"], got
    assert alice.get_object(Bucket=B, Key="k")["VersionId"] == V2
    # Each does what its policy allows.
    carol.delete_object(Bucket=B, Key="k", VersionId=V1)
    expect_error("NoSuchVersion", alice.get_object, Bucket=B, Key="k", VersionId=V1)
    marker = bob.delete_object(Bucket=B, Key="k")
    assert marker["DeleteMarker"] is True, marker
    expect_error("NoSuchKey", alice.get_object, Bucket=B, Key="k")
    got = carol.delete_objects(Bucket=B, Delete={"Objects": [{"Key": "k", "VersionId": marker["VersionId"]}]})
    assert not got.get("Errors") and got["Deleted"][0]["DeleteMarker"] is True, got
    assert alice.get_object(Bucket=B, Key="k")["VersionId"] == V2


check("DeleteObject vs DeleteObjectVersion (single and batch)", deletes)


# --- skewed clocks ---------------------------------------------------------

SKEWED = os.environ.get("SKEWED") == "1"
gw = [c["s3"] for c in json.load(open(CLUSTER))["components"] if c["role"] == "gateway"]
assert len(gw) == 2, gw
on = [client(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"], e) for e in gw]
S = "skew"
ROOT.create_bucket(Bucket=S)
ROOT.put_bucket_versioning(Bucket=S, VersioningConfiguration={"Status": "Enabled"})


def ms_of(vid):
    return int(vid, 16) >> 16


def latest_everywhere(key, body, vid):
    for c in on:
        got = c.get_object(Bucket=S, Key=key)
        assert (got["Body"].read(), got["VersionId"]) == (body, vid), (key, body, vid, got["VersionId"])
    v = ROOT.list_object_versions(Bucket=S, Prefix=key)
    rows = v.get("Versions", []) + v.get("DeleteMarkers", [])
    latest = [r["VersionId"] for r in rows if r["IsLatest"]]
    assert latest == [vid], (latest, vid)
    assert v["Versions"][0]["VersionId"] == vid, v["Versions"]


def skewed_clock():
    if SKEWED:
        # The failpoint took: a fresh key's id carries gateway-2's lagging clock.
        fresh = on[1].put_object(Bucket=S, Key="fresh", Body=b"f")["VersionId"]
        lag = time.time() * 1000 - ms_of(fresh)
        assert 3_540_000 < lag < 3_660_000, f"gateway-2 lags {lag} ms"
    v1 = on[0].put_object(Bucket=S, Key="k", Body=b"1")["VersionId"]
    v2 = on[1].put_object(Bucket=S, Key="k", Body=b"2")["VersionId"]
    assert int(v2, 16) > int(v1, 16), (v1, v2)
    latest_everywhere("k", b"2", v2)
    v3 = on[0].put_object(Bucket=S, Key="k", Body=b"3")["VersionId"]
    latest_everywhere("k", b"3", v3)
    # Delete the newest by id, then write again from the lagging gateway:
    # above what is left, never below.
    v4 = on[0].put_object(Bucket=S, Key="k", Body=b"4")["VersionId"]
    on[1].delete_object(Bucket=S, Key="k", VersionId=v4)
    v5 = on[1].put_object(Bucket=S, Key="k", Body=b"5")["VersionId"]
    assert int(v5, 16) > int(v3, 16) and v5 not in (v1, v2, v3), (v3, v5)
    latest_everywhere("k", b"5", v5)
    # A delete marker and a multipart upload from the lagging gateway are the latest too.
    m = on[1].delete_object(Bucket=S, Key="k")
    assert m["DeleteMarker"] is True and int(m["VersionId"], 16) > int(v5, 16), m
    expect_error("NoSuchKey", on[0].get_object, Bucket=S, Key="k")
    v6 = on[0].put_object(Bucket=S, Key="k", Body=b"6")["VersionId"]
    up = on[1].create_multipart_upload(Bucket=S, Key="k")["UploadId"]
    part = on[1].upload_part(Bucket=S, Key="k", UploadId=up, PartNumber=1, Body=b"7")
    v7 = on[1].complete_multipart_upload(Bucket=S, Key="k", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})["VersionId"]
    assert int(v7, 16) > int(v6, 16), (v6, v7)
    latest_everywhere("k", b"7", v7)
    # Suspended: the lagging gateway's null version goes above the others.
    ROOT.put_bucket_versioning(Bucket=S, VersioningConfiguration={"Status": "Suspended"})
    assert on[1].put_object(Bucket=S, Key="k", Body=b"null")["VersionId"] == "null"
    latest_everywhere("k", b"null", "null")
    ROOT.put_bucket_versioning(Bucket=S, VersioningConfiguration={"Status": "Enabled"})
    v8 = on[1].put_object(Bucket=S, Key="k", Body=b"8")["VersionId"]
    latest_everywhere("k", b"8", v8)
    ids = [r["VersionId"] for r in ROOT.list_object_versions(Bucket=S, Prefix="k")["Versions"]]
    assert len(ids) == len(set(ids)), ids


check("a gateway an hour behind still writes the latest version" if SKEWED
      else "versions from two gateways (clocks not skewed: no failpoints)", skewed_clock)

# --- LIST with a delimiter ---------------------------------------------------

def keys_read():
    """What the metashard stores' scans read (cf META), summed over the stores."""
    total = 0
    for c in json.load(open(CLUSTER))["components"]:
        if c["role"] != "metashard":
            continue
        with urllib.request.urlopen(f"http://{c['status']}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("kura_metashard_scan_keys_read_total{") and 'cf="meta"' in line:
                    total += int(float(line.rsplit(" ", 1)[1]))
    return total


def delimiter_listing():
    per_dir = 200
    for b in ("dirs", "vdirs"):
        ROOT.create_bucket(Bucket=b)
    ROOT.put_bucket_versioning(Bucket="vdirs", VersioningConfiguration={"Status": "Enabled"})
    names = [f"{d}/{i:03}" for d in ("d1", "d2", "d3") for i in range(per_dir)] + ["top"]
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda a: ROOT.put_object(Bucket=a[0], Key=a[1], Body=b"x"),
                    [(b, n) for b in ("dirs", "vdirs") for n in names]))
    # "gone/" holds only delete markers, "half/" a marker first, then a live key.
    for n in ("gone/a", "gone/b", "half/a", "half/b"):
        ROOT.put_object(Bucket="vdirs", Key=n, Body=b"x")
    for n in ("gone/a", "gone/b", "half/a"):
        ROOT.delete_object(Bucket="vdirs", Key=n)
    for b, want in (("dirs", ["d1/", "d2/", "d3/"]), ("vdirs", ["d1/", "d2/", "d3/", "half/"])):
        before = keys_read()
        r = ROOT.list_objects_v2(Bucket=b, Delimiter="/")
        read = keys_read() - before
        print(f"     {b}: ListObjectsV2 delimiter '/' read {read} keys for {len(names)} objects")
        assert [p["Prefix"] for p in r["CommonPrefixes"]] == want, r["CommonPrefixes"]
        assert [o["Key"] for o in r["Contents"]] == ["top"], r["Contents"]
        # One key per common prefix (plus what a probe of "gone/" and
        # "half/" reads), not the 600 keys under them.
        assert read < 40, f"{b}: read {read} keys"
        # Pages of one entry agree.
        got, token = [], None
        while True:
            kw = {"ContinuationToken": token} if token else {}
            r = ROOT.list_objects_v2(Bucket=b, Delimiter="/", MaxKeys=1, **kw)
            got += [p["Prefix"] for p in r.get("CommonPrefixes", [])] + [o["Key"] for o in r.get("Contents", [])]
            if not r["IsTruncated"]:
                break
            token = r["NextContinuationToken"]
        assert got == want + ["top"], got
    # ListObjectVersions lists every version: "gone/" is a common prefix there.
    before = keys_read()
    v = ROOT.list_object_versions(Bucket="vdirs", Delimiter="/")
    read = keys_read() - before
    assert [p["Prefix"] for p in v["CommonPrefixes"]] == ["d1/", "d2/", "d3/", "gone/", "half/"], v
    assert [x["Key"] for x in v["Versions"]] == ["top"], v["Versions"]
    assert read < 40, f"ListObjectVersions read {read} keys"
    under = ROOT.list_objects_v2(Bucket="vdirs", Prefix="d2/", Delimiter="/")
    assert under["KeyCount"] == per_dir and "CommonPrefixes" not in under, under["KeyCount"]


check("a LIST with a delimiter reads one key per common prefix", delimiter_listing)

print("all versioning_iam checks passed")
