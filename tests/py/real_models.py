"""Real embedding models (all-MiniLM-L6-v2 in numpy, fixtures/real_models/) behind a
real shadowgate, driven by real clients. Scenarios print one JSON object on stdout.

    python3 real_models.py openai-sdk-batches --shadowgate BIN [--venvs DIR]

openai-sdk-batches: np-fp32 is primary and baseline, np-int8w the canary; the official
OpenAI Python SDK sends batches of 1, 8 and 32 corpus inputs through the sidecar (the SDK
asks for base64 by default). Checked: compared pairs == inputs sent, and every item's
cosine in the shadow log equals the cosine computed directly from the two servers'
answers for the same batch (float answers, float64 arithmetic) within 1e-6.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KIT = os.path.join(ROOT, "fixtures", "real_models")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def corpus():
    lines = open(os.path.join(KIT, "corpus.txt"), encoding="utf-8").read().split("\n")
    meta = [l.split("\t") for l in open(os.path.join(KIT, "corpus.meta.tsv")).read().split("\n")[1:] if l]
    return [(lines[int(m[0]) - 1], m[1], int(m[2])) for m in meta]


class Servers:
    """Starts model variants through the kit's start.sh; stops them on exit."""

    def __init__(self, venvs):
        self.env = dict(os.environ, RM_VENVS=venvs, RM_LOGS=tempfile.mkdtemp(prefix="rm-logs-"))
        self.pids = []

    def start(self, variant):
        port = free_port()
        out = subprocess.run([os.path.join(KIT, "start.sh"), "np-" + variant, str(port)],
                             env=self.env, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise SystemExit(f"start.sh np-{variant}: {out.stderr.strip()}")
        pid = int(out.stdout.split("PID ")[1].split()[0])
        self.pids.append(pid)
        return f"http://127.0.0.1:{port}"

    def stop(self):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


class Sidecar:
    def __init__(self, binary, primary, baseline, canary, log_dir, extra=""):
        self.proxy, self.admin = free_port(), free_port()
        cfg = f"""
[model]
name = "minilm"
version = "fp32"
[listen]
proxy = "127.0.0.1:{self.proxy}"
admin = "127.0.0.1:{self.admin}"
[primary]
url = "{primary}"
timeout = "120s"
[shadow]
sample_rate = 1.0
max_per_second = 0
timeout = "30s"
self_similarity_rate = 0.0
[shadow.baseline]
url = "{baseline}"
version = "fp32"
[shadow.canary]
url = "{canary}"
version = "int8w"
[drift]
min_pairs = 10
[shadow_log]
dir = "{log_dir}"
max_file_age = "1s"
store_inputs = true
{extra}
"""
        self.cfg = os.path.join(log_dir, "..", "shadowgate.toml")
        open(self.cfg, "w").write(cfg)
        self.proc = subprocess.Popen([binary, "serve", "--config", self.cfg],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/healthz", timeout=1)
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise SystemExit("sidecar did not start: " + self.proc.stderr.read().decode())
                time.sleep(0.1)

    def url(self):
        return f"http://127.0.0.1:{self.proxy}"

    def metric(self, name, **labels):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=5).read().decode()
        total = None
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
        return total

    def wait_pairs(self, n, timeout=600):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if (self.metric("model_embedding_pairs_total") or 0) >= n:
                return
            time.sleep(0.2)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def post_json(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=300))


def read_log(log_dir):
    import pyarrow.dataset as ds
    t = ds.dataset(log_dir, format="parquet", partitioning="hive").to_table(
        columns=["request_id", "item", "input", "cosine_similarity"])
    return t.to_pylist()


def openai_sdk_batches(args):
    import numpy as np
    from openai import OpenAI

    servers = Servers(args.venvs)
    work = tempfile.mkdtemp(prefix="sg-sdk-")
    log_dir = os.path.join(work, "log")
    os.makedirs(log_dir)
    sidecar = None
    try:
        fp32 = servers.start("fp32")
        int8 = servers.start("int8w")
        sidecar = Sidecar(args.shadowgate, fp32, fp32, int8, log_dir)
        client = OpenAI(base_url=sidecar.url() + "/v1", api_key="unused", max_retries=0, timeout=300)
        texts = [t for t, cat, chars in corpus() if cat in ("doc", "man_i18n")]
        sent = []
        at = 0
        for r, n in enumerate([1, 8, 32, 8, 1, 32]):
            batch = texts[at:at + n]
            at += n
            rid = f"sdk-{r}"
            resp = client.embeddings.create(model="minilm", input=batch,
                                            extra_headers={"x-request-id": rid})
            assert len(resp.data) == n, (len(resp.data), n)
            sent.append((rid, batch))
        inputs = sum(len(b) for _, b in sent)
        sidecar.wait_pairs(inputs)
        compared = sidecar.metric("model_embedding_pairs_total", outcome="compared")
        total = sidecar.metric("model_embedding_pairs_total")
        requests = sidecar.metric("shadowgate_shadow_batch_items_count")
        sidecar.stop()
        sidecar = None
        rows = {(r["request_id"], r["item"]): r for r in read_log(log_dir)}
        worst = 0.0
        missing = []
        for rid, batch in sent:
            # The direct computation: both servers, the same batch, float answers.
            b = post_json(fp32 + "/v1/embeddings", {"model": "m", "input": batch})
            c = post_json(int8 + "/v1/embeddings", {"model": "m", "input": batch})
            for i, text in enumerate(batch):
                be = np.array(b["data"][i]["embedding"], dtype=np.float64)
                ce = np.array(c["data"][i]["embedding"], dtype=np.float64)
                direct = float(be @ ce / np.linalg.norm(be) / np.linalg.norm(ce))
                row = rows.get((rid, i))
                if row is None or row["input"] != text or row["cosine_similarity"] is None:
                    missing.append([rid, i])
                    continue
                worst = max(worst, abs(direct - row["cosine_similarity"]))
        print(json.dumps({
            "inputs": inputs, "requests": len(sent), "compared": compared, "pairs": total,
            "batch_requests": requests, "log_rows": len(rows), "missing": missing,
            "max_abs_cosine_diff": worst,
        }))
    finally:
        if sidecar is not None:
            sidecar.stop()
        servers.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=["openai-sdk-batches"])
    ap.add_argument("--shadowgate", required=True)
    ap.add_argument("--venvs", default=os.environ.get("RM_VENVS", os.path.expanduser("~/.cache/shadowgate/rm-venvs")))
    args = ap.parse_args()
    {"openai-sdk-batches": openai_sdk_batches}[args.scenario](args)


if __name__ == "__main__":
    sys.exit(main())
