"""Bad request content is harmless: a clear problem+json answer, never a 500, and nothing stored changes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from outpost.schemas.dispatches import MAX_ENV_VARS, MAX_LABELS
from tests.conftest import MakeServer, Server
from tests.integration.api_checks import StoredTenant, assert_invalid, assert_problem, new_stored_tenant
from tests.integration.helpers import TERMINAL, all_events, submit, wait_for_status

VALID = {"agent": "shell", "task": "echo hi"}
MAX_TASK_CHARS = 256 * 1024
MAX_TIMEOUT_S = 24 * 3600
MAX_BODY_BYTES = 2 * 1024 * 1024


@pytest.fixture
async def tenant(make_server: MakeServer) -> StoredTenant:
    return await new_stored_tenant(await make_server(worker={"enabled": False}, limits={"requests_per_s": 0}))


MALFORMED_JSON = [
    ("truncated", b'{"agent": "shell", "task":'),
    ("single-quotes", b"{'agent': 'shell', 'task': 'x'}"),
    ("trailing-comma", b'{"agent": "shell", "task": "x",}'),
    ("not-utf8", b'\xff\xfe{"agent": "shell"}'),
    ("nested-100k-deep", b"[" * 100_000 + b"]" * 100_000),
]


async def test_malformed_json_is_a_400_problem(tenant: StoredTenant, subtests: pytest.Subtests) -> None:
    async with tenant.unharmed():
        for case, content in MALFORMED_JSON:
            with subtests.test(case):
                assert_problem(await tenant.post_raw(content), 400)


async def test_a_body_that_is_not_a_json_object_is_a_422_naming_the_body(
    tenant: StoredTenant, subtests: pytest.Subtests
) -> None:
    async with tenant.unharmed():
        for body in ([], ["shell", "echo hi"], "echo hi", 42, 4.2, True, None):
            with subtests.test(json.dumps(body)):
                assert_invalid(await tenant.post_raw(json.dumps(body).encode()), "body")


BAD_FIELDS = [
    ("limits-memory-over-the-server", {"limits": {"memory_mb": 10**6}}, "limits.memory_mb"),
    ("limits-pids-over-the-server", {"limits": {"pids": 60_000}}, "limits.pids"),
    ("limits-cpu-over-the-server", {"limits": {"cpu_cores": 200}}, "limits.cpu_cores"),
    ("limits-memory-tiny", {"limits": {"memory_mb": 1}}, "limits.memory_mb"),
    ("limits-pids-negative", {"limits": {"pids": -5}}, "limits.pids"),
    ("limits-disk-over-the-server", {"limits": {"disk_mb": 10**6}}, "limits.disk_mb"),
    ("limits-disk-zero", {"limits": {"disk_mb": 0}}, "limits.disk_mb"),
    ("limits-disk-string", {"limits": {"disk_mb": "2G"}}, "limits.disk_mb"),
    ("limits-unknown", {"limits": {"disk_tb": 1}}, "limits.disk_tb"),
    ("limits-not-object", {"limits": 5}, "limits"),
    ("egress-ip-literal", {"egress_allow": ["169.254.169.254"]}, "egress_allow.0"),
    ("egress-numeric-host", {"egress_allow": ["ok.test", "2130706433"]}, "egress_allow.1"),
    ("egress-bare-wildcard", {"egress_allow": ["*"]}, "egress_allow.0"),
    ("egress-bad-port", {"egress_allow": ["ok.test:99999"]}, "egress_allow.0"),
    ("egress-too-many", {"egress_allow": [f"h{i}.test" for i in range(33)]}, "egress_allow"),
    ("egress-not-list", {"egress_allow": "ok.test"}, "egress_allow"),
    ("agent-int", {"agent": 7}, "agent"),
    ("agent-unknown", {"agent": "nobody"}, "agent"),
    ("task-list", {"task": ["echo", "hi"]}, "task"),
    ("task-empty", {"task": ""}, "task"),
    ("task-whitespace", {"task": " \t\n\u3000 "}, "task"),
    ("task-1MiB", {"task": "x" * 2**20}, "task"),
    ("task-one-over", {"task": "x" * (MAX_TASK_CHARS + 1)}, "task"),
    ("timeout-str", {"timeout_s": "abc"}, "timeout_s"),
    ("timeout-fraction", {"timeout_s": 1.5}, "timeout_s"),
    ("timeout-negative", {"timeout_s": -1}, "timeout_s"),
    ("timeout-zero", {"timeout_s": 0}, "timeout_s"),
    ("timeout-one-over", {"timeout_s": MAX_TIMEOUT_S + 1}, "timeout_s"),
    ("timeout-huge", {"timeout_s": 10**12}, "timeout_s"),
    ("timeout-bigger-than-int64", {"timeout_s": 10**40}, "timeout_s"),
    ("env-str", {"env": "A=1"}, "env"),
    ("env-list", {"env": ["A=1"]}, "env"),
    ("env-value-int", {"env": {"A": 1}}, "env.A"),
    ("env-value-null", {"env": {"A": None}}, "env.A"),
    ("env-name-digit-first", {"env": {"1A": "x"}}, "env.1A.[key]"),
    ("env-reserved", {"env": {"OUTPOST_TOKEN": "x"}}, "env"),
    ("env-reserved-lowercase", {"env": {"outpost_token": "x"}}, "env"),
    ("env-too-many", {"env": {f"V{i}": "x" for i in range(MAX_ENV_VARS + 1)}}, "env"),
    ("labels-list", {"labels": ["team"]}, "labels"),
    ("label-value-int", {"labels": {"team": 1}}, "labels.team"),
    ("label-value-list", {"labels": {"team": ["a"]}}, "labels.team"),
    ("labels-too-many", {"labels": {f"l{i}": "x" for i in range(MAX_LABELS + 1)}}, "labels"),
    ("tier-unknown", {"tier": "huge"}, "tier"),
    ("tier-and-model", {"tier": "fast", "model": "some-model"}, "model"),
    ("model-for-the-shell-agent", {"model": "claude-opus-5-5"}, "model"),
    ("cost-negative", {"max_cost_usd": -1}, "max_cost_usd"),
    ("unknown-field", {"priority": "high"}, "priority"),
    ("unknown-nested-field", {"repo": {"url": "https://example.test/r.git", "depth": 1}}, "repo.depth"),
    ("workspace-mode", {"workspace": {"mode": "forever"}}, "workspace.mode"),
]


async def test_a_bad_field_is_a_422_naming_it(tenant: StoredTenant, subtests: pytest.Subtests) -> None:
    async with tenant.unharmed():
        for case, fields, bad_field in BAD_FIELDS:
            with subtests.test(case):
                assert_invalid(await tenant.post_json({**VALID, **fields}), bad_field)


NUL_FIELDS = [
    ("task", {"task": "echo a\x00b"}, "task"),
    ("model", {"model": "m\x00"}, "model"),
    ("env-name", {"env": {"A\x00B": "v"}}, "env.A\x00B.[key]"),
    ("env-value", {"env": {"A": "v\x00"}}, "env.A"),
    ("label-key", {"labels": {"k\x00": "v"}}, "labels.k\x00.[key]"),
    ("label-value", {"labels": {"k": "\x00"}}, "labels.k"),
    ("repo-url", {"repo": {"url": "https://x.test/\x00"}}, "repo.url"),
    ("repo-ref", {"repo": {"url": "https://x.test/r", "ref": "main\x00"}}, "repo.ref"),
    ("workspace-name", {"workspace": {"name": "w\x00"}}, "workspace.name"),
]


async def test_a_nul_byte_in_any_string_field_is_a_422_never_a_500(
    tenant: StoredTenant, subtests: pytest.Subtests
) -> None:
    async with tenant.unharmed():
        for case, fields, bad_field in NUL_FIELDS:
            with subtests.test(case):
                assert_invalid(await tenant.post_json({**VALID, **fields}), bad_field)


async def test_a_bad_idempotency_key_header_is_a_422_naming_it(
    tenant: StoredTenant, subtests: pytest.Subtests
) -> None:
    async with tenant.unharmed():
        for case, key in (("nul", "k\x00ey"), ("empty", ""), ("too-long", "k" * 256)):
            with subtests.test(case):
                response = await tenant.post_json(VALID, {"Idempotency-Key": key})
                assert_invalid(response, "Idempotency-Key")


LONE_SURROGATES = [
    ("task", b'{"agent": "shell", "task": "\\ud800"}', "task"),
    ("task-reversed-pair", b'{"agent": "shell", "task": "echo \\udfff\\ud800"}', "task"),
    ("label-value", b'{"agent": "shell", "task": "x", "labels": {"k": "\\ud800"}}', "labels.k"),
    ("env-name", b'{"agent": "shell", "task": "x", "env": {"\\ud800": "v"}}', None),
    ("field-name", b'{"agent": "shell", "task": "x", "\\ud800": 1}', None),
]


async def test_a_lone_surrogate_is_a_clear_422_never_a_500(
    tenant: StoredTenant, subtests: pytest.Subtests
) -> None:
    async with tenant.unharmed():
        for case, content, bad_field in LONE_SURROGATES:
            with subtests.test(case):
                response = await tenant.post_raw(content)
                if bad_field is None:
                    assert_problem(response, 422)
                else:
                    assert_invalid(response, bad_field)


async def test_an_oversized_bad_label_key_is_not_echoed_back(tenant: StoredTenant) -> None:
    long_key = "k" * 100_000 + "!"
    async with tenant.unharmed():
        response = await tenant.post_json({**VALID, "labels": {long_key: "v"}})
        body = assert_problem(response, 422)
    assert body["errors"][0]["field"].startswith("labels.kkkk")
    assert len(response.content) < 2_000


async def test_a_request_at_every_limit_is_accepted(tenant: StoredTenant) -> None:
    at_limits = {
        "task": "x" * MAX_TASK_CHARS,
        "timeout_s": MAX_TIMEOUT_S,
        "env": {f"V{i}": "v" * 4096 for i in range(MAX_ENV_VARS)},
        "labels": {f"l{i}": "v" * 255 for i in range(MAX_LABELS)},
    }
    response = await tenant.post_json({**VALID, **at_limits})
    assert response.status_code == 202, response.text
    assert response.json()["task"] == at_limits["task"]


async def test_a_body_over_the_limit_with_an_honest_content_length_is_a_413(tenant: StoredTenant) -> None:
    content = json.dumps({**VALID, "task": "x" * (MAX_BODY_BYTES + 1)}).encode()
    async with tenant.unharmed():
        response = await tenant.post_raw(content)
        assert response.request.headers["content-length"] == str(len(content))
        assert_problem(response, 413)


async def test_a_body_longer_than_its_declared_content_length_is_a_413(tenant: StoredTenant) -> None:
    content = json.dumps({**VALID, "task": "x" * (MAX_BODY_BYTES + 1)}).encode()
    async with tenant.unharmed():
        assert_problem(await tenant.post_raw(content, **{"Content-Length": "40"}), 413)


async def test_a_streamed_body_over_the_limit_is_cut_off_with_a_413(tenant: StoredTenant) -> None:
    chunk_bytes, chunk_count = 64 * 1024, 64  # 4 MiB in all
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"agent": "shell", "task": "'
        for index in range(chunk_count):
            sent.append(index)
            yield b"x" * chunk_bytes
        yield b'"}'

    async with tenant.unharmed():
        response = await tenant.post_raw(chunks())
        assert "content-length" not in response.request.headers
        assert_problem(response, 413)
    assert len(sent) <= MAX_BODY_BYTES // chunk_bytes + 1, "the server read past its limit"


UNICODE = "emoji 🚀👩‍💻🏳️‍🌈 | RTL שלום مرحبا | combining e\u0301 a\u0308 n\u0303 | 4-byte 𝄞 𠜎 😀 | zw\u200bsp"


async def test_unicode_round_trips_exactly_through_submit_read_and_run(server: Server) -> None:
    headers = await server.new_tenant()
    task = f"printf '%s\\n' \"$GREETING\"  # {UNICODE}"
    labels = {"note": UNICODE, "rtl": "שלום"}
    created = await submit(server.client, headers, task, labels=labels, env={"GREETING": UNICODE})
    fetched = (await server.client.get(f"/v1/dispatches/{created['id']}", headers=headers)).json()
    for shown in (created, fetched):
        assert (shown["task"], shown["labels"]) == (task, labels)
    done = await wait_for_status(server.client, headers, created["id"], TERMINAL)
    assert (done["status"], done["result"]) == ("succeeded", UNICODE)
    lines = [
        e["data"]["line"]
        for e in await all_events(server.client, headers, created["id"])
        if e["kind"] == "log"
    ]
    assert lines == [UNICODE]


BAD_ROUTES = [
    ("GET", "/v2/dispatches", 404),
    ("GET", "/v1/dispatches/{id}/nothing-here", 404),
    ("POST", "/", 404),
    ("PUT", "/v1/dispatches", 405),
    ("DELETE", "/v1/dispatches/{id}", 405),
    ("GET", "/v1/dispatches/{id}/cancel", 405),
]


async def test_an_unknown_route_or_method_is_a_problem(
    tenant: StoredTenant, subtests: pytest.Subtests
) -> None:
    async with tenant.unharmed():
        for method, path, status in BAD_ROUTES:
            with subtests.test(f"{method} {path}"):
                url = path.format(id=tenant.dispatch_id)
                response = await tenant.client.request(method, url, headers=tenant.headers, json=VALID)
                assert_problem(response, status)
                assert status != 405 or response.headers["allow"]


BAD_LOG_PAGING = [({"after": -1}, "after"), ({"after": "abc"}, "after"), ({"after": 2**64}, "after"),
                  ({"limit": 0}, "limit"), ({"limit": 100_000}, "limit")]  # fmt: skip


async def test_bad_log_paging_is_a_422_naming_the_parameter(
    tenant: StoredTenant, subtests: pytest.Subtests
) -> None:
    url = f"/v1/dispatches/{tenant.dispatch_id}/logs"
    async with tenant.unharmed():
        for params, bad_field in BAD_LOG_PAGING:
            with subtests.test(str(params)):
                assert_invalid(await tenant.client.get(url, params=params, headers=tenant.headers), bad_field)


BAD_LIST_PARAMETERS = [
    ({"limit": 0}, "limit"),
    ({"limit": 1000}, "limit"),
    ({"limit": "many"}, "limit"),
    ({"cursor": "garbage"}, "cursor"),
    ({"cursor": "01ARZ3NDEKTSV4RRFFQ69G5FA"}, "cursor"),  # one character short of a ULID
    ({"cursor": "Z" * 65}, "cursor"),
    ({"status": "exploded"}, "status"),
    ({"agent": "nobody"}, "agent"),
]


async def test_bad_list_parameters_are_a_422_naming_the_parameter(
    tenant: StoredTenant, subtests: pytest.Subtests
) -> None:
    async with tenant.unharmed():
        for params, bad_field in BAD_LIST_PARAMETERS:
            with subtests.test(str(params)):
                response = await tenant.client.get("/v1/dispatches", params=params, headers=tenant.headers)
                assert_invalid(response, bad_field)
