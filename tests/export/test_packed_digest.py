"""A ``.irc`` stores a sha256 digest of its header and tensors, checked on load."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

import irconvert
from irconvert.cli import app
from irconvert.errors import LoadError
from irconvert.export.packed import describe_packed, load_packed, save_packed
from irconvert.export.packed_file import DIGEST_KEY, payload_digest
from irconvert.models import build_model


@pytest.fixture(scope="module")
def irc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = build_model("cifar_resnet20", num_classes=10)
    config = irconvert.BinarizeConfig(act_bits=1)
    irconvert.binarize_(model, config, warn=False)
    path = tmp_path_factory.mktemp("irc") / "r20.irc"
    save_packed(model.eval(), path, arch="cifar_resnet20", num_classes=10, config=config)
    return path


def _header(path: Path) -> tuple[int, dict]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return length, json.loads(raw[8:8 + length])


def test_the_stored_digest_is_that_of_the_header_and_tensors(irc: Path) -> None:
    length, header = _header(irc)
    stored = header["__metadata__"][DIGEST_KEY]
    assert len(stored) == 64
    assert payload_digest(header, irc.read_bytes()[8 + length:]) == stored
    assert describe_packed(irc).sha256 == stored


@pytest.mark.parametrize("where", ["first tensor byte", "last byte", "middle"])
def test_a_flipped_bit_in_the_tensors_is_a_one_line_error(irc: Path, tmp_path: Path,
                                                          where: str) -> None:
    raw = bytearray(irc.read_bytes())
    length, _ = _header(irc)
    at = {"first tensor byte": 8 + length, "last byte": len(raw) - 1,
          "middle": (8 + length + len(raw)) // 2}[where]
    raw[at] ^= 0x10
    bad = tmp_path / "bad.irc"
    bad.write_bytes(bytes(raw))
    for read in (describe_packed, load_packed):
        with pytest.raises(LoadError) as err:
            read(bad)
        message = str(err.value)
        assert str(bad) in message and "sha256" in message and "\n" not in message


def test_a_changed_metadata_value_is_caught_too(irc: Path, tmp_path: Path) -> None:
    raw = irc.read_bytes()
    # same length, other value: the header still parses
    changed = raw.replace(b'"num_classes":"10"', b'"num_classes":"11"', 1)
    assert changed != raw
    bad = tmp_path / "bad.irc"
    bad.write_bytes(changed)
    with pytest.raises(LoadError, match="sha256"):
        describe_packed(bad)


def test_inspect_shows_the_digest_and_the_cli_error_is_one_line(irc: Path,
                                                                 tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(irc)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert str(describe_packed(irc).sha256) in "".join(result.output.split())  # may wrap
    raw = bytearray(irc.read_bytes())
    raw[-1] ^= 1
    bad = tmp_path / "bad.irc"
    bad.write_bytes(bytes(raw))
    result = runner.invoke(app, ["inspect", str(bad)], terminal_width=200)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "sha256" in lines[0], result.output
