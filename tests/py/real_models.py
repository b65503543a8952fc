"""Real embedding models (all-MiniLM-L6-v2 in numpy, fixtures/real_models/) behind a
real shadowgate, driven by real clients. Scenarios print one JSON object on stdout.

    python3 real_models.py openai-sdk-batches --shadowgate BIN [--venvs DIR]

slices: one sidecar per canary variant (np-fp32 itself, int8w, nocjk, trunc16, droplast
by default), all in front of np-fp32 as primary with reuse_primary (the pod serves the
baseline version, so its own answer is the baseline side); a stratified sample of the
corpus (every CJK, Cyrillic and long input, plus others) in a seeded random order, in
batches of 8; a real Prometheus scrapes every sidecar each second and every
AnalysisTemplate of deploy/argo is measured with Argo's rules every few seconds while the
traffic runs. Reports, per variant, the final verdicts and the compared pairs at the
first Failed and first Successful measurement of each template.

openai-sdk-batches: np-fp32 is primary and baseline, np-int8w the canary; the official
OpenAI Python SDK sends batches of 1, 8 and 32 corpus inputs through the sidecar (the SDK
asks for base64 by default). Checked: compared pairs == inputs sent, and every item's
cosine in the shadow log equals the cosine computed directly from the two servers'
answers for the same batch (float answers, float64 arithmetic) within 1e-6.
"""
import argparse
import http.server
import json
import random
import re
import threading
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

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
    def __init__(self, binary, primary, baseline, canary, log_dir, extra="", model="minilm",
                 canary_version="int8w"):
        self.proxy, self.admin = free_port(), free_port()
        cfg = f"""
[model]
name = "{model}"
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
{extra}
[shadow.baseline]
url = "{baseline}"
version = "fp32"
[shadow.canary]
url = "{canary}"
version = "{canary_version}"
[drift]
min_pairs = 10
[shadow_log]
dir = "{log_dir}"
max_file_age = "1s"
store_inputs = true
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


class CachingProxy:
    """In front of the deterministic np-fp32 server: answers a body it has answered before
    from memory, so that several sidecars' primaries cost the model one pass."""

    def __init__(self, upstream):
        cache, lock = {}, threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                key = (self.path, body)
                with lock:
                    hit = cache.get(key)
                if hit is None:
                    req = urllib.request.Request(upstream + self.path, data=body,
                                                 headers={"content-type": "application/json"})
                    hit = urllib.request.urlopen(req, timeout=600).read()
                    with lock:
                        cache[key] = hit
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(hit)))
                self.end_headers()
                self.wfile.write(hit)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


class Prometheus:
    def __init__(self, targets, interval="1s"):
        self.dir = tempfile.mkdtemp(prefix="sg-prom-")
        port = free_port()
        cfg = os.path.join(self.dir, "prometheus.yml")
        tl = ", ".join(f"'{t}'" for t in targets)
        open(cfg, "w").write(
            f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
            f"scrape_configs:\n  - job_name: shadowgate\n    static_configs:\n"
            f"      - targets: [{tl}]\n        labels:\n          rollouts_pod_template_hash: 'canary'\n")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if b"Ready" in urllib.request.urlopen(self.url + "/-/ready", timeout=1).read():
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("prometheus not ready")

    def value(self, expr):
        """The first value of an instant query, or None."""
        url = self.url + "/api/v1/query?query=" + urllib.parse.quote(expr)
        try:
            data = json.loads(urllib.request.urlopen(url, timeout=5).read())["data"]["result"]
        except (OSError, KeyError, ValueError):
            return None
        return float(data[0]["value"][1]) if data else None

    def wait_scraped(self, model, n, timeout=30):
        """Until the last three scrapes (1 s apart) of `model` all held `n` pairs: the
        final count is in every window the templates read."""
        expr = f'min_over_time(sum(model_embedding_pairs_total{{model="{model}"}})[3s:1s])'
        deadline = time.time() + timeout
        while (self.value(expr) or 0) < n:
            if time.time() > deadline:
                raise SystemExit(f"prometheus did not scrape {n} pairs of {model} within {timeout} s")
            time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def stratified_inputs(others, seed):
    """Every CJK, Cyrillic and long input of the corpus plus `others` more, in a seeded
    random order, grouped so that a batch of 8 holds inputs of similar length (the model
    pads a batch to its longest input)."""
    cjk = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
    cyr = re.compile(r"[\u0400-\u04ff]")
    rows = corpus()
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    special = [i for i in idx if cjk.search(rows[i][0]) or cyr.search(rows[i][0]) or rows[i][1] == "long"]
    rest = [i for i in idx if i not in set(special)][:others]
    chosen = special + rest
    random.Random(seed + 1).shuffle(chosen)
    texts = [rows[i][0] for i in chosen]
    out = []
    for k in range(0, len(texts), 64):
        out += sorted(texts[k:k + 64], key=len)
    return out


