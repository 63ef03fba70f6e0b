"""Storage quotas and usage accounting end to end (tests/quota.rs).

Run against `kura dev` with KURA_S3, KURA_DIR, KURA_BIN and the root key in
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Quotas are set with `kura admin
quota set`; the checks:
- a bucket quota stops objects and bytes exactly at the boundary, counts an
  overwrite by its difference, and counts deletes at once;
- a burst of parallel PUTs through one gateway stops exactly at the quota;
- with two gateways, writes alternating between them past 90% of a limit
  stop exactly at it (once each gateway's estimate is renewed, within 1 s),
  and a delete through one makes room on the other at once;
- user quotas span the user's buckets; bucket-count quotas stop CreateBucket;
- `kura admin usage` matches what is stored, after overwrites and deletes
  (written to DIR/usage-before.json: the Rust side checks it survives a
  kill -9 of every metadata store);
- PUTs of new keys commit without reading first (decision 0053), and
  overwrites after them, 30 at once on 10 keys, still replace, reclaim every
  replaced body and count usage exactly.
"""
import concurrent.futures
import json
import os
import time

from botocore.exceptions import ClientError

from kura_kit import DIR, admin, check, client, components, expect_error, metric_sum


def expect_quota_exceeded(fn, *a, **kw):
    expect_error("QuotaExceeded", fn, *a, status=403, **kw)


admin("tenant", "create", "acme")
alice_u = admin("user", "create", "--tenant", "acme", "--name", "alice")
alice = client(alice_u["keys"][0]["access_key"], alice_u["keys"][0]["secret_key"], max_pool_connections=64)
ALICE = alice_u["id"]


def usage_of(bucket):
    rep = admin("usage", "--tenant", "acme")
    for b in rep["buckets"]:
        if b["name"] == bucket:
            return b["bytes"], b["objects"]
    raise AssertionError(f"{bucket} not in usage report {rep}")


