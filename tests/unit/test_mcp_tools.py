"""The MCP tool catalog: schemas from the API's models, inlined; arguments as the API validates them."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from outpost.mcp.json_schema import model_schema
from outpost.mcp.problems import problem_of_arguments
from outpost.mcp.server import ToolCatalog
from outpost.mcp.tools import DispatchArguments
from outpost.schemas.dispatches import DispatchCreate


class Node(BaseModel):
    children: list[Node]


def test_every_listed_schema_is_inlined_and_objects_at_the_root() -> None:
    for tool in ToolCatalog().listing.tools:
        assert tool.input_schema["type"] == "object", tool.name
        assert tool.output_schema is not None
        assert tool.output_schema["type"] == "object", tool.name
        assert "$ref" not in str(tool.input_schema) + str(tool.output_schema), tool.name


def test_a_recursive_model_cannot_be_inlined() -> None:
    with pytest.raises(ValueError, match="refers to itself"):
        model_schema(Node, "validation")


def test_the_dispatch_request_is_the_arguments_without_the_tools_own() -> None:
    arguments = DispatchArguments.model_validate(
        {"agent": "shell", "task": "ls", "wait_s": 5, "idempotency_key": "k", "labels": {"team": "a"}}
    )
    assert arguments.request() == DispatchCreate(agent="shell", task="ls", labels={"team": "a"})


def test_refused_arguments_are_named_as_the_rest_api_names_fields_without_echoing_values() -> None:
    with pytest.raises(ValidationError) as caught:
        DispatchArguments.model_validate(
            {"agent": "shell", "task": "x", "env": {"OUTPOST_X": "secret-value"}}
        )
    problem = problem_of_arguments(caught.value)
    assert (problem["status"], problem["errors"][0]["field"]) == (422, "env")
    assert "secret-value" not in str(problem)


def test_the_dispatch_tool_takes_the_apis_failover_and_lists_it_in_its_schema() -> None:
    failover = {"models": ["gpt-6-luna"], "tiers": ["fast"], "accounts": True}
    arguments = DispatchArguments.model_validate(
        {"agent": "aider", "task": "fix it", "failover": failover, "wait_s": 1}
    )
    assert arguments.request().model_dump(mode="json")["failover"] == failover
    [tool] = [tool for tool in ToolCatalog().listing.tools if tool.name == "outpost_dispatch"]
    listed = tool.input_schema["properties"]["failover"]["anyOf"][0]["properties"]
    assert set(listed) == {"models", "tiers", "accounts"}
    with pytest.raises(ValidationError) as caught:
        DispatchArguments.model_validate({"agent": "aider", "task": "x", "failover": {"accounts": []}})
    assert problem_of_arguments(caught.value)["errors"][0]["field"] == "failover.accounts"
