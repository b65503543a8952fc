#!/usr/bin/env python3
"""Runs deploy/spark/accuracy_job.py for several argument lists in one Spark local
session (one JVM start instead of one per case), for tests/it/accuracy.rs.

Usage: accuracy_spark_cases.py CASES.json   with a list of argument lists, each as the
job's command line (including --json OUT). Exits 3 with a message when pyspark is not
importable, 1 when a case fails.
"""
import json
import os
import sys

try:
    import pyspark  # noqa: F401
except ImportError:
    print(
        "pyspark is not importable: run scripts/test.sh (it pip-installs pyspark), "
        "or `python3 -m pip install pyspark`",
        file=sys.stderr,
    )
    sys.exit(3)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "deploy", "spark"))
import accuracy_job  # noqa: E402

cases = json.load(open(sys.argv[1]))
spark = accuracy_job.session("local[2]", 4)
try:
    for argv in cases:
        accuracy_job.run_job(spark, accuracy_job.parser().parse_args(argv))
finally:
    spark.stop()
