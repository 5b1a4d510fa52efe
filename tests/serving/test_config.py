"""The Serve config of an endpoint (no Ray): its applications, and a merge that keeps others'."""

from __future__ import annotations

import pytest

from airflow_provider_rayops.serving.config import applications, replace_pipeline


def test_a_router_and_one_application_per_version_with_the_weights_in_user_config():
    apps = applications(pipeline="churn", registered_model="churn", weights={"3": 90, "4": 10}, sticky_header="X-Key")
    assert [a["name"] for a in apps] == ["churn", "churn--v3", "churn--v4"]
    router = apps[0]
    assert router["route_prefix"] == "/churn" and router["args"] == {"pipeline": "churn"}
    assert router["deployments"][0]["user_config"] == {
        "versions": {"3": "churn--v3", "4": "churn--v4"},
        "champion": "3",  # the first version, unless named
        "weights": {"3": 90.0, "4": 10.0},
        "sticky_header": "X-Key",
    }
    assert [a["route_prefix"] for a in apps[1:]] == [None, None]
    assert apps[2]["args"]["version"] == "4" and apps[2]["args"]["registered_model"] == "churn"


def test_replacing_a_pipelines_applications_keeps_every_other_one():
    running = [
        *applications(pipeline="churn", registered_model="churn", weights={"3": 1}),
        *applications(pipeline="churnx", registered_model="churnx", weights={"1": 1}),
    ]
    new = applications(pipeline="churn", registered_model="churn", weights={"4": 1})
    merged = replace_pipeline(running, "churn", new)
    assert [a["name"] for a in merged] == ["churnx", "churnx--v1", "churn", "churn--v4"]


def test_the_champion_is_named_in_user_config_and_must_be_a_served_version():
    apps = applications(pipeline="churn", registered_model="churn", weights={"3": 50, "4": 50}, champion="4")
    assert apps[0]["deployments"][0]["user_config"]["champion"] == "4"
    with pytest.raises(ValueError, match=r"champion '9' is not one of the versions \['3'\]"):
        applications(pipeline="churn", registered_model="churn", weights={"3": 1}, champion="9")
