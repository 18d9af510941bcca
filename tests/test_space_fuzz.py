"""Property: any mutation of a shipped search space is either a valid space or a one-line error
with exit 2 — never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpa_tune.cli import main

SPACES = sorted((Path(__file__).parents[1] / "search_spaces").glob("*.yaml"))
TOKENS = [
    b":",
    b": ",
    b"- ",
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b"&a ",
    b"*a",
    b"!!python/object:os.system",
    b"!!binary",
    b"\t",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"'",
    b'"',
    b"? ",
    b"%YAML 1.1\n",
    b"|",
    b">",
    b"null",
    b"-1",
    b"0",
    b"1e999",
    b".nan",
    b".inf",
    b"true",
    b"~",
    b"\n",
    b"    ",
    b"#",
    b"low: 5",
    b"high: -3",
    b"type: int",
    b"choices: []",
    b"when: {arch: x}",
    b"<<: *a",
]


@st.composite
def mutated_space(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SPACES)).read_bytes())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        at = draw(st.integers(min_value=0, max_value=len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "duplicate line", "truncate"]))
        if kind == "insert":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif kind == "delete":
            del data[at : at + draw(st.integers(min_value=1, max_value=12))]
        elif kind == "replace":
            data[at : at + 1] = draw(st.sampled_from(TOKENS))
        elif kind == "duplicate line":
            lines = bytes(data).splitlines(keepends=True)
            i = at % max(len(lines), 1)
            data = bytearray(b"".join(lines[: i + 1] + lines[i:]))
        else:
            del data[at:]
    return bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=mutated_space())
def test_a_mutated_space_is_valid_or_a_one_line_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "space.yaml"
        path.write_bytes(content)
        result = CliRunner().invoke(main, ["check", str(path), "-n", "1"])
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 2), (content, result.output, result.exception)
    if result.exit_code == 2:
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    else:
        assert result.output.strip().endswith("ok")
