"""deploy/: the one image and the Kubernetes manifests agree with the service table.

No cluster runs here: the manifests are parsed and checked against `SERVICE_TABLE`, the ingress
against the course's rules, and the Dockerfile against the command every Deployment runs.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from blogctl import gateway
from services import table as config
from services.table import SERVICE_TABLE

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# The course's infra/k8s names: service -> (Deployment, Service).
COURSE_NAMES = {
    "posts": ("posts-depl", "posts-clusterip-srv"),
    "comments": ("comments-depl", "comments-srv"),
    "query": ("query-depl", "query-srv"),
    "moderation": ("moderation-depl", "moderation-srv"),
    "bus": ("event-bus-depl", "event-bus-srv"),
}
# The course's ingress, in its order; its last rule goes to Query, which serves our page.
INGRESS_RULES = [
    ("/posts/create", "posts"),
    ("/posts", "query"),
    ("/posts/?(.*)/comments", "comments"),
    ("/?(.*)", "query"),
]


def manifests(folder: Path = DEPLOY / "k8s") -> list[dict]:
    documents = []
    for path in sorted(folder.rglob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return documents


def by_kind(documents: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def secret_env(documents: list[dict], name: str) -> dict[str, str]:
    return by_kind(documents, "Secret")[name]["stringData"]


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


@pytest.fixture(scope="module")
def documents():
    return manifests()


def test_every_manifest_parses_and_names_itself(documents):
    assert documents
    for doc in documents:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], doc


def test_the_course_names_cover_exactly_the_service_table():
    assert set(COURSE_NAMES) == {service.name for service in SERVICE_TABLE}


@pytest.mark.parametrize("service", SERVICE_TABLE, ids=lambda s: s.name)
def test_each_service_has_its_deployment_and_clusterip_service_on_its_port(documents, service):
    deployment_name, service_name = COURSE_NAMES[service.name]
    deployment = by_kind(documents, "Deployment")[deployment_name]
    svc = by_kind(documents, "Service")[service_name]
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert svc["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(service.port, service.port)]

    runs = container(deployment)
    assert runs["command"] == ["python", "-m", f"services.{service.name}"]
    assert [p["containerPort"] for p in runs["ports"]] == [service.port]
    assert runs["readinessProbe"]["httpGet"] == {"path": "/health", "port": service.port}


def test_one_image_runs_every_service(documents):
    images = {container(d)["image"] for name, d in by_kind(documents, "Deployment").items()
              if name in {depl for depl, _ in COURSE_NAMES.values()}}
    assert len(images) == 1


def test_each_service_reaches_the_others_by_their_kubernetes_names(documents):
    """The settings every pod gets make config.url() answer each Service's DNS name and port."""
    env = by_kind(documents, "ConfigMap")["blog-config"]["data"]
    for deployment in by_kind(documents, "Deployment").values():
        if deployment["metadata"]["name"] in {depl for depl, _ in COURSE_NAMES.values()}:
            sources = container(deployment)["envFrom"]
            assert {"configMapRef": {"name": "blog-config"}} in sources
    loaded = config.load(env)
    assert loaded.host == "0.0.0.0"  # a container listens on its pod's address, not loopback
    assert "http://posts.com" in loaded.cors_origins()  # the page, served through the ingress, may write
    for service in SERVICE_TABLE:
        assert loaded.url(service.name) == f"http://{COURSE_NAMES[service.name][1]}:{service.port}"


def test_the_ingress_routes_as_the_courses_in_its_order(documents):
    ingress = by_kind(documents, "Ingress")["ingress-srv"]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/use-regex"] == "true"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "posts.com"

    ports = {service.name: service.port for service in SERVICE_TABLE}
    routes = [(p["path"], p["backend"]["service"]["name"], p["backend"]["service"]["port"]["number"])
              for p in rule["http"]["paths"]]
    declared = gateway.ingress_rules(SERVICE_TABLE)  # what the gateway is built from, too
    assert routes == [(path, COURSE_NAMES[name][1], ports[name]) for path, name in declared]


