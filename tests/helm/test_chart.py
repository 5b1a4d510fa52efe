"""helm/rayops: a real `helm lint` and `helm template`, and what the rendered objects grant and hold.

The binary is real helm from a wheel (tests/fixtures/helm.py); each call takes well under a second.
"""

from __future__ import annotations

import base64
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_provider_rayops.backends import parse_profile
from airflow_provider_rayops.config.loader import load_defaults
from tests.fixtures.helm import helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "rayops"
VALUES_FILES = sorted((ROOT / "helm" / "values").glob("*.yaml"))
RELEASE = "rayops"
NAMESPACE = "airflow"

EXPECTED_RULES = {
    (
        frozenset({"ray.io"}),
        frozenset({"rayjobs", "rayservices"}),
        frozenset({"create", "get", "list", "watch", "patch", "delete"}),
    ),
    (frozenset({"ray.io"}), frozenset({"rayjobs/status", "rayservices/status"}), frozenset({"get"})),
}

# A second kuberay profile in its own namespace, and one namespace listed outright.
TWO_NAMESPACES = {
    "rbac": {"extraNamespaces": ["team-a"]},
    "computeProfiles": {
        "kuberay-cpu": {"backend": "kuberay", "namespace": "team-b", "image": "registry.example.com/rayops-ray:0.1.0-cpu"},
    },
}


