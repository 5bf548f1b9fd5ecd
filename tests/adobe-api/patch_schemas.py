"""Copies Adobe's OpenAPI files with the few changes temppass's contract makes.

Usage: python3 patch_schemas.py SOURCE_DIR OUT_DIR

Adobe's files are never edited in place: each run writes patched copies to
OUT_DIR. Every change below is one field where temppass's contract
(docs/reference.md) and Adobe's file disagree, and docs/adobe-api.md says why, under the same name.
Each patch checks that the field still looks the way it did when the patch was
written, so a new version of Adobe's file cannot silently lose or change it.
"""

import json
import sys
from pathlib import Path


def expect(actual, expected, what):
    if actual != expected:
        sys.exit(f"patch_schemas: {what} is {actual!r} in Adobe's file, expected {expected!r}: review the patch")


def error_message_is_a_string(schemas):
    """ErrorInformation.message: Adobe's file says an empty object (`Message`);
    Adobe's API and temppass (docs/reference.md §4) send a string."""
    expect(schemas["Message"], {"type": "object"}, "Message")
    expect(schemas["ErrorInformation"]["properties"]["message"], {"$ref": "#/components/schemas/Message"}, "ErrorInformation.message")
    schemas["ErrorInformation"]["properties"]["message"] = {"type": "string"}


def profile_attribute_values_are_any_json(schemas):
    """UserMetadataResponse.value: Adobe's file says an object; a profile's
    attributes carry numbers, arrays and strings (docs/reference.md §2: expiration_date,
    remaining_resources, used_assets, userID), as Adobe's own profiles do."""
    value = schemas["UserMetadataResponse"]["properties"]["value"]
    expect(value, {"type": "object", "properties": {}}, "UserMetadataResponse.value")
    schemas["UserMetadataResponse"]["properties"]["value"] = {}


def session_times_are_numbers(schemas):
    """SessionResponse / SessionStatusResponse notBefore and notAfter: Adobe's
    file says strings; temppass sends epoch milliseconds, numbers
    (docs/reference.md §2)."""
    for name in ("SessionResponse", "SessionStatusResponse"):
        for field in ("notBefore", "notAfter"):
            prop = schemas[name]["properties"][field]
            expect(prop.get("type"), "string", f"{name}.{field}.type")
            prop["type"] = "integer"
            prop["format"] = "int64"


def decisions_name_at_least_one_resource(schemas):
    """Request side only: Adobe's file makes `resources` optional and allows an
    empty list (or any length); temppass answers a missing or empty list, and
    one of more than 50 resources, with 400 invalid_parameter_resources.
    Saying so lets Schemathesis send valid decisions (the happy path) as
    positive cases and the rest as negative ones; no response check changes."""
    request = schemas["retrieveAuthorizeDecisionsForMvpdUsingPOST_request"]
    expect(request.get("required"), None, "retrieveAuthorizeDecisionsForMvpdUsingPOST_request.required")
    request["required"] = ["resources"]
    request["properties"]["resources"]["minItems"] = 1
    request["properties"]["resources"]["maxItems"] = 50


PATCHES = {
    "restApiV2.json": [
        error_message_is_a_string,
        profile_attribute_values_are_any_json,
        session_times_are_numbers,
        decisions_name_at_least_one_resource,
    ],
    "dcrApi.json": [],
}


def main():
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for name, patches in PATCHES.items():
        document = json.loads((source / name).read_text())
        for patch in patches:
            patch(document["components"]["schemas"])
            print(f"  {name}: {patch.__name__}")
        (out / name).write_text(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
