"""Runs the builder stage of a Dockerfile on this machine, without a container engine.

Usage: deploy_dockerfile_build.py DOCKERFILE WORKDIR

Reads the first stage (FROM ... AS builder up to the next FROM) and replays its
instructions against the repository as the build context: WORKDIR, ENV and SHELL are
honoured, COPY copies from the context into the stage's filesystem, RUN runs in the
current WORKDIR with that shell. The stage's filesystem is WORKDIR/root: absolute paths
in RUN commands that the stage creates (its WORKDIR and the paths it installs to) are
mapped under it, so nothing outside WORKDIR is written. The host provides what the base
image would (here rust:1-bookworm: cargo, rustc, gcc), so this proves the commands, the
lockfile and the dependency-caching stubs work; not the base image itself.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def instructions(text):
    text = re.sub(r"\\\n", " ", text)
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            yield op.upper(), rest.strip()


def main():
    dockerfile, work = Path(sys.argv[1]), Path(sys.argv[2]).resolve()
    if work.exists():
        shutil.rmtree(work)
    fs = work / "root"
    fs.mkdir(parents=True)
    stage = []
    seen_from = 0
    for op, rest in instructions(dockerfile.read_text()):
        if op == "FROM":
            seen_from += 1
            if seen_from > 1:
                break
            continue
        stage.append((op, rest))
    # Absolute paths the stage owns, mapped into its filesystem.
    owned = {rest for op, rest in stage if op == "WORKDIR"}
    for op, rest in stage:
        if op == "RUN":
            owned |= set(re.findall(r"(?<![\w.])(/out)\b", rest))

    def host(p):
        return fs / p.lstrip("/")

    def remap(cmd):
        for p in sorted(owned, key=len, reverse=True):
            cmd = re.sub(rf"(?<![\w./]){re.escape(p)}(?=/|\s|$)", str(host(p)), cmd)
        return cmd

    cwd = fs
    env = dict(os.environ)
    env.pop("CARGO_TARGET_DIR", None)  # the stage builds in its own target/
    shell = ["/bin/sh", "-c"]
    started = time.monotonic()
    for op, rest in stage:
        if op == "WORKDIR":
            cwd = host(rest)
            cwd.mkdir(parents=True, exist_ok=True)
        elif op == "SHELL":
            shell = __import__("json").loads(rest)
        elif op == "ENV":
            for k, v in (kv.split("=", 1) for kv in shlex.split(rest)):
                env[k] = v
        elif op == "COPY":
            *srcs, dst = shlex.split(rest)
            dest = cwd / dst if not dst.startswith("/") else host(dst)
            for s in srcs:
                src = ROOT / s
                if src.is_dir():
                    shutil.copytree(src, dest if not dst.endswith("/") else dest / src.name, dirs_exist_ok=True)
                else:
                    (dest if dst.endswith("/") or len(srcs) > 1 else dest.parent).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dest / src.name if dst.endswith("/") or len(srcs) > 1 else dest)
        elif op == "RUN":
            cmd = remap(rest)
            print(f"RUN {rest}", flush=True)
            t = time.monotonic()
            subprocess.run(shell + [cmd], cwd=cwd, env=env, check=True)
            print(f"    ({time.monotonic() - t:.0f} s)", flush=True)
        elif op in ("ARG", "LABEL"):
            pass
        else:
            sys.exit(f"unsupported instruction in builder stage: {op}")
    binary = host("/out/shadowgate")
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    print(f"builder stage ok in {time.monotonic() - started:.0f} s: {binary} -> {out.stdout.strip()}")


if __name__ == "__main__":
    main()
