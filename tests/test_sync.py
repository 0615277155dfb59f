"""Per-step weight sync (submask.WeightSync, Patch, PatchFolder): a tiny Llama trained with AdamW, patches shipped
as bytes to receiver copies, bit for bit after every step; refusals, restarts, the file transport and bad bytes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from ranks import run_ranks

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import submask  # noqa: E402
from submask import FormatError, MismatchError, Patch, PatchFolder, UsageError, WeightSync  # noqa: E402
from submask.sync.state import bits, state_fingerprint, sync_tensors  # noqa: E402

VOCAB = 128


def tiny_llama(seed: int = 0, dtype: Any = torch.bfloat16, tied: bool = False) -> Any:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                                      tie_word_embeddings=tied)
    return transformers.LlamaForCausalLM(config).to(dtype)


class Trainer:
    """A model trained with AdamW one step at a time, and its sender."""

    def __init__(self, dtype: Any = torch.bfloat16, tied: bool = False, lr: float = 1e-4, **sync: Any):
        self.model = tiny_llama(0, dtype, tied)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.sync = WeightSync(self.model, **sync)
        self.tokens = torch.Generator().manual_seed(1)

    def step(self) -> Patch:
        ids = torch.randint(0, VOCAB, (2, 16), generator=self.tokens)
        self.model(input_ids=ids, labels=ids).loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return self.sync.diff()


def differing(a: Any, b: Any) -> int:
    """Entries whose bits differ between two modules' (or a module's and a state dict's) tensors."""
    left, right = sync_tensors(a), sync_tensors(b)
    assert list(left) == list(right)
    return sum(int((bits(x) != bits(y)).sum()) for x, y in zip(left.values(), right.values()))


def shipped(patch: Patch) -> Patch:
    return Patch.from_bytes(patch.to_bytes())


@pytest.mark.parametrize(("dtype", "tied"), [(torch.bfloat16, False), (torch.bfloat16, True), (torch.float16, True),
                                             (torch.float32, False)])
def test_receiver_matches_the_trainer_bit_for_bit_after_every_step(dtype: Any, tied: bool) -> None:
    trainer, receiver = Trainer(dtype, tied), tiny_llama(0, dtype, tied)
    numel = sum(t.numel() for t in sync_tensors(receiver).values())
    for step in range(1, 7):
        patch = trainer.step()
        assert patch.step == step and 0 < patch.count <= numel
        assert differing(trainer.model, receiver) == patch.count  # the patch holds exactly what changed
        shipped(patch).apply_to(receiver)
        assert differing(trainer.model, receiver) == 0
    if tied:  # one tensor under the first of its names, on both sides
        assert "lm_head.weight" in sync_tensors(receiver) and "model.embed_tokens.weight" not in sync_tensors(receiver)
        assert receiver.lm_head.weight is receiver.model.embed_tokens.weight


def test_a_state_dict_receiver_with_tied_entries_is_written_in_place() -> None:
    trainer = Trainer(tied=True)
    state = {name: value.clone() for name, value in tiny_llama(0, tied=True).state_dict().items()}
    state["model.embed_tokens.weight"] = state["lm_head.weight"]  # tied, as in the module
    for _ in range(3):
        trainer.step().apply_to(state)
    assert differing(trainer.model, state) == 0


def test_an_unchanged_step_is_an_empty_patch_that_still_chains() -> None:
    trainer, receiver = Trainer(), tiny_llama()
    empty = trainer.sync.diff()
    assert empty.count == 0 and empty.tensors == {} and empty.parent != empty.fingerprint
    shipped(empty).apply_to(receiver)
    shipped(trainer.step()).apply_to(receiver)
    assert differing(trainer.model, receiver) == 0


def test_a_patch_out_of_order_or_twice_is_refused_and_writes_nothing() -> None:
    trainer, receiver = Trainer(), tiny_llama()
    first, second, third = (shipped(trainer.step()) for _ in range(3))
    first.apply_to(receiver)
    before = {name: value.clone() for name, value in receiver.state_dict().items()}
    for wrong in (third, first):
        with pytest.raises(MismatchError, match="nothing was written"):
            wrong.apply_to(receiver)
        assert differing(receiver, before) == 0
    second.apply_to(receiver)
    third.apply_to(receiver)
    assert differing(trainer.model, receiver) == 0


