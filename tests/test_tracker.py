"""UpdateTracker and UpdateDensityCallback on real MiniLM training (CPU) and a real transformers Trainer."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import submask  # noqa: E402
from submask import SubmaskError, UpdateTracker  # noqa: E402
from submask.breakdown import locate  # noqa: E402
from submask.builder.criteria import LADDER_ATOL  # noqa: E402

SENTENCES = ["Boil the pasta in salted water.", "The telescope revealed rings around the planet.",
             "Sort the list before searching it.", "Let the dough rest for an hour."]


def _classifier(minilm_bf16) -> torch.nn.Module:
    return transformers.AutoModelForSequenceClassification.from_pretrained(
        minilm_bf16.base, local_files_only=True, dtype=torch.float32, num_labels=2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)


def _train(model: torch.nn.Module, tokenizer, steps: int, lr: float = 1e-4) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)  # SGD: only parameters with a gradient move
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    for _ in range(steps):
        model(**encoded, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def _changed(model: torch.nn.Module, start: dict[str, torch.Tensor], atol: float = 0.0) -> dict[str, np.ndarray]:
    return {name: ((value.detach() - start[name]).abs() > atol).numpy() if atol
            else (value.detach() != start[name]).numpy() for name, value in model.named_parameters()}


def test_tracker_mask_and_density_on_minilm(minilm_bf16, tmp_path: Path) -> None:
    model = _classifier(minilm_bf16)
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_bf16.base, local_files_only=True)
    start = {name: value.detach().clone() for name, value in model.named_parameters()}
    tracker = UpdateTracker(model)
    assert tracker.density().overall == 0.0 and tracker.mask().count == 0
    _train(model, tokenizer, steps=2)

    mask = tracker.mask()
    expected = _changed(model, start)
    assert list(mask) == list(expected)
    for name, bits in expected.items():
        np.testing.assert_array_equal(mask[name].to_numpy(), bits, err_msg=name)
    density = tracker.density()
    numel = sum(bits.size for bits in expected.values())
    changed = sum(int(bits.sum()) for bits in expected.values())
    assert 0 < changed < numel and density.overall == pytest.approx(changed / numel)
    query = [name for name in expected if locate(name).module == "attention.self.query"]
    assert len(query) == 12  # weight and bias of 6 layers
    assert density.modules["attention.self.query"] == pytest.approx(
        sum(int(expected[n].sum()) for n in query) / sum(expected[n].size for n in query))
    for atol in LADDER_ATOL[1:]:
        moved = sum(int(bits.sum()) for bits in _changed(model, start, atol).values())
        assert density.ladder[atol] == pytest.approx(moved / numel)
    assert density.ladder[1e-4] < density.ladder[0.0]
    logs = density.as_logs()
    assert logs["update_density"] == density.overall
    assert logs["update_density/attention.self.query"] == density.modules["attention.self.query"]
    assert "update_density@atol=1e-05" in logs and "update_density@atol=0" not in logs

    path = tracker.save(tmp_path / "step-2.smask")
    assert dict(submask.load(path)) == dict(mask)
    assert submask.load(path).metadata.stats["backend"] == "cpu"


def test_tracker_reads_a_given_reference_without_copying(minilm_bf16) -> None:
    model = _classifier(minilm_bf16)
    reference = copy.deepcopy(model)  # the reference model an RL trainer holds anyway
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_bf16.base, local_files_only=True)
    tracker = UpdateTracker(model, reference, atol=1e-6)
    weight = "bert.encoder.layer.0.attention.self.query.weight"
    assert tracker.reference[weight] is dict(reference.named_parameters())[weight]
    _train(model, tokenizer, steps=1)
    expected = _changed(model, {n: p.detach() for n, p in reference.named_parameters()}, atol=1e-6)
    mask = tracker.mask()
    assert mask.metadata.criterion["name"] == "atol"
    assert all((mask[name].to_numpy() == bits).all() for name, bits in expected.items())
    with pytest.raises(SubmaskError, match="module or a state dict"):
        UpdateTracker(model, reference=[1, 2])
    with pytest.raises(SubmaskError, match="has no 'classifier.weight'"):
        UpdateTracker(model, {n: p for n, p in reference.named_parameters() if not n.startswith("classifier")}).mask()


class _Reporter(transformers.TrainerCallback):
    """Stands in for a logging integration: records what each on_log call carries."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        self.seen.append(dict(logs or {}))


