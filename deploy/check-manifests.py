#!/usr/bin/env python3
"""Cross-checks the deployment files beyond what their schemas can say.

The schemas (kubernetes-validate, the compose spec) prove each document is well-formed;
this checks that the documents agree with each other and with azgate's config: probes on
the admin port of the mounted proxy.toml, a termination grace period longer than
drain_delay + shutdown_grace, a memory limit that holds server.max_connections, the ConfigMap mounted as a directory (so reloads happen),
selectors that match the pod labels, the hardening the README promises, and compose
services that mount their config read-only and run `azgate health`.

Run from the repository root with PyYAML available: python3 deploy/check-manifests.py
Prints nothing and exits 0 when every check holds; otherwise one line per problem, exit 1.
"""

import pathlib
import re
import sys
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
problems = []


def check(condition, message):
    if not condition:
        problems.append(message)
    return condition


def seconds(text):
    """The durations used in the configs: "10s", "2m", "500ms", "0s"."""
    match = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h)\s*", text)
    if not match:
        raise ValueError(f"unreadable duration {text!r}")
    value, unit = int(match.group(1)), match.group(2)
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


# Measured with a release build before idle parking (now bench/idle_memory.py; docs/deployment.md, "Sizing"):
# 37.9 KiB per keep-alive connection, 44.2 KiB with TLS, ~21 MiB at rest. Rounded up. Idle
# HTTP/1.1 connections now cost 9.7 KiB (13.5 KiB TLS, bench/idle_memory.py), but one that
# carries a request holds hyper's buffers again: the rule sizes for every connection busy.
MIB = 1024 * 1024
BASE_MEMORY = 32 * MIB
PER_CONNECTION = 40 * 1024
PER_TLS_CONNECTION = 48 * 1024
# Request bodies held for retry (1 MiB each by default) and other transient buffers.
BUFFER_HEADROOM = 64 * MIB
DEFAULT_MAX_CONNECTIONS = 10000