def run_helm(binary: Path, *args: str) -> str:
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def render(binary: Path, *args: str) -> list[dict[str, Any]]:
    out = run_helm(binary, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def two_namespaces_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("values") / "two-namespaces.yaml"
    path.write_text(yaml.safe_dump(TWO_NAMESPACES))
    return path


@pytest.fixture(scope="module")
def default_docs(helm: Path) -> list[dict[str, Any]]:
    return render(helm)


@pytest.fixture(scope="module")
def two_namespace_docs(helm: Path, two_namespaces_values: Path) -> list[dict[str, Any]]:
    return render(helm, "--values", str(two_namespaces_values))


@pytest.fixture(scope="module", params=["default", "two-namespaces"])
def docs(request: pytest.FixtureRequest, default_docs, two_namespace_docs) -> list[dict[str, Any]]:
    return default_docs if request.param == "default" else two_namespace_docs


def defaults_file(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (config_map,) = of_kind(docs, "ConfigMap")
    assert set(config_map["data"]) == {"defaults.yaml"}
    return yaml.safe_load(config_map["data"]["defaults.yaml"])


# --- the chart itself ---------------------------------------------------------------------------


def test_chart_version_follows_the_package():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "rayops"
    assert chart["version"] == chart["appVersion"] == project()["version"]


def test_helm_lint_strict_passes(helm, two_namespaces_values):
    run_helm(helm, "lint", "--strict", str(CHART))
    run_helm(helm, "lint", "--strict", str(CHART), "--values", str(two_namespaces_values))


def test_a_compute_naming_no_profile_is_refused(helm):
    done = subprocess.run(
        [str(helm), "template", RELEASE, str(CHART), "--set", "compute=nowhere"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert 'compute: "nowhere" names no profile in computeProfiles (kuberay-gpu)' in done.stderr


def test_a_misspelt_value_is_refused_by_the_schema(helm):
    done = subprocess.run(
        [str(helm), "template", RELEASE, str(CHART), "--set", "rbac.extraNamespace[0]=x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "extraNamespace" in done.stderr


# --- RBAC ----------------------------------------------------------------------------------------


def test_roles_grant_exactly_the_kuberay_rules(docs):
    roles = of_kind(docs, "Role")
    assert roles
    for role in roles:
        rules = {(frozenset(r["apiGroups"]), frozenset(r["resources"]), frozenset(r["verbs"])) for r in role["rules"]}
        assert rules == EXPECTED_RULES, role["metadata"]
        assert len(role["rules"]) == len(EXPECTED_RULES)
        assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in role["rules"])  # no resourceNames, URLs


def test_nothing_cluster_wide_no_wildcards_no_secrets(docs):
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    for role in of_kind(docs, "Role"):
        for rule in role["rules"]:
            values = [v for key in ("apiGroups", "resources", "verbs") for v in rule[key]]
            assert not [v for v in values if "*" in v], rule
            assert not [r for r in rule["resources"] if r.split("/")[0] in ("secrets", "pods")], rule
    for doc in docs:
        assert doc["metadata"].get("namespace"), f"{doc['kind']} {doc['metadata']['name']} has no namespace"


def test_role_bindings_bind_the_service_account_to_their_role(docs):
    (account,) = of_kind(docs, "ServiceAccount")
    assert (account["metadata"]["name"], account["metadata"]["namespace"]) == ("rayops-airflow", NAMESPACE)
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in of_kind(docs, "Role")}
    bindings = of_kind(docs, "RoleBinding")
    assert {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings} == roles
    for binding in bindings:
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": binding["roleRef"]["name"]}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rayops-airflow", "namespace": NAMESPACE}]


def test_roles_cover_the_release_and_every_ray_namespace(default_docs, two_namespace_docs):
    def namespaces(docs: list[dict[str, Any]], kind: str) -> set[str]:
        return {d["metadata"]["namespace"] for d in of_kind(docs, kind)}

    assert namespaces(default_docs, "Role") == namespaces(default_docs, "RoleBinding") == {NAMESPACE, "ml"}
    expected = {NAMESPACE, "ml", "team-a", "team-b"}
    assert namespaces(two_namespace_docs, "Role") == namespaces(two_namespace_docs, "RoleBinding") == expected
    assert len(of_kind(two_namespace_docs, "Role")) == len(expected)  # one per namespace, none twice


def test_rbac_and_service_account_can_be_left_out(helm):
    docs = render(helm, "--set", "rbac.create=false", "--set", "serviceAccount.create=false")
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding", "ServiceAccount")]


# --- the platform defaults -----------------------------------------------------------------------


def test_defaults_configmap_is_a_valid_defaults_file(docs, tmp_path):
    defaults = defaults_file(docs)
    assert defaults["owner"] == "ml-platform"
    assert defaults["storage"] == {"root": "s3://rayops/artifacts", "conn_id": "rayops_s3_default"}
    assert defaults["compute"] in defaults["compute_profiles"]
    for name, profile in defaults["compute_profiles"].items():
        parsed = parse_profile(profile)
        assert parsed.backend == profile["backend"], name
    # rayops' own loader reads it as it would dag_configs/defaults.yaml, with nothing to report.
    (tmp_path / "defaults.yaml").write_text(of_kind(docs, "ConfigMap")[0]["data"]["defaults.yaml"])
    loaded = load_defaults(tmp_path, env={})
    assert loaded.issues == []
    assert loaded.storage_root == "s3://rayops/artifacts"


def test_default_kuberay_gpu_profile_is_the_one_in_dag_configs(default_docs):
    ours = yaml.safe_load((ROOT / "dag_configs" / "defaults.yaml").read_text())["compute_profiles"]["kuberay-gpu"]
    # Plus the Secret this release made, which the profile's default (rayops-ray-token) only matches for release "rayops".
    assert defaults_file(default_docs)["compute_profiles"]["kuberay-gpu"] == {**ours, "token_secret": f"{RELEASE}-ray-token"}


def test_kuberay_profiles_name_the_token_secret_this_release_creates(helm):
    docs = run_helm(helm, "template", "ml-platform", str(CHART), "--namespace", NAMESPACE)
    docs = [doc for doc in yaml.safe_load_all(docs) if doc]
    (name,) = {s["metadata"]["name"] for s in of_kind(docs, "Secret")}
    assert name == "ml-platform-ray-token"
    assert defaults_file(docs)["compute_profiles"]["kuberay-gpu"]["token_secret"] == name
    mine = render(helm, "--set", "computeProfiles.kuberay-gpu.token_secret=team-token")
    assert defaults_file(mine)["compute_profiles"]["kuberay-gpu"]["token_secret"] == "team-token"


def test_security_policy_goes_into_the_defaults_file(helm, tmp_path):
    docs = render(helm, "--set-json", 'security={"source_roots": ["s3://lake/"]}')
    defaults = defaults_file(docs)
    assert defaults["security"] == {"source_roots": ["s3://lake/"]}
    (tmp_path / "defaults.yaml").write_text(of_kind(docs, "ConfigMap")[0]["data"]["defaults.yaml"])
    loaded = load_defaults(tmp_path, env={})
    assert loaded.issues == []
    assert loaded.policy.source_roots == ["s3://lake/"]


# --- the Ray token -------------------------------------------------------------------------------


def test_ray_token_secret_holds_one_random_token_in_every_namespace(docs):
    secrets = of_kind(docs, "Secret")
    assert {s["metadata"]["namespace"] for s in secrets} == {r["metadata"]["namespace"] for r in of_kind(docs, "Role")}
    tokens = set()
    for secret in secrets:
        assert secret["metadata"]["name"] == "rayops-ray-token"
        assert set(secret["data"]) == {"auth_token"}
        tokens.add(base64.b64decode(secret["data"]["auth_token"]).decode())
    (token,) = tokens
    assert re.fullmatch(r"[A-Za-z0-9]{48}", token)


def test_a_fresh_render_makes_a_fresh_token(helm, default_docs):
    again = of_kind(render(helm), "Secret")[0]["data"]["auth_token"]
    assert again != of_kind(default_docs, "Secret")[0]["data"]["auth_token"]


def test_an_existing_or_disabled_token_secret_is_not_created(helm):
    assert not of_kind(render(helm, "--set", "rayAuth.existingSecret=platform-ray-token"), "Secret")
    assert not of_kind(render(helm, "--set", "rayAuth.enabled=false"), "Secret")


# --- the values files beside the chart -----------------------------------------------------------

SECRETISH = re.compile(r"pass(word|wd)?|secret|token|credential|api_?key|private_?key|fernet|jwt", re.IGNORECASE)
# Keys whose value names a Secret (or the key of one) rather than holding one.
REFERENCE_KEY = re.compile(r"^(existing\w*secret\w*|\w*secretname|secretref)$", re.IGNORECASE)


def names_a_secret(key: str, mapping: dict[str, Any], parent_key: str) -> bool:
    if REFERENCE_KEY.match(key):
        return True
    if key == "secretKey" and mapping.get(
        "secretName"
    ):  # the official Airflow chart's secret: [{envName, secretName, secretKey}]
        return True
    # {name, <which>Key} under a secret reference: existingSecret: {name, keyOfSecretAccessKey}, {name, passwordKey}
    return bool(SECRETISH.search(parent_key)) and "name" in mapping and (key.endswith("Key") or key.startswith("keyOf"))


def literal_secrets(value: Any, path: str = "", parent_key: str = "") -> list[str]:
    """Where a values file writes a secret itself: a secret-like key with a literal value, or an env
    entry {name, value} whose name is a secret or a connection (AIRFLOW_CONN_* carry passwords)."""
    found: list[str] = []
    if isinstance(value, dict):
        env_name = value.get("name")
        if (
            isinstance(env_name, str)
            and "value" in value
            and (SECRETISH.search(env_name) or env_name.startswith("AIRFLOW_CONN_"))
        ):
            found.append(f"{path}.{env_name}")
        for key, item in value.items():
            where = f"{path}.{key}"
            if isinstance(item, (str, int, float)) and not isinstance(item, bool):
                if str(item) and SECRETISH.search(str(key)) and not names_a_secret(str(key), value, parent_key):
                    found.append(where)
            else:
                found += literal_secrets(item, where, str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += literal_secrets(item, f"{path}[{i}]", parent_key)
    return found


def test_the_secret_detector_catches_literal_secrets():
    assert literal_secrets({"users": [{"accessKey": "console", "secretKey": "console123"}]}) == [".users[0].secretKey"]
    assert literal_secrets({"users": [{"existingSecret": "s", "secretKey": "console123"}]}) == [".users[0].secretKey"]
    assert literal_secrets({"users": [{"existingSecret": "s", "existingSecretKey": "secretKey"}]}) == []
    assert literal_secrets({"backendStore": {"existingDatabaseSecret": {"name": "db", "passwordKey": "password"}}}) == []
    assert literal_secrets({"auth": {"adminPassword": "S3cr3+"}}) == [".auth.adminPassword"]
    assert literal_secrets({"env": [{"name": "AIRFLOW_CONN_X", "value": "s3://a:b@h"}]}) == [".env[0].AIRFLOW_CONN_X"]
    assert literal_secrets({"extraEnvVars": {"AWS_SECRET_ACCESS_KEY": "abc"}}) == [".extraEnvVars.AWS_SECRET_ACCESS_KEY"]
    assert literal_secrets({"secret": [{"envName": "T", "secretName": "s", "secretKey": "auth_token"}]}) == []
    assert literal_secrets({"s3": {"existingSecret": {"name": "s", "keyOfSecretAccessKey": "K"}}}) == []


@pytest.mark.parametrize("path", [*VALUES_FILES, CHART / "values.yaml"], ids=lambda p: p.name)
def test_values_files_parse_and_hold_no_literal_secret(path):
    values = yaml.safe_load(path.read_text())
    assert isinstance(values, dict) and values
    assert literal_secrets(values) == []


def test_values_files_are_the_documented_four():
    assert [p.name for p in VALUES_FILES] == ["airflow.yaml", "kuberay-operator.yaml", "minio.yaml", "mlflow.yaml"]


def test_airflow_values_point_at_what_the_chart_creates(default_docs):
    values = yaml.safe_load((ROOT / "helm" / "values" / "airflow.yaml").read_text())
    (account,) = of_kind(default_docs, "ServiceAccount")
    for component in ("workers", "triggerer"):
        assert values[component]["serviceAccount"] == {"create": False, "name": account["metadata"]["name"]}
    token_secret = of_kind(default_docs, "Secret")[0]["metadata"]["name"]
    assert {"envName": "RAYOPS_KUBERAY_TOKEN", "secretName": token_secret, "secretKey": "auth_token"} in values["secret"]
    connections = {s["envName"] for s in values["secret"] if s["envName"].startswith("AIRFLOW_CONN_")}
    assert connections == {
        "AIRFLOW_CONN_RAYOPS_MLFLOW_DEFAULT",
        "AIRFLOW_CONN_RAYOPS_S3_DEFAULT",
        "AIRFLOW_CONN_KUBERNETES_DEFAULT",
    }
    config_dir = {e["name"]: e["value"] for e in values["env"]}["RAYOPS_CONFIG_DIR"]
    (config_map,) = of_kind(default_docs, "ConfigMap")
    (volume,) = [v for v in values["volumes"] if v.get("configMap", {}).get("name") == config_map["metadata"]["name"]]
    (mount,) = [m for m in values["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {
        "name": volume["name"],
        "mountPath": f"{config_dir}/defaults.yaml",
        "subPath": "defaults.yaml",
        "readOnly": True,
    }
    airflow_pin = next(r for r in project()["optional-dependencies"]["test"] if r.startswith("apache-airflow=="))
    assert values["airflowVersion"] == airflow_pin.split("==")[1]


def test_kuberay_operator_values_pin_1_7_0():
    values = yaml.safe_load((ROOT / "helm" / "values" / "kuberay-operator.yaml").read_text())
    assert values["image"] == {"repository": "quay.io/kuberay/operator", "tag": "v1.7.0", "pullPolicy": "IfNotPresent"}
