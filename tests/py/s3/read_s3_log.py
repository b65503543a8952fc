"""Read a shadow-log tree in S3 with pyarrow's own S3 filesystem; print what it sees.

Usage: read_s3_log.py ENDPOINT ACCESS_KEY SECRET_KEY BUCKET/PREFIX
Prints one JSON object: rows, sorted request_ids, the Hive partition columns seen, and
every object key under the prefix (hidden ones included), so a test can tell that only
complete Parquet files and the sidecar's `_shadowgate/` probe are there.
"""

import json
import sys

import pyarrow.dataset as ds
import pyarrow.fs as pafs


def main():
    endpoint, key, secret, root = sys.argv[1:5]
    scheme, host = endpoint.split("://", 1)
    fs = pafs.S3FileSystem(access_key=key, secret_key=secret, endpoint_override=host,
                           scheme=scheme, region="us-east-1")
    keys = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                  if i.type == pafs.FileType.File)
    dset = ds.dataset(root, filesystem=fs, format="parquet", partitioning="hive")
    table = dset.to_table()
    print(json.dumps({
        "rows": table.num_rows,
        "files": len(dset.files),
        "request_ids": sorted(table.column("request_id").to_pylist()) if table.num_rows else [],
        "columns": table.column_names,
        "keys": keys,
    }))


if __name__ == "__main__":
    main()