def test_a_receiver_of_other_weights_is_refused_until_it_resumes_from_a_snapshot() -> None:
    trainer, stranger = Trainer(), tiny_llama(seed=7)
    patch = trainer.step()
    with pytest.raises(MismatchError):
        patch.apply_to(stranger)
    assert WeightSync.resume(stranger, trainer.sync.snapshot().to_bytes()) == 1
    assert differing(trainer.model, stranger) == 0
    with pytest.raises(MismatchError):  # the patch it resumed past
        patch.apply_to(stranger)
    for _ in range(3):
        shipped(trainer.step()).apply_to(stranger)
    assert differing(trainer.model, stranger) == 0


def test_snapshot_is_the_last_synced_state_not_the_model_now() -> None:
    trainer, receiver = Trainer(), tiny_llama(seed=3)
    trainer.step()
    synced = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    ids = torch.randint(0, VOCAB, (2, 16))
    trainer.model(input_ids=ids, labels=ids).loss.backward()
    trainer.optimizer.step()  # changed since the last diff
    snapshot = trainer.sync.snapshot()
    patch = trainer.sync.diff()  # the sender moves on; the snapshot keeps its state
    WeightSync.resume(receiver, snapshot)
    assert differing(receiver, synced) == 0
    patch.apply_to(receiver)
    assert differing(trainer.model, receiver) == 0


def test_resume_refuses_a_patch_and_a_snapshot_of_another_model() -> None:
    trainer = Trainer()
    with pytest.raises(UsageError, match="needs a snapshot"):
        WeightSync.resume(tiny_llama(), trainer.step())
    with pytest.raises(MismatchError, match="different tensors"):
        WeightSync.resume(tiny_llama(tied=True), trainer.sync.snapshot())
    with pytest.raises(MismatchError, match="convert the receiver"):
        WeightSync.resume(tiny_llama(dtype=torch.float32), trainer.sync.snapshot())


def test_a_receiver_changed_outside_the_sync_fails_the_full_check() -> None:
    trainer, receiver = Trainer(check_every=3), tiny_llama()
    shipped(trainer.step()).apply_to(receiver)
    with torch.no_grad():
        receiver.model.norm.weight[0] += 1  # the chain cannot see this; the full check every 3 steps does
    shipped(trainer.step()).apply_to(receiver)
    checked = shipped(trainer.step())
    assert checked.state is not None
    with pytest.raises(MismatchError, match="differ from the sender's"):
        checked.apply_to(receiver)
    WeightSync.resume(receiver, trainer.sync.snapshot())
    shipped(trainer.step()).apply_to(receiver)
    assert differing(trainer.model, receiver) == 0


def test_patch_bytes_are_a_delta_that_submask_reads(tmp_path: Path) -> None:
    trainer = Trainer()
    before = {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()}
    patch = trainer.step()
    path = tmp_path / "step.smask"
    path.write_bytes(patch.to_bytes())
    with pytest.raises(submask.UsageError, match="coded against the base"):  # values coded against the parent's
        submask.load_delta(path)
    delta = submask.load_delta(path, base=before)
    assert {name: t.count for name, t in delta.mask.items()} == {name: t.count for name, t in patch.tensors.items()}
    assert delta.mask.metadata.extra["sync"]["fingerprint"] == patch.fingerprint
    name, part = next(iter(patch.tensors.items()))
    assert (delta.values[name].data == part.values).all()
    with submask.open(path) as opened:
        assert opened.problems() == []


def test_damaged_or_foreign_bytes_are_refused() -> None:
    patch = Trainer().step()
    data = bytearray(patch.to_bytes())
    with pytest.raises(FormatError):
        Patch.from_bytes(bytes(data[:-1]))
    data[-1] ^= 0xFF  # inside the last values payload
    with pytest.raises(FormatError):
        Patch.from_bytes(bytes(data))
    forged = Patch(patch.parent, patch.parent or "", patch.step, patch.tensors, model=patch.model)  # wrong child
    receiver = tiny_llama()  # at the parent state: values coded against it are decoded, then the chain checked
    untouched = {name: tensor.clone() for name, tensor in receiver.state_dict().items()}
    with pytest.raises(FormatError, match="does not hash to its fingerprint"):
        Patch.from_bytes(forged.to_bytes()).apply_to(receiver)
    assert differing(receiver, untouched) == 0
    plain = submask.Delta(submask.Mask({"w": submask.TensorMask.full((4,), True)}))
    with pytest.raises(FormatError, match="not a sync patch"):
        Patch.from_bytes(_saved(plain))


def _saved(delta: submask.Delta) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "d.smask")
        submask.save(delta, path)
        return path.read_bytes()


