"""The golden vectors of spec/vectors/: decode to the listed content, re-encode byte for byte, match the schema."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

import submask
from submask import MaskWriter, errors, metadata
from submask.cli import main

SPEC = Path(__file__).resolve().parent.parent / "spec"
VECTORS = SPEC / "vectors"
DIFF_VECTOR = "diff-values-1.3"  # values coded against a base: tests/test_diff_values.py reads it with its base
VECTOR_NAMES = sorted(p.stem for p in VECTORS.glob("*.json")
                      if not p.name.endswith(".index.json") and p.stem != DIFF_VECTOR)
SHARDS = {shard for index in VECTORS.glob("*.index.json")
          for shard in json.loads(index.read_text())["weight_map"].values()}
SINGLE_FILES = sorted(p for p in VECTORS.glob("*.smask") if p.name not in SHARDS and p.stem != DIFF_VECTOR)


def header_of(path: Path) -> dict:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(json.loads(data[8:8 + length])["__metadata__"]["submask"])


def test_vectors_exist_for_every_encoding() -> None:
    encodings = {entry["encoding"]["id"] for path in SINGLE_FILES for entry in header_of(path)["tensors"].values()}
    assert encodings == {"raw", "zstd", "rice", "rice-rows"}
    assert "sharded" in VECTOR_NAMES and len(VECTOR_NAMES) >= 5


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_vector_decodes_to_its_listed_content(name: str) -> None:
    listed = json.loads((VECTORS / f"{name}.json").read_text())
    expected = listed["tensors"]
    delta = submask.load_delta(VECTORS / f"{name}.smask")
    assert list(delta.mask) == list(expected)
    for tensor_name, content in expected.items():
        tensor = delta.mask[tensor_name]
        assert list(tensor.shape) == content["shape"]
        np.testing.assert_array_equal(tensor.to_indices(), np.array(content["ones_at"], dtype=np.int64))
        values = delta.values.get(tensor_name)
        assert (values.dtype, values.data.tobytes().hex()) == (content["values"]["dtype"], content["values"]["hex"]) \
            if "values" in content else values is None
    assert [file.to_json() for file in delta.checkpoint or []] == listed.get("checkpoint", [])


def test_the_values_vector_rebuilds_its_checkpoint_files_on_its_own() -> None:
    """Its safetensors file lists one fully set tensor: the header text, then the values alone (FORMAT.md §12)."""
    delta = submask.load_delta(VECTORS / "values-1.2.smask")
    model, config = delta.checkpoint
    header = model.header.encode()
    rebuilt = struct.pack("<Q", len(header)) + header + delta.values["i64_full"].data.tobytes()
    assert (len(rebuilt), hashlib.sha256(rebuilt).hexdigest()) == (model.size, model.sha256)
    assert hashlib.sha256(config.text.encode()).hexdigest() == config.sha256


@pytest.mark.parametrize("path", SINGLE_FILES, ids=lambda p: p.name)
def test_vector_re_encodes_byte_for_byte(path: Path, tmp_path: Path) -> None:
    with submask.open(path) as mask_file:
        with MaskWriter(tmp_path / path.name, mask_file.metadata) as writer:
            for name, entry in mask_file.entries.items():
                settings = {k: v for k, v in entry.values.encoding.items() if k != "id"} if entry.values else None
                writer.add(name, mask_file[name], entry.encoding, entry.config, values=mask_file.values(name),
                           values_config=settings)
    assert (tmp_path / path.name).read_bytes() == path.read_bytes()


def test_a_reader_without_the_values_extension_refuses_a_delta(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a 1.0 or 1.1 reader does with a delta: "upgrade", rather than calling its payload layout corrupt."""
    monkeypatch.setattr(metadata, "KNOWN_EXTENSIONS", frozenset())
    with pytest.raises(errors.VersionError, match=r"extension\(s\) \['values'\].*upgrade"):
        submask.open(VECTORS / "values-1.2.smask")


def test_sharded_vector_re_encodes_byte_for_byte(tmp_path: Path) -> None:
    with submask.open(VECTORS / "sharded.smask") as mask_file:
        files = [*mask_file.shards, mask_file.path]
        with MaskWriter(tmp_path / "sharded.smask", mask_file.metadata, max_shard_bytes=32,
                        write_id=mask_file.write_id) as writer:
            for name, entry in mask_file.entries.items():
                writer.add(name, mask_file[name], entry.encoding, entry.config)
    assert [p.name for p in writer.paths] == [p.name for p in files]
    assert all((tmp_path / p.name).read_bytes() == p.read_bytes() for p in files)


@pytest.mark.parametrize("path", sorted(VECTORS.glob("*.smask")), ids=lambda p: p.name)
def test_vector_headers_match_the_schema(path: Path) -> None:
    schema = json.loads((SPEC / "header.schema.json").read_text())
    jsonschema.validate(header_of(path), schema)


def test_index_matches_its_schema() -> None:
    schema = json.loads((SPEC / "index.schema.json").read_text())
    for index in VECTORS.glob("*.index.json"):
        jsonschema.validate(json.loads(index.read_text()), schema)
    bad = json.loads((VECTORS / "sharded.smask.index.json").read_text())
    bad["metadata"]["write_id"] = "not hex"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


