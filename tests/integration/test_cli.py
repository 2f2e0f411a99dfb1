"""The `outpost` CLI as a user runs it: real `outpost` processes against a real `outpost serve`.

One server runs for the whole module (starting one costs seconds); every test gets a tenant of its own,
so no test sees another's dispatches or keys.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from outpost import errors
from outpost.cli.client import error_from_response
from tests.integration.helpers import TERMINAL
from tests.integration.processes import OUTPOST, ServerProcess, free_port, serving, wait_for_status_sync

pytestmark = pytest.mark.slow

EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_DISPATCH_UNSUCCESSFUL = 4


def make_admin_key(server: ServerProcess) -> str:
    """The first key of a tenant made with `outpost tenants create --admin`: it can create tenants."""
    done = subprocess.run(
        [OUTPOST, "tenants", "create", "operators", "--admin"],
        env=server.full_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    tenant_line, key = done.stdout.splitlines()
    assert tenant_line.startswith("tenant operators (")
    return key


def _env(url: str, key: str) -> dict[str, str]:
    base = {name: value for name, value in os.environ.items() if not name.startswith("OUTPOST_")}
    return {**base, "OUTPOST_URL": url, "OUTPOST_API_KEY": key}


@dataclass
class Cli:
    """Runs `outpost` as a user of one tenant would: OUTPOST_URL and OUTPOST_API_KEY set."""

    url: str
    key: str

    def __call__(self, *args: str, key: str | None = None, timeout_s: float = 20, stdin: str = "") -> Result:
        done = subprocess.run(
            [OUTPOST, *args],
            input=stdin,
            env=_env(self.url, self.key if key is None else key),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def api(self) -> httpx.Client:
        """An HTTP client with this tenant's key, to set up and inspect what the CLI does."""
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=10)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def assert_one_line_error(self, code: int, mentions: str) -> None:
        """Failed with `code` and said why in a single `outpost: …` line (no traceback)."""
        assert self.code == code, self
        assert self.stderr.splitlines() == [self.stderr.strip()], self
        assert self.stderr.startswith("outpost: "), self
        assert mentions in self.stderr, self


