#!/usr/bin/env python3
"""haul against aria2c, axel, wget2 and curl on the same files, in one run.

Cases (see README "Performance"):
  1. a 1 GiB file at full speed from nginx (Range support), plus the ceilings:
     curl to /dev/null (network + server) and dd with and without conv=fsync (disk);
  2. a 256 MiB file throttled by nginx to 8 MiB/s per request (limit_rate 8m together with
     sendfile_max_chunk 64k, checked: a 1 MiB range must take about 0.12 s);
  3. a 256 MiB file from a location that ignores Range (max_ranges 0);
  4. 2 000 files of 16 KiB: haul as one job and as 2 000 jobs, aria2c -i -j16,
     curl --parallel --parallel-max 16, wget2 -i --max-threads=16;
  5. CPU seconds (user+sys) per GiB and peak RSS for cases 1 and 2, the RSS of an idle
     daemon holding 100 000 queued jobs, and the latency of GET /v1/jobs/{id} (p50, p99)
     while 10 000 jobs are submitted by 200 clients at once and downloads run.

haul is driven as a user would: submit over the API, wait for the job's completion event. Runs
alternate between tools; each run writes into a fresh directory, is checked by sha256 (a wrong
file is a failure, not a time) and deleted. Before each run the script waits for a quiet
machine. It prints medians and the ratio haul/peer.
"""

import argparse
import base64
import collections
import concurrent.futures
import http.client
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

GIB = 1 << 30
MIB = 1 << 20
SMALL_COUNT = 2000
SMALL_SIZE = 16 * 1024


