"""An S3-compatible server on loopback for the object-store tests: moto in server mode
(PyPI `moto[server]`), with authentication on.

Usage: moto_s3.py PORT BUCKET [--auth]
Starts moto on 127.0.0.1:PORT, creates an IAM user allowed s3:* with an access key, and
BUCKET. With --auth every later request must be signed with that key (moto checks
signatures against its IAM once INITIAL_NO_AUTH_ACTION_COUNT unauthenticated calls are
used up). Prints one JSON line {"port", "access_key_id", "secret_access_key"} and serves
until killed.

moto 5 checks signatures against the decoded path: a key with `=` (every Hive partition
directory) is signed by the AWS SDKs and object_store over `%3D`, as S3 specifies, and
moto then answers SignatureDoesNotMatch. So the tests that write partitioned trees run
without --auth, and the credential test (whose probe key has no `=`) runs with it.
"""

import json
import os
import sys
import time

if "--auth" in sys.argv:
    # The setup below makes exactly this many calls before authentication starts.
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "4"

import boto3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


def main():
    port, bucket = int(sys.argv[1]), sys.argv[2]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    kw = dict(endpoint_url=endpoint, region_name="us-east-1",
              aws_access_key_id="setup", aws_secret_access_key="setup")
    iam = boto3.client("iam", **kw)
    iam.create_user(UserName="shadowgate")
    iam.put_user_policy(UserName="shadowgate", PolicyName="s3", PolicyDocument=json.dumps(POLICY))
    key = iam.create_access_key(UserName="shadowgate")["AccessKey"]
    boto3.client("s3", **kw).create_bucket(Bucket=bucket)
    print(json.dumps({"port": port, "access_key_id": key["AccessKeyId"],
                      "secret_access_key": key["SecretAccessKey"]}), flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
