"""S3 Object Lock end to end (docs/decisions/0031): lock buckets, default
retention, per-version retention and legal holds on PUT, copy and multipart,
GOVERNANCE with and without a bypass (and with a user who lacks
s3:BypassGovernanceRetention), COMPLIANCE against the root key, legal holds
racing the root's deletes, the refusals (including the Content-MD5 or
checksum the lock XML bodies and DeleteObjects need) — with boto3 and the
aws CLI.

Run by tests/object_lock.rs against `kura dev` with KURA_S3, KURA_DIR,
KURA_BIN (for `kura admin`), the root key in AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY and an aws CLI config in AWS_CONFIG_FILE.

acme/alice owns the buckets (the owner may bypass GOVERNANCE); acme/bob may
write, read and delete versions through a user policy, first without, then
with s3:BypassGovernanceRetention; the root key administers everything and
still cannot delete a COMPLIANCE-retained or legally held version.
"""
import base64
import datetime
import hashlib
import json
import os
import subprocess
import threading
import time

from botocore.exceptions import ClientError

from kura_kit import DIR, ENDPOINT, admin, check, client, expect_error, key_of

LOCKED_MSG = "Access Denied because object protected by object lock."

admin("tenant", "create", "acme")
alice_u = admin("user", "create", "--tenant", "acme", "--name", "alice")
bob_u = admin("user", "create", "--tenant", "acme", "--name", "bob")
alice, bob = (client(*key_of(u)) for u in (alice_u, bob_u))
root = client(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def later(seconds):
    """A whole-second date `seconds` from now."""
    return (now() + datetime.timedelta(seconds=seconds)).replace(microsecond=0)


def error_of(fn, **kw):
    """(code, message, HTTP status) of a call that must fail."""
    try:
        fn(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"].get("Message"), e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError(f"{fn.__name__} {kw} succeeded")


def versions(bucket, key):
    r = alice.list_object_versions(Bucket=bucket, Prefix=key)
    return [v["VersionId"] for v in r.get("Versions", []) if v["Key"] == key]


def set_bob_policy(actions):
    doc = {"Statement": [{"Effect": "Allow", "Action": actions,
                          "Resource": ["arn:aws:s3:::wormy", "arn:aws:s3:::wormy/*"]}]}
    path = os.path.join(DIR, "bob-lock-policy.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    admin("user", "policy", "set", "--id", bob_u["id"], "--file", path)


BOB_BASE = ["s3:PutObject", "s3:GetObject", "s3:GetObjectVersion", "s3:DeleteObject",
            "s3:DeleteObjectVersion", "s3:ListBucket", "s3:ListBucketVersions",
            "s3:PutObjectRetention", "s3:GetObjectRetention", "s3:PutObjectLegalHold",
            "s3:GetObjectLegalHold"]


def wait_for(fn, what):
    """Retries fn until it stops raising (identity caches take up to 5 s)."""
    deadline = time.time() + 8
    while True:
        try:
            return fn()
        except (AssertionError, ClientError):
            if time.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.25)


# --- buckets


def lock_buckets():
    alice.create_bucket(Bucket="wormy", ObjectLockEnabledForBucket=True)
    # Object lock turns versioning on, for good.
    assert alice.get_bucket_versioning(Bucket="wormy")["Status"] == "Enabled"
    cfg = alice.get_object_lock_configuration(Bucket="wormy")["ObjectLockConfiguration"]
    assert cfg == {"ObjectLockEnabled": "Enabled"}, cfg
    code, msg, status = error_of(alice.put_bucket_versioning, Bucket="wormy",
                                 VersioningConfiguration={"Status": "Suspended"})
    assert (code, status) == ("InvalidBucketState", 409), (code, msg, status)
    alice.put_bucket_versioning(Bucket="wormy", VersioningConfiguration={"Status": "Enabled"})
    # A plain bucket has no configuration and takes none while unversioned.
    alice.create_bucket(Bucket="plain")
    expect_error("ObjectLockConfigurationNotFoundError", alice.get_object_lock_configuration,
                 Bucket="plain", status=404)
    code, msg, status = error_of(alice.put_object_lock_configuration, Bucket="plain",
                                 ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    assert (code, status) == ("InvalidBucketState", 409), (code, msg, status)
    assert msg == "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration", msg
    # Suspended is no better.
    alice.put_bucket_versioning(Bucket="plain", VersioningConfiguration={"Status": "Suspended"})
    expect_error("InvalidBucketState", alice.put_object_lock_configuration, Bucket="plain",
                 ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"}, status=409)
    # Lock headers and lock operations are refused where lock is off.
    alice.put_object(Bucket="plain", Key="k", Body=b"k")
    for fn, kw in [
        (alice.put_object, dict(Body=b"x", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=later(60))),
        (alice.put_object, dict(Body=b"x", ObjectLockLegalHoldStatus="ON")),
        (alice.put_object_retention, dict(Retention={"Mode": "GOVERNANCE", "RetainUntilDate": later(60)})),
        (alice.get_object_retention, {}),
        (alice.put_object_legal_hold, dict(LegalHold={"Status": "ON"})),
        (alice.get_object_legal_hold, {}),
        (alice.create_multipart_upload, dict(ObjectLockLegalHoldStatus="ON")),
    ]:
        code, msg, status = error_of(fn, Bucket="plain", Key="k", **kw)
        assert (code, status) == ("InvalidRequest", 400), (fn.__name__, code, msg, status)
    # Turning lock on for an existing versioned bucket (as AWS now allows).
    alice.create_bucket(Bucket="later")
    alice.put_bucket_versioning(Bucket="later", VersioningConfiguration={"Status": "Enabled"})
    old = alice.put_object(Bucket="later", Key="old", Body=b"before lock")["VersionId"]
    alice.put_object_lock_configuration(Bucket="later", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    expect_error("InvalidBucketState", alice.put_bucket_versioning, Bucket="later",
                 VersioningConfiguration={"Status": "Suspended"}, status=409)
    # Versions written before are not retained; the default covers new ones.
    expect_error("NoSuchObjectLockConfiguration", alice.get_object_retention, Bucket="later", Key="old",
                 VersionId=old, status=404)
    alice.delete_object(Bucket="later", Key="old", VersionId=old)


check("lock buckets: versioning forced on, Suspend and lockless buckets refused", lock_buckets)


def bad_configurations():
    def put(rule, enabled="Enabled"):
        cfg = {"ObjectLockEnabled": enabled} if enabled else {}
        if rule is not None:
            cfg["Rule"] = {"DefaultRetention": rule}
        return error_of(alice.put_object_lock_configuration, Bucket="wormy", ObjectLockConfiguration=cfg)

    assert put({"Mode": "GOVERNANCE", "Days": 1, "Years": 1})[0] == "MalformedXML"
    assert put({"Mode": "GOVERNANCE"})[0] == "MalformedXML"
    assert put({"Mode": "governance", "Days": 1})[0] == "MalformedXML"
    assert put({"Days": 1})[0] == "MalformedXML"
    assert put(None, enabled=None)[0] == "MalformedXML"
    assert put(None, enabled="Disabled")[0] == "MalformedXML"
    for rule in ({"Mode": "COMPLIANCE", "Days": 0}, {"Mode": "COMPLIANCE", "Years": -1}):
        code, msg, status = put(rule)
        assert (code, status) == ("InvalidRetentionPeriod", 400), (rule, code, msg, status)
    # Nothing changed.
    assert alice.get_object_lock_configuration(Bucket="wormy")["ObjectLockConfiguration"] == {"ObjectLockEnabled": "Enabled"}


check("bad lock configurations are refused as AWS does", bad_configurations)


# --- default retention


def default_retention():
    alice.put_object_lock_configuration(Bucket="wormy", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    cfg = alice.get_object_lock_configuration(Bucket="wormy")["ObjectLockConfiguration"]
    assert cfg == {"ObjectLockEnabled": "Enabled",
                   "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}, cfg
    before = now()
    v = alice.put_object(Bucket="wormy", Key="dflt", Body=b"default")["VersionId"]
    head = alice.head_object(Bucket="wormy", Key="dflt", VersionId=v)
    assert head["ObjectLockMode"] == "GOVERNANCE", head
    until = head["ObjectLockRetainUntilDate"]
    day = datetime.timedelta(days=1)
    assert before + day - datetime.timedelta(seconds=5) <= until <= now() + day + datetime.timedelta(seconds=5), until
    assert "ObjectLockLegalHoldStatus" not in head
    ret = alice.get_object_retention(Bucket="wormy", Key="dflt", VersionId=v)["Retention"]
    assert ret["Mode"] == "GOVERNANCE" and ret["RetainUntilDate"] == until, ret
    got = alice.get_object(Bucket="wormy", Key="dflt")
    assert got["ObjectLockMode"] == "GOVERNANCE" and got["Body"].read() == b"default"
    expect_error("NoSuchObjectLockConfiguration", alice.get_object_legal_hold, Bucket="wormy", Key="dflt", status=404)
    expect_error("AccessDenied", alice.delete_object, Bucket="wormy", Key="dflt", VersionId=v)
    # Years, and a PUT's own headers win over the default.
    alice.put_object_lock_configuration(Bucket="wormy", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 1}}})
    assert alice.get_object_lock_configuration(Bucket="wormy")["ObjectLockConfiguration"]["Rule"] == {
        "DefaultRetention": {"Mode": "COMPLIANCE", "Years": 1}}
    mine = later(3600)
    v2 = alice.put_object(Bucket="wormy", Key="own", Body=b"own", ObjectLockMode="GOVERNANCE",
                          ObjectLockRetainUntilDate=mine)["VersionId"]
    ret = alice.get_object_retention(Bucket="wormy", Key="own", VersionId=v2)["Retention"]
    assert ret == {"Mode": "GOVERNANCE", "RetainUntilDate": mine}, ret
    # A legal hold alone still gets the default retention.
    v3 = alice.put_object(Bucket="wormy", Key="held", Body=b"h", ObjectLockLegalHoldStatus="OFF")["VersionId"]
    head = alice.head_object(Bucket="wormy", Key="held", VersionId=v3)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockLegalHoldStatus"] == "OFF", head
    assert head["ObjectLockRetainUntilDate"] > now() + datetime.timedelta(days=364), head
    # Without a rule, new versions are not retained.
    alice.put_object_lock_configuration(Bucket="wormy", ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    v4 = alice.put_object(Bucket="wormy", Key="free", Body=b"f")["VersionId"]
    assert "ObjectLockMode" not in alice.head_object(Bucket="wormy", Key="free", VersionId=v4)
    alice.delete_object(Bucket="wormy", Key="free", VersionId=v4)
    # The bypass lifts the default GOVERNANCE retention of the first one.
    alice.delete_object(Bucket="wormy", Key="dflt", VersionId=v, BypassGovernanceRetention=True)
    assert versions("wormy", "dflt") == []


check("default retention (Days, Years) applies to new versions without headers", default_retention)


def put_headers_refused():
    for kw in [dict(ObjectLockMode="GOVERNANCE"), dict(ObjectLockRetainUntilDate=later(60))]:
        expect_error("InvalidArgument", alice.put_object, Bucket="wormy", Key="bad", Body=b"x", **kw)
    code, msg, _ = error_of(alice.put_object, Bucket="wormy", Key="bad", Body=b"x",
                            ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=later(-60))
    assert (code, msg) == ("InvalidArgument", "The retain until date must be in the future!"), (code, msg)
    expect_error("InvalidArgument", alice.put_object, Bucket="wormy", Key="bad", Body=b"x",
                 ObjectLockMode="FOREVER", ObjectLockRetainUntilDate=later(60))
    expect_error("InvalidArgument", alice.put_object, Bucket="wormy", Key="bad", Body=b"x",
                 ObjectLockLegalHoldStatus="MAYBE")
    # Lock parameters need Content-MD5 or a checksum (this client sends none unless asked).
    bare = client(*key_of(alice_u), request_checksum_calculation="when_required")
    code, msg, status = error_of(bare.put_object, Bucket="wormy", Key="bad", Body=b"x",
                                 ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=later(60))
    assert (code, status) == ("InvalidRequest", 400), (code, msg, status)
    assert "Content-MD5 OR x-amz-checksum-" in msg, msg
    assert versions("wormy", "bad") == []
    md5 = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    v = bare.put_object(Bucket="wormy", Key="md5", Body=b"x", ContentMD5=md5,
                        ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=later(60))["VersionId"]
    alice.delete_object(Bucket="wormy", Key="md5", VersionId=v, BypassGovernanceRetention=True)


check("bad lock headers on PUT are refused, nothing stored", put_headers_refused)


# --- integrity headers on the lock XML bodies (and DeleteObjects)

INTEGRITY_MSG = "Missing required header for this request: Content-MD5 OR x-amz-checksum-*"


def integrity_client(md5=False):
    """alice's client with every Content-MD5 / checksum header removed
    before signing; with md5, a Content-MD5 of the body put back instead
    (what SDKs older than the flexible checksums send)."""
    c = client(*key_of(alice_u))

    def rewrite(request, **_):
        for h in list(request.headers.keys()):
            n = h.lower()
            if n == "content-md5" or n.startswith("x-amz-checksum-") or n == "x-amz-sdk-checksum-algorithm":
                del request.headers[h]
        if md5:
            body = request.body or b""
            body = body.encode() if isinstance(body, str) else body
            request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()

    c.meta.events.register("before-sign.s3", rewrite)
    return c


def xml_bodies_need_integrity():
    bare, md5 = integrity_client(), integrity_client(md5=True)
    v = alice.put_object(Bucket="wormy", Key="integrity", Body=b"i")["VersionId"]
    cfg_before = alice.get_object_lock_configuration(Bucket="wormy")["ObjectLockConfiguration"]
    calls = [
        ("put_object_retention", dict(Key="integrity", VersionId=v,
                                      Retention={"Mode": "GOVERNANCE", "RetainUntilDate": later(600)})),
        ("put_object_legal_hold", dict(Key="integrity", VersionId=v, LegalHold={"Status": "ON"})),
        ("put_object_lock_configuration", dict(ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 9}}})),
        ("delete_objects", dict(Delete={"Objects": [{"Key": "integrity", "VersionId": v}]})),
    ]
    for name, kw in calls:
        code, msg, status = error_of(getattr(bare, name), Bucket="wormy", **kw)
        assert (code, status, msg) == ("InvalidRequest", 400, INTEGRITY_MSG), (name, code, status, msg)
    # Nothing changed.
    expect_error("NoSuchObjectLockConfiguration", alice.get_object_retention, Bucket="wormy", Key="integrity",
                 VersionId=v, status=404)
    expect_error("NoSuchObjectLockConfiguration", alice.get_object_legal_hold, Bucket="wormy", Key="integrity",
                 VersionId=v, status=404)
    assert alice.get_object_lock_configuration(Bucket="wormy")["ObjectLockConfiguration"] == cfg_before
    assert versions("wormy", "integrity") == [v]
    # Content-MD5 alone is enough (and boto3's own checksums, everywhere above).
    md5.put_object_legal_hold(Bucket="wormy", Key="integrity", VersionId=v, LegalHold={"Status": "ON"})
    assert alice.get_object_legal_hold(Bucket="wormy", Key="integrity", VersionId=v)["LegalHold"]["Status"] == "ON"
    md5.put_object_legal_hold(Bucket="wormy", Key="integrity", VersionId=v, LegalHold={"Status": "OFF"})
    md5.put_object_lock_configuration(Bucket="wormy", ObjectLockConfiguration=cfg_before)
    r = md5.delete_objects(Bucket="wormy", Delete={"Objects": [{"Key": "integrity", "VersionId": v}]})
    assert [d["VersionId"] for d in r.get("Deleted", [])] == [v], r
    assert versions("wormy", "integrity") == []


check("lock XML bodies and DeleteObjects need Content-MD5 or a checksum", xml_bodies_need_integrity)


# --- GOVERNANCE


def governance():
    set_bob_policy(BOB_BASE)
    until = later(3600)
    v = wait_for(lambda: bob.put_object(Bucket="acme:wormy", Key="gov", Body=b"g", ObjectLockMode="GOVERNANCE",
                                        ObjectLockRetainUntilDate=until)["VersionId"], "bob's policy")
    # Nobody without the bypass, the owner and the root included.
    for who in (alice, root, bob):
        bucket = "acme:wormy" if who is not alice else "wormy"
        code, msg, status = error_of(who.delete_object, Bucket=bucket, Key="gov", VersionId=v)
        assert (code, msg, status) == ("AccessDenied", LOCKED_MSG, 403), (code, msg, status)
        code, msg, status = error_of(who.put_object_retention, Bucket=bucket, Key="gov", VersionId=v,
                                     Retention={"Mode": "GOVERNANCE", "RetainUntilDate": later(60)})
        assert (code, status) == ("AccessDenied", 403), (code, msg, status)
    # Bob asks for the bypass but lacks s3:BypassGovernanceRetention.
    code, msg, _ = error_of(bob.delete_object, Bucket="acme:wormy", Key="gov", VersionId=v, BypassGovernanceRetention=True)
    assert (code, msg) == ("AccessDenied", LOCKED_MSG), (code, msg)
    expect_error("AccessDenied", bob.put_object_retention, Bucket="acme:wormy", Key="gov", VersionId=v,
                 BypassGovernanceRetention=True, Retention={})
    r = bob.delete_objects(Bucket="acme:wormy", BypassGovernanceRetention=True,
                           Delete={"Objects": [{"Key": "gov", "VersionId": v}]})
    assert [(e["Code"], e["Message"]) for e in r.get("Errors", [])] == [("AccessDenied", LOCKED_MSG)], r
    # Extending is always allowed, to anyone who may put retention.
    longer = later(7200)
    bob.put_object_retention(Bucket="acme:wormy", Key="gov", VersionId=v,
                             Retention={"Mode": "GOVERNANCE", "RetainUntilDate": longer})
    assert alice.get_object_retention(Bucket="wormy", Key="gov", VersionId=v)["Retention"]["RetainUntilDate"] == longer
    # Deleting without a version id only adds a marker: allowed.
    r = bob.delete_object(Bucket="acme:wormy", Key="gov")
    assert r["DeleteMarker"] is True, r
    assert versions("wormy", "gov") == [v]
    # The owner may bypass: shorten, then the root (an admin) deletes with the bypass.
    alice.put_object_retention(Bucket="wormy", Key="gov", VersionId=v, BypassGovernanceRetention=True,
                               Retention={"Mode": "GOVERNANCE", "RetainUntilDate": later(1800)})
    assert alice.get_object_retention(Bucket="wormy", Key="gov", VersionId=v)["Retention"]["RetainUntilDate"] < longer
    root.delete_object(Bucket="acme:wormy", Key="gov", VersionId=v, BypassGovernanceRetention=True)
    assert versions("wormy", "gov") == []
    # Granted the permission, bob bypasses too (DeleteObject and DeleteObjects).
    set_bob_policy(BOB_BASE + ["s3:BypassGovernanceRetention"])
    v1 = bob.put_object(Bucket="acme:wormy", Key="gov2", Body=b"1", ObjectLockMode="GOVERNANCE",
                        ObjectLockRetainUntilDate=until)["VersionId"]
    v2 = bob.put_object(Bucket="acme:wormy", Key="gov2", Body=b"2", ObjectLockMode="GOVERNANCE",
                        ObjectLockRetainUntilDate=until)["VersionId"]
    wait_for(lambda: bob.delete_object(Bucket="acme:wormy", Key="gov2", VersionId=v1, BypassGovernanceRetention=True),
             "bob's bypass permission")
    r = bob.delete_objects(Bucket="acme:wormy", Delete={"Objects": [{"Key": "gov2", "VersionId": v2}]})
    assert [e["Code"] for e in r.get("Errors", [])] == ["AccessDenied"], "no bypass asked: refused"
    r = bob.delete_objects(Bucket="acme:wormy", BypassGovernanceRetention=True,
                           Delete={"Objects": [{"Key": "gov2", "VersionId": v2}]})
    assert [d["VersionId"] for d in r.get("Deleted", [])] == [v2] and not r.get("Errors"), r
    # Removing a GOVERNANCE retention takes the bypass too.
    v3 = alice.put_object(Bucket="wormy", Key="gov3", Body=b"3", ObjectLockMode="GOVERNANCE",
                          ObjectLockRetainUntilDate=until)["VersionId"]
    expect_error("AccessDenied", alice.put_object_retention, Bucket="wormy", Key="gov3", VersionId=v3, Retention={})
    alice.put_object_retention(Bucket="wormy", Key="gov3", VersionId=v3, Retention={}, BypassGovernanceRetention=True)
    expect_error("NoSuchObjectLockConfiguration", alice.get_object_retention, Bucket="wormy", Key="gov3", VersionId=v3)
    alice.delete_object(Bucket="wormy", Key="gov3", VersionId=v3)


check("GOVERNANCE: refused without bypass, to a user lacking the permission; bypassed by owner, root, granted user",
      governance)


# --- COMPLIANCE


def compliance():
    until = later(4)
    v = alice.put_object(Bucket="wormy", Key="comp", Body=b"c", ObjectLockMode="COMPLIANCE",
                         ObjectLockRetainUntilDate=until)["VersionId"]
    for bypass in (False, True):
        code, msg, status = error_of(root.delete_object, Bucket="acme:wormy", Key="comp", VersionId=v,
                                     BypassGovernanceRetention=bypass)
        assert (code, msg, status) == ("AccessDenied", LOCKED_MSG, 403), (code, msg, status)
        for ret in ({"Mode": "COMPLIANCE", "RetainUntilDate": later(2)},
                    {"Mode": "GOVERNANCE", "RetainUntilDate": later(3600)}, {}):
            expect_error("AccessDenied", root.put_object_retention, Bucket="acme:wormy", Key="comp", VersionId=v,
                         Retention=ret, BypassGovernanceRetention=bypass)
    r = root.delete_objects(Bucket="acme:wormy", BypassGovernanceRetention=True,
                            Delete={"Objects": [{"Key": "comp", "VersionId": v}]})
    assert [(e["Code"], e["Message"]) for e in r.get("Errors", [])] == [("AccessDenied", LOCKED_MSG)], r
    expect_error("BucketNotEmpty", root.delete_bucket, Bucket="acme:wormy")
    # Extension is allowed; the date still passes.
    until = later(6)
    alice.put_object_retention(Bucket="wormy", Key="comp", VersionId=v,
                               Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
    expect_error("AccessDenied", root.delete_object, Bucket="acme:wormy", Key="comp", VersionId=v)
    time.sleep(max(0.0, (until - now()).total_seconds()) + 0.5)
    # Expired: it reads as it was, and anyone allowed deletes it.
    assert alice.get_object_retention(Bucket="wormy", Key="comp", VersionId=v)["Retention"]["Mode"] == "COMPLIANCE"
    root.delete_object(Bucket="acme:wormy", Key="comp", VersionId=v)
    assert versions("wormy", "comp") == []


check("COMPLIANCE: the root cannot delete, shorten, weaken or remove it until it expires", compliance)


# --- legal hold


def legal_hold():
    v = alice.put_object(Bucket="wormy", Key="hold", Body=b"h", ObjectLockLegalHoldStatus="ON")["VersionId"]
    assert alice.get_object_legal_hold(Bucket="wormy", Key="hold", VersionId=v)["LegalHold"] == {"Status": "ON"}
    assert alice.head_object(Bucket="wormy", Key="hold")["ObjectLockLegalHoldStatus"] == "ON"
    for bypass in (False, True):
        code, msg, _ = error_of(root.delete_object, Bucket="acme:wormy", Key="hold", VersionId=v,
                                BypassGovernanceRetention=bypass)
        assert (code, msg) == ("AccessDenied", LOCKED_MSG)
    expect_error("MalformedXML", alice.put_object_legal_hold, Bucket="wormy", Key="hold", VersionId=v,
                 LegalHold={"Status": "MAYBE"})
    # Another version of the key is not held.
    v2 = alice.put_object(Bucket="wormy", Key="hold", Body=b"h2")["VersionId"]
    expect_error("NoSuchObjectLockConfiguration", alice.get_object_legal_hold, Bucket="wormy", Key="hold", VersionId=v2)
    alice.delete_object(Bucket="wormy", Key="hold", VersionId=v2)
    alice.put_object_legal_hold(Bucket="wormy", Key="hold", VersionId=v, LegalHold={"Status": "OFF"})
    assert alice.get_object_legal_hold(Bucket="wormy", Key="hold", VersionId=v)["LegalHold"] == {"Status": "OFF"}
    root.delete_object(Bucket="acme:wormy", Key="hold", VersionId=v)
    assert versions("wormy", "hold") == []
    # Delete markers and missing versions.
    alice.put_object(Bucket="wormy", Key="dm", Body=b"d")
    dm = alice.delete_object(Bucket="wormy", Key="dm")["VersionId"]
    expect_error("MethodNotAllowed", alice.put_object_legal_hold, Bucket="wormy", Key="dm", VersionId=dm,
                 LegalHold={"Status": "ON"})
    expect_error("NoSuchKey", alice.get_object_retention, Bucket="wormy", Key="dm")
    expect_error("NoSuchVersion", alice.put_object_legal_hold, Bucket="wormy", Key="dm",
                 VersionId="0000000000000001", LegalHold={"Status": "ON"})


check("legal hold blocks the root's deletes until removed", legal_hold)


def race(rounds=12):
    """A legal hold set (then removed) while the root deletes the version:
    the hold lands before the delete's read (delete refused) or the delete
    lands first (the hold finds no version); never both succeed."""
    r1, r2 = (client(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]) for _ in range(2))
    outcomes = {"hold": 0, "delete": 0}
    for i in range(rounds):
        key = f"race{i}"
        # Above the inline size, so the body lives on the data nodes: a
        # delete that lost the race must not have reclaimed it.
        body = os.urandom(8192)
        v = alice.put_object(Bucket="wormy", Key=key, Body=body)["VersionId"]
        got = {}
        gate = threading.Barrier(2)

        def hold():
            gate.wait()
            try:
                r1.put_object_legal_hold(Bucket="acme:wormy", Key=key, VersionId=v, LegalHold={"Status": "ON"})
                got["hold"] = "ok"
            except ClientError as e:
                got["hold"] = e.response["Error"]["Code"]

        def delete():
            gate.wait()
            try:
                r2.delete_object(Bucket="acme:wormy", Key=key, VersionId=v)
                got["delete"] = "ok"
            except ClientError as e:
                got["delete"] = e.response["Error"]["Code"]

        ts = [threading.Thread(target=f) for f in (hold, delete)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        left = versions("wormy", key)
        if got == {"hold": "ok", "delete": "AccessDenied"}:
            assert left == [v], (got, left)
            assert alice.get_object_legal_hold(Bucket="wormy", Key=key, VersionId=v)["LegalHold"]["Status"] == "ON"
            time.sleep(0.3)  # a wrongly spawned reclaim would be done by now
            assert alice.get_object(Bucket="wormy", Key=key, VersionId=v)["Body"].read() == body
            outcomes["hold"] += 1
            # Now race the removal of the hold against another delete.
            got2 = {}
            gate2 = threading.Barrier(2)

            def unhold():
                gate2.wait()
                r1.put_object_legal_hold(Bucket="acme:wormy", Key=key, VersionId=v, LegalHold={"Status": "OFF"})

            def delete2():
                gate2.wait()
                try:
                    r2.delete_object(Bucket="acme:wormy", Key=key, VersionId=v)
                    got2["delete"] = "ok"
                except ClientError as e:
                    got2["delete"] = e.response["Error"]["Code"]

            ts = [threading.Thread(target=f) for f in (unhold, delete2)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            left = versions("wormy", key)
            if got2["delete"] == "ok":
                assert left == [], (got2, left)
            else:
                assert got2["delete"] == "AccessDenied" and left == [v], (got2, left)
                assert alice.get_object_legal_hold(Bucket="wormy", Key=key, VersionId=v)["LegalHold"]["Status"] == "OFF"
                root.delete_object(Bucket="acme:wormy", Key=key, VersionId=v)
        elif got == {"hold": "NoSuchVersion", "delete": "ok"}:
            assert left == [], (got, left)
            outcomes["delete"] += 1
        else:
            raise AssertionError(f"round {i}: impossible outcome {got}, versions left {left}")
    print(f"     race outcomes: {outcomes}")


check("legal hold vs the root's delete, racing: one wins, never both", race)


# --- copies, multipart, the aws CLI


def copy_and_multipart():
    until = later(3600)
    alice.put_object(Bucket="wormy", Key="src", Body=b"source", ObjectLockLegalHoldStatus="ON")
    # A copy takes its own headers, never the source's lock.
    r = alice.copy_object(Bucket="wormy", Key="dst", CopySource="wormy/src")
    assert "ObjectLockLegalHoldStatus" not in alice.head_object(Bucket="wormy", Key="dst", VersionId=r["VersionId"])
    r = alice.copy_object(Bucket="wormy", Key="dst", CopySource="wormy/src", ObjectLockMode="GOVERNANCE",
                          ObjectLockRetainUntilDate=until)
    head = alice.head_object(Bucket="wormy", Key="dst", VersionId=r["VersionId"])
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"] == until, head
    expect_error("AccessDenied", root.delete_object, Bucket="acme:wormy", Key="dst", VersionId=r["VersionId"])
    expect_error("InvalidRequest", alice.copy_object, Bucket="plain", Key="c", CopySource="wormy/src",
                 ObjectLockLegalHoldStatus="ON")
    # Multipart: the lock headers of CreateMultipartUpload land on the object.
    up = alice.create_multipart_upload(Bucket="wormy", Key="mp", ObjectLockMode="COMPLIANCE",
                                       ObjectLockRetainUntilDate=later(5), ObjectLockLegalHoldStatus="ON")
    p1 = alice.upload_part(Bucket="wormy", Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"a" * (5 << 20))
    p2 = alice.upload_part(Bucket="wormy", Key="mp", UploadId=up["UploadId"], PartNumber=2, Body=b"b" * 100)
    done = alice.complete_multipart_upload(Bucket="wormy", Key="mp", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]})
    mv = done["VersionId"]
    head = alice.head_object(Bucket="wormy", Key="mp", VersionId=mv)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockLegalHoldStatus"] == "ON", head
    expect_error("AccessDenied", root.delete_object, Bucket="acme:wormy", Key="mp", VersionId=mv,
                 BypassGovernanceRetention=True)
    # Parts of a locked upload need an integrity header.
    bare = client(*key_of(alice_u), request_checksum_calculation="when_required")
    up2 = alice.create_multipart_upload(Bucket="wormy", Key="mp2", ObjectLockLegalHoldStatus="ON")
    expect_error("InvalidRequest", bare.upload_part, Bucket="wormy", Key="mp2", UploadId=up2["UploadId"],
                 PartNumber=1, Body=b"x")
    alice.abort_multipart_upload(Bucket="wormy", Key="mp2", UploadId=up2["UploadId"])


check("copies and multipart uploads carry their own lock headers", copy_and_multipart)


def aws_cli():
    ak, sk = key_of(alice_u)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ak, AWS_SECRET_ACCESS_KEY=sk)

    def aws(*args, ok=True):
        p = subprocess.run(["aws", "--endpoint-url", ENDPOINT, "s3api", *args], capture_output=True, text=True, env=env)
        if ok:
            assert p.returncode == 0, f"aws {args}: {p.stderr}"
            return json.loads(p.stdout) if p.stdout.strip() else {}
        assert p.returncode != 0, f"aws {args} succeeded"
        return p.stderr

    aws("create-bucket", "--bucket", "clilock", "--object-lock-enabled-for-bucket")
    aws("put-object-lock-configuration", "--bucket", "clilock", "--object-lock-configuration",
        json.dumps({"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 2}}}))
    cfg = aws("get-object-lock-configuration", "--bucket", "clilock")["ObjectLockConfiguration"]
    assert cfg["Rule"]["DefaultRetention"] == {"Mode": "GOVERNANCE", "Days": 2}, cfg
    src = os.path.join(DIR, "cli-lock.txt")
    with open(src, "wb") as f:
        f.write(b"cli")
    v = aws("put-object", "--bucket", "clilock", "--key", "k", "--body", src)["VersionId"]
    assert aws("get-object-retention", "--bucket", "clilock", "--key", "k", "--version-id", v)["Retention"]["Mode"] == "GOVERNANCE"
    aws("put-object-legal-hold", "--bucket", "clilock", "--key", "k", "--version-id", v, "--legal-hold", "Status=ON")
    assert aws("get-object-legal-hold", "--bucket", "clilock", "--key", "k", "--version-id", v)["LegalHold"]["Status"] == "ON"
    err = aws("delete-object", "--bucket", "clilock", "--key", "k", "--version-id", v, "--bypass-governance-retention", ok=False)
    assert "AccessDenied" in err, err
    aws("put-object-legal-hold", "--bucket", "clilock", "--key", "k", "--version-id", v, "--legal-hold", "Status=OFF")
    err = aws("delete-object", "--bucket", "clilock", "--key", "k", "--version-id", v, ok=False)
    assert "AccessDenied" in err, err
    # Shortening the 2-day default takes the bypass; extending does not.
    short_date = later(7200)
    short = json.dumps({"Mode": "GOVERNANCE", "RetainUntilDate": short_date.strftime("%Y-%m-%dT%H:%M:%SZ")})
    err = aws("put-object-retention", "--bucket", "clilock", "--key", "k", "--version-id", v, "--retention", short, ok=False)
    assert "AccessDenied" in err, err
    aws("put-object-retention", "--bucket", "clilock", "--key", "k", "--version-id", v, "--retention",
        json.dumps({"Mode": "GOVERNANCE", "RetainUntilDate": later(3 * 86400).strftime("%Y-%m-%dT%H:%M:%SZ")}))
    aws("put-object-retention", "--bucket", "clilock", "--key", "k", "--version-id", v, "--retention", short,
        "--bypass-governance-retention")
    got = aws("get-object-retention", "--bucket", "clilock", "--key", "k", "--version-id", v)["Retention"]
    assert got["RetainUntilDate"].startswith(short_date.strftime("%Y-%m-%dT%H:%M:%S")), got
    aws("delete-object", "--bucket", "clilock", "--key", "k", "--version-id", v, "--bypass-governance-retention")
    assert aws("list-object-versions", "--bucket", "clilock").get("Versions") is None
    err = aws("put-bucket-versioning", "--bucket", "clilock", "--versioning-configuration", "Status=Suspended", ok=False)
    assert "InvalidBucketState" in err, err
    aws("delete-bucket", "--bucket", "clilock")


check("the aws CLI: every object lock operation", aws_cli)

print("all object lock checks passed")
