"""The deploy kit (deploy/) is checked by the tools that will consume it:
promtool for the Prometheus config and alert rules (including alert unit
tests), YAML/JSON parsing for compose, Kubernetes and Grafana, metric names in
the dashboard and alerts against what journeyd exports, systemd-analyze for
the unit, and the Dockerfile's runtime packages against the binary."""
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest
import yaml

import jdtest

SRC = os.environ.get("JD_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("JD_BUILD_DIR") or os.path.join(SRC, "build")
DEPLOY = os.path.join(SRC, "deploy")
METRICS_PORT = 9464


def path(*p):
    return os.path.join(DEPLOY, *p)


def load_yaml(*p):
    with open(path(*p)) as f:
        return yaml.safe_load(f)


def load_yaml_all(*p):
    with open(path(*p)) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


# ---- what journeyd exports --------------------------------------------------

def exported_metrics():
    """Every metric family name in src/metrics.c (the only place metric names
    are defined), and which of them are histograms."""
    with open(os.path.join(SRC, "src", "metrics.c")) as f:
        text = f.read()
    names = set(re.findall(r'"(journeyd_[a-z0-9_]+)', text))
    hist_block = text[text.index("hist_defs[JD_H_COUNT]"):]
    hist_block = hist_block[:hist_block.index("};")]
    hists = set(re.findall(r'"(journeyd_[a-z0-9_]+)"', hist_block))
    assert hists and hists <= names
    return names, hists


def referenced_metrics(expr):
    """journeyd_* identifiers in a PromQL expression (label values and
    strings excluded), histogram sample suffixes kept."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(re.findall(r"\b(journeyd_[a-zA-Z0-9_]+)", expr))


def check_names(exprs, where):
    names, hists = exported_metrics()
    bad = []
    for expr in exprs:
        for ident in referenced_metrics(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", ident)
            if ident in names and ident not in hists:
                continue
            if base in hists and base != ident:
                continue
            bad.append((ident, expr))
    assert not bad, f"{where} references metrics journeyd does not export: {bad}"


def test_exported_names_cover_issue_8():
    names, hists = exported_metrics()
    required = """journeyd_events_consumed_total journeyd_events_failed_total journeyd_dlq_total
    journeyd_triggers_emitted_total journeyd_triggers_suppressed_total
    journeyd_segment_transitions_total journeyd_segment_members journeyd_rules_evaluated_total
    journeyd_event_processing_seconds journeyd_event_to_trigger_seconds
    journeyd_redis_roundtrip_seconds journeyd_redis_errors_total journeyd_batch_events
    journeyd_consumer_lag journeyd_assigned_partitions journeyd_rebalances_total
    journeyd_timers_pending journeyd_timer_lateness_seconds journeyd_rule_reloads_total
    journeyd_build_info""".split()
    assert set(required) - names == set()
    assert {"journeyd_event_processing_seconds", "journeyd_event_to_trigger_seconds",
            "journeyd_redis_roundtrip_seconds", "journeyd_batch_events",
            "journeyd_timer_lateness_seconds"} == hists


# ---- Prometheus ---------------------------------------------------------------

def test_alert_rules_pass_promtool():
    need("promtool")
    r = subprocess.run(["promtool", "check", "rules", path("prometheus", "alerts.yml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_alert_rules_unit_tests():
    need("promtool")
    r = subprocess.run(["promtool", "test", "rules", path("prometheus", "alerts_test.yml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_prometheus_config_passes_promtool():
    need("promtool")
    r = subprocess.run(["promtool", "check", "config", path("prometheus", "prometheus.yml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = load_yaml("prometheus", "prometheus.yml")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert "journeyd" in jobs
    assert jobs["journeyd"]["static_configs"][0]["targets"] == [f"journeyd:{METRICS_PORT}"]
    assert cfg["rule_files"] == ["alerts.yml"]


def test_alerts_cover_the_issue_and_use_exported_metrics():
    doc = load_yaml("prometheus", "alerts.yml")
    rules = [r for g in doc["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules}
    for name in ["JourneydConsumerLagGrowing", "JourneydDLQRate", "JourneydRedisErrors",
                 "JourneydNotReady", "JourneydRuleReloadFailed", "JourneydNoEventsConsumed"]:
        assert name in alerts, name
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical")
        assert r["annotations"]["summary"]
    check_names([r["expr"] for r in rules], "alerts.yml")
    # every alert has a unit test that shows it firing
    tests = load_yaml("prometheus", "alerts_test.yml")
    fired = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"]
             if t["exp_alerts"]}
    missing = set(alerts) - fired - {"JourneydStalled", "JourneydBackpressured"}
    assert not missing, f"alerts without a firing unit test: {missing}"


# ---- Grafana ------------------------------------------------------------------

def dashboard():
    with open(path("grafana", "dashboards", "journeyd.json")) as f:
        return json.load(f)


def all_panels(d):
    for p in d["panels"]:
        yield p
        for q in p.get("panels", []):
            yield q


def test_dashboard_exprs_use_exported_metrics():
    d = dashboard()
    assert d["uid"] == "journeyd"
    exprs = []
    ids = set()
    for p in all_panels(d):
        assert p["id"] not in ids, f"duplicate panel id {p['id']}"
        ids.add(p["id"])
        if p["type"] == "row":
            continue
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t["expr"].strip()
            exprs.append(t["expr"])
    check_names(exprs, "journeyd.json")
    used = set().union(*(referenced_metrics(e) for e in exprs))
    used = {re.sub(r"_(bucket|sum|count)$", "", u) for u in used}
    for m in ["journeyd_events_consumed_total", "journeyd_consumer_lag",
              "journeyd_event_processing_seconds", "journeyd_event_to_trigger_seconds",
              "journeyd_dlq_total", "journeyd_triggers_emitted_total",
              "journeyd_triggers_suppressed_total", "journeyd_segment_members",
              "journeyd_redis_roundtrip_seconds", "journeyd_redis_errors_total",
              "journeyd_rebalances_total", "journeyd_timers_pending"]:
        assert m in used, f"dashboard has no panel for {m}"
    # latency panels show p50 and p99
    text = json.dumps(d)
    assert "histogram_quantile(0.5," in text and "histogram_quantile(0.99," in text


def test_dashboard_grid_does_not_overlap():
    cells = set()
    for p in dashboard()["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))


def test_grafana_provisioning():
    ds = load_yaml("grafana", "provisioning", "datasources", "prometheus.yml")
    assert ds["apiVersion"] == 1
    (src,) = ds["datasources"]
    assert src["type"] == "prometheus" and src["uid"] == "prometheus"
    assert src["url"] == "http://prometheus:9090"
    prov = load_yaml("grafana", "provisioning", "dashboards", "journeyd.yml")
    assert prov["apiVersion"] == 1
    (p,) = prov["providers"]
    assert p["type"] == "file"
    compose = load_yaml("docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{p['options']['path']}:ro" in mounts


# ---- docker compose -------------------------------------------------------------

def test_compose_stack():
    c = load_yaml("docker-compose.yml")
    svcs = c["services"]
    assert {"kafka", "kafka-init", "redis", "journeyd", "prometheus", "grafana"} <= set(svcs)

    k = svcs["kafka"]["environment"]
    assert "controller" in k["KAFKA_PROCESS_ROLES"] and "broker" in k["KAFKA_PROCESS_ROLES"]
    assert k["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{k['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in k["KAFKA_ADVERTISED_LISTENERS"]
    assert len(k["CLUSTER_ID"]) == 22  # base64 of a 16-byte UUID, unpadded

    redis_cmd = svcs["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in svcs["redis"]["volumes"])

    j = svcs["journeyd"]
    cmd = j["command"]
    assert cmd[cmd.index("-b") + 1] == "kafka:9092"
    assert cmd[cmd.index("-r") + 1] == "redis:6379"
    assert cmd[cmd.index("--metrics-port") + 1] == str(METRICS_PORT)
    ctx = os.path.normpath(os.path.join(DEPLOY, j["build"]["context"]))
    assert os.path.isfile(os.path.join(ctx, j["build"]["dockerfile"]))
    assert j["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert j["depends_on"]["redis"]["condition"] == "service_healthy"

    # host paths mounted into containers exist; named volumes are declared
    for name, s in svcs.items():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                assert os.path.exists(os.path.join(DEPLOY, src)), f"{name}: {src}"
            else:
                assert src in c["volumes"], f"{name}: volume {src} not declared"


# ---- Kubernetes -----------------------------------------------------------------

def k8s_docs():
    docs = {}
    for name in sorted(os.listdir(path("k8s"))):
        if name.endswith(".yaml") and name != "kustomization.yaml":
            for d in load_yaml_all("k8s", name):
                assert {"apiVersion", "kind", "metadata"} <= set(d), name
                docs[d["kind"]] = d
    return docs


def test_k8s_manifests():
    kust = load_yaml("k8s", "kustomization.yaml")
    for r in kust["resources"]:
        assert os.path.isfile(path("k8s", r)), r
    docs = k8s_docs()
    assert {"Deployment", "ConfigMap", "Service", "PodDisruptionBudget"} <= set(docs)

    dep = docs["Deployment"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == METRICS_PORT
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    args = c["args"]
    assert args[args.index("--metrics-port") + 1] == str(METRICS_PORT)
    env = {e["name"] for e in c.get("env", [])}
    for a in args:
        for var in re.findall(r"\$\((\w+)\)", a):
            assert var in env, f"args use $({var}) but the container has no such env"
    assert pod["securityContext"]["runAsNonRoot"] is True

    vols = {v["name"]: v for v in pod["volumes"]}
    cm = docs["ConfigMap"]
    assert vols["config-src"]["configMap"]["name"] == cm["metadata"]["name"]
    for item in vols["config-src"]["configMap"]["items"]:
        assert item["key"] in cm["data"], f"ConfigMap has no key {item['key']}"

    svc = docs["Service"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    pdb = docs["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_k8s_configmap_matches_config_dir():
    """configmap.yaml is generated from config/; it must not drift."""
    cm = k8s_docs()["ConfigMap"]
    for name in os.listdir(os.path.join(SRC, "config", "schemas")):
        with open(os.path.join(SRC, "config", "schemas", name)) as f:
            assert cm["data"].get(name) == f.read(), f"{name} differs from config/schemas"
    conf = os.path.join(SRC, "config", "journeyd.conf")
    if not os.path.exists(conf):
        pytest.skip("config/journeyd.conf not in the tree yet")
    r = subprocess.run(["/usr/bin/python3", path("k8s", "gen-configmap.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


SAMPLE_CONF = """kafka = {
  brokers = "127.0.0.1:9092";
  group_id = "journeyd";
  group_instance_id = "stale";
  input_topics = [ "touchpoints" ];
};
redis = { addresses = [ "127.0.0.1:6379" ]; };
"""


def test_k8s_init_container_sets_group_instance_id(tmp_path):
    pod = k8s_docs()["Deployment"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"] == ["bash", "-c"]
    script = init["args"][0]
    assert any(e["name"] == "POD_NAME" and e["valueFrom"]["fieldRef"]["fieldPath"] ==
               "metadata.name" for e in init["env"])

    conf = os.path.join(SRC, "config", "journeyd.conf")
    cases = [SAMPLE_CONF]
    if os.path.exists(conf):
        with open(conf) as f:
            cases.append(f.read())
    for i, text in enumerate(cases):
        src, dst = tmp_path / f"src{i}", tmp_path / f"dst{i}"
        (src / "schemas").mkdir(parents=True)
        dst.mkdir()
        (src / "journeyd.conf").write_text(text)
        (src / "schemas" / "touchpoint.avsc").write_text("{}")
        env = dict(os.environ, SRC=str(src), DST=str(dst), POD_NAME="journeyd-7d9f-x2k4p")
        r = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        out = (dst / "journeyd.conf").read_text()
        assert (dst / "schemas" / "touchpoint.avsc").exists()
        lines = [ln.strip() for ln in out.splitlines()]
        assert lines.count('group_instance_id = "journeyd-7d9f-x2k4p";') == 1
        assert not any(ln.startswith("group_instance_id") and "journeyd-7d9f" not in ln
                       for ln in lines)
        gid = next(n for n, ln in enumerate(lines) if re.match(r"group_id\s*=", ln))
        assert lines[gid + 1] == 'group_instance_id = "journeyd-7d9f-x2k4p";'
        journeyd = os.path.join(BUILD, "journeyd")
        if i > 0 and os.access(journeyd, os.X_OK):
            # the rendered repository config must still load
            (dst / "schemas").mkdir(exist_ok=True)
            for s in os.listdir(os.path.join(SRC, "config", "schemas")):
                shutil.copy(os.path.join(SRC, "config", "schemas", s), dst / "schemas" / s)
            r = subprocess.run([journeyd, "-c", str(dst / "journeyd.conf"), "--check"],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr


# ---- systemd --------------------------------------------------------------------

def test_systemd_unit_verifies():
    need("systemd-analyze")
    unit = path("systemd", "journeyd.service")
    with open(unit) as f:
        text = f.read()
    assert re.search(r"^Type=notify$", text, re.M)
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", text, re.M)
    exec_line = re.search(r"^ExecStart=(\S+)", text, re.M).group(1)
    # verify checks that ExecStart is executable: point it at the built
    # binary when there is one (else /bin/true: the rest is still checked)
    built = os.path.join(BUILD, "journeyd")
    binary = built if os.access(built, os.X_OK) else "/bin/true"
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "journeyd.service")
        with open(p, "w") as f:
            f.write(text.replace(exec_line, binary))
        r = subprocess.run(["systemd-analyze", "verify", p], capture_output=True, text=True)
        out = (r.stdout + r.stderr).strip()
        assert r.returncode == 0 and not out, out
        r = subprocess.run(["systemd-analyze", "security", "--offline=yes", p],
                           capture_output=True, text=True)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
        assert m, r.stdout + r.stderr
        assert float(m.group(1)) <= 2.0, r.stdout


# ---- Dockerfile ---------------------------------------------------------------

def dockerfile_stages():
    with open(path("Dockerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        if instr.upper() == "FROM":
            stages.append([])
        stages[-1].append((instr.upper(), rest.strip()))
    return stages


def runtime_packages(stage):
    pkgs = []
    for instr, rest in stage:
        if instr == "RUN" and "apt-get install" in rest:
            seg = rest.split("apt-get install", 1)[1].split("&&")[0]
            pkgs += [w for w in seg.split() if not w.startswith("-")]
    return pkgs


def test_dockerfile_shape():
    stages = dockerfile_stages()
    assert len(stages) >= 2
    for s in stages:
        assert "bookworm" in s[0][1]
    final = stages[-1]
    instrs = {}
    for instr, rest in final:
        instrs.setdefault(instr, []).append(rest)
    user = instrs["USER"][-1].split(":")[0]
    assert user not in ("0", "root")
    assert str(METRICS_PORT) in instrs["EXPOSE"][0].split()
    assert "/healthz" in instrs["HEALTHCHECK"][0]
    assert any(r.startswith("config/") for r in instrs["COPY"])
    assert any("--from=" in r for r in instrs["COPY"])
    pkgs = runtime_packages(final)
    assert pkgs and not [p for p in pkgs if p.endswith("-dev")]
    # build stage has the -dev packages the CMake build asks pkg-config for
    build_pkgs = runtime_packages(stages[0])
    for dev in ["librdkafka-dev", "libavro-dev", "libhiredis-dev", "libconfig-dev",
                "libmicrohttpd-dev", "libcmocka-dev", "cmake", "pkg-config"]:
        assert dev in build_pkgs


def test_dockerfile_runtime_libraries_match_binary():
    binary = os.path.join(BUILD, "journeyd")
    if not os.access(binary, os.X_OK):
        pytest.skip("journeyd not built yet")
    if jdtest.SANITIZED:
        pytest.skip("a sanitizer build links libasan/libubsan, which the image never ships")
    need("objdump")
    need("dpkg")
    out = subprocess.run(["objdump", "-p", binary], capture_output=True, text=True,
                         check=True).stdout
    needed = re.findall(r"^\s*NEEDED\s+(\S+)", out, re.M)
    assert needed
    pkgs = set(runtime_packages(dockerfile_stages()[-1])) | {"libc6"}
    missing = []
    for lib in needed:
        r = subprocess.run(["dpkg", "-S", f"*/{lib}"], capture_output=True, text=True)
        owners = {ln.split(":")[0] for ln in r.stdout.splitlines() if ":" in ln}
        if not owners & pkgs:
            missing.append((lib, owners))
    assert not missing, f"runtime stage lacks the packages of: {missing}"
