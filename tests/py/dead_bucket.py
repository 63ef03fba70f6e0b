"""Dead-bucket sweeper end to end (tests/dead_bucket.rs), with boto3 and raw
HTTP, against `kura dev --gateways 2 --lifecycle-interval-secs 1`.

DEAD_PHASE selects what runs (tests/dead_bucket.rs kills and restarts the
gateway in between):
- leak: a PUT (presigned, its body sent in two halves) reads its bucket,
  the bucket is deleted through the other gateway while the body is half
  sent, then the body ends: the write commits under the dead bucket id and
  its gateway dies (failpoint `gateway::before_bucket_check`) before the
  check that would undo it.
- leak-check: the sweeper deletes that version and its body is reclaimed
  (data node fragment deletions), a live bucket's objects are untouched,
  the name can be created again, empty.
- half-delete: a DeleteBucket dies after marking its bucket (failpoint
  `gateway::delete_bucket_after_mark`), the bucket holding an incomplete
  multipart upload.
- half-check: the mark goes stale and the sweeper finishes the delete: the
  bucket is gone, its upload aborted, the part's body reclaimed.
"""
import http.client
import json
import os
import ssl
import time
import urllib.parse
import urllib.request
import uuid

from botocore.exceptions import ClientError

from kura_kit import CLUSTER, client, expect_error, metric_sum

AK = os.environ["AWS_ACCESS_KEY_ID"]
SK = os.environ["AWS_SECRET_ACCESS_KEY"]
PHASE = os.environ["DEAD_PHASE"]
STATE = os.path.join(os.environ["KURA_DIR"], "dead_bucket_state.json")
COMPONENTS = json.load(open(CLUSTER))["components"]
GATEWAYS = [c for c in COMPONENTS if c["role"] == "gateway"]
DATANODES = [c for c in COMPONENTS if c["role"] == "datanode"]
assert len(GATEWAYS) == 2, GATEWAYS
VICTIM, OTHER = GATEWAYS
s3v = client(AK, SK, VICTIM["s3"], read_timeout=60)
s3 = client(AK, SK, OTHER["s3"], read_timeout=60)
BODY = bytes(range(256)) * 4096  # 1 MiB, the same in every phase; on the data nodes, not inline


def fragments_deleted():
    return metric_sum(DATANODES, "kura_datanode_fragments_deleted_total")


def arm(component, name, action):
    req = urllib.request.Request(f"http://{component['status']}/fail/{name}",
                                 data=action.encode(), method="PUT")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200, r.status


def wait_for(what, cond, secs=90):
    deadline = time.time() + secs
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def bucket_exists(b):
    try:
        s3.head_bucket(Bucket=b)
        return True
    except ClientError as e:
        if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise


def save(**kw):
    json.dump(kw, open(STATE, "w"))


def load():
    return json.load(open(STATE))


def leak():
    live = f"live-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=live)
    s3.put_object(Bucket=live, Key="keep", Body=BODY)
    b = f"leak-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=b)
    url = urllib.parse.urlsplit(
        s3v.generate_presigned_url("put_object", Params={"Bucket": b, "Key": "orphan"}, ExpiresIn=600))
    if url.scheme == "https":
        ctx = ssl.create_default_context(cafile=os.environ["AWS_CA_BUNDLE"])
        conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx, timeout=60)
    else:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    arm(VICTIM, "gateway::before_bucket_check", "abort")
    conn.putrequest("PUT", f"{url.path}?{url.query}", skip_accept_encoding=True)
    conn.putheader("Content-Length", str(len(BODY)))
    conn.endheaders()
    half = len(BODY) // 2
    conn.send(BODY[:half])
    time.sleep(1.5)  # the PUT has read its (live) bucket
    # Empty: deleted at once, by the other gateway.
    assert s3.delete_bucket(Bucket=b)["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert not bucket_exists(b)
    before = fragments_deleted()
    conn.send(BODY[half:])
    try:
        resp = conn.getresponse()
        raise AssertionError(f"the PUT was answered ({resp.status}): its gateway should have died")
    except (http.client.HTTPException, OSError):
        pass
    save(leaked=b, live=live, fragments_before=before)
    print(f"VICTIM {VICTIM['id']}")


def leak_check():
    st = load()
    wait_for("the sweeper to delete the version left under the dead bucket id",
             lambda: metric_sum(GATEWAYS, "kura_gateway_dead_bucket_records_deleted_total") >= 1)
    assert metric_sum(GATEWAYS, "kura_gateway_dead_buckets_found_total") >= 1
    # One fragment per data node for the body (decision 0009's layout).
    wait_for("the orphaned body's fragments to be deleted",
             lambda: fragments_deleted() - st["fragments_before"] >= len(DATANODES))
    assert s3.get_object(Bucket=st["live"], Key="keep")["Body"].read() == BODY
    # The name is free again and the new bucket (a new id) is empty.
    s3.create_bucket(Bucket=st["leaked"])
    assert s3.list_object_versions(Bucket=st["leaked"]).get("Versions", []) == []
    s3.delete_bucket(Bucket=st["leaked"])
    found = metric_sum(GATEWAYS, "kura_gateway_dead_buckets_found_total")
    print(f"leak check passed (dead bucket ids found: {found})")


def half_delete():
    b = f"half-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=b)
    up = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    s3.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=1, Body=BODY)
    arm(VICTIM, "gateway::delete_bucket_after_mark", "abort")
    answered = None
    try:
        answered = s3v.delete_bucket(Bucket=b)
    except ClientError as e:
        answered = e
    except Exception:  # the connection dropped: expected
        pass
    assert answered is None, f"DeleteBucket was answered ({answered}): its gateway should have died"
    save(half=b, upload=up, fragments_before=fragments_deleted())
    print(f"VICTIM {VICTIM['id']}")


def half_check():
    st = load()
    b = st["half"]
    # Marked, not deleted: still there (and the sweeper waits for the mark
    # to go stale, 30 s, in case its DeleteBucket is only slow).
    assert bucket_exists(b)
    wait_for("the sweeper to finish the DeleteBucket", lambda: not bucket_exists(b), secs=120)
    assert metric_sum(GATEWAYS, "kura_gateway_bucket_deletes_finished_total") >= 1
    wait_for("the part's body to be reclaimed",
             lambda: fragments_deleted() - st["fragments_before"] >= len(DATANODES))
    expect_error("NoSuchBucket", s3.list_multipart_uploads, Bucket=b, status=404)
    print("half-delete check passed")


{"leak": leak, "leak-check": leak_check, "half-delete": half_delete, "half-check": half_check}[PHASE]()