def new_tenant_cli(server: ServerProcess, admin_key: str) -> Cli:
    """A new tenant (made over the API with the admin key) and a runner of the CLI as that tenant."""
    response = httpx.post(
        f"{server.url}/v1/tenants",
        json={"name": f"t{uuid.uuid4().hex[:10]}"},
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return Cli(server.url, response.json()["key"]["key"])


def served_cli_fixtures(name: str, env: dict[str, str] | None = None) -> tuple[Any, Any, Any]:
    """The fixtures `server` (`outpost serve` on a free port with `env`, one per test module, stopped
    after its last test), `admin_key` (an admin tenant's key) and `cli` (the CLI as a new tenant, one
    per test). A module assigns them: `server, admin_key, cli = served_cli_fixtures("name")`."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
        with serving(tmp_path_factory.mktemp(name) / "data", env) as process:
            yield process

    @pytest.fixture(scope="module")
    def admin_key(server: ServerProcess) -> str:
        return make_admin_key(server)

    @pytest.fixture
    def cli(server: ServerProcess, admin_key: str) -> Cli:
        return new_tenant_cli(server, admin_key)

    return server, admin_key, cli


server, admin_key, cli = served_cli_fixtures("cli")


def test_dispatch_wait_prints_the_result_and_exits_zero_when_the_dispatch_succeeds(cli: Cli) -> None:
    result = cli("dispatch", "--agent", "shell", "--wait", "echo hello world")
    assert result.code == 0, result
    assert result.stdout == "hello world\n"
    assert "succeeded" in result.stderr


def test_dispatch_wait_exits_non_zero_and_says_why_when_the_dispatch_fails(cli: Cli) -> None:
    result = cli("dispatch", "--agent", "shell", "--wait", "echo partial; exit 3")
    assert result.stdout == "partial\n"
    result.assert_one_line_error(EXIT_DISPATCH_UNSUCCESSFUL, "failed: agent_error: exited with status 3")


def test_dispatch_wait_with_json_prints_the_ended_dispatch(cli: Cli) -> None:
    result = cli("dispatch", "--agent", "shell", "--wait", "--json", "--label", "team=a", "echo hi")
    assert result.code == 0, result
    body = httpx.Response(200, content=result.stdout).json()
    assert (body["status"], body["exit_code"], body["result"]) == ("succeeded", 0, "hi")
    assert body["labels"] == {"team": "a"}


def test_dispatch_follow_prints_each_output_line_on_the_stream_it_came_from(cli: Cli) -> None:
    task = "echo one; sleep 0.3; echo oops >&2; echo two"
    result = cli("dispatch", "--agent", "shell", "--follow", task)
    assert result.code == 0, result
    assert result.stdout == "one\ntwo\n"
    lines = result.stderr.splitlines()
    assert "oops" in lines
    assert lines.index("-- running") < lines.index("oops") < lines.index("-- succeeded")


def test_dispatch_follow_exits_non_zero_when_the_dispatch_fails(cli: Cli) -> None:
    result = cli("dispatch", "--agent", "shell", "--follow", "echo before; exit 3")
    assert result.code == EXIT_DISPATCH_UNSUCCESSFUL, result
    assert result.stdout == "before\n"
    assert result.stderr.splitlines()[-1].startswith("outpost: dispatch ")


def test_dispatch_without_wait_prints_the_id_that_status_then_shows(cli: Cli) -> None:
    submitted = cli("dispatch", "--agent", "shell", "--env", "GREETING=hi there", "echo $GREETING")
    assert submitted.code == 0, submitted
    dispatch_id = submitted.stdout.strip()
    assert "queued" in submitted.stderr
    with cli.api() as api:
        wait_for_status_sync(api, dispatch_id, TERMINAL)
    shown = cli("status", dispatch_id)
    assert shown.code == 0, shown
    assert dispatch_id in shown.stdout
    assert "succeeded" in shown.stdout
    assert "hi there" in shown.stdout
    as_json = cli("status", dispatch_id, "--json")
    assert httpx.Response(200, content=as_json.stdout).json()["result"] == "hi there"


def test_an_idempotency_key_makes_a_repeated_dispatch_return_the_first_one(cli: Cli) -> None:
    first = cli("dispatch", "--agent", "shell", "--idempotency-key", "k1", "echo once")
    again = cli("dispatch", "--agent", "shell", "--idempotency-key", "k1", "echo once")
    assert (first.code, again.code) == (0, 0)
    assert first.stdout == again.stdout
    clash = cli("dispatch", "--agent", "shell", "--idempotency-key", "k1", "echo different")
    clash.assert_one_line_error(EXIT_USER_ERROR, "Idempotency-Key")


def test_list_shows_the_tenants_dispatches_a_page_at_a_time(cli: Cli) -> None:
    with cli.api() as api:
        responses = [
            api.post("/v1/dispatches", json={"agent": "shell", "task": f"echo {n}"}) for n in range(3)
        ]
    ids = [response.json()["id"] for response in responses]
    first_page = cli("list", "--limit", "2")
    assert first_page.code == 0, first_page
    assert [ids[2], ids[1]] == [line.split()[0] for line in first_page.stdout.splitlines()[2:4]]
    cursor = first_page.stdout.splitlines()[-1].split("--cursor ")[1]
    second_page = cli("list", "--limit", "2", "--cursor", cursor, "--json")
    page = httpx.Response(200, content=second_page.stdout).json()
    assert [item["id"] for item in page["items"]] == [ids[0]]
    assert page["next_cursor"] is None
    filtered = cli("list", "--status", "cancelled")
    assert not any(dispatch_id in filtered.stdout for dispatch_id in ids)


def test_logs_prints_the_output_of_a_dispatch_and_follows_one_still_running(cli: Cli) -> None:
    with cli.api() as api:
        created = api.post("/v1/dispatches", json={"agent": "shell", "task": "echo a; sleep 0.5; echo b"})
        dispatch_id = created.json()["id"]
        followed = cli("logs", dispatch_id, "--follow")
        assert followed.code == 0, followed
        assert followed.stdout == "a\nb\n"
        assert followed.stderr.splitlines()[-1] == "-- succeeded"
        events = api.get(f"/v1/dispatches/{dispatch_id}/logs").json()["items"]
    first_line_seq = next(e["seq"] for e in events if e["kind"] == "log")
    rest = cli("logs", dispatch_id, "--after", str(first_line_seq))
    assert rest.stdout == "b\n"
    past_the_end = cli("logs", dispatch_id, "--after", "1000", "--follow")
    assert (past_the_end.code, past_the_end.stdout) == (0, "")


def test_cancel_stops_a_running_dispatch_and_keeps_its_output(cli: Cli) -> None:
    submitted = cli("dispatch", "--agent", "shell", "echo started; sleep 30")
    dispatch_id = submitted.stdout.strip()
    with cli.api() as api:
        wait_for_status_sync(api, dispatch_id, {"running"})
        cancelled = cli("cancel", dispatch_id)
        assert cancelled.code == 0, cancelled
        assert cancelled.stdout == f"{dispatch_id} cancelled\n"
        assert wait_for_status_sync(api, dispatch_id, TERMINAL)["status"] == "cancelled"
    assert "started" in cli("logs", dispatch_id).stdout


def test_an_unknown_dispatch_id_gets_a_one_line_not_found(cli: Cli) -> None:
    cli("status", "01HZZZZZZZZZZZZZZZZZZZZZZZ").assert_one_line_error(EXIT_USER_ERROR, "no dispatch")
    cli("cancel", "not-an-id").assert_one_line_error(EXIT_USER_ERROR, "no dispatch")
    # An id is one path segment: a typed `../` must not reach another route (here /v1/keys).
    cli("status", "../../v1/keys").assert_one_line_error(EXIT_USER_ERROR, "Not Found")


def test_keys_are_created_listed_and_revoked_and_a_revoked_key_is_refused(cli: Cli) -> None:
    created = cli("keys", "create", "--name", "ci", "--expires-in", "3600")
    assert created.code == 0, created
    new_key = created.stdout.strip()
    key_id = created.stderr.split()[1]
    assert new_key.startswith("op_")
    assert cli("list", key=new_key).code == 0
    listed = cli("keys", "list")
    row = next(line for line in listed.stdout.splitlines() if line.startswith(key_id))
    assert " ci " in row
    assert row.rstrip().endswith("active")
    revoked = cli("keys", "revoke", key_id)
    assert revoked.code == 0, revoked
    assert key_id in revoked.stdout
    cli("list", key=new_key).assert_one_line_error(EXIT_USER_ERROR, "invalid API key")
    assert "revoked" in cli("keys", "list").stdout


def test_a_tenant_key_cannot_create_an_admin_key(cli: Cli) -> None:
    cli("keys", "create", "--admin").assert_one_line_error(EXIT_USER_ERROR, "only an admin key")


def test_a_wrong_key_gets_a_one_line_error(cli: Cli) -> None:
    result = cli("list", key="op_aaaaaaaaaaaa_wrong")
    result.assert_one_line_error(EXIT_USER_ERROR, "invalid API key")


def test_a_missing_key_gets_a_one_line_error_that_says_how_to_get_one(cli: Cli) -> None:
    cli("list", key="").assert_one_line_error(EXIT_USER_ERROR, "set OUTPOST_API_KEY")


def test_an_unreachable_server_gets_a_one_line_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = Cli(url, "op_aaaaaaaaaaaa_any")("dispatch", "--agent", "shell", "--wait", "echo hi")
    result.assert_one_line_error(EXIT_UNAVAILABLE, f"cannot reach the Outpost server at {url}")


def test_a_repo_is_sent_and_the_servers_refusal_shown_in_one_line(cli: Cli) -> None:
    result = cli(
        "dispatch", "--agent", "shell", "--repo", "https://example.com/r.git", "--ref", "main~2", "ls"
    )
    result.assert_one_line_error(EXIT_USER_ERROR, "ref 'main~2' refused")


UsageCase = tuple[list[str], str]
USAGE_ERRORS: list[UsageCase] = [
    (["--env", "NOEQUALS"], "'NOEQUALS' is not NAME=VALUE"),
    (["--label", "=x"], "'=x' is not NAME=VALUE"),
    (["--agent", "nobody"], "'nobody' is not one of"),
    (["--tier", "fast", "--model", "m"], "give --tier or --model, not both"),
    (["--ref", "main"], "--ref needs --repo"),
]


@pytest.mark.parametrize(("options", "message"), USAGE_ERRORS)
def test_bad_dispatch_options_get_one_clear_usage_error(cli: Cli, options: list[str], message: str) -> None:
    args = ["--agent", "shell", *options] if "--agent" not in options else options
    result = cli("dispatch", *args, "echo hi")
    assert result.code == EXIT_USAGE, result
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result
    assert message in errors[0]
    assert "Traceback" not in result.stderr


def test_a_bad_env_name_is_refused_before_anything_is_sent(cli: Cli) -> None:
    result = cli("dispatch", "--agent", "shell", "--env", "1BAD=x", "echo hi")
    result.assert_one_line_error(EXIT_USER_ERROR, "env.1BAD")
    with cli.api() as api:
        assert api.get("/v1/dispatches").json()["items"] == []


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (401, errors.AuthenticationFailed),
        (403, errors.PermissionDenied),
        (404, errors.NotFound),
        (409, errors.Conflict),
        (422, errors.InvalidInput),
        (429, errors.RateLimited),
        (500, errors.Unavailable),
        (503, errors.Unavailable),
    ],
)
def test_a_problem_response_becomes_the_error_of_its_status_with_its_detail(
    status: int, error_type: type[errors.OutpostError]
) -> None:
    problem = {"type": "urn:outpost:problem:x", "title": "X", "status": status, "detail": "what went wrong"}
    response = httpx.Response(status, json=problem, request=httpx.Request("GET", "http://outpost.test/v1"))
    error = error_from_response(response)
    assert type(error) is error_type
    assert error.detail == "what went wrong"


def test_an_error_response_that_is_not_a_problem_still_says_what_happened() -> None:
    response = httpx.Response(502, text="<html>", request=httpx.Request("GET", "http://proxy.test/v1/keys"))
    error = error_from_response(response)
    assert isinstance(error, errors.Unavailable)
    assert error.detail == "the server answered 502 Bad Gateway to GET http://proxy.test/v1/keys"


def test_providers_set_reads_the_key_from_stdin_and_never_prints_it(cli: Cli) -> None:
    secret = "sk-cli-tenant-key-31ab"
    result = cli("providers", "set", "openai", "--api-key-stdin", stdin=secret + "\n")
    assert result.code == 0, result
    assert "your key (version 1)" in result.stdout
    listed = cli("providers", "list", "--json")
    assert listed.code == 0, listed
    rows = {row["name"]: row for row in httpx.Response(200, content=listed.stdout).json()}
    assert (rows["openai"]["api_key_source"], rows["openai"]["api_key_version"]) == ("tenant", 1)
    table = cli("providers", "list")
    assert "openai" in table.stdout
    assert secret not in result.stdout + result.stderr + listed.stdout + table.stdout
    reset = cli("providers", "reset", "openai")
    assert reset.code == 0, reset
    cli("providers", "reset", "openai").assert_one_line_error(EXIT_USER_ERROR, "no settings of its own")


def test_providers_set_refuses_bad_input_in_one_line(cli: Cli) -> None:
    cli("providers", "set", "openai", "--api-key-stdin").assert_one_line_error(
        EXIT_USER_ERROR, "no key on stdin"
    )
    cli("providers", "set", "openai").assert_one_line_error(EXIT_USER_ERROR, "nothing to change")
    both = cli("providers", "set", "openai", "--api-key-stdin", "--clear-api-key", stdin="k")
    both.assert_one_line_error(EXIT_USER_ERROR, "not both")
    spaced = cli("providers", "set", "openai", "--api-key-stdin", stdin="two words")
    spaced.assert_one_line_error(EXIT_USER_ERROR, "api_key: must be printable ASCII without spaces")
    cli("providers", "set", "nope", "--api-key-stdin", stdin="k").assert_one_line_error(
        EXIT_USER_ERROR, "no model provider named 'nope'"
    )
    moved = cli("providers", "set", "openai", "--base-url", "https://proxy.example")
    moved.assert_one_line_error(EXIT_USER_ERROR, "only an admin key")
