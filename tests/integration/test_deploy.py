# test_deploy.py - deploy/: the Kubernetes manifests, the Prometheus configuration, the Dockerfile and deploy/README.md agree with each other and with vramd (its flags, its routes, the node socket's folder).
import glob
import json
import os
import posixpath
import re
import shutil
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vramtest as vt  # noqa: E402
from vramtest import check, eq  # noqa: E402

try:
    import yaml
except ImportError:
    # a missing tool is an install failure, not a skip (scripts/check-skips)
    print("FAIL test_deploy: python3 cannot import yaml: install python3-yaml "
          "(scripts/bootstrap test installs it)", flush=True)
    sys.exit(1)

DEPLOY = os.path.join(vt.SOURCE_DIR, "deploy")
K8S = os.path.join(DEPLOY, "kubernetes")
GPU = "nvidia.com/gpu"

# ---- every YAML file under deploy/kubernetes parses ----

docs = {}  # file name -> list of documents
for path in sorted(glob.glob(os.path.join(K8S, "**", "*.y*ml"), recursive=True)):
    name = os.path.relpath(path, K8S)
    try:
        with open(path) as f:
            docs[name] = [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        check(False, f"deploy/kubernetes/{name} is valid YAML", e)
        docs[name] = []

for want in ("namespace.yaml", "serviceaccount.yaml", "daemonset.yaml", "service.yaml",
             "servicemonitor.yaml", "prometheus-scrape.yaml", "example-pod.yaml",
             "kustomization.yaml"):
    check(want in docs, f"deploy/kubernetes/{want} exists", sorted(docs))

objects = []  # (file, object) of every Kubernetes object
for name, ds in docs.items():
    for d in ds:
        if isinstance(d, dict) and "kind" in d and "apiVersion" in d:
            d.setdefault("metadata", {})
            check(d["kind"] == "Kustomization" or d["metadata"].get("name"),
                  f"{name}: every {d['kind']} has metadata.name", d.get("metadata"))
            objects.append((name, d))


def one(kind, name=None, file=None):
    found = [o for f, o in objects if o["kind"] == kind and (name is None or
             o["metadata"].get("name") == name) and (file is None or f == file)]
    if not check(len(found) == 1, f"exactly one {kind} {name or ''} under deploy/kubernetes",
                 [o["metadata"].get("name") for o in found]):
        vt.finish()
    return found[0]


def file_of(obj):
    return next(f for f, o in objects if o is obj)


ns = one("Namespace")
NS = ns["metadata"]["name"]
eq(NS, "vram", "the namespace")
sa = one("ServiceAccount")
ds = one("DaemonSet", "vramd")
svc = one("Service", "vramd")
smon = one("ServiceMonitor")
pod = one("Pod", file="example-pod.yaml")
kust = one("Kustomization")

for f, o in objects:
    if o["kind"] in ("Namespace", "Kustomization") or o is pod:
        continue
    eq(o["metadata"].get("namespace"), NS, f"{f}: {o['kind']} {o['metadata']['name']}'s namespace")

# ---- kustomization.yaml lists the core files, and they exist ----

res = kust.get("resources") or []
for r in res:
    check(os.path.exists(os.path.join(K8S, r)), f"kustomization.yaml: resource {r} exists")
for core in (ns, sa, ds, svc):
    check(file_of(core) in res, f"kustomization.yaml lists {file_of(core)} ({core['kind']})", res)

# ---- vramd's flags and variables, from vramd --help ----

help_run = subprocess.run([vt.VRAMD, "--help"], capture_output=True, text=True, timeout=30,
                          env=vt.clean_env())
eq(help_run.returncode, 0, "vramd --help exits 0")
HELP = help_run.stdout
FLAGS = {}  # flag -> takes a value ("  --port PORT   ..." does, "  --show-config   ..." does not)
for line in HELP.splitlines():
    m = re.match(r"\s+(--[a-z][a-z0-9-]*)(.*)", line)
    if m:
        rest = m.group(2)
        FLAGS.setdefault(m.group(1), rest.startswith(" ") and not rest.startswith("  ")
                         and rest.strip() != "")
        for more in re.findall(r"^, (--[a-z][a-z0-9-]*)", rest):  # "--help, --version"
            FLAGS.setdefault(more, False)
HELP_VARS = set(re.findall(r"\b((?:VRAM|GPU)_[A-Z0-9_]+)\b", HELP))
check(len(FLAGS) > 20 and FLAGS.get("--node-socket") and FLAGS.get("--port")
      and FLAGS.get("--show-config") is False,
      "vramd --help lists its flags (--port and --node-socket with a value, --show-config without)",
      FLAGS)


def parse_args(args, what):
    """A container's args as [(flag, value)], each flag checked against vramd --help."""
    out = []
    i = 0
    while i < len(args):
        a = str(args[i])
        i += 1
        if not check(a.startswith("--"), f"{what}: '{a}' is a flag (vramd takes no operands)"):
            continue
        flag, eqsign, val = a.partition("=")
        if not check(flag in FLAGS, f"{what}: {flag} is a flag vramd --help lists", sorted(FLAGS)):
            continue
        if FLAGS[flag] and not eqsign:
            if not check(i < len(args), f"{what}: {flag} has its value"):
                break
            val = str(args[i])
            i += 1
        out.append((flag, val if FLAGS[flag] else None))
    return out


def env_of(container):
    env = {}
    for e in container.get("env") or []:
        check("value" in e or "valueFrom" in e, f"env {e.get('name')} has a value")
        env[e["name"]] = str(e.get("value", ""))
    return env


def resources_name(container, key):
    r = container.get("resources") or {}
    return {k: (r.get(s) or {}).get(k) for s in ("requests", "limits") for k in (r.get(s) or {})
            if k == key}


def host_file(spec, container, path, what):
    """The host path behind path in container (through a hostPath volume), else None."""
    vols = {v["name"]: v for v in spec.get("volumes") or []}
    best = None
    for m in container.get("volumeMounts") or []:
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best[0]):
                best = (mp, m)
    if not check(best is not None, f"{what}: {path} lies in a mounted volume",
                 container.get("volumeMounts")):
        return None, None
    mp, m = best
    v = vols.get(m["name"], {})
    if not check("hostPath" in v, f"{what}: the volume mounted at {mp} is a hostPath", v):
        return None, None
    rel = path[len(mp):].lstrip("/")
    return posixpath.join(v["hostPath"]["path"], rel) if rel else v["hostPath"]["path"], (v, m)


