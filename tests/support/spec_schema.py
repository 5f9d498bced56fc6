"""Parloa's TextchatV2 OpenAPI spec as jsonschema validators, for tests.

The spec is read from ``shared/spec/parloa-chat-v2.yml`` next to the checkout and is never
copied into the repository; when it is not there, whatever needs it is skipped.

    from tests.support.spec_schema import request_validator, response_validator
    response_validator().validate(body)     # raises jsonschema.ValidationError
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema.protocols import Validator

from tests.support.paths import ROOT

SPEC_PATH = ROOT.parent / "shared" / "spec" / "parloa-chat-v2.yml"


@functools.cache
def _spec() -> dict[str, Any] | None:
    if not SPEC_PATH.is_file():
        return None
    loaded = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else None


def spec_available() -> bool:
    return _spec() is not None


def load_spec() -> dict[str, Any]:
    """The parsed spec, or skip the calling test."""
    spec = _spec()
    if spec is None:
        pytest.skip(f"the TextchatV2 OpenAPI spec is not available at {SPEC_PATH}")
    return spec


@functools.cache
def _validator(name: str) -> Validator:
    spec = load_spec()
    # The schema document carries the spec's components, so that the spec's own
    # "#/components/schemas/..." references resolve against it. The OpenAPI 3.0 schemas used
    # here are plain Draft 7 (no nullable, no discriminator).
    document: dict[str, Any] = {
        "components": spec["components"],
        "$ref": f"#/components/schemas/{name}",
    }
    jsonschema.Draft7Validator.check_schema(document)
    validator: Validator = jsonschema.Draft7Validator(document)
    return validator


def schema_validator(name: str) -> Validator:
    """A validator for ``components.schemas.<name>`` of the spec (skips if there is no spec)."""
    if _spec() is None:
        load_spec()  # skips
    return _validator(name)


def request_validator() -> Validator:
    """Validates a ``POST /dialoghook`` body (``TextchatV2RequestBody``)."""
    return schema_validator("TextchatV2RequestBody")


def response_validator() -> Validator:
    """Validates a dialoghook response body (``TextchatV2ResponseBody``)."""
    return schema_validator("TextchatV2ResponseBody")
