"""``docktor mcp --http``: where it listens, a port in use, the Host header, and the bearer token (made
once, shown once, saved 0600, rotated, refused when unsafe or weak). Plain HTTP requests, one of them
from a real second user (``runuser -u nobody``), show what a client without the token gets; the
daemon is a real one with the local executor and a real nats-server, both started here.

The tools themselves through the MCP SDK's client: test_mcp_tools.py.

Skipped only when the ``mcp`` package is absent (it is in requirements.lock, so never in CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="the mcp package is not installed (pip install -r requirements.lock)")

from tests.support.cli import docktor
from tests.support.mcp_daemon import *  # noqa: F403  (fixtures, found by name: nats, reader)
from tests.support.mcp_daemon import Daemon, HttpServer, connect, ok, replicas_running, token_file, write_config
from tests.support.peers import NatsServer

# --------------------------------------------------------------------------- the HTTP listener


def test_http_listens_on_loopback_unless_the_config_allows_more(nats: NatsServer, tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, nats.url, allow_apply=False)
    done = docktor("mcp", "--config", str(config), "--http", "0.0.0.0:0")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: --http: not a loopback address")
    assert "mcp.allow_remote: true" in done.stderr

    text_ = config.read_text().replace("mcp: {allow_apply: false}", "mcp: {allow_apply: true, allow_remote: true}")
    config.write_text(text_)
    done = docktor("mcp", "--config", str(config), "--http", "0.0.0.0:0")
    assert done.returncode == 2 and "apply_scale is never served beyond this host" in done.stderr

    for bad, says in [("example.com:80", "the host must be an IP address or localhost"), ("127.0.0.1:x", "must be host:port"),
                      ("127.0.0.1:70000", "the port must be between 0")]:
        done = docktor("mcp", "--config", str(config), "--http", bad)
        assert done.returncode == 2 and says in done.stderr, done.stderr


def test_a_port_in_use_is_one_line_and_exit_2(nats: NatsServer, tmp_path: Path) -> None:
    import socket

    config, _ = write_config(tmp_path, nats.url, allow_apply=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = docktor("mcp", "--config", str(config), "--http", f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: --http: cannot listen on 127.0.0.1:{port}: Address already in use"


async def test_http_refuses_a_host_header_a_web_page_could_send(reader: Daemon) -> None:
    """DNS rebinding: a loopback server answers only requests addressed to a loopback name."""
    async with connect(reader.config, "http") as client:
        url = next(line.split("serving ", 1)[1].split()[0]
                   for line in (reader.config.parent / "mcp-http.stderr").read_text().splitlines() if "serving http://" in line)
        assert (await ok(client, "list_services"))["services"]
        port = url.rsplit(":", 1)[1].split("/")[0]
        request = urllib.request.Request(
            url, method="POST", data=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
            headers={"Host": f"attacker.example:{port}", "Content-Type": "application/json",
                     "Accept": "application/json, text/event-stream",
                     "Authorization": f"Bearer {token_file(reader.config).read_text().strip()}"},
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(request, timeout=10)
        assert 400 <= e.value.code < 500 and e.value.code != 401  # the Host check refused it, not the token


# --------------------------------------------------------------------------- the HTTP transport's bearer token

MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "plain-http", "version": "1"}}}).encode()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """A plain HTTP POST (no MCP client): status, headers (lower-case names) and body."""
    request = urllib.request.Request(url, method="POST", data=body, headers={**MCP_HEADERS, **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()


def generated_lines(errlog: Path) -> list[str]:
    return [line for line in errlog.read_text().splitlines() if "generated a bearer token" in line]


async def test_http_without_the_token_or_with_a_wrong_one_is_401(reader: Daemon) -> None:
    async with connect(reader.config, "http") as client:  # the token is made (or reused) and works
        assert (await ok(client, "list_services"))["services"]
    errlog = reader.config.parent / "mcp-bare.stderr"
    server = HttpServer(reader.config, errlog)
    try:
        token = token_file(reader.config).read_text().strip()
        wrong = "wrong-token-but-long-enough-0123456789"
        for headers, challenge in [({}, 'Bearer realm="docktor mcp"'),
                                   ({"Authorization": f"Bearer {wrong}"}, 'Bearer realm="docktor mcp", error="invalid_token"'),
                                   ({"Authorization": f"Basic {token}"}, 'Bearer realm="docktor mcp", error="invalid_token"'),
                                   ({"Authorization": f"Bearer {token[:-1]}"}, 'Bearer realm="docktor mcp", error="invalid_token"')]:
            status, answer_headers, body = post(server.url, INITIALIZE, headers)
            assert (status, answer_headers.get("www-authenticate")) == (401, challenge), (headers, status, body)
            assert "mcp-session-id" not in answer_headers and json.loads(body)["error"] == "unauthorized"  # the app never saw it
        status, answer_headers, body = post(server.url, INITIALIZE, {"Authorization": f"bearer {token}"})  # scheme: any case
        assert status == 200 and answer_headers.get("mcp-session-id"), body
    finally:
        server.stop()
    said = errlog.read_text()
    assert "refused 1 HTTP request without a valid bearer token (last: no token, from 127.0.0.1:" in said  # then quiet for 10 s
    assert wrong not in said and token not in said and "Authorization" not in said  # neither token nor header is logged
    assert not generated_lines(errlog)  # the file made by the first start is read silently


def test_a_second_local_user_cannot_scale_over_http(nats: NatsServer, tmp_path: Path) -> None:
    """The attack of issue 21: ``nobody``, a plain HTTP client on the same machine, asks a server
    with ``allow_apply: true`` to scale. It gets 401 at the first request, and no decision is recorded."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another user (runuser -u nobody); CI runs as root")
    config, marker = write_config(tmp_path, nats.url, allow_apply=True)
    daemon = Daemon(config, marker)
    server = HttpServer(config, tmp_path / "mcp-attacked.stderr")
    try:
        attacker = f"""
import json, urllib.request, urllib.error
url, headers = {server.url!r}, {MCP_HEADERS!r}
def post(body, extra={{}}):
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(), headers={{**headers, **extra}})
    try:
        with urllib.request.urlopen(request, timeout=30) as a:
            return a.status, a.headers.get("mcp-session-id") or ""
    except urllib.error.HTTPError as e:
        return e.code, ""
try:
    open({str(token_file(config))!r}).read()
    stolen = "read"
except OSError as e:
    stolen = type(e).__name__
status, session = post(json.loads({INITIALIZE.decode()!r}))
call = {{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {{"name": "apply_scale",
        "arguments": {{"service": "worker", "n": 3, "reason": "as nobody"}}}}}}
applied, _ = post(call, {{"mcp-session-id": session}} if session else {{}})
print(json.dumps({{"initialize": status, "apply": applied, "token_file": stolen}}))
"""
        done = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", attacker],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"initialize": 401, "apply": 401, "token_file": "PermissionError"}
        assert daemon.records("mcp") == [] and daemon.desired() == 1 and replicas_running(marker) == 1
    finally:
        server.stop()
        daemon.stop()