def test_patch_folder_publishes_in_order_and_a_restarted_receiver_catches_up(tmp_path: Path) -> None:
    trainer, folder = Trainer(), PatchFolder(tmp_path / "sync")
    for _ in range(2):
        folder.publish(trainer.step())
    folder.publish(trainer.sync.snapshot())
    skipped = trainer.step()
    with pytest.raises(UsageError, match="publish step 3 before step 4"):
        folder.publish(trainer.step())
    folder.publish(skipped)
    assert folder.last_step() == 3
    receiver = tiny_llama(seed=5)
    step = WeightSync.resume(receiver, folder.latest_snapshot())
    assert step == 2 and [p.step for p in folder.patches(after=step)] == [3]
    for patch in folder.patches(after=step):
        patch.apply_to(receiver)
    assert differing(receiver, trainer.model) != 0  # step 4 was never published
    assert [path.name for path in folder.prune(before=3)] == ["0000000001.patch.smask", "0000000002.patch.smask",
                                                              "0000000002.snapshot.smask"]
    fresh = tiny_llama()  # the trainer's starting weights: patch 1 would apply, but it is gone
    assert list(folder.patches(after=0)) == []
    with pytest.raises(MismatchError):
        next(folder.patches(after=2)).apply_to(fresh)


@pytest.mark.slow
def test_gloo_broadcast_one_sender_two_receivers(tmp_path: Path) -> None:
    distributed = pytest.importorskip("torch.distributed")
    if not distributed.is_available() or not distributed.is_gloo_available():
        pytest.skip("needs torch.distributed with the gloo backend")
    run_ranks(lambda port: [sys.executable, "-m", "submask.examples.sync_broadcast", str(tmp_path), "--world", "3",
                            "--steps", "4", "--port", str(port)], timeout=300)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(3)]
    assert len({rank["fingerprint"] for rank in ranks}) == 1
    assert ranks[0]["received"] == ranks[1]["received"] == ranks[2]["received"] and len(ranks[0]["received"]) == 4
    assert ranks[0]["changed"] == ranks[1]["changed"] > 0
    from submask.examples.sync_broadcast import tiny_model

    assert ranks[0]["fingerprint"] != state_fingerprint(sync_tensors(tiny_model()))  # the weights moved


def test_values_are_coded_against_the_receivers_previous_values() -> None:
    """A patch codes its values against the parent state's (diff-planes): the receiver decodes them from its own
    weights after the parent check; a receiver whose previous values differ gets values that fail the
    fingerprint, with nothing written. A snapshot codes the values alone."""
    import numpy as np

    from submask.format.container import parse_bytes

    def encodings(data: bytes) -> set[str]:
        return {t["values"]["encoding"]["id"] for t in parse_bytes(data, "patch")[0]["tensors"].values()}

    trainer, receiver = Trainer(), tiny_llama()
    for _ in range(3):
        data = trainer.step().to_bytes()
        assert encodings(data) == {"diff-planes"}
        patch = Patch.from_bytes(data)
        assert all(part.pending is not None for part in patch.tensors.values())
        patch.apply_to(receiver)
        assert differing(trainer.model, receiver) == 0
    snapshot = trainer.sync.snapshot().to_bytes()
    assert encodings(snapshot) == {"planes"}  # nothing to code against
    WeightSync.resume(receiver, snapshot)
    patch = shipped(trainer.step())
    name = next(iter(patch.tensors))
    with torch.no_grad():  # a previous value the sender did not have: the decoded values are not the sender's
        sync_tensors(receiver)[name].view(-1)[int(patch.tensors[name].positions[0])] += 1
    before = {key: value.clone() for key, value in receiver.state_dict().items()}
    with pytest.raises(FormatError, match="does not hash to its fingerprint"):
        patch.apply_to(receiver)
    assert differing(receiver, before) == 0
    assert np.array_equal(patch.tensors[name].values, np.zeros(0, np.uint8))


def test_patch_and_snapshot_headers_follow_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from submask.format.container import parse_bytes

    schema = json.loads((Path(__file__).parents[1] / "spec" / "header.schema.json").read_text())
    trainer = Trainer()
    for patch in (trainer.step(), trainer.sync.snapshot()):
        header, _ = parse_bytes(patch.to_bytes())
        jsonschema.validate(header, schema)
        assert header["sync"]["parent"] == patch.parent and header["version"] == "1.3"
    header["sync"]["fingerprint"] = "sha256:0"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(header, schema)
