"""FORMAT.md 1.2.1 (issue 21, items 7 and 8): the reader rules the revision words, each checked on a real file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_hostile import container

import submask
from submask import FormatError, Mask, UnknownEncodingError
from submask.delta import Delta
from submask.format.values import TensorValues
from submask.metadata import CheckpointFile

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
INVALID = VECTORS / "invalid"


def parts(path: Path) -> tuple[dict, dict[str, bytes]]:
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    outer = json.loads(data[8 : 8 + length])
    header = json.loads(outer.pop("__metadata__")["submask"])
    area = data[8 + length :]
    ordered = sorted(outer.items(), key=lambda item: item[1]["data_offsets"][0])
    return header, {name: area[entry["data_offsets"][0] : entry["data_offsets"][1]] for name, entry in ordered}


def rewritten(source: Path, target: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    header, payloads = parts(source)
    edit(header, payloads)
    target.write_bytes(container(json.dumps(header), payloads))
    return target


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "submask", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


# item 7

@pytest.mark.parametrize("command", ["validate", "info"])
def test_validate_and_info_refuse_a_skippable_values_extension(command: str) -> None:
    result = cli(command, INVALID / "values_must_understand_false.smask")
    assert result.returncode == 1 and "must_understand true" in result.stderr and "Traceback" not in result.stderr


def test_values_without_a_layout_and_a_skippable_extension_are_refused(tmp_path: Path) -> None:
    def edit(header: dict, payloads: dict[str, bytes]) -> None:
        header["extensions"] = [{"name": "values", "must_understand": False}]
        header.pop("checkpoint")

    path = rewritten(VECTORS / "values-1.2.smask", tmp_path / "d.smask", edit)
    with pytest.raises(FormatError, match="'values' extension with must_understand true"):
        submask.open(path)


def test_a_skippable_frame_before_the_data_frame_is_named_as_such() -> None:
    with submask.open(INVALID / "zstd_skippable_frame_first.smask") as mask_file:
        with pytest.raises(FormatError, match="starts with a skippable frame") as info:
            mask_file["odd_61"]
        assert "declares 0 bytes" not in str(info.value)


# item 8: §2.2

def user_field(tmp_path: Path, value_text: str) -> Path:
    """The zstd vector with ``"user": {"x": VALUE}``, VALUE written as given."""
    header, payloads = parts(VECTORS / "zstd-1.1.smask")
    header["user"] = {"x": "VALUE"}
    text = json.dumps(header).replace('"VALUE"', value_text)
    path = tmp_path / "u.smask"
    path.write_bytes(container(text, payloads))
    return path


def test_depth_counts_the_header_object_as_1(tmp_path: Path) -> None:
    with submask.open(user_field(tmp_path, "[" * 62 + "]" * 62)) as mask_file:  # 1 + 1 + 62 = 64 deep
        assert mask_file.metadata.user["x"] is not None
    with pytest.raises(FormatError, match="deeper than 64"):
        submask.open(user_field(tmp_path, "[" * 63 + "]" * 63))


def test_a_400_digit_integer_is_read_exactly_and_1e999_is_refused(tmp_path: Path) -> None:
    with submask.open(user_field(tmp_path, "9" * 400)) as mask_file:
        assert mask_file.metadata.user["x"] == int("9" * 400)
    with pytest.raises(FormatError, match="out of range"):
        submask.open(user_field(tmp_path, "1e999"))


@pytest.mark.parametrize("name", ["header_nul_padding.smask", "header_bom.smask"])
def test_only_json_whitespace_pads_the_header(name: str) -> None:
    with pytest.raises(FormatError):
        submask.open(INVALID / name)


def test_json_whitespace_pads_the_header(tmp_path: Path) -> None:
    data = (VECTORS / "zstd-1.1.smask").read_bytes()
    length = int.from_bytes(data[:8], "little")
    text = b"\t\r\n " + data[8 : 8 + length].rstrip(b" ") + b"\n\t\r "
    path = tmp_path / "ws.smask"
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :])
    assert submask.load(path) == submask.load(VECTORS / "zstd-1.1.smask")


def test_unknown_members_of_every_object_are_ignored(tmp_path: Path) -> None:
    def edit(header: dict, payloads: dict[str, bytes]) -> None:
        header["checkpoint"]["x_future"] = 1
        header["checkpoint"]["files"][0]["x_compression"] = "none"
        header["tensors"]["f32_blocks"]["values"]["x_note"] = [1]
        header["tensors"]["f32_blocks"]["x_note"] = {}
        header["stats"] = {"x_other": 2}

    path = rewritten(VECTORS / "values-1.2.smask", tmp_path / "d.smask", edit)
    assert cli("validate", path).returncode == 0
    assert submask.load_delta(path).checkpoint == submask.load_delta(VECTORS / "values-1.2.smask").checkpoint


def test_an_unknown_setting_of_a_known_encoding_is_a_format_error_for_that_tensor(tmp_path: Path) -> None:
    def edit(header: dict, payloads: dict[str, bytes]) -> None:
        header["tensors"]["odd_61"]["encoding"]["level"] = 3

    path = rewritten(VECTORS / "zstd-1.1.smask", tmp_path / "z.smask", edit)
    with submask.open(path) as mask_file:
        with pytest.raises(FormatError, match="odd_61") as info:
            mask_file["odd_61"]
        assert not isinstance(info.value, UnknownEncodingError)
        others = [name for name in mask_file if name != "odd_61"]
        assert [mask_file[name].shape for name in others] == [mask_file.shapes[name] for name in others]


# §5.5, §6

def test_rice_rows_in_a_1_1_file_is_refused() -> None:
    with pytest.raises(FormatError, match="added in version 1.2"):
        submask.open(INVALID / "rice_rows_in_1_1.smask")


def test_a_lone_shard_whose_number_exceeds_its_count_is_refused() -> None:
    with pytest.raises(FormatError, match="1 <= K <= N"):
        submask.open(INVALID / "shard_number_over_count.smask")


# §12.3

def test_validate_checks_the_layout_against_the_tensor_entries(tmp_path: Path) -> None:
    def edit(header: dict, payloads: dict[str, bytes]) -> None:
        layout = header["checkpoint"]["files"][0]
        name = next(key for key in json.loads(layout["header"]) if key != "__metadata__")
        layout["header"] = layout["header"].replace(json.dumps(name), '"no_values"')  # a tensor without values
        layout["size"] += len("no_values") - len(name)

    path = rewritten(VECTORS / "values-1.2.smask", tmp_path / "d.smask", edit)
    result = cli("validate", path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no_values" in result.stdout + result.stderr


def test_values_no_layout_file_lists_are_valid() -> None:
    delta = submask.load_delta(VECTORS / "values-1.2.smask")
    listed = {name for file in delta.checkpoint or [] if file.header for name in json.loads(file.header)}
    assert set(delta.values) - listed  # the golden vector holds such values, and validates
    assert cli("validate", VECTORS / "values-1.2.smask").returncode == 0


def test_every_shard_of_a_delta_carries_the_same_layout(tmp_path: Path) -> None:
    names = [f"t{i}" for i in range(3)]
    mask = Mask.from_numpy({name: np.ones(50, bool) for name in names}, kind="update")
    header = json.dumps({name: {"dtype": "U8", "shape": [50], "data_offsets": [50 * i, 50 * (i + 1)]}
                         for i, name in enumerate(names)})
    layout = [CheckpointFile("model.safetensors", 8 + len(header) + 150, "ab" * 32, header=header)]
    rng = np.random.default_rng(0)
    values = {name: TensorValues("U8", rng.integers(0, 256, 50, dtype=np.uint8)) for name in names}
    submask.save(Delta(mask, values, layout), tmp_path / "d.smask", max_shard_bytes=60)
    index = tmp_path / "d.smask.index.json"
    assert cli("validate", index).returncode == 0
    shard = tmp_path / json.loads(index.read_text())["weight_map"]["t2"]

    def edit(header: dict, payloads: dict[str, bytes]) -> None:
        header["checkpoint"]["files"][0]["sha256"] = "cd" * 32

    rewritten(shard, shard, edit)
    with pytest.raises(FormatError, match="another checkpoint layout"):
        submask.open(index)
