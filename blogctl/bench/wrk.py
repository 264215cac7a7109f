"""wrk, a load generator written in C, where it is installed (Debian's package `wrk`).

It loads a service from outside Python: the figures then measure the service, not a load
generator that shares the two cores' GIL-bound work with it. The bench falls back to its own
Python generator (`load.py`) where wrk is not installed, and says which one made each figure.
"""
from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import BlogctlError

CONNECTIONS = 16  # keep-alive connections, one wrk thread: as in the figures

# A Lua script for wrk: every request a POST of `body`; `{id}` in the body becomes an id unique
# to the request (the bus keeps one copy of an event id, so a repeated id would not be a publish).
# The prefix comes from Python, new for every script: wrk's Lua does not seed `math.random`, so
# a prefix drawn there is the same in every run, and a second run would repeat the first's ids.
_SCRIPT = """
local n = 0
local prefix = "{PREFIX}"
local headers = {HEADERS}
request = function()
  n = n + 1
  local body = string.gsub({BODY}, "{id}", prefix .. string.format("%08x", n))
  return wrk.format("POST", nil, headers, body)
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


@dataclass(frozen=True)
class WrkRun:
    rate: float  # requests/s
    p50: float  # seconds
    p99: float
    errors: int  # non-2xx answers and socket errors


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def script(body: str, headers: dict[str, str]) -> str:
    table = "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()) + "}"
    return (_SCRIPT.replace("{PREFIX}", secrets.token_hex(4)).replace("{HEADERS}", table)
            .replace("{BODY}", _lua_string(body)))


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise BlogctlError(f"wrk printed a latency the bench cannot read: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(output: str) -> WrkRun:
    """The rate and the 50th and 99th percentiles of `wrk --latency`'s report."""
    try:
        p50 = _seconds(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))
        p99 = _seconds(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    except AttributeError:
        raise BlogctlError(f"wrk's report has no latency distribution: {output[-300:]!r}") from None
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    if sockets := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(n) for n in sockets.groups())
    return WrkRun(rate, p50, p99, errors)


def run(url: str, *, seconds: float, body: str | None = None, headers: dict[str, str] | None = None,
        connections: int = CONNECTIONS) -> WrkRun:
    """`connections` keep-alive connections on `url` for `seconds`: GETs, or POSTs of `body`."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    with tempfile.TemporaryDirectory(prefix="blogctl-wrk-") as tmp:
        if body is not None:
            lua = Path(tmp) / "post.lua"
            lua.write_text(script(body, headers or {}))
            command += ["-s", str(lua)]
        done = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise BlogctlError(f"wrk failed ({done.returncode}): {done.stderr.strip()[:300]}")
    return parse(done.stdout)
