"""The canonical byte form that event signatures cover (docs/event-schema.md, *Signatures*).

Numbers and strings follow RFC 8785 (JCS); integers keep every digit; object members are
sorted by their UTF-16 code units.
"""

from __future__ import annotations

import json
import math
import struct

import pytest

from sqla_audit import signing
from sqla_audit.errors import DecodeError
from sqla_audit.signing import canonical_json, signed_content

#: RFC 8785 appendix B: IEEE 754 bit patterns and their canonical text.
RFC8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "expected"), RFC8785_NUMBERS)
def test_floats_are_written_as_rfc8785_says(bits: str, expected: str) -> None:
    """Every float of RFC 8785's number table is written exactly as the RFC writes it."""
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert canonical_json(value) == expected.encode()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value: float) -> None:
    """NaN and the infinities have no canonical form (they are not JSON)."""
    with pytest.raises(DecodeError):
        canonical_json({"x": value})


def test_integers_keep_every_digit() -> None:
    """Integers beyond 2**53 keep all their digits (a BIGINT column must not be rounded)."""
    assert canonical_json([2**63 - 1, -(2**64), 0, 7]) == (
        b"[9223372036854775807,-18446744073709551616,0,7]"
    )


def test_integral_floats_drop_the_fraction() -> None:
    """A float with an integral value is written like an integer (1.0 -> 1), as JCS does."""
    assert canonical_json([1.0, -2.0, 1e21, 1e20, 0.5]) == b"[1,-2,1e+21,100000000000000000000,0.5]"


def test_strings_escape_only_what_json_requires() -> None:
    """Quotes, backslashes and control characters are escaped; everything else is UTF-8."""
    text = 'a"b\\c\n\t\b\f\r\x00\x1f\x7f\u2028é€😀'
    assert canonical_json(text) == (
        '"a\\"b\\\\c\\n\\t\\b\\f\\r\\u0000\\u001f\x7f\u2028é€😀"'.encode()
    )


def test_members_are_sorted_by_utf16_code_units() -> None:
    """Keys sort by UTF-16 code units: U+1F600 (a surrogate pair) sorts before U+E000."""
    value = {"\ue000": 1, "\U0001f600": 2, "b": 3, "a": 4, "": 5, "B": 6}
    assert canonical_json(value) == '{"":5,"B":6,"a":4,"b":3,"😀":2,"\ue000":1}'.encode()


def test_nested_values_have_no_whitespace() -> None:
    """Nested objects and arrays are written compactly with sorted members at every level."""
    value = {"z": [1, {"b": None, "a": True}, []], "y": {}, "x": False}
    assert canonical_json(value) == b'{"x":false,"y":{},"z":[1,{"a":true,"b":null},[]]}'


def test_lone_surrogates_are_refused() -> None:
    """Text that is not valid Unicode has no UTF-8 form and no canonical form."""
    with pytest.raises(DecodeError):
        canonical_json({"k": "\ud800"})
    with pytest.raises(DecodeError):
        canonical_json({"\udc00": 1})


def test_non_json_values_are_refused() -> None:
    """A value that is not JSON data (a set, bytes) is refused instead of being guessed at."""
    with pytest.raises(DecodeError):
        canonical_json({"k": {1, 2}})
    with pytest.raises(DecodeError):
        canonical_json({(1, 2): "a tuple key"})


def test_non_string_names_are_written_as_on_the_wire() -> None:
    """A non-string object name is written as the JSON encoder puts it on the wire."""
    assert canonical_json({1: "x", "b": True}) == b'{"1":"x","b":true}'


@pytest.mark.parametrize(
    "value",
    [
        {"a": 'say "1.5" \\ \\"2e3\\"', "b": 7},
        {"a": ["1.0", 2, "3e4"], "c": {"d": "\\", "e": 'x"9.'}},
        {"k": 1.0, "s": '\\"', "n": [1e-7, 2**70]},
        {"\ue000x": "y", "\U0001f600": 1},
        {"t": True, "f": False, "z": None, "num": 10},
        {"x": [1e15, 1e16, 0.0001, 123.456, 10.5, 100.0, 1.5e-7, 2.5e30, -3.0]},
    ],
)
def test_fast_path_and_walk_agree(value: object) -> None:
    """The C fast path and the rule-by-rule walk write the same bytes, strings holding
    escaped quotes, backslashes and float-like text included."""
    out: list[str] = []
    signing._write(value, out)
    assert canonical_json(value) == "".join(out).encode("utf-8")


def test_signed_content_leaves_out_the_signature_only() -> None:
    """The signed content is the envelope without its ``signature`` member, nothing else."""
    envelope = {"b": 1, "signature": {"alg": "x"}, "a": [1.5, "é"]}
    assert signed_content(envelope) == b'{"a":[1.5,"\xc3\xa9"],"b":1}'


def test_canonical_form_agrees_with_sorted_compact_json_without_floats() -> None:
    """Without floats or keys above U+D7FF it is exactly sorted, compact, UTF-8 JSON."""
    value = {"k": ["x", 1, None, {"é": "\n"}], "a": {"b": [True, False]}}
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == expected.encode()