def log(message):
    print(message, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_quiet(max_wait=90.0, threshold=0.6):
    """Flushes what earlier runs left dirty in the page cache (so no run pays for another's
    writeback), then waits until the 1-minute load average of the machine is low (a build
    beside a benchmark ruins it). Gives up after max_wait seconds and says so."""
    os.sync()
    started = time.time()
    while True:
        load = os.getloadavg()[0]
        if load < threshold:
            return
        if time.time() - started > max_wait:
            log(f"   (machine still busy: load {load:.2f}; measuring anyway)")
            return
        time.sleep(2)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(MIB)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def make_file(path, size):
    with open("/dev/urandom", "rb") as src, open(path, "wb") as dst:
        left = size
        while left:
            block = src.read(min(left, 8 * MIB))
            dst.write(block)
            left -= len(block)
    return sha256_file(path)


class Nginx:
    """An nginx of our own on loopback, with one location per case."""

    def __init__(self, work, www):
        self.dir = os.path.join(work, "nginx")
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        self.port = free_port()
        self.conf = os.path.join(self.dir, "nginx.conf")
        user = "user root;" if os.geteuid() == 0 else ""
        with open(self.conf, "w") as f:
            f.write(f"""
{user}
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    types {{ }}
    default_type application/octet-stream;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        root {www};
        location /throttled/ {{
            # Both lines: without sendfile_max_chunk the first 2 MiB of every request escape
            # the limit, and small range requests would measure that artifact.
            limit_rate 8m;
            sendfile_max_chunk 64k;
        }}
        location /norange/ {{
            max_ranges 0;
        }}
        location /stall/ {{
            alias {www}/throttled/;
            limit_rate 1;
            sendfile_max_chunk 1;
        }}
    }}
}}
""")
        subprocess.run(["nginx", "-c", self.conf, "-p", self.dir], check=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self):
        subprocess.run(["nginx", "-c", self.conf, "-p", self.dir, "-s", "stop"], check=False)


class Haul:
    """The haul daemon, driven over its API."""

    def __init__(self, binary, work, root, max_jobs=16, per_host=16):
        self.data = os.path.join(work, "haul-data")
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HAUL_")}
        env["RUST_LOG"] = os.environ.get("HAUL_BENCH_LOG", "warn")
        env["HAUL_MAX_CONNECTIONS_PER_HOST"] = str(per_host)
        # One client submitting 100 000 jobs as fast as it can is what the per-client rate
        # limit is for; the benchmark measures the engine and the queue, so it is off.
        env["HAUL_SUBMIT_RATE_PER_SECOND"] = "0"
        self.log = open(os.path.join(work, "haul.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data,
             "--download-root", root, "--max-concurrent-jobs", str(max_jobs)],
            env=env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while True:
            try:
                self.get("/healthz")
                return
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("haul did not start; see haul.log")
                time.sleep(0.05)

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as resp:
            raw = resp.read()
            return json.loads(raw) if raw else None

    def get(self, path):
        return self.request("GET", path)

    def submit(self, body):
        return self.request("POST", "/v1/jobs", body)["id"]

    def wait(self, job_id):
        """Follows the job's events until its final one; returns the final status."""
        req = urllib.request.Request(f"{self.url}/v1/jobs/{job_id}/events")
        status = None
        with urllib.request.urlopen(req, timeout=3600) as resp:
            for line in resp:
                line = line.decode().strip()
                if line.startswith("data:"):
                    status = json.loads(line[5:])["status"]
        return status

    def run_many(self, bodies, clients=16):
        """Submits many jobs as a script would (16 clients at once, keep-alive) and waits for
        all of them through the event stream. Returns their final statuses."""
        ended = {}
        done = threading.Event()
        wanted = set()
        ready = threading.Event()

        def listen():
            req = urllib.request.Request(f"{self.url}/v1/events")
            with urllib.request.urlopen(req, timeout=3600) as resp:
                ready.set()
                for line in resp:
                    line = line.decode().strip()
                    if not line.startswith("data:"):
                        continue
                    event = json.loads(line[5:])
                    if event["type"] in ("job.completed", "job.failed", "job.cancelled"):
                        ended[event["job_id"]] = event["status"]
                        if wanted and wanted.issubset(ended):
                            done.set()
                            return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        ready.wait(10)
        local = threading.local()

        def submit(body):
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            local.conn.request("POST", "/v1/jobs", json.dumps(body),
                               {"content-type": "application/json"})
            return json.loads(local.conn.getresponse().read())["id"]

        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            ids = list(pool.map(submit, bodies))
        wanted.update(ids)
        if not wanted.issubset(ended):
            done.wait(3600)
        return [ended.get(job_id) for job_id in ids]

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def reset_peak_rss(self):
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def rss(self, field="VmHWM"):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Result:
    def __init__(self, wall, cpu=None, rss=None):
        self.wall, self.cpu, self.rss = wall, cpu, rss


def run_process(argv, cwd):
    """Runs a peer under GNU time; returns wall time, CPU seconds and peak RSS of the peer
    alone (a child forked from this Python process would inherit its RSS high-water mark)."""
    marker = "haul-bench-usage:"
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", f"{marker}%M %U %S"] + argv, cwd=cwd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {err.strip()[:500]}")
    usage = [line for line in err.splitlines() if line.startswith(marker)][-1]
    rss_kib, user, system = usage[len(marker):].split()
    return Result(wall, float(user) + float(system), int(rss_kib) * 1024)


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="haul-bench-", dir=args.dir)
        self.www = os.path.join(self.work, "www")
        self.out = os.path.join(self.work, "out")
        os.makedirs(self.out)
        self.runs = 0
        self.table = []
        self.keep_outputs = False
        self.kept = []

    def fresh_dir(self, tool):
        self.runs += 1
        path = os.path.join(self.out, f"run{self.runs:04d}-{tool}")
        os.makedirs(path)
        return path

    def haul_run(self, body_for, verify):
        """One haul run: submit (one or many jobs), wait for all; CPU and peak RSS of the
        daemon over the run."""
        out = self.fresh_dir("haul")
        rel = os.path.relpath(out, self.out)
        self.haul.reset_peak_rss()
        cpu0 = self.haul.cpu_seconds()
        started = time.perf_counter()
        bodies = body_for(rel)
        if len(bodies) == 1:
            statuses = [self.haul.wait(self.haul.submit(bodies[0]))]
        else:
            statuses = self.haul.run_many(bodies)
        wall = time.perf_counter() - started
        result = Result(wall, self.haul.cpu_seconds() - cpu0, self.haul.rss())
        if any(s != "completed" for s in statuses):
            raise RuntimeError(f"haul jobs ended {set(statuses)}")
        verify(out)
        self.finished(out)
        return result

    def peer_run(self, tool, argv_for, verify):
        out = self.fresh_dir(tool)
        result = run_process(argv_for(out), out)
        verify(out)
        self.finished(out)
        return result

    def finished(self, out):
        """Big files go at once; many small ones are kept until the case ends: deleting 2 000
        files and creating 2 000 more at once makes ext4's inode allocator slow and would
        falsify the next run."""
        if self.keep_outputs:
            self.kept.append(out)
        else:
            shutil.rmtree(out)

    def measure(self, case, tools, size):
        """Alternates runs of every tool; records medians."""
        samples = {name: [] for name, _ in tools}
        failures = {name: [] for name, _ in tools}
        for run in range(self.args.runs):
            for index, (name, fn) in enumerate(tools):
                wait_quiet()
                try:
                    result = fn()
                except RuntimeError as err:
                    if index == 0:
                        raise  # haul failing is the benchmark failing
                    # A peer that crashes or writes a wrong file has no time, only a failure.
                    failures[name].append(str(err))
                    log(f"   case {case} run {run + 1} {name:<16} FAILED: {err}")
                    continue
                samples[name].append(result)
                log(f"   case {case} run {run + 1} {name:<16} {result.wall:7.3f} s")
        haul = statistics.median(r.wall for r in samples[tools[0][0]])
        for name, results in samples.items():
            if not results:
                self.table.append({"case": case, "tool": name, "median_s": None, "ratio": None,
                                   "cpu_s_per_gib": None, "peak_rss_mib": None,
                                   "note": f"failed every run: {failures[name][0][:80]}"})
                continue
            wall = statistics.median(r.wall for r in results)
            cpus = [r.cpu for r in results if r.cpu is not None]
            rsss = [r.rss for r in results if r.rss is not None]
            self.table.append({
                "case": case, "tool": name, "median_s": wall,
                "ratio": haul / wall if wall else None,
                "cpu_s_per_gib": statistics.median(cpus) * GIB / size if cpus and size else None,
                "peak_rss_mib": max(rsss) / MIB if rsss else None,
                "note": f"{len(failures[name])} of {self.args.runs} runs failed"
                        if failures[name] else "",
            })

    def check_file(self, name, expected):
        def verify(out):
            path = os.path.join(out, name)
            actual = sha256_file(path)
            if actual != expected:
                raise RuntimeError(f"{path}: sha256 {actual}, expected {expected}")
        return verify

    def setup(self):
        log(f"==> files in {self.work}")
        for sub in ("full", "throttled", "norange", "small"):
            os.makedirs(os.path.join(self.www, sub))
        cases = self.args.cases
        self.sums = {}
        if 1 in cases:
            self.sums["big"] = make_file(os.path.join(self.www, "full", "big.bin"), GIB)
        if cases & {2, 3}:
            path = os.path.join(self.www, "throttled", "mid.bin")
            self.sums["mid"] = make_file(path, 256 * MIB)
            os.link(path, os.path.join(self.www, "norange", "mid.bin"))
        if 5 in cases:
            self.sums["load"] = make_file(os.path.join(self.www, "full", "load.bin"), 64 * MIB)
        if 4 in cases:
            self.small = []
            for i in range(SMALL_COUNT):
                name = f"f{i:04d}.bin"
                digest = make_file(os.path.join(self.www, "small", name), SMALL_SIZE)
                self.small.append((name, digest))
        self.nginx = Nginx(self.work, self.www)
        self.haul = Haul(self.args.haul, self.work, self.out,
                         per_host=max(16, self.args.max_connections))
        if 2 in cases:
            self.check_throttle()

    def check_throttle(self):
        url = f"{self.nginx.url}/throttled/mid.bin"
        started = time.perf_counter()
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-r", f"{64 * MIB}-{65 * MIB - 1}", url],
                       check=True)
        took = time.perf_counter() - started
        log(f"   throttle check: a 1 MiB range took {took:.3f} s (expected about 0.12 s)")
        if took < 0.09:
            raise RuntimeError("the throttle lets small ranges through: check sendfile_max_chunk")

    def single_file_case(self, case, location, key, size, peers):
        url = f"{self.nginx.url}/{location}/{key}.bin"
        name = f"{key}.bin"
        verify = self.check_file(name, self.sums[key])
        # The peers' parameters: at most 16 connections (unless --max-connections says
        # otherwise), ranges split down to 1 MiB (aria2c -k1M).
        job = {"url": url, "max_connections": self.args.max_connections, "min_segment_size": MIB}
        tools = [("haul", lambda: self.haul_run(
            lambda rel: [job | {"dest": f"{rel}/{name}"}], verify))]
        commands = {
            "aria2c -x16": ["aria2c", "-q", "-x16", "-s16", "-k1M", "--allow-overwrite=true",
                            "-d", "{out}", "-o", name, url],
            "axel -n16": ["axel", "-q", "-n16", "-o", "{out}/" + name, url],
            "wget2 16 threads": ["wget2", "-q", "--max-threads=16", "--chunk-size=1M",
                                 "-O", "{out}/" + name, url],
            "curl": ["curl", "-s", "-f", "-o", "{out}/" + name, url],
        }
        for peer in peers:
            argv = commands[peer]
            tools.append((peer, lambda argv=argv, peer=peer: self.peer_run(
                peer.split()[0], lambda out: [a.replace("{out}", out) for a in argv], verify)))
        if case == 1:
            tools.append(("curl >/dev/null", lambda: self.peer_run(
                "null", lambda out: ["curl", "-s", "-f", "-o", "/dev/null", url], lambda out: None)))
            for label, extra in (("dd", []), ("dd conv=fsync", ["conv=fsync"])):
                tools.append((label, lambda extra=extra: self.peer_run(
                    "dd", lambda out: ["dd", "if=/dev/zero", f"of={out}/dd.bin", "bs=1M",
                                       f"count={size // MIB}", "status=none"] + extra,
                    lambda out: None)))
        log(f"==> case {case}: {size // MIB} MiB from /{location}/")
        self.measure(case, tools, size)

    def small_files_case(self):
        base = f"{self.nginx.url}/small"
        urls = [f"{base}/{name}" for name, _ in self.small]

        def verify(out):
            for name, digest in self.small:
                if sha256_file(os.path.join(out, name)) != digest:
                    raise RuntimeError(f"{name}: wrong content")

        def lists(out):
            with open(os.path.join(out, "..", f"{os.path.basename(out)}.list"), "w") as f:
                f.write("\n".join(urls) + "\n")
            return f.name

        def curl_config(out):
            path = os.path.join(out, "..", f"{os.path.basename(out)}.curl")
            with open(path, "w") as f:
                for url, (name, _) in zip(urls, self.small):
                    f.write(f'url = "{url}"\noutput = "{out}/{name}"\n')
            return path

        tools = [
            ("haul one job", lambda: self.haul_run(
                lambda rel: [{"files": [{"url": u} for u in urls], "dest": f"{rel}/"}], verify)),
            ("haul 2000 jobs", lambda: self.haul_run(
                lambda rel: [{"url": u, "dest": f"{rel}/"} for u in urls], verify)),
            ("aria2c -j16", lambda: self.peer_run("aria2c", lambda out: [
                "aria2c", "-q", "-j16", "--allow-overwrite=true", "-d", out, "-i", lists(out)],
                verify)),
            ("curl --parallel", lambda: self.peer_run("curl", lambda out: [
                "curl", "-s", "-f", "--parallel", "--parallel-max", "16", "-K", curl_config(out)],
                verify)),
            ("wget2 -i", lambda: self.peer_run("wget2", lambda out: [
                "wget2", "-q", "--max-threads=16", "-P", out, "-i", lists(out)], verify)),
        ]
        log(f"==> case 4: {SMALL_COUNT} files of {SMALL_SIZE // 1024} KiB")
        self.keep_outputs = True
        try:
            self.measure(4, tools, SMALL_COUNT * SMALL_SIZE)
        finally:
            self.keep_outputs = False
            for out in self.kept:
                shutil.rmtree(out, ignore_errors=True)
            self.kept.clear()

    def idle_rss(self, jobs):
        """RSS of a daemon holding `jobs` queued jobs (case 5): one slot, held by a download
        that trickles one byte a second, so every submitted job stays queued. Measured as the
        queue grows (a tenth, half, all of it) and after a restart on the full queue."""
        log(f"==> case 5: RSS with {jobs} queued jobs")
        work = tempfile.mkdtemp(prefix="idle-", dir=self.work)
        root = os.path.join(work, "dl")
        daemon = Haul(self.args.haul, work, root, max_jobs=1)
        body = {"url": f"{self.nginx.url}/full/never.bin", "dest": "q/"}
        workers = 8

        failures = []

        def submit_many(count):
            try:
                for _ in range(count):
                    daemon.request("POST", "/v1/jobs", body)
            except Exception as err:  # a refused submission fails the case, not only its thread
                failures.append(err)

        try:
            daemon.submit({"url": f"{self.nginx.url}/stall/mid.bin"})
            steps = [f"{daemon.rss('VmRSS') / MIB:.1f} MiB with 0"]
            submitted = 0
            for target in (jobs // 10, jobs // 2, jobs):
                count = (target - submitted) // workers
                threads = [threading.Thread(target=submit_many, args=(count,))
                           for _ in range(workers)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                if failures:
                    raise RuntimeError(f"a submission failed: {failures[0]}")
                submitted += count * workers
                queued = daemon.get("/v1/stats")["jobs"]["queued"]
                steps.append(f"{daemon.rss('VmRSS') / MIB:.1f} MiB with {queued}")
            daemon.stop()
            # A fresh daemon on the full queue: what the queue itself costs in memory.
            daemon = Haul(self.args.haul, work, root, max_jobs=1)
            queued = daemon.get("/v1/stats")["jobs"]["queued"]
            restarted = daemon.rss("VmRSS")
            self.table.append({
                "case": 5, "tool": "haul idle", "median_s": None, "ratio": None,
                "cpu_s_per_gib": None, "peak_rss_mib": restarted / MIB,
                "note": f"restarted with {queued} queued; while submitting: "
                        + ", ".join(steps)})
            self.list_latency(daemon, queued)
        finally:
            daemon.stop()

    def get_latency_under_load(self, jobs, clients=200, running=2):
        """Latency of GET /v1/jobs/{id} of a running job while `jobs` submissions arrive from
        `clients` at once (case 5). `running` downloads, each held to 2 MiB/s (32 s for its
        64 MiB), take every job slot, so the submitted jobs stay queued and the downloads run
        throughout. The reader asks every 10 ms, as a client watching its job would."""
        log(f"==> case 5: GET /v1/jobs/{{id}} while {jobs} jobs are submitted")
        work = tempfile.mkdtemp(prefix="load-", dir=self.work)
        daemon = Haul(self.args.haul, work, os.path.join(work, "dl"), max_jobs=running)
        try:
            ids = [daemon.submit({"url": f"{self.nginx.url}/full/load.bin", "dest": f"run{n}.bin",
                                  "max_bytes_per_second": 2 * MIB}) for n in range(running)]
            deadline = time.time() + 30
            while any(daemon.get(f"/v1/jobs/{i}")["status"] != "running" for i in ids):
                if time.time() > deadline:
                    raise RuntimeError("the downloads did not start")
                time.sleep(0.05)
            stop = threading.Event()
            latencies = []

            def read():
                conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=600)
                while not stop.is_set():
                    start = time.perf_counter()
                    conn.request("GET", f"/v1/jobs/{ids[0]}")
                    conn.getresponse().read()
                    latencies.append(time.perf_counter() - start)
                    time.sleep(0.01)

            local = threading.local()

            def submit(n):
                if not hasattr(local, "conn"):
                    local.conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=600)
                body = {"url": f"{self.nginx.url}/full/queued.bin?n={n}", "dest": "q/"}
                local.conn.request("POST", "/v1/jobs", json.dumps(body),
                                   {"content-type": "application/json"})
                response = local.conn.getresponse()
                response.read()
                return response.status

            reader = threading.Thread(target=read)
            reader.start()
            start = time.perf_counter()
            try:
                with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                    statuses = collections.Counter(pool.map(submit, range(jobs)))
            finally:
                took = time.perf_counter() - start
                stop.set()
                reader.join()
            still = sum(daemon.get(f"/v1/jobs/{i}")["status"] == "running" for i in ids)
            cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0] * 99
            answers = ", ".join(f"{n} x {status}" for status, n in sorted(statuses.items()))
            self.table.append({
                "case": 5, "tool": "haul get under load", "median_s": None, "ratio": None,
                "cpu_s_per_gib": None, "peak_rss_mib": daemon.rss() / MIB,
                "note": f"GET /v1/jobs/{{id}} while {jobs} jobs were submitted by {clients} "
                        f"clients in {took:.1f} s ({answers}), {still} of {running} downloads "
                        f"still running: p50 {cuts[49] * 1000:.1f} ms, p99 "
                        f"{cuts[98] * 1000:.1f} ms over {len(latencies)} reads"})
        finally:
            daemon.stop()

    def list_latency(self, daemon, queued):
        """Median time of a page of 100 jobs, out of all those queued: the newest page, one
        from the middle (its cursor built as the API encodes one), and pages filtered by
        status, one status with every job and one with none."""
        middle = base64.urlsafe_b64encode(f"before:{queued // 2}".encode()).decode().rstrip("=")
        pages = {
            "newest": "/v1/jobs?limit=100",
            "middle": f"/v1/jobs?limit=100&cursor={middle}",
            "status=queued": "/v1/jobs?limit=100&status=queued",
            "status=failed": "/v1/jobs?limit=100&status=failed",
        }
        timings = []
        for name, path in pages.items():
            times = []
            for _ in range(21):
                start = time.perf_counter()
                daemon.get(path)
                times.append(time.perf_counter() - start)
            timings.append(f"{name} {statistics.median(times) * 1000:.1f} ms")
        self.table.append({
            "case": 5, "tool": "haul list 100", "median_s": None, "ratio": None,
            "cpu_s_per_gib": None, "peak_rss_mib": None,
            "note": f"GET /v1/jobs?limit=100 with {queued} jobs: " + ", ".join(timings)})

    def report(self):
        print()
        print(f"{'case':<5} {'tool':<20} {'median s':>9} {'haul/tool':>10} {'CPU s/GiB':>10} "
              f"{'peak RSS MiB':>13}")
        for row in self.table:
            def fmt(value, spec):
                return format(value, spec) if value is not None else "-"
            print(f"{row['case']:<5} {row['tool']:<20} {fmt(row['median_s'], '9.3f')} "
                  f"{fmt(row['ratio'], '10.2f')} {fmt(row['cpu_s_per_gib'], '10.2f')} "
                  f"{fmt(row['peak_rss_mib'], '13.1f')}  {row.get('note', '')}")
        with open(os.path.join(self.args.dir or ".", "bench-results.json"), "w") as f:
            json.dump(self.table, f, indent=2)

    def run(self):
        try:
            self.setup()
            cases = self.args.cases
            if 1 in cases:
                self.single_file_case(1, "full", "big", GIB,
                                      ["aria2c -x16", "axel -n16", "wget2 16 threads", "curl"])
            if 2 in cases:
                self.single_file_case(2, "throttled", "mid", 256 * MIB,
                                      ["aria2c -x16", "axel -n16", "wget2 16 threads", "curl"])
            if 3 in cases:
                self.single_file_case(3, "norange", "mid", 256 * MIB,
                                      ["aria2c -x16", "axel -n16", "curl"])
            if 4 in cases:
                self.small_files_case()
            if 5 in cases:
                self.idle_rss(self.args.idle_jobs)
                self.get_latency_under_load(self.args.load_jobs)
            self.report()
        finally:
            for part in ("haul", "nginx"):
                if hasattr(self, part):
                    getattr(self, part).stop()
            shutil.rmtree(self.work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--haul", required=True, help="the haul binary (a release build)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", default="1,2,3,4,5",
                        type=lambda s: {int(c) for c in s.split(",") if c})
    parser.add_argument("--idle-jobs", type=int, default=100_000)
    parser.add_argument("--load-jobs", type=int, default=10_000,
                        help="jobs submitted at once while GET /v1/jobs/{id} is timed (case 5)")
    parser.add_argument("--max-connections", type=int, default=16,
                        help="haul's connection ceiling per file (the peers use 16)")
    parser.add_argument("--dir", default=None, help="where to put the files (default: /tmp)")
    Bench(parser.parse_args()).run()


if __name__ == "__main__":
    main()