# ---- the DaemonSet ----

spec = ds["spec"]["template"]["spec"]
tmpl_labels = ds["spec"]["template"]["metadata"].get("labels") or {}
for k, v in (ds["spec"]["selector"].get("matchLabels") or {}).items():
    eq(tmpl_labels.get(k), v, f"DaemonSet: the pod template carries its selector's label {k}")
eq(spec.get("serviceAccountName"), sa["metadata"]["name"], "DaemonSet: its service account")
containers = {c["name"]: c for c in spec.get("containers") or []}
check("vramd" in containers, "DaemonSet: a container named vramd", list(containers))
vramd_c = containers.get("vramd") or vt.finish()

for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
    eq(resources_name(c, GPU), {}, f"DaemonSet: container {c['name']} neither requests nor "
       f"limits {GPU} (the device plugin keeps every GPU for the workloads)")
    check(str(c.get("image", "")).startswith("vram/vramd:"),
          f"DaemonSet: container {c['name']} runs the vram/vramd image", c.get("image"))

args = parse_args(vramd_c.get("args") or [], "DaemonSet vramd args")
check(not vramd_c.get("command"), "DaemonSet: vramd runs the image's entrypoint (no command)",
      vramd_c.get("command"))
A = dict(args)
eq(A.get("--bind"), "0.0.0.0", "DaemonSet: --bind")
eq(A.get("--port"), "7861", "DaemonSet: --port")
SOCK = A.get("--node-socket")
eq(SOCK, "/run/vram/node.sock", "DaemonSet: --node-socket")
ENV = env_of(vramd_c)
for k in ENV:
    if k.startswith(("VRAM_", "GPU_")):
        check(k in HELP_VARS, f"DaemonSet: {k} is a variable vramd --help lists", sorted(HELP_VARS))
