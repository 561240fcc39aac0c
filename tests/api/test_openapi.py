"""GET /openapi.json and GET /docs."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

EXPECTED = {
    "/": {"get"},
    "/health": {"get"},
    "/dashboard": {"get"},
    "/job": {"post"},
    "/jobs": {"get", "post"},
    "/jobs/{id}": {"get", "put", "patch"},
    "/jobs/{id}/rerun": {"post"},
    "/jobs/{id}/keys": {"get"},
    "/logs/{id}": {"get"},
    "/schedules": {"get"},
    "/scheduler": {"put"},
    "/settings": {"get", "post"},
}


def schema() -> Any:
    response = APIClient().get("/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json") or response[
        "Content-Type"
    ].startswith("application/json")
    return response.json()


def test_schema_describes_every_endpoint_and_method(db: Any) -> None:
    document = schema()

    assert document["openapi"].startswith("3.")
    assert {path: set(ops) for path, ops in document["paths"].items()} == EXPECTED


def test_security_schemes_are_the_client_and_api_key_headers(db: Any) -> None:
    document = schema()

    schemes = document["components"]["securitySchemes"]
    assert {(s["type"], s["in"], s["name"]) for s in schemes.values()} == {
        ("apiKey", "header", "client"),
        ("apiKey", "header", "api-key"),
    }
    assert document["paths"]["/"]["get"].get("security") in (None, [], [{}])
    for path, operations in document["paths"].items():
        if path == "/":
            continue
        for method, operation in operations.items():
            # Both headers at once (one requirement naming both), and no anonymous alternative.
            assert operation["security"] == [{name: [] for name in schemes}], (method, path)
            assert "401" in operation["responses"], (method, path)


def test_documented_responses_and_parameters(db: Any) -> None:
    paths = schema()["paths"]

    assert {p["name"] for p in paths["/jobs"]["get"]["parameters"]} == {
        "limit",
        "order_by",
        "asc",
        "state",
        "from",
        "to",
        "failed",
        "search",
        "job_ids",
        "client",
        "persist",
    }
    assert {p["name"] for p in paths["/logs/{id}"]["get"]["parameters"]} == {"id", "show_all"}
    assert "Idempotency-Key" in {p["name"] for p in paths["/job"]["post"]["parameters"]}
    assert set(paths["/health"]["get"]["responses"]) >= {"200", "503"}
    assert set(paths["/jobs/{id}"]["put"]["responses"]) >= {"200", "400", "404", "413"}
    assert set(paths["/settings"]["post"]["responses"]) >= {"200", "400", "403"}
    job = paths["/jobs/{id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert job == {"$ref": "#/components/schemas/JobDetail"}
    assert set(paths["/jobs/{id}/keys"]["get"]["responses"]) >= {"200", "401", "404"}
    submit = paths["/job"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert submit == {"$ref": "#/components/schemas/JobSubmit"}


def test_the_keys_route_documents_both_kinds_of_key(db: Any) -> None:
    document = schema()
    answer = document["paths"]["/jobs/{id}/keys"]["get"]["responses"]["200"]["content"]["application/json"]
    assert answer["schema"] == {"$ref": "#/components/schemas/JobKeys"}
    components = document["components"]["schemas"]
    keys = components["JobKeys"]["properties"]["keys"]
    assert keys["type"] == "array"
    assert keys["items"]["$ref"] == "#/components/schemas/ContentKey"
    content_key = components["ContentKey"]
    assert content_key["discriminator"]["propertyName"] == "kind"
    assert set(content_key["discriminator"]["mapping"]) == {"aes", "cenc", "cbcs"}
    assert set(components["AesKey"]["required"]) == {"kind", "key_hex", "iv_hex", "key_uri"}
    assert set(components["CencKey"]["required"]) == {
        "kind",
        "scheme",
        "systems",
        "origin",
        "kid_hex",
        "key_hex",
        "clearkey",
    }


def test_request_schemas_refuse_unknown_fields(db: Any) -> None:
    schemas = schema()["components"]["schemas"]

    for name in ("JobSubmit", "JobSpec", "JobUpdate", "SettingChange", "SchedulerChange"):
        assert schemas[name]["additionalProperties"] is False, name
    assert set(schemas["JobSpec"]["properties"]) == {
        "workflow",
        "priority",
        "run_at",
        "semaphore_url",
        "sempahore_url",
        "semphore_url",
        "persist",
    }


def test_docs_page(db: Any) -> None:
    response = APIClient().get("/docs")

    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
    assert b"/openapi.json" in response.content


def test_job_detail_documents_the_opt_in_tasks_list(db: Any) -> None:
    document = schema()
    operation = document["paths"]["/jobs/{id}"]["get"]
    query = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert query["tasks"]["schema"]["type"] == "boolean"
    assert query["tasks"].get("required", False) is False

    components = document["components"]["schemas"]
    detail = components[
        operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    ]
    assert "tasks" in detail["properties"] and "tasks" not in detail["required"]  # only with ?tasks=1
    item = components[detail["properties"]["tasks"]["items"]["$ref"].split("/")[-1]]
    assert list(item["properties"]) == [
        "id",
        "name",
        "queue",
        "state",
        "position",
        "attempts",
        "progress",
        "started_at",
        "finished_at",
    ]
    assert components["TaskState"]["enum"] == [
        "pending",
        "queued",
        "running",
        "completed",
        "failed",
        "retrying",
        "cancelled",
    ]
