"""The OpenAPI document built from model schemas alone (no R): valid OpenAPI 3.1, typed columns,
examples, errors and security. The served document is tested in tests/integration."""

from __future__ import annotations


from openapi_spec_validator import validate

from rbridge.gateway import openapi
from rbridge.schema import example_rows

CARS = {"name": "cars", "version": "abc123", "description": "mpg from weight", "state": "loaded",
        "schema": {"columns": [
            {"name": "wt", "type": "numeric", "levels": None, "na": False},
            {"name": "cyl", "type": "factor", "levels": ["4", "6", "8"], "na": False},
            {"name": "gear", "type": "factor", "levels": ["3", "4", "5"], "na": True, "ordered": True},
            {"name": "n", "type": "integer", "levels": None, "na": True},
            {"name": "am", "type": "logical", "levels": None, "na": False},
            {"name": "note", "type": "character", "levels": None, "na": True}]}}
LOOSE = {"name": "loose", "version": "1", "state": "loaded", "schema": {"columns": None}}


# -- unit: the document from schemas --------------------------------------------------------------
def test_spec_is_valid_openapi_3_1():
    spec = openapi.build_spec([CARS, LOOSE], max_rows=500, default_model="cars",
                              routes=["/login/refresh", "/logout", "/admin/reload"])
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    for path in ("/login", "/login/refresh", "/logout", "/models", "/models/{name}", "/healthz", "/readyz",
                 "/status", "/metrics", "/openapi.json", "/models/{name}/openapi.json", "/admin/reload",
                 "/models/cars/predict", "/models/loose/predict", "/predict"):
        assert path in spec["paths"], path
    validate(openapi.model_spec(CARS, max_rows=500))
    validate(openapi.build_spec([], max_rows=500))


def test_v2_endpoints_are_listed_when_the_app_has_them():
    spec = openapi.build_spec([CARS], routes=["/v2/models/<name>/infer"])
    validate(spec)
    v2 = sorted(p for p in spec["paths"] if p.startswith("/v2"))
    assert v2 == ["/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/infer",
                  "/v2/models/{name}/ready", "/v2/models/{name}/versions/{version}",
                  "/v2/models/{name}/versions/{version}/infer", "/v2/models/{name}/versions/{version}/ready"]
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert infer["responses"]["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/V2Error"}
    assert set(infer["responses"]["200"]["content"]) == {"application/json", "application/octet-stream"}
    assert spec["paths"]["/v2/health/ready"]["get"]["security"] == []
    assert not any(p.startswith("/v2") for p in openapi.build_spec([CARS], routes=[])["paths"])


def test_management_endpoints_with_the_upload_form():
    spec = openapi.build_spec([CARS], routes=["/models/<name>/versions"])
    validate(spec)
    model = spec["paths"]["/models/{name}"]
    assert set(model) == {"get", "put", "delete"}
    form = model["put"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert (form["required"], sorted(form["properties"])) == (["model"], ["config", "model", "script"])
    assert {"201", "409", "413", "422"} <= set(model["put"]["responses"]) and "200" not in model["put"]["responses"]
    assert "/models/{name}/versions/{v}/activate" in spec["paths"]
    assert "put" not in openapi.build_spec([CARS], routes=[])["paths"]["/models/{name}"]


def test_optional_endpoints_only_when_the_app_has_them():
    paths = openapi.build_spec([CARS], routes=[])["paths"]
    assert "/login/refresh" not in paths and "/admin/reload" not in paths and "/predict" not in paths


def test_columns_become_typed_properties_with_enums_and_nulls():
    schemas = openapi.build_spec([CARS])["components"]["schemas"]
    props = schemas["cars.Row"]["properties"]
    assert props["wt"] == {"type": "number"}
    assert props["cyl"] == {"type": "string", "enum": ["4", "6", "8"]}
    assert props["gear"]["enum"] == ["3", "4", "5", None] and props["gear"]["type"] == ["string", "null"]
    assert props["n"]["type"] == ["integer", "null"] and props["n"]["maximum"] == 2147483647
    assert props["am"] == {"type": "boolean"}
    assert props["note"] == {"type": ["string", "null"]}
    assert schemas["cars.Row"]["required"] == ["wt", "cyl", "gear", "n", "am", "note"]
    columns = schemas["cars.Columns"]["properties"]["columns"]
    assert columns["properties"]["cyl"]["items"]["enum"] == ["4", "6", "8"]
    assert schemas["cars.Request"]["oneOf"] == [{"$ref": "#/components/schemas/cars.Rows"},
                                                {"$ref": "#/components/schemas/cars.Columns"}]


def test_predict_operation_has_examples_errors_and_security():
    spec = openapi.build_spec([CARS], max_rows=500)
    op = spec["paths"]["/models/cars/predict"]["post"]
    examples = op["requestBody"]["content"]["application/json"]["examples"]
    assert examples["rows"]["value"] == {"data": example_rows(CARS["schema"]["columns"], 2)}
    assert examples["columns"]["value"]["columns"]["cyl"] == ["4", "4"]
    assert op["requestBody"]["content"]["text/csv"]["example"].startswith("wt,cyl,gear,n,am,note\n")
    assert set(op["responses"]) == {"200", "400", "401", "404", "413", "415", "422", "429", "503", "504"}
    assert spec["components"]["responses"]["InvalidInput"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/Error"}
    assert set(spec["components"]["securitySchemes"]) == {"basicAuth", "bearerAuth", "apiKeyAuth"}
    assert spec["components"]["securitySchemes"]["apiKeyAuth"]["name"] == "X-API-Key"
    assert spec["paths"]["/login"]["post"]["security"] == []
    assert spec["paths"]["/healthz"]["get"]["security"] == []


def test_model_without_schema_takes_any_scalar_columns():
    spec = openapi.build_spec([LOOSE])
    row = spec["components"]["schemas"]["loose.Row"]
    assert row["additionalProperties"]["type"] == ["number", "string", "boolean", "null"]
    assert "examples" not in spec["paths"]["/models/loose/predict"]["post"]["requestBody"]["content"][
        "application/json"]


def test_time_columns_have_formats_and_a_refused_null_says_why():
    model = {"name": "trend", "version": "1", "description": "", "state": "loaded", "schema": {"columns": [
        {"name": "day", "type": "date", "levels": None},
        {"name": "at", "type": "datetime", "levels": None, "tz": "Europe/Berlin"},
        {"name": "gap", "type": "difftime", "levels": None, "units": "weeks", "na": False,
         "na_reason": "ranger cannot predict rows with missing values"}]}}
    spec = openapi.build_spec([model])
    validate(spec)
    props = spec["components"]["schemas"]["trend.Row"]["properties"]
    assert props["day"] == {"type": ["string", "null"], "format": "date"}
    assert props["at"]["format"] == "date-time" and "Europe/Berlin" in props["at"]["description"]
    assert props["gap"]["type"] == "number" and "weeks" in props["gap"]["description"]
    assert "no null: ranger cannot predict rows with missing values" in props["gap"]["description"]