def object_quota():
    alice.create_bucket(Bucket="counted")
    q = admin("quota", "set", "--scope", "bucket", "--tenant", "acme", "--bucket", "counted", "--max-objects", "3")
    assert q["max_objects"] == 3 and q["max_bytes"] is None, q
    for i in range(3):
        alice.put_object(Bucket="counted", Key=f"k{i}", Body=b"x" * 10)
    expect_quota_exceeded(alice.put_object, Bucket="counted", Key="k3", Body=b"x")
    # An overwrite adds no object.
    alice.put_object(Bucket="counted", Key="k0", Body=b"y" * 20)
    # A copy and a multipart upload are writes too.
    expect_quota_exceeded(alice.copy_object, Bucket="counted", Key="k4", CopySource="counted/k1")
    up = alice.create_multipart_upload(Bucket="counted", Key="big")["UploadId"]
    etag = alice.upload_part(Bucket="counted", Key="big", UploadId=up, PartNumber=1, Body=b"z" * 100)["ETag"]
    expect_quota_exceeded(alice.complete_multipart_upload, Bucket="counted", Key="big", UploadId=up,
                          MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    # A delete makes room at once.
    alice.delete_object(Bucket="counted", Key="k2")
    alice.put_object(Bucket="counted", Key="k3", Body=b"x")
    expect_quota_exceeded(alice.put_object, Bucket="counted", Key="k5", Body=b"x")
    assert usage_of("counted") == (20 + 10 + 1, 3), usage_of("counted")
    # Removing the limit lifts it.
    q = admin("quota", "set", "--scope", "bucket", "--tenant", "acme", "--bucket", "counted", "--max-objects", "none")
    assert q["max_objects"] is None, q
    alice.put_object(Bucket="counted", Key="k5", Body=b"x")
    alice.abort_multipart_upload(Bucket="counted", Key="big", UploadId=up)


check("a bucket's object quota holds exactly, overwrites and deletes counted", object_quota)


def byte_quota():
    alice.create_bucket(Bucket="sized")
    admin("quota", "set", "--scope", "bucket", "--tenant", "acme", "--bucket", "sized", "--max-bytes", "10000")
    alice.put_object(Bucket="sized", Key="a", Body=b"a" * 6000)
    alice.put_object(Bucket="sized", Key="b", Body=b"b" * 4000)  # exactly at the quota
    expect_quota_exceeded(alice.put_object, Bucket="sized", Key="c", Body=b"c")
    expect_quota_exceeded(alice.put_object, Bucket="sized", Key="b", Body=b"b" * 4001)  # grows by 1
    alice.put_object(Bucket="sized", Key="b", Body=b"b" * 3000)  # shrinks
    alice.put_object(Bucket="sized", Key="c", Body=b"c" * 1000)  # exactly at the quota again
    expect_quota_exceeded(alice.put_object, Bucket="sized", Key="d", Body=b"d")
    got = admin("quota", "get", "--scope", "bucket", "--tenant", "acme", "--bucket", "sized")
    assert got["max_bytes"] == 10000, got
    assert usage_of("sized") == (10000, 3), usage_of("sized")


check("a bucket's byte quota holds at the exact boundary", byte_quota)


def burst():
    alice.create_bucket(Bucket="burst")
    admin("quota", "set", "--scope", "bucket", "--tenant", "acme", "--bucket", "burst", "--max-objects", "20")

    def put(i):
        try:
            alice.put_object(Bucket="burst", Key=f"b{i:03}", Body=b"x" * 100)
            return "ok"
        except ClientError as e:
            return e.response["Error"]["Code"]

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        results = list(pool.map(put, range(60)))
    ok = results.count("ok")
    assert ok == 20 and results.count("QuotaExceeded") == 40, results
    listed = alice.list_objects_v2(Bucket="burst").get("KeyCount", 0)
    assert listed == 20, listed


check("a burst of 60 parallel PUTs stops at exactly 20", burst)


def two_gateways():
    gws = [client(alice_u["keys"][0]["access_key"], alice_u["keys"][0]["secret_key"], g["s3"]) for g in components("gateway")]
    assert len(gws) == 2, gws
    a, b = gws
    a.create_bucket(Bucket="spread")
    admin("quota", "set", "--scope", "bucket", "--tenant", "acme", "--bucket", "spread", "--max-objects", "30")
    b.put_object(Bucket="spread", Key="first", Body=b"x")  # b's estimate: 1 object, fresh for a second
    for i in range(26):
        a.put_object(Bucket="spread", Key=f"a{i:02}", Body=b"x")
    # b's estimate lacks a's writes for up to a second; once it is renewed,
    # 27 of 30 is past nine tenths of the limit, where every check reads
    # afresh: writes alternating between the gateways stop exactly at 30.
    time.sleep(1.2)
    results = []
    for i in range(8):
        try:
            (a if i % 2 else b).put_object(Bucket="spread", Key=f"n{i}", Body=b"x")
            results.append("ok")
        except ClientError as e:
            results.append(e.response["Error"]["Code"])
    assert results == ["ok"] * 3 + ["QuotaExceeded"] * 5, results
    # A delete through one gateway makes room on the other at once.
    a.delete_object(Bucket="spread", Key="a00")
    b.put_object(Bucket="spread", Key="after-delete", Body=b"x")
    expect_quota_exceeded(a.put_object, Bucket="spread", Key="one-more", Body=b"x")
    assert alice.list_objects_v2(Bucket="spread")["KeyCount"] == 30
    assert usage_of("spread") == (30, 30), usage_of("spread")
    alice.delete_objects(Bucket="spread", Delete={"Objects": [{"Key": o["Key"]} for o in alice.list_objects_v2(Bucket="spread")["Contents"]]})
    alice.delete_bucket(Bucket="spread")


check("two gateways: past 90% of a limit each write reads afresh; deletes make room on both", two_gateways)


def user_quotas():
    admin("quota", "set", "--scope", "user", "--tenant", "acme", "--user", "alice", "--max-buckets", "5", "--max-objects", "10")
    # alice owns counted (4 objects), sized (3), burst (20): already over 10.
    expect_quota_exceeded(alice.put_object, Bucket="counted", Key="more", Body=b"x")
    admin("quota", "set", "--scope", "user", "--tenant", "acme", "--user", "alice", "--max-objects", "30")
    alice.create_bucket(Bucket="fourth")
    alice.create_bucket(Bucket="fifth")
    expect_quota_exceeded(alice.create_bucket, Bucket="sixth")
    for i in range(3):  # 27 + 3 = 30, spread over two buckets
        alice.put_object(Bucket="fourth" if i % 2 else "fifth", Key=f"u{i}", Body=b"u")
    expect_quota_exceeded(alice.put_object, Bucket="fourth", Key="u9", Body=b"u")
    expect_quota_exceeded(alice.put_object, Bucket="fifth", Key="u9", Body=b"u")
    alice.delete_object(Bucket="burst", Key="b000")
    alice.put_object(Bucket="fourth", Key="u9", Body=b"u")
    rep = admin("usage", "--tenant", "acme")
    me = [u for u in rep["users"] if u["id"] == ALICE][0]
    assert me["objects"] == 30 and me["buckets"] == 5, me
    t = rep["tenants"][0]
    assert t["tenant"] == "acme" and t["objects"] == 30 and t["buckets"] == 5, t


check("user quotas span the user's buckets; bucket counts are limited", user_quotas)


def tenant_quota():
    admin("quota", "set", "--scope", "user", "--tenant", "acme", "--user", "alice", "--max-objects", "none", "--max-buckets", "none")
    stored = admin("usage", "--tenant", "acme")["tenants"][0]["bytes"]
    assert stored == 32 + 10000 + 1900 + 4, stored
    admin("quota", "set", "--scope", "tenant", "--tenant", "acme", "--max-bytes", str(stored))
    # Exactly what the tenant stores now: nothing more fits.
    expect_quota_exceeded(alice.put_object, Bucket="fourth", Key="t", Body=b"t")
    alice.delete_object(Bucket="sized", Key="c")  # frees 1000
    alice.put_object(Bucket="fourth", Key="t", Body=b"t" * 1000)
    expect_quota_exceeded(alice.put_object, Bucket="fifth", Key="t", Body=b"t")


check("a tenant quota spans its users and buckets", tenant_quota)


def usage_matches_listing():
    rep = admin("usage", "--tenant", "acme")
    for b in rep["buckets"]:
        objs = alice.list_objects_v2(Bucket=b["name"]).get("Contents", [])
        assert b["objects"] == len(objs) and b["bytes"] == sum(o["Size"] for o in objs), (b, len(objs))
    print("     usage:", json.dumps(rep["tenants"]))
    with open(os.path.join(DIR, "usage-before.json"), "w") as f:
        json.dump(rep, f, sort_keys=True)


check("usage equals what listing shows", usage_matches_listing)
def blind_commits():
    # A tenant of its own: acme's usage is compared after the restart.
    admin("tenant", "create", "blindco")
    u = admin("user", "create", "--tenant", "blindco", "--name", "bob")
    bob = client(u["keys"][0]["access_key"], u["keys"][0]["secret_key"], max_pool_connections=32)
    bob.create_bucket(Bucket="fresh")
    gateways, datanodes = components("gateway"), components("datanode")

    def blind(outcome):
        return metric_sum(gateways, f'kura_gateway_blind_puts_total{{outcome="{outcome}"}}')

    def body(i, gen):  # past the inline size: bodies on the data nodes, six fragments each
        return bytes([i, gen]) * (150_000 + 500 * i + gen)

    created0, present0 = blind("created"), blind("key_present")
    deleted0 = metric_sum(datanodes, "kura_datanode_fragments_deleted_total")
    for i in range(20):
        bob.put_object(Bucket="fresh", Key=f"k{i:02}", Body=body(i, 0))
    # The first PUT reads; the bucket's next ones create their keys blind.
    assert blind("created") - created0 >= 15, (blind("created"), created0)
    # Three writers at once on each of ten keys: every PUT replaces a body.
    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        list(pool.map(lambda j: bob.put_object(Bucket="fresh", Key=f"k{j % 10:02}", Body=body(j % 10, 1 + j // 10)), range(30)))
    assert blind("key_present") > present0, "no overwrite went blind first"
    sizes = {}
    for i in range(20):
        got = bob.get_object(Bucket="fresh", Key=f"k{i:02}")["Body"].read()
        gens = [0] if i >= 10 else [1, 2, 3]
        assert got in [body(i, g) for g in gens], (i, len(got))
        sizes[i] = len(got)
    rep = admin("usage", "--tenant", "blindco")
    b = [b for b in rep["buckets"] if b["name"] == "fresh"][0]
    assert (b["bytes"], b["objects"]) == (sum(sizes.values()), 20), (b, sum(sizes.values()))
    # 30 replaced bodies, six fragments each, all reclaimed.
    deadline = time.time() + 60
    while metric_sum(datanodes, "kura_datanode_fragments_deleted_total") - deleted0 < 180:
        assert time.time() < deadline, metric_sum(datanodes, "kura_datanode_fragments_deleted_total") - deleted0
        time.sleep(0.5)


check("new keys commit blind; overwrites after them replace, reclaim and count exactly", blind_commits)
print("all quota checks passed")