eq(ENV.get("NVIDIA_VISIBLE_DEVICES"), "all", "DaemonSet: NVIDIA_VISIBLE_DEVICES")
check({"compute", "utility"} <= set(ENV.get("NVIDIA_DRIVER_CAPABILITIES", "").split(",")),
      "DaemonSet: NVIDIA_DRIVER_CAPABILITIES has compute and utility", ENV)
check("--token" not in A and "VRAM_TOKEN" not in ENV,
      "DaemonSet: no token in the args or env (both readable): VRAM_TOKEN_FILE", A)

# the node socket's folder is the hostPath /run/vram, prepared for vramd's user
HOST_SOCK, vm = host_file(spec, vramd_c, SOCK or "", "DaemonSet vramd")
eq(HOST_SOCK, "/run/vram/node.sock", "DaemonSet: the node socket's path on the host")
if vm:
    eq(vm[0]["hostPath"].get("type"), "DirectoryOrCreate", "DaemonSet: the hostPath's type")
    eq(vm[1]["mountPath"], posixpath.dirname(SOCK), "DaemonSet: the hostPath is mounted at "
       "the folder of --node-socket")
    check(not vm[1].get("readOnly"), "DaemonSet: vramd's socket folder is writable")

# the token: VRAM_TOKEN_FILE is a key of a mounted Secret
TOKEN_FILE = ENV.get("VRAM_TOKEN_FILE")
check(TOKEN_FILE, "DaemonSet: VRAM_TOKEN_FILE is set", ENV)
vols = {v["name"]: v for v in spec.get("volumes") or []}
SECRET = None
for m in vramd_c.get("volumeMounts") or []:
    if TOKEN_FILE and posixpath.dirname(TOKEN_FILE) == m["mountPath"].rstrip("/"):
        SECRET = (vols.get(m["name"], {}).get("secret") or {}).get("secretName")
check(SECRET, f"DaemonSet: VRAM_TOKEN_FILE {TOKEN_FILE} is a file of a mounted Secret")
TOKEN_KEY = posixpath.basename(TOKEN_FILE or "")

# who may use the socket: vramd's uid/gid are the image's, pods join with that group
psc = spec.get("securityContext") or {}
csc = vramd_c.get("securityContext") or {}
UID = csc.get("runAsUser", psc.get("runAsUser"))
GID = csc.get("runAsGroup", psc.get("runAsGroup"))
check(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True and UID not in (None, 0),
      "DaemonSet: vramd runs as a non-root user", (UID, GID))
for ic in spec.get("initContainers") or []:
    cmd = " ".join(ic.get("command") or []) + " " + " ".join(ic.get("args") or [])
    m = re.search(r"chown (\d+):(\d+) (\S+)", cmd)
    if m:
        eq((int(m.group(1)), int(m.group(2))), (UID, GID),
           f"DaemonSet: init container {ic['name']} gives the socket folder to vramd's uid:gid")
        eq(m.group(3), posixpath.dirname(SOCK or ""), f"DaemonSet: init container {ic['name']} "
           "prepares the folder of --node-socket")

# GPU nodes, tainted ones too
aff = json.dumps(spec.get("affinity") or {})
check(spec.get("nodeSelector") or GPU in aff, "DaemonSet: a nodeSelector or affinity for GPU nodes")
check(any(t.get("key") == GPU and t.get("effect") in ("NoSchedule", None)
          for t in spec.get("tolerations") or []),
      f"DaemonSet: tolerates the {GPU} NoSchedule taint", spec.get("tolerations"))

# the port, the probes
ports = {p.get("name"): p for p in vramd_c.get("ports") or []}
check("http" in ports, "DaemonSet: vramd has a container port named http", vramd_c.get("ports"))
CPORT = ports.get("http", {}).get("containerPort")
eq(str(CPORT), A.get("--port"), "DaemonSet: the container port is vramd's --port")
PROBES = {}
for probe in ("readinessProbe", "livenessProbe"):
    g = (vramd_c.get(probe) or {}).get("httpGet")
    if check(g, f"DaemonSet: vramd has an HTTP GET {probe}", vramd_c.get(probe)):
        check(g.get("port") in ("http", CPORT), f"DaemonSet: the {probe} uses port http", g)
        PROBES[probe] = g.get("path", "/")

# ---- the Service ----