def slices(args):
    sys.path.insert(0, HERE)
    import argo_verdicts

    variants = args.variants.split(",")
    servers = Servers(args.venvs)
    work = tempfile.mkdtemp(prefix="sg-slices-")
    sidecars, prom = {}, None
    try:
        fp32 = servers.start("fp32")
        primary = CachingProxy(fp32)
        canaries = {v: (primary.url if v == "fp32" else servers.start(v)) for v in variants}
        extra = open(args.extra).read() if args.extra else ""
        if args.codebook:
            extra += f'\n[slices]\ncodebook = "{os.path.abspath(args.codebook)}"\n'
        # This pod serves the baseline's version: its own answer is the baseline side.
        for v in variants:
            log_dir = os.path.join(work, v, "log")
            os.makedirs(log_dir)
            sidecars[v] = Sidecar(args.shadowgate, primary.url, primary.url, canaries[v], log_dir,
                                  model=v, canary_version=v,
                                  extra="reuse_primary = true\n" + extra)
        prom = Prometheus([f"127.0.0.1:{s.admin}" for s in sidecars.values()])
        texts = stratified_inputs(args.others, args.seed)
        looks = {v: [] for v in variants}
        done = threading.Event()

        def look():
            for v, sc in sidecars.items():
                pairs = sc.metric("model_embedding_pairs_total", outcome="compared") or 0
                report = argo_verdicts.evaluate(prom.url, Path(args.templates), {
                    "model": v, "baseline": "fp32", "canary": v, "stable-version": "fp32",
                    "canary-version": v, "baseline-version": "fp32", "canary-hash": "canary"})
                looks[v].append({"pairs": pairs, "verdicts": {n: t["verdict"] for n, t in report.items()},
                                 "metrics": {n: t["metrics"] for n, t in report.items()},
                                 "details": report})

        def looker():
            while not done.wait(args.look_seconds):
                look()

        def traffic(v):
            client = sidecars[v]
            for k in range(0, len(texts), 8):
                post_json(client.url() + "/v1/embeddings", {"model": "minilm", "input": texts[k:k + 8]})

        lt = threading.Thread(target=looker, daemon=True)
        lt.start()
        workers = [threading.Thread(target=traffic, args=(v,)) for v in variants]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        for v, sc in sidecars.items():
            sc.wait_pairs(len(texts))
            prom.wait_scraped(v, len(texts))  # the last pair in every window
        done.set()
        lt.join()
        look()
        out = {}
        for v in variants:
            seq = looks[v]
            first = {}
            for name in seq[-1]["verdicts"]:
                for phase in ("Failed", "Successful"):
                    hit = next((l["pairs"] for l in seq if l["verdicts"].get(name) == phase), None)
                    first.setdefault(name, {})[phase] = hit
            # The same per metric of the templates (which of a template's metrics decided).
            first_metric = {}
            for name, ms in seq[-1]["metrics"].items():
                for metric in ms:
                    hit = next((l["pairs"] for l in seq
                                if l["metrics"].get(name, {}).get(metric) == "Failed"), None)
                    first_metric[f"{name}/{metric}"] = hit
            worst = None
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{sidecars[v].admin}/", timeout=5).read().decode()
                m = re.search(r'id="worst-slice">([^<]*)<', page)
                worst = m.group(1) if m else None
            except OSError:
                pass
            out[v] = {"inputs": len(texts), "pairs": seq[-1]["pairs"], "looks": len(seq), "worst_slice": worst,
                      "final": seq[-1]["verdicts"], "first": first, "first_failed_metric": first_metric,
                      "final_metrics": seq[-1]["metrics"],
                      "final_details": argo_verdicts.clean(seq[-1]["details"])}
        print(json.dumps(out))
    finally:
        for sc in sidecars.values():
            try:
                sc.stop()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        if prom is not None:
            prom.stop()
        servers.stop()


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
    ap.add_argument("scenario", choices=["openai-sdk-batches", "slices"])
    ap.add_argument("--variants", default="fp32,int8w,nocjk,trunc16,droplast")
    ap.add_argument("--others", type=int, default=400, help="slices: inputs beyond CJK, Cyrillic, long")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--look-seconds", type=float, default=3.0)
    ap.add_argument("--templates", default=os.path.join(ROOT, "deploy", "argo"))
    ap.add_argument("--extra", help="slices: a file of [shadow] keys and tables for every sidecar")
    ap.add_argument("--codebook", help="slices: a codebook from `shadowgate slices fit` for the region slices")
    ap.add_argument("--shadowgate", required=True)
    ap.add_argument("--venvs", default=os.environ.get("RM_VENVS", os.path.expanduser("~/.cache/shadowgate/rm-venvs")))
    args = ap.parse_args()
    {"openai-sdk-batches": openai_sdk_batches, "slices": slices}[args.scenario](args)


if __name__ == "__main__":
    sys.exit(main())