@pytest.mark.parametrize("bad", [{"format": "other"}, {"version": "2.0"}, {"version": "1.1\n"}, {"kind": 7},
                                 {"tensors": []}, {"stats": {"ladder": {"atol": [0.0], "changed": [1.5]}}},
                                 {"shard": {"write_id": "ab" * 16, "number": 0, "count": 2}},
                                 {"shard": {"write_id": "AB" * 16, "number": 1, "count": 2}}])
def test_schema_rejects_what_readers_reject(bad: dict) -> None:
    schema = json.loads((SPEC / "header.schema.json").read_text())
    header = {**header_of(VECTORS / "raw.smask"), **bad}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(header, schema)


@pytest.mark.parametrize("edit", [
    lambda h: h["checkpoint"]["files"][0].update(name="../model.safetensors"),
    lambda h: h["checkpoint"]["files"][0].update(text="both"),
    lambda h: h["checkpoint"]["files"][0].update(sha256="AB" * 32),
    lambda h: h["tensors"]["f32_blocks"]["values"]["encoding"].update(block_values=0),
    lambda h: h["tensors"]["f32_blocks"]["values"].update(crc32="xyz"),
    lambda h: h["tensors"]["f32_blocks"]["values"].pop("size"),
])
def test_schema_rejects_bad_values_and_checkpoint_layouts(edit) -> None:
    schema = json.loads((SPEC / "header.schema.json").read_text())
    header = header_of(VECTORS / "values-1.2.smask")
    jsonschema.validate(header, schema)
    edit(header)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(header, schema)


def test_the_1_0_vectors_stay_and_1_1_vectors_hold_the_same_content() -> None:
    for name in ("raw", "zstd", "rice", "rich_metadata"):
        assert header_of(VECTORS / f"{name}.smask")["version"] == "1.0"
        assert header_of(VECTORS / f"{name}-1.1.smask")["version"] == "1.1"
        assert (VECTORS / f"{name}.json").read_text() == (VECTORS / f"{name}-1.1.json").read_text()


def test_the_rice_rows_vector_is_1_2_covers_every_count_mode_and_holds_the_worked_example() -> None:
    path = VECTORS / "rice-rows-1.2.smask"
    assert header_of(path)["version"] == "1.2"
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    entries = json.loads(data[8:8 + length])
    payloads = {name: data[8 + length + entry["data_offsets"][0] : 8 + length + entry["data_offsets"][1]]
                for name, entry in entries.items() if name != "__metadata__"}
    assert {payload[0] for payload in payloads.values()} == set(range(8))  # every count mode
    example = re.search(r"Payload \(23 bytes\):\n`([0-9A-F ]+)`", (SPEC.parent / "FORMAT.md").read_text())
    assert payloads["worked_example_3x8"] == bytes.fromhex(example.group(1))


INVALID = json.loads((VECTORS / "invalid" / "expected.json").read_text())


@pytest.mark.parametrize("file_name", sorted(INVALID))
def test_invalid_vector_is_rejected_with_the_listed_error(file_name: str) -> None:
    with pytest.raises(submask.SubmaskError) as info:
        with submask.open(VECTORS / "invalid" / file_name) as mask_file:
            for name in mask_file:
                mask_file[name]
                mask_file.values(name)
    assert type(info.value).__name__ == INVALID[file_name]["error"]
    assert file_name in str(info.value)


def test_every_invalid_vector_is_explained_in_the_readme() -> None:
    readme = (VECTORS / "invalid" / "README.md").read_text()
    on_disk = [p.name for p in (VECTORS / "invalid").glob("*.smask")]
    on_disk += [p.relative_to(VECTORS / "invalid").as_posix() for p in (VECTORS / "invalid").glob("*/*.index.json")]
    assert sorted(on_disk) == sorted(INVALID)
    for file_name, expected in INVALID.items():
        assert f"`{file_name}`" in readme and expected["error"] in readme


@pytest.mark.parametrize("file_name", sorted(INVALID))
def test_cli_validate_rejects_every_invalid_vector_in_one_line(file_name: str) -> None:
    result = CliRunner().invoke(main, ["validate", str(VECTORS / "invalid" / file_name)])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and file_name in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("name", ["raw", "rice", "zstd", "rich_metadata", "sharded", "sharded_1_0", "rice-1.1",
                                  "rich_metadata-1.1", "values-1.2", "rice-rows-1.2"])
def test_cli_info_and_validate_accept_the_vectors(name: str) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["validate", str(VECTORS / f"{name}.smask")]).exit_code == 0
    info = runner.invoke(main, ["info", str(VECTORS / f"{name}.smask"), "--json"])
    expected = json.loads((VECTORS / f"{name}.json").read_text())["tensors"]
    assert json.loads(info.output)["count"] == sum(len(t["ones_at"]) for t in expected.values())


def test_cli_validate_rejects_an_invalid_vector() -> None:
    result = CliRunner().invoke(main, ["validate", str(VECTORS / "invalid" / "bad_crc.smask")])
    assert result.exit_code == 1 and "CRC-32" in result.output


def test_format_md_names_every_error_class() -> None:
    section = (SPEC.parent / "FORMAT.md").read_text().split("## 11. Errors")[1]
    listed = set(re.findall(r"^[\s│├└─]*(\w+Error)\b", section, re.MULTILINE))
    defined = {name for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, errors.SubmaskError)}
    assert listed == defined