sp = svc["spec"]
for k, v in (sp.get("selector") or {}).items():
    eq(tmpl_labels.get(k), v, f"Service: the DaemonSet's pods carry its selector's label {k}")
check(sp.get("selector"), "Service: has a selector", sp)
check(sp.get("type", "ClusterIP") == "ClusterIP", "Service: type ClusterIP", sp.get("type"))
sports = {p.get("name"): p for p in sp.get("ports") or []}
check("http" in sports, "Service: a port named http", sp.get("ports"))
sport = sports.get("http", {})
eq(sport.get("port"), 7861, "Service: port http")
check(sport.get("targetPort") in ("http", CPORT),
      "Service: targetPort is the DaemonSet's container port (http)", sport)
# the Service's DNS names are hosts vramd accepts (DNS rebinding checks)
allowed = set((A.get("--allowed-hosts") or ENV.get("VRAM_ALLOWED_HOSTS") or "").split(","))
SVC_DNS = [f"{svc['metadata']['name']}.{NS}.svc", f"{svc['metadata']['name']}.{NS}.svc.cluster.local"]
for n in SVC_DNS:
    check(n in allowed, f"DaemonSet: --allowed-hosts names the Service's DNS name {n}", allowed)

# ---- the ServiceMonitor ----

ms = smon["spec"]
for k, v in ((ms.get("selector") or {}).get("matchLabels") or {}).items():
    eq((svc["metadata"].get("labels") or {}).get(k), v, f"ServiceMonitor: the Service has label {k}")
check(NS in ((ms.get("namespaceSelector") or {}).get("matchNames") or []),
      "ServiceMonitor: looks in namespace vram", ms.get("namespaceSelector"))
eps = ms.get("endpoints") or []
check(eps, "ServiceMonitor: has an endpoint")
METRICS_PATHS = set()
for ep in eps:
    eq(ep.get("port"), "http", "ServiceMonitor: scrapes the Service's port http")
    METRICS_PATHS.add(ep.get("path", "/metrics"))
    check(any(r.get("targetLabel") == "node" and "__meta_kubernetes_pod_node_name" in
              (r.get("sourceLabels") or []) for r in ep.get("relabelings") or []),
          "ServiceMonitor: labels each target with its node's name (node)", ep)

# ---- the Prometheus scrape job, applied to the discovered vramd pods ----


def relabel(labels, rules):
    """Prometheus' relabelling (replace, keep, drop); None when the target is dropped."""
    labels = dict(labels)
    for r in rules:
        action = r.get("action", "replace")
        val = r.get("separator", ";").join(labels.get(s, "") for s in r.get("source_labels") or [])
        m = re.fullmatch(r.get("regex", "(.*)"), val)
        if action == "keep" and not m:
            return None
        if action == "drop" and m:
            return None
        if action == "replace" and m:
            rep = re.sub(r"\$\{?(\d+)\}?", lambda g: m.group(int(g.group(1))) or "",
                         r.get("replacement", "$1"))
            if rep:
                labels[r["target_label"]] = rep
            else:
                labels.pop(r["target_label"], None)
    return labels


prom = [d for d in docs.get("prometheus-scrape.yaml", []) if isinstance(d, dict)]
jobs = [j for d in prom for j in d.get("scrape_configs") or []]
check(jobs, "prometheus-scrape.yaml: a scrape_configs job")
for job in jobs:
    METRICS_PATHS.add(job.get("metrics_path", "/metrics"))
    sds = job.get("kubernetes_sd_configs") or []
    check(sds and all(s.get("role") in ("endpoints", "endpointslice", "pod") for s in sds),
          f"prometheus-scrape.yaml: job {job.get('job_name')} discovers endpoints or pods", sds)
    for s in sds:
        names = (s.get("namespaces") or {}).get("names")
        check(names is None or NS in names, "prometheus-scrape.yaml: looks in namespace vram", s)
    role = sds[0].get("role") if sds else "endpoints"
    pname = "__meta_kubernetes_endpointslice_port_name" if role == "endpointslice" else \
        "__meta_kubernetes_endpoint_port_name"
    target = {"__address__": f"10.1.2.3:{CPORT}", "__meta_kubernetes_namespace": NS,
              "__meta_kubernetes_service_name": svc["metadata"]["name"], pname: "http",
              "__meta_kubernetes_pod_container_port_name": "http",
              "__meta_kubernetes_pod_container_name": "vramd",
              "__meta_kubernetes_pod_name": "vramd-x7k2p",
              "__meta_kubernetes_pod_node_name": "gpu-node-1"}
    for k, v in tmpl_labels.items():
        target["__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", k)] = v
    for k, v in (svc["metadata"].get("labels") or {}).items():
        target["__meta_kubernetes_service_label_" + re.sub(r"[^A-Za-z0-9_]", "_", k)] = v
    out = relabel(target, job.get("relabel_configs") or [])
    if check(out is not None, "prometheus-scrape.yaml: a vramd pod's port http is kept", target):
        eq(out.get("node"), "gpu-node-1", "prometheus-scrape.yaml: the node label of a target")
    other = dict(target, **{pname: "other", "__meta_kubernetes_pod_container_port_name": "other"})
    check(relabel(other, job.get("relabel_configs") or []) is None,
          "prometheus-scrape.yaml: a port not named http is not scraped")

