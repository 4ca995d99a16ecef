#!/opt/s3/bin/python
"""The part of MinIO's `mc` that docker-compose.yml uses, against any S3 server (moto's, here):
`mc ready local`, `mc alias set NAME URL KEY SECRET`, `mc mb [--ignore-existing] NAME/BUCKET`."""

import json
import os
import sys
import urllib.request
from pathlib import Path

import boto3

ALIASES = Path(os.environ.get("HOME", "/tmp"), ".mc-aliases.json")


def main(args: list[str]) -> int:
    if args[:1] == ["ready"]:  # only the local server: GET / answers once it listens
        try:
            urllib.request.urlopen("http://127.0.0.1:9000/", timeout=3)
        except OSError as error:
            print(f"not ready: {error}", file=sys.stderr)
            return 1
        return 0
    if args[:2] == ["alias", "set"] and len(args) == 6:
        name, url, key, secret = args[2:]
        aliases = json.loads(ALIASES.read_text()) if ALIASES.exists() else {}
        ALIASES.write_text(json.dumps(aliases | {name: [url, key, secret]}))
        return 0
    if args[:1] == ["mb"]:
        alias, _, bucket = args[-1].partition("/")
        url, key, secret = json.loads(ALIASES.read_text())[alias]
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        )
        existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
        if bucket in existing and "--ignore-existing" in args:
            return 0
        s3.create_bucket(Bucket=bucket)
        print(f"Bucket created successfully `{args[-1]}`.")
        return 0
    print(f"mc stand-in: unsupported command {args}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