def test_the_token_is_made_once_shown_once_saved_0600_and_rotated_by_deleting_it(nats: NatsServer, tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, nats.url, allow_apply=True)
    path = token_file(config)
    first = HttpServer(config, tmp_path / "first.stderr")
    first.stop()
    (line,) = generated_lines(first.errlog)
    token = path.read_text().strip()
    assert line.endswith(f"shown only this once: {token}") and f"saved it in {path} (0600" in line
    assert len(token) >= 40 and (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)

    again = HttpServer(config, tmp_path / "again.stderr")  # the next start reuses the file, silently
    try:
        assert not generated_lines(again.errlog) and f"bearer token from {path}" in again.errlog.read_text()
        assert post(again.url, INITIALIZE, {"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        again.stop()
    assert token not in again.errlog.read_text()

    path.unlink()  # rotation: a new token at the next start
    rotated = HttpServer(config, tmp_path / "rotated.stderr")
    try:
        new = path.read_text().strip()
        assert new != token and len(generated_lines(rotated.errlog)) == 1
        assert post(rotated.url, INITIALIZE, {"Authorization": f"Bearer {token}"})[0] == 401
    finally:
        rotated.stop()

    from_env = "a-token-from-the-environment-0123456789"  # the environment comes first; the file is left alone
    env = HttpServer(config, tmp_path / "env.stderr", env={"DOCKTOR_MCP_TOKEN": from_env})
    try:
        assert "bearer token from $DOCKTOR_MCP_TOKEN" in env.errlog.read_text() and not generated_lines(env.errlog)
        assert post(env.url, INITIALIZE, {"Authorization": f"Bearer {from_env}"})[0] == 200
        assert post(env.url, INITIALIZE, {"Authorization": f"Bearer {new}"})[0] == 401
    finally:
        env.stop()
    assert path.read_text().strip() == new and from_env not in env.errlog.read_text()


@pytest.mark.parametrize("unsafe", ["another user's", "0644", "0664", "a symbolic link"])
def test_an_unsafe_token_file_is_refused_at_start(nats: NatsServer, tmp_path: Path, unsafe: str) -> None:
    config, _ = write_config(tmp_path, nats.url, allow_apply=True)
    path = token_file(config)
    path.parent.mkdir(mode=0o700)
    token = "a-token-someone-else-may-know-0123456789"
    if unsafe == "a symbolic link":
        target = tmp_path / "elsewhere.token"
        target.write_text(token)
        target.chmod(0o600)
        path.symlink_to(target)
    else:
        path.write_text(token)
        path.chmod(0o600 if unsafe == "another user's" else int(unsafe, 8))
        if unsafe == "another user's":
            if os.geteuid() != 0:
                pytest.skip("needs root to give a file to another user (nobody); CI runs as root")
            os.chown(path, 65534, 65534)
    done = docktor("mcp", "--config", str(config), "--http", "127.0.0.1:0", timeout=30)
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 2 and line.startswith("error: mcp.token_file: ") and f"{path} " in line, done.stderr
    assert {"another user's": "is owned by nobody (uid 65534)", "0644": "is readable by other users (mode 0644)",
            "0664": "(mode 0664)", "a symbolic link": "is a symbolic link"}[unsafe] in line
    assert token not in done.stderr


@pytest.mark.parametrize("value, says", [
    ("", "must hold one token of visible ASCII characters, without spaces (it is empty)"),
    ("short-token", "holds a token of fewer than 16 characters"),
])
def test_a_weak_token_in_the_environment_is_refused_at_start(nats: NatsServer, tmp_path: Path, value: str, says: str) -> None:
    config, _ = write_config(tmp_path, nats.url, allow_apply=True)
    done = subprocess.run([sys.executable, "-m", "docktor.agent.cli", "mcp", "--config", str(config), "--http", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=30, check=False, env={**os.environ, "DOCKTOR_MCP_TOKEN": value})
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 2 and line.startswith("error: mcp.token_env: environment variable DOCKTOR_MCP_TOKEN") and says in line
    assert not value or value not in line


def test_http_auth_none_serves_read_only_tools_and_is_refused_with_allow_apply(nats: NatsServer, tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, nats.url, allow_apply=True)
    config.write_text(config.read_text().replace("mcp: {allow_apply: true}", "mcp: {allow_apply: true, http_auth: none}"))
    for command in (["validate"], ["mcp", "--http", "127.0.0.1:0"]):
        done = docktor(*command, "--config", str(config), timeout=30)
        (line,) = done.stderr.strip().splitlines()
        assert done.returncode == 2 and line.startswith("error: mcp.http_auth: none serves the MCP tools over HTTP"), done.stderr
        assert "allow_apply is true" in line

    config.write_text(config.read_text().replace("allow_apply: true", "allow_apply: false"))
    assert docktor("validate", "--config", str(config)).returncode == 0
    server = HttpServer(config, tmp_path / "none.stderr")  # for an operator's trusted proxy in front: no token
    try:
        assert "no authentication: mcp.http_auth is none" in server.errlog.read_text()
        assert post(server.url, INITIALIZE, {})[0] == 200
    finally:
        server.stop()
    assert not token_file(config).exists()


def test_token_env_is_a_name_and_a_pasted_token_is_not_echoed(nats: NatsServer, tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, nats.url, allow_apply=False)
    pasted = "Zx9-pasted/token+value="
    config.write_text(config.read_text().replace("mcp: {allow_apply: false}", f'mcp: {{allow_apply: false, token_env: "{pasted}"}}'))
    done = docktor("validate", "--config", str(config))
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 2 and line == "error: mcp.token_env: must be the name of an environment variable (the token itself goes in the environment)"