# ---- the example pod joins the same socket ----

pspec = pod["spec"]
pc = (pspec.get("containers") or [{}])[0]
PENV = env_of(pc)
PSOCK = PENV.get("VRAM_NODE_SOCKET")
check(PSOCK, "example pod: VRAM_NODE_SOCKET is set", PENV)
check(PENV.get("VRAM_NODE_NAME"), "example pod: VRAM_NODE_NAME is set", PENV)
phost, pvm = host_file(pspec, pc, PSOCK or "", "example pod")
eq(phost, HOST_SOCK, "example pod: VRAM_NODE_SOCKET is, on the host, the DaemonSet's socket")
if pvm:
    eq(pvm[0]["hostPath"]["path"], vm[0]["hostPath"]["path"] if vm else None,
       "example pod: mounts the DaemonSet's hostPath")
for key in ("requests", "limits"):
    eq(str(((pc.get("resources") or {}).get(key) or {}).get(GPU)), "1",
       f"example pod: {key} {GPU}: 1")
check(GID in ((pspec.get("securityContext") or {}).get("supplementalGroups") or []),
      f"example pod: vramd's group {GID} is among its supplementalGroups (the socket is 0660)",
      pspec.get("securityContext"))

# ---- the Dockerfile: built with the repository's tools, vramd as entrypoint, the same user ----

with open(os.path.join(DEPLOY, "Dockerfile")) as f:
    dockerfile = f.read()
lines = re.sub(r"\\\n", " ", dockerfile).splitlines()
instr = [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln.strip() else "")
         for ln in (x.strip() for x in lines) if ln and not ln.startswith("#")]
froms = [v for k, v in instr if k == "FROM"]
check(froms and froms[0].split()[0] == "debian:12", "Dockerfile: builds on debian:12", froms)
runs = " ".join(v for k, v in instr if k == "RUN")
for step in ("scripts/bootstrap build", "make build", "cmake --install"):
    check(step in runs, f"Dockerfile: runs {step}", runs)
entry = [v for k, v in instr if k == "ENTRYPOINT"]
if check(len(entry) == 1, "Dockerfile: one ENTRYPOINT", entry):
    try:
        ep = json.loads(entry[-1])
    except ValueError:
        ep = None
    check(isinstance(ep, list) and ep, "Dockerfile: ENTRYPOINT in exec (JSON) form", entry[-1])
    if ep:
        eq(posixpath.basename(ep[0]), "vramd", "Dockerfile: the entrypoint")
        pfx = re.search(r"-DCMAKE_INSTALL_PREFIX=(\S+?)\"?(\s|$)", runs)
        eq(ep[0], posixpath.join(pfx.group(1) if pfx else "/usr/local", "bin", "vramd"),
           "Dockerfile: the entrypoint is where cmake --install puts vramd")
user = [v for k, v in instr if k == "USER"]
eq(user[-1:], [f"{UID}:{GID}"], "Dockerfile: USER is the DaemonSet's runAsUser:runAsGroup")
check(f"EXPOSE {CPORT}" in dockerfile, "Dockerfile: EXPOSEs the container port", CPORT)

# ---- deploy/README.md says what the manifests do ----

