"""boto3 over HTTPS against `kura dev --tls`, trusting only the cluster CA:
PUT, GET, LIST, and a refusal when the CA is not trusted."""
import os
import sys

import boto3
import botocore.config
import botocore.exceptions

ca = os.path.join(os.environ["KURA_DIR"], "tls", "ca.pem")
endpoint = os.environ["KURA_S3"]
assert endpoint.startswith("https://"), endpoint
cfg = botocore.config.Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"})
s3 = boto3.client("s3", endpoint_url=endpoint, verify=ca, config=cfg, region_name="us-east-1")
s3.create_bucket(Bucket="boto-tls")
s3.put_object(Bucket="boto-tls", Key="a", Body=b"over tls" * 1000)
assert s3.get_object(Bucket="boto-tls", Key="a")["Body"].read() == b"over tls" * 1000
assert [o["Key"] for o in s3.list_objects_v2(Bucket="boto-tls")["Contents"]] == ["a"]

# Without the CA (the system store only) the gateway's certificate is not trusted.
os.environ.pop("AWS_CA_BUNDLE", None)
plain = boto3.client("s3", endpoint_url=endpoint, verify=True, config=cfg, region_name="us-east-1")
try:
    plain.list_buckets()
except botocore.exceptions.SSLError:
    print("untrusted CA refused")
else:
    sys.exit("a client that does not trust the cluster CA connected")