def test_trainer_logs_update_density_and_writes_masks(minilm_bf16, tmp_path: Path) -> None:
    pytest.importorskip("accelerate")  # the Trainer needs it
    from submask.integrations import UpdateDensityCallback

    model = _classifier(minilm_bf16)
    start = {name: value.detach().clone() for name, value in model.named_parameters()}
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_bf16.base, local_files_only=True)
    encoded = tokenizer(SENTENCES, padding="max_length", max_length=16, return_tensors="pt")
    data = [{"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i],
             "labels": torch.tensor(i % 2)} for i in range(len(SENTENCES))]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-4,
        report_to="none", save_strategy="steps", save_steps=2, logging_strategy="no", use_cpu=True,
        disable_tqdm=True)
    reporter = _Reporter()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[reporter])
    UpdateDensityCallback(log_every=2).attach(trainer)
    trainer.train()

    logged = [entry for entry in trainer.state.log_history if "update_density" in entry]
    assert [entry["step"] for entry in logged] == [2, 4]
    assert [entry["update_density"] for entry in reporter.seen if "update_density" in entry] == \
        [entry["update_density"] for entry in logged]
    assert 0 < logged[-1]["update_density"] < 1
    assert logged[-1]["update_density@atol=0.0001"] <= logged[-1]["update_density"]
    assert "update_density/attention.self.query" in logged[-1]

    for step in (2, 4):
        assert (tmp_path / f"checkpoint-{step}" / "update.smask").is_file()
    final = submask.load(tmp_path / "checkpoint-4" / "update.smask")
    expected = _changed(model, start)
    assert final.count == sum(int(bits.sum()) for bits in expected.values()) > 0
    assert final.density == pytest.approx(logged[-1]["update_density"])
    assert 0 < submask.load(tmp_path / "checkpoint-2" / "update.smask").count != final.count
    with pytest.raises(SubmaskError, match="log_every"):
        UpdateDensityCallback(log_every=0)


def test_the_trackers_copy_follows_a_model_converted_after_it() -> None:
    """The initial weights the tracker keeps are converted as the model is (here float32 -> bf16, where most
    values round): no value counts as changed until training moves it. A given reference is left as it is."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64))
    tracker, given = UpdateTracker(model), UpdateTracker(model, reference=copy.deepcopy(model))
    model.to(torch.bfloat16)
    assert tracker.mask().count == 0
    assert given.mask().count > 0.9 * 64 * 64  # by value against float32: the rounding counts as a change
    with torch.no_grad():
        model[0].weight[:3] *= 2
    assert tracker.mask().count == 3 * 64
    assert all(value.dtype == torch.bfloat16 for value in tracker.reference.values())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tracker_made_before_the_model_moves_to_the_gpu_compares_there() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64))
    tracker = UpdateTracker(model)
    model.cuda()
    with torch.no_grad():
        model[0].weight[:3] += 1
    mask = tracker.mask()
    assert mask.metadata.stats["backend"] == "cuda:0" and mask.count == 3 * 64
    assert all(value.is_cuda for value in tracker.reference.values())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tracker_on_a_gpu_model_compares_there() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64)).cuda()
    start = {name: value.detach().cpu().clone() for name, value in model.named_parameters()}
    tracker = UpdateTracker(model)
    with torch.no_grad():
        model[0].weight[:3] += 1
    mask = tracker.mask()
    assert mask.metadata.stats["backend"] == "cuda:0"
    assert mask.count == 3 * 64
    on_cpu = submask.build_mask(start, {name: value.detach().cpu() for name, value in model.named_parameters()}).mask
    assert on_cpu.metadata.stats["backend"] == "cpu" and dict(mask) == dict(on_cpu)


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_tracker_of_a_restricted_model_sees_its_weights_not_the_restriction(mode: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4))
    rng = np.random.default_rng(0)
    allowed = submask.Mask({name: submask.TensorMask.from_numpy(rng.random(tuple(value.shape)) < 0.3)
                            for name, value in model.state_dict().items()})
    if mode == "dense":  # dense mode resets what the optimizer moves outside the mask after each step
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        submask.restrict(model, allowed, optimizer=optimizer)
    else:  # sparse mode trains the masked values it registers
        optimizer = torch.optim.AdamW(submask.restrict(model, allowed, mode="sparse").parameters(), lr=1e-2)
    tracker = UpdateTracker(model)
    for _ in range(2):
        model(torch.randn(8, 16)).square().sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    mask = tracker.mask()
    assert list(mask) == list(model.state_dict())  # sparse mode's "<name>_submask_values" are not tracked
    for name in mask:
        changed = mask[name].to_numpy()
        assert changed.any() and not (changed & ~allowed[name].to_numpy()).any(), name
    assert set(tracker.density().as_logs()) >= {"update_density", "update_density/0", "update_density/1"}