with open(os.path.join(DEPLOY, "README.md")) as f:
    readme = f.read()
for what, text in (("the token Secret's name", SECRET), ("its key", f"{TOKEN_KEY}="),
                   ("vramd's group for supplementalGroups", str(GID)),
                   ("the socket path", SOCK), ("the image", "vram/vramd:VERSION"),
                   ("the Dockerfile's build command", "docker build -f deploy/Dockerfile")):
    check(text and text in readme, f"deploy/README.md names {what} ({text})")

# ---- vramd takes the DaemonSet's args and env, and answers its probes ----

tmp = tempfile.mkdtemp(prefix="vram-deploy-")
token_path = os.path.join(tmp, TOKEN_KEY or "token")
with open(token_path, "w") as f:
    f.write("deploy-test-token\n")
run_env = dict(ENV, VRAM_TOKEN_FILE=token_path)

# the values as they are (only the token file's place differs): vramd accepts them
show = subprocess.run([vt.VRAMD, *(vramd_c.get("args") or []), "--show-config"],
                      capture_output=True, text=True, timeout=30, env=vt.clean_env(run_env))
eq(show.returncode, 0, f"vramd accepts the DaemonSet's args and env (--show-config): {show.stderr}")
check(re.search(r"^VRAM_NODE_SOCKET\s+" + re.escape(SOCK or "?") + r"\s", show.stdout, re.M),
      "vramd --show-config: the node socket is the DaemonSet's", show.stdout)
check(re.search(r"^VRAM_TOKEN\s+\(set\)", show.stdout, re.M),
      "vramd --show-config: the token is read from VRAM_TOKEN_FILE", show.stdout)
pshow = subprocess.run([vt.VRAMD, "--show-config"], capture_output=True, text=True, timeout=30,
                       env=vt.clean_env(PENV))
eq(pshow.returncode, 0, f"vramd accepts the example pod's VRAM_ variables: {pshow.stderr}")

# and runs with them: the host backend, any free port, the socket in a temporary folder
live = []
for flag, val in args:
    if flag in ("--port", "--backend"):
        continue
    if flag == "--node-socket":
        val = os.path.join(tmp, "node.sock")
    live += [flag] + ([val] if val is not None else [])
probe_headers = {"User-Agent": "kube-probe/1.30", "Accept": "*/*"}


def local_address():
    """A non-loopback address of this machine (as a pod's IP is to its vramd), or None."""
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("192.0.2.1", 9))  # no packet is sent
        a = s.getsockname()[0]
        s.close()
        return None if a.startswith("127.") else a
    except OSError:
        return None


with vt.Vramd(*live, env=run_env) as d:
    for probe, path in PROBES.items():
        st, _, body = d.get(path, headers=probe_headers)
        eq(st, 200, f"GET {path} (the {probe}) answers 200 without a token")
        check(isinstance(body, dict) and body.get("status") == "ok", f"GET {path}: status ok", body)
        addr = local_address()
        if addr:
            st, _, body = d.get(path, headers=dict(probe_headers, Host=f"{addr}:{CPORT}"))
            eq(st, 200, f"GET {path} with Host {addr} (the pod IP, as the kubelet sends it)")
    for path in METRICS_PATHS:
        st, hdrs, body = d.get(path)
        eq(st, 200, f"GET {path} (Prometheus' metrics path) answers 200 without a token")
        check("text/plain" in hdrs.get("content-type", "") and "# TYPE vram_" in str(body),
              f"GET {path}: Prometheus text", str(body)[:200])
    for n in SVC_DNS:
        st, _, body = d.get(PROBES.get("readinessProbe", "/healthz"),
                            headers={"Host": f"{n}:{sport.get('port')}"})
        eq(st, 200, f"GET with Host {n} (the Service's DNS name)")
    st, _, body = d.post("/api/gpu/offload", {})
    eq(st, 401, "POST /api/gpu/offload without the token: 401 (the token file is read)")
    st, _, body = d.post("/api/gpu/offload", {},
                         headers={"Authorization": "Bearer deploy-test-token"})
    eq(st, 200, "POST /api/gpu/offload with the token from the Secret's file")

shutil.rmtree(tmp, ignore_errors=True)
vt.finish()