def test_the_declared_front_door_is_the_courses_ingress():
    assert gateway.ingress_rules(SERVICE_TABLE) == INGRESS_RULES


def _service_address(documents: list[dict], url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    svc = by_kind(documents, "Service")[parts.hostname]
    assert parts.port in [p["port"] for p in svc["spec"]["ports"]], url
    return parts.hostname, parts.port


def test_the_rabbitmq_option_gives_a_broker_url_the_services_accept_and_can_reach(documents):
    deployments = by_kind(documents, "Deployment")
    url = secret_env(documents, "blog-broker")["BLOG_BROKER_URL"]
    assert config.load({"BLOG_BROKER_URL": url}).broker_url  # a scheme the registry knows
    assert _service_address(documents, url) == ("rabbitmq-srv", 5672)
    credentials = secret_env(documents, "rabbitmq-credentials")
    parts = urlsplit(url)
    assert (parts.username, parts.password) == (credentials["RABBITMQ_DEFAULT_USER"], credentials["RABBITMQ_DEFAULT_PASS"])
    for depl, _ in COURSE_NAMES.values():
        assert {"secretRef": {"name": "blog-broker", "optional": True}} in container(deployments[depl])["envFrom"]


def test_the_postgresql_option_names_its_server(documents):
    deployments = by_kind(documents, "Deployment")
    url = secret_env(documents, "blog-database")["BLOG_DATABASE_URL"]
    assert urlsplit(url).scheme == "postgresql"
    assert _service_address(documents, url) == ("postgres-srv", 5432)
    credentials = secret_env(documents, "postgres-credentials")
    parts = urlsplit(url)
    assert (parts.username, parts.password, parts.path) == (
        credentials["POSTGRES_USER"], credentials["POSTGRES_PASSWORD"], "/" + credentials["POSTGRES_DB"])
    for depl, _ in COURSE_NAMES.values():
        assert {"secretRef": {"name": "blog-database", "optional": True}} in container(deployments[depl])["envFrom"]


def test_the_image_runs_whichever_service_the_command_names():
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert "ENTRYPOINT" not in dict(instructions)  # the Deployment's command is the whole command line
    assert any(kind == "RUN" and re.search(r"\bpip install \.(\s|$)", args) for kind, args in instructions)
    copied = " ".join(args for kind, args in instructions if kind == "COPY")
    assert "services" in copied and "pyproject.toml" in copied

    cmd = json.loads(dict(instructions)["CMD"])
    assert cmd[:2] == ["python", "-m"] and cmd[2].removeprefix("services.") in COURSE_NAMES

    low, _, high = dict(instructions)["EXPOSE"].partition("-")
    exposed = range(int(low), int(high or low) + 1)
    for service in SERVICE_TABLE:
        assert service.port in exposed
        assert (ROOT / "services" / service.name / "__main__.py").is_file()  # `python -m services.<name>`


def test_a_wrong_port_or_route_order_is_caught(tmp_path):
    k8s = DEPLOY / "k8s"
    posts = (k8s / "posts-depl.yaml").read_text(encoding="utf-8")
    (tmp_path / "posts-depl.yaml").write_text(posts.replace("port: 4000", "port: 4009"), encoding="utf-8")
    ingress = (k8s / "ingress-srv.yaml").read_text(encoding="utf-8")
    swapped = ingress.replace("path: /posts/create", "path: /POSTS").replace("path: /posts\n", "path: /posts/create\n")
    (tmp_path / "ingress-srv.yaml").write_text(swapped.replace("path: /POSTS", "path: /posts"), encoding="utf-8")
    broken = manifests() + manifests(tmp_path)  # the later document of a name wins in by_kind
    posts_service = next(s for s in SERVICE_TABLE if s.name == "posts")
    with pytest.raises(AssertionError):
        test_each_service_has_its_deployment_and_clusterip_service_on_its_port(broken, posts_service)
    with pytest.raises(AssertionError):
        test_the_ingress_routes_as_the_courses_in_its_order(broken)