def quantity(text):
    """A Kubernetes memory quantity ("256Mi", "1Gi", "512M") in bytes."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|K|M|G)?", str(text))
    if not match:
        raise ValueError(f"unreadable quantity {text!r}")
    units = {None: 1, "Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB, "K": 1000, "M": 1000**2, "G": 1000**3}
    return int(match.group(1)) * units[match.group(2)]


def memory_needed(server):
    connections = server.get("max_connections", DEFAULT_MAX_CONNECTIONS)
    per_connection = PER_TLS_CONNECTION if "tls" in server else PER_CONNECTION
    return BASE_MEMORY + connections * per_connection + BUFFER_HEADROOM


def port_of(listen):
    """The port of an IP:PORT listen value, with ${NAME:-fallback} read as its fallback."""
    expanded = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", listen)
    return int(expanded.rsplit(":", 1)[1])


def load_kubernetes():
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    listed = kustomization.get("resources", [])
    present = sorted(p.name for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")
    check(sorted(listed) == present,
          f"kustomization.yaml lists {sorted(listed)}, the directory holds {present}")
    objects = {}
    for name in listed:
        path = KUBE / name
        if not check(path.is_file(), f"kustomization.yaml names {name}, which is missing"):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects[doc["kind"]] = doc
    return kustomization, objects


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_kubernetes():
    kustomization, objects = load_kubernetes()
    for kind in ["Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
                 "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"]:
        check(kind in objects, f"no {kind} in deploy/kubernetes")
    if problems:
        return
    deployment = objects["Deployment"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    container = spec["containers"][0]
    config_map = objects["ConfigMap"]
    config = tomllib.loads(config_map["data"]["proxy.toml"])

    # The config azgate reads is the one mounted, and it reloads in place.
    mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    config_volume = next((n for n, v in volumes.items()
                          if v.get("configMap", {}).get("name") == config_map["metadata"]["name"]), None)
    if check(config_volume in mounts, "the ConfigMap is not mounted into the container"):
        mount = mounts[config_volume]
        check("subPath" not in mount, "the ConfigMap is mounted with subPath: updates would never arrive")
        check(mount.get("readOnly") is True, "the config mount is not readOnly")
        args = container.get("args", [])
        check(args[:2] == ["serve", "-c"] and args[2] == f"{mount['mountPath']}/proxy.toml",
              f"the container does not serve {mount['mountPath']}/proxy.toml: {args}")
    check("configMapGenerator" not in kustomization,
          "a configMapGenerator renames the ConfigMap on each change (restart, no hot reload)")

    # Ports and probes agree with the config's listeners.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(ports.get("http") == port_of(config["server"]["listen"]),
          "containerPort http differs from server.listen")
    check(ports.get("admin") == port_of(config["admin"]["listen"]),
          "containerPort admin differs from admin.listen")
    readiness = container.get("readinessProbe", {}).get("httpGet", {})
    liveness = container.get("livenessProbe", {}).get("httpGet", {})
    check(readiness.get("path") == "/readyz" and readiness.get("port") == "admin",
          "the readiness probe is not GET /readyz on the admin port")
    check(liveness.get("path") == "/healthz" and liveness.get("port") == "admin",
          "the liveness probe is not GET /healthz on the admin port")
    admin_inbound = config.get("admin", {}).get("inbound", {})
    check(admin_inbound.get("allow"), "the admin listener leaves loopback without [admin.inbound] allow")
    server_inbound = config.get("server", {}).get("inbound", {})
    check(server_inbound.get("api_keys") or server_inbound.get("allow"),
          "the proxy listens on 0.0.0.0 without [server.inbound] controls")

    # Rolling updates and scale-in drop nothing.
    drain = seconds(config["server"].get("drain_delay", "0s"))
    grace = seconds(config["server"].get("shutdown_grace", "30s"))
    check(drain > 0, "server.drain_delay is 0: pods stop accepting before the endpoint is gone")
    check(spec.get("terminationGracePeriodSeconds", 30) > drain + grace,
          f"terminationGracePeriodSeconds must exceed drain_delay + shutdown_grace ({drain + grace:g} s)")
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    check(rolling.get("maxUnavailable") in (0, "0", "0%"), "rollingUpdate.maxUnavailable is not 0")
    check("replicas" not in deployment["spec"], "spec.replicas fights the HorizontalPodAutoscaler")

    # Hardening.
    pod_security = spec.get("securityContext", {})
    security = container.get("securityContext", {})
    check(pod_security.get("runAsNonRoot") is True, "pod securityContext.runAsNonRoot is not true")
    check(pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", "no RuntimeDefault seccomp")
    check(security.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true")
    check(security.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
    check(security.get("capabilities", {}).get("drop") == ["ALL"], "capabilities are not all dropped")
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            check(resource in resources.get(kind, {}), f"no {kind}.{resource}")
    limit = resources.get("limits", {}).get("memory")
    if limit is not None:
        needed = memory_needed(config["server"])
        check(quantity(limit) >= needed,
              f"limits.memory {limit} cannot hold server.max_connections = "
              f"{config['server'].get('max_connections', DEFAULT_MAX_CONNECTIONS)}: "
              f"{needed / MIB:.0f}Mi needed (README, \"Sizing\")")

    # Workload identity.
    check(labels.get("azure.workload.identity/use") == "true",
          "the pod lacks the label azure.workload.identity/use: \"true\"")
    account = objects["ServiceAccount"]
    check(spec.get("serviceAccountName") == account["metadata"]["name"],
          "the pod does not run as the ServiceAccount in serviceaccount.yaml")
    check("azure.workload.identity/client-id" in account["metadata"].get("annotations", {}),
          "the ServiceAccount lacks azure.workload.identity/client-id")
    kinds = {c.get("type") for c in config.get("credentials", {}).values()}
    check("workload_identity" in kinds or "default" in kinds,
          "no credential in the ConfigMap uses workload identity")

    # Everything that selects pods selects these.
    service = objects["Service"]
    check(matches(service["spec"]["selector"], labels), "the Service selector misses the pods")
    for port in service["spec"]["ports"]:
        check(port["targetPort"] in ports, f"Service targetPort {port['targetPort']} is not a container port")
    pdb = objects["PodDisruptionBudget"]
    check(matches(pdb["spec"]["selector"]["matchLabels"], labels), "the PDB selector misses the pods")
    policy = objects["NetworkPolicy"]
    check(matches(policy["spec"]["podSelector"]["matchLabels"], labels), "the NetworkPolicy misses the pods")
    for rule in policy["spec"]["ingress"]:
        for port in rule.get("ports", []):
            check(port["port"] in ports, f"NetworkPolicy port {port['port']} is not a container port")
    hpa = objects["HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    check(target["kind"] == "Deployment" and target["name"] == deployment["metadata"]["name"],
          "the HPA does not scale the Deployment")
    check(hpa["spec"].get("minReplicas", 1) >= 2, "HPA minReplicas below 2: the PDB then blocks every drain")


def check_compose():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    check("azgate" in services and "azgate-demo" in services, "docker-compose.yml lacks azgate or azgate-demo")
    check(services.get("azgate", {}).get("profiles") is None, "the azgate service must not need a profile")
    for name in ("azgate-demo", "mock-entra", "echo"):
        check("demo" in services.get(name, {}).get("profiles", []), f"{name} is not in the demo profile")
    for name in ("azgate", "azgate-demo"):
        service = services.get(name, {})
        check(service.get("read_only") is True, f"{name}: read_only is not true")
        check(service.get("restart") in ("unless-stopped", "always", "on-failure"), f"{name}: no restart policy")
        test = service.get("healthcheck", {}).get("test", [])
        check(test[:3] == ["CMD", "/usr/local/bin/azgate", "health"], f"{name}: the healthcheck is not azgate health")
        mounts = [v for v in service.get("volumes", []) if v.split(":")[1] == "/etc/azgate"]
        if check(len(mounts) == 1 and mounts[0].endswith(":ro"), f"{name}: /etc/azgate is not mounted read-only"):
            config_dir = ROOT / mounts[0].split(":")[0]
            config = tomllib.loads((config_dir / "proxy.toml").read_text())
            admin = port_of(config["admin"]["listen"])
            check(test[-1] == f"http://127.0.0.1:{admin}/healthz",
                  f"{name}: the healthcheck does not ask the admin port of {config_dir.name}/proxy.toml")
            published = [p.split(":")[-1] for p in service.get("ports", [])]
            check(str(port_of(config["server"]["listen"])) in published, f"{name}: the proxy port is not published")
            check(all(p.startswith("127.0.0.1:") for p in service.get("ports", [])),
                  f"{name}: a port is published beyond the host's loopback")


def main():
    check_kubernetes()
    check_compose()
    for problem in problems:
        print(f"deploy/check-manifests.py: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
