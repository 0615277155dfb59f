"""Restricted finetuning: MiniLM trained with AdamW (weight decay) keeps every unmasked entry bit for bit."""

from __future__ import annotations

import contextlib
import copy
import functools

import pytest

import submask
from submask import Mask, MismatchError, SubmaskError, TensorMask

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
from torch.nn.utils import parametrize  # noqa: E402

SENTENCES = ["Boil the pasta in salted water.", "The telescope revealed rings around the planet.",
             "Sort the list before searching it.", "Let the dough rest for an hour."]
STEPS = 3
FROZEN = "embeddings.word_embeddings.weight"


def bits_of(tensor: torch.Tensor) -> torch.Tensor:
    integer = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()]
    return tensor.detach().contiguous().view(integer)


#: Parameters whose masks the tests pin, so that each case is exercised whatever the finetune's rounding.
EMPTY = "encoder.layer.0.attention.self.query.bias"   # a partly masked weight next to a bias left unchanged
FULL = "encoder.layer.0.attention.self.key.bias"      # trained as usual
DENSITY = 0.3


def seeded_mask(shapes: dict[str, tuple[int, ...]], pinned: dict[str, bool], seed: int = 0) -> Mask:
    """A random mask of ``DENSITY`` (the same on every machine), with the masks of ``pinned`` empty or full."""
    generator = torch.Generator().manual_seed(seed)
    return Mask({name: TensorMask.full(shape, pinned[name]) if name in pinned
                 else TensorMask.from_torch(torch.rand(shape, generator=generator) < DENSITY)
                 for name, shape in shapes.items()})


@pytest.fixture(scope="module")
def update_mask(minilm_bf16) -> Mask:
    """A seeded random mask over MiniLM's parameters with one empty and one full bias.

    It leaves out the word embeddings (half the model), which ``missing="freeze"`` then freezes: that path
    is tested too, and the steps take half the time."""
    base = safetensors_torch.load_file(minilm_bf16.base_file)
    return seeded_mask({name: tuple(base[name].shape) for name in base
                        if base[name].is_floating_point() and name != FROZEN}, {EMPTY: False, FULL: True})


@pytest.fixture(scope="module")
def base_model(minilm_bf16):
    """MiniLM in float32 (an exact upcast of the bf16 base), in eval mode so that steps are deterministic."""
    return transformers.AutoModel.from_pretrained(minilm_bf16.base, local_files_only=True,
                                                  dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def batch(minilm_bf16):
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_bf16.base, local_files_only=True)
    return tokenizer(SENTENCES, padding=True, return_tensors="pt")


def loss_of(model, batch) -> torch.Tensor:
    out = model(**batch)
    return out.last_hidden_state.pow(2).mean() + out.pooler_output.pow(2).mean()  # every parameter gets a gradient


def train(model, batch, optimizer) -> None:
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss_of(model, batch).backward()
        optimizer.step()


def adamw(parameters) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.1)


def assert_unmasked_unchanged(state: dict, start: dict, mask: Mask) -> int:
    """Every entry outside ``mask`` equals its start value bit for bit; returns how many masked entries moved."""
    moved = 0
    for name, value in state.items():
        inside = mask[name].to_torch() if name in mask else torch.zeros(value.shape, dtype=torch.bool)
        same = bits_of(value) == bits_of(start[name])
        assert bool(same[~inside].all()), f"{name}: {(~same[~inside]).sum()} unmasked entries changed"
        moved += int((~same[inside]).sum())
    return moved


def trained(base_model, batch, mask, mode: str) -> tuple[dict, torch.optim.Optimizer, list[str]]:
    """Train a copy of ``base_model`` restricted to ``mask``; return its state after unrestrict, the
    optimizer and the parameter names seen while restricted."""
    model = copy.deepcopy(base_model)
    keys = list(model.state_dict())
    if mode == "dense":
        optimizer = adamw(model.parameters())  # created before restrict, handed over to it
        submask.restrict(model, mask, mode="dense", optimizer=optimizer)
    else:
        restriction = submask.restrict(model, mask, mode="sparse")
        optimizer = adamw(restriction.parameters())
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    train(model, batch, optimizer)
    assert list(model.state_dict()) == keys  # while restricted too: checkpoints keep the module's names
    submask.unrestrict(model)
    assert list(model.state_dict()) == keys
    assert not parametrize.is_parametrized(model) and type(model) is type(base_model)
    assert all(p.requires_grad and type(p) is torch.nn.Parameter for p in model.parameters())
    return model.state_dict(), optimizer, names


@pytest.fixture(scope="module")
def dense_and_sparse(base_model, batch, update_mask):
    return {mode: trained(base_model, batch, update_mask, mode) for mode in ("dense", "sparse")}


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_unmasked_entries_stay_bit_identical_under_adamw_weight_decay(dense_and_sparse, base_model, update_mask,
                                                                     mode: str) -> None:
    state, _, _ = dense_and_sparse[mode]
    moved = assert_unmasked_unchanged(state, base_model.state_dict(), update_mask)
    assert moved > 0.9 * update_mask.count  # the masked entries did train


def test_dense_and_sparse_modes_agree(dense_and_sparse) -> None:
    dense, sparse = dense_and_sparse["dense"][0], dense_and_sparse["sparse"][0]
    for name in dense:
        torch.testing.assert_close(sparse[name], dense[name], rtol=1e-5, atol=1e-6, msg=name)


def test_sparse_mode_optimizer_state_scales_with_the_mask(dense_and_sparse, update_mask) -> None:
    _, optimizer, names = dense_and_sparse["sparse"]
    assert f"{EMPTY.rpartition('.')[0]}.weight_submask_values" in names
    state_numel = sum(state["exp_avg"].numel() for state in optimizer.state.values())
    assert state_numel == update_mask.count  # one slot per masked entry, none for the rest
    _, dense_optimizer, _ = dense_and_sparse["dense"]  # dense mode: state for every entry of a trained tensor
    dense_numel = sum(s["exp_avg"].numel() for s in dense_optimizer.state.values())
    assert dense_numel == sum(m.numel for m in update_mask.values() if m.count) > 2 * update_mask.count


def test_masking_gradients_alone_lets_weight_decay_move_unmasked_entries(base_model, batch, update_mask) -> None:
    """What published subnetwork-finetuning code does (grad *= mask) is not enough with AdamW."""
    model = copy.deepcopy(base_model)
    model.get_parameter(FROZEN).requires_grad_(False)
    for name in update_mask:
        model.get_parameter(name).register_hook(functools.partial(torch.mul, other=update_mask[name].to_torch()))
    train(model, batch, adamw(model.parameters()))
    with pytest.raises(AssertionError, match="unmasked entries changed"):
        assert_unmasked_unchanged(model.state_dict(), base_model.state_dict(), update_mask)


def test_dense_mode_keeps_the_mask_under_an_optimizer_it_was_not_given(base_model, batch, update_mask) -> None:
    """Every optimizer's steps reset the entries outside the mask, not only one passed to restrict()."""
    model = copy.deepcopy(base_model)
    restriction = submask.restrict(model, update_mask)
    optimizer = adamw(restriction.parameters())
    optimizer.zero_grad()
    loss_of(model, batch).backward()
    optimizer.step()
    name = "encoder.layer.0.attention.self.query.weight"
    outside, state, start = ~update_mask[name].to_torch(), model.state_dict(), base_model.state_dict()
    assert torch.equal(bits_of(state[name])[outside], bits_of(start[name])[outside])
    assert not torch.equal(state[name][~outside], start[name][~outside])
    restriction.remove()


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def small_mask() -> Mask:
    return Mask({"0.weight": TensorMask.from_indices([0, 5, 7], (4, 6)), "0.bias": TensorMask.full((4,), True),
                 "2.weight": TensorMask.full((2, 4), False)})


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_missing_parameters_freeze_train_or_error(mode: str) -> None:
    model = small_model()
    restriction = submask.restrict(model, small_mask(), mode=mode)  # "2.bias" is not listed: frozen
    assert [p.shape for p in restriction.parameters()] == ([(4, 6), (4,)] if mode == "dense" else [(4,), (3,)])
    submask.unrestrict(model)
    restriction = submask.restrict(model, small_mask(), mode=mode, missing="train")
    assert [p.shape for p in restriction.parameters()][-1] == (2,)
    restriction.remove()
    with pytest.raises(MismatchError, match=r"does not list 1 parameter.*2\.bias"):
        submask.restrict(model, small_mask(), mode=mode, missing="error")
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_parameters_frozen_by_the_caller_stay_frozen(mode: str) -> None:
    model = small_model()
    model[0].weight.requires_grad_(False)
    restriction = submask.restrict(model, small_mask(), mode=mode)
    assert [p.shape for p in restriction.parameters()] == [(4,)]  # only 0.bias (full mask) trains
    restriction.remove()
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]


def test_mask_from_a_smask_path(tmp_path) -> None:
    submask.save(small_mask(), tmp_path / "m.smask")
    model = small_model()
    start = copy.deepcopy(model.state_dict())
    restriction = submask.restrict(model, tmp_path / "m.smask", mode="sparse")
    optimizer = adamw(restriction.parameters())
    for _ in range(STEPS):
        optimizer.zero_grad()
        model(torch.randn(3, 6)).square().sum().backward()
        optimizer.step()
    restriction.remove()
    assert assert_unmasked_unchanged(model.state_dict(), start, small_mask()) == 7


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_unrestrict_keeps_state_dict_keys_and_order(mode: str) -> None:
    """Partly, fully and empty-masked parameters, and one the mask leaves out, side by side in each module."""
    model = small_model()
    keys = list(model.state_dict())
    mask = Mask({"0.weight": TensorMask.from_indices([0, 5, 7], (4, 6)), "0.bias": TensorMask.full((4,), False),
                 "2.weight": TensorMask.full((2, 4), True), "2.bias": TensorMask.from_indices([1], (2,))})
    for missing in ("freeze", "train"):
        for listed in (mask, Mask({name: mask[name] for name in ("0.bias", "0.weight", "2.bias")})):
            restriction = submask.restrict(model, listed, mode=mode, missing=missing)
            optimizer = adamw(restriction.parameters())
            model(torch.randn(3, 6)).square().sum().backward()
            optimizer.step()
            submask.unrestrict(model)
            assert list(model.state_dict()) == keys
            assert [name for name, _ in model.named_parameters()] == keys


def test_mismatched_masks_and_misuse_are_rejected() -> None:
    model = small_model()
    with pytest.raises(MismatchError, match=r"0\.weight \(4, 5\) vs \(4, 6\)"):
        submask.restrict(model, Mask({"0.weight": TensorMask.full((4, 5), True)}))
    with pytest.raises(MismatchError, match=r"missing from the module's parameters and buffers.*lm_head\.weight"):
        submask.restrict(model, Mask({"lm_head.weight": TensorMask.full((4,), True)}))
    with pytest.raises(SubmaskError, match="mode must be"):
        submask.restrict(model, small_mask(), mode="lora")
    with pytest.raises(SubmaskError, match="create the optimizer after"):
        submask.restrict(model, small_mask(), mode="sparse", optimizer=adamw(model.parameters()))
    with pytest.raises(SubmaskError, match="not restricted"):
        submask.unrestrict(model)
    submask.restrict(model, small_mask())
    with pytest.raises(SubmaskError, match="already restricted"):
        submask.restrict(model, small_mask())
    submask.unrestrict(model)


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_mask_built_from_the_checkpoint_restricts_the_module_loaded_from_it(minilm_bf16, batch, mode: str) -> None:
    """build_mask lists MiniLM's int64 buffer ``embeddings.position_ids``: restrict accepts it and leaves it be."""
    mask = submask.build_mask(minilm_bf16.base, minilm_bf16.finetuned).mask
    assert "embeddings.position_ids" in mask
    model = transformers.AutoModel.from_pretrained(minilm_bf16.base, local_files_only=True,
                                                  dtype=torch.float32).eval()
    start, position_ids = copy.deepcopy(model.state_dict()), model.embeddings.position_ids.clone()
    restriction = submask.restrict(model, mask, mode=mode)
    train(model, batch, adamw(restriction.parameters()))
    restriction.remove()
    assert torch.equal(model.embeddings.position_ids, position_ids)
    assert assert_unmasked_unchanged(model.state_dict(), start, mask) > 0
    with pytest.raises(MismatchError, match=r"position_ids \(1, 7\) vs \(1, 512\)"):
        submask.restrict(model, Mask({"embeddings.position_ids": TensorMask.full((1, 7), True)}))


def tied_model() -> torch.nn.Module:
    model = torch.nn.ModuleDict({"a": small_model()[0], "b": torch.nn.Linear(6, 4)})
    model["b"].weight = model["a"].weight
    return model


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_tied_weights_are_restricted_once(mode: str) -> None:
    model = tied_model()
    start, keys = copy.deepcopy(model.state_dict()), list(model.state_dict())
    weight = TensorMask.from_indices([1, 8], (4, 6))
    for listed in ({"a.weight": weight}, {"b.weight": weight}, {"a.weight": weight, "b.weight": weight}):
        restriction = submask.restrict(model, Mask(listed), mode=mode, missing="train")
        optimizer = adamw(restriction.parameters())
        restriction.attach(optimizer)
        for _ in range(STEPS):
            optimizer.zero_grad()
            (model["a"](torch.randn(3, 6)) * model["b"](torch.randn(3, 6))).sum().backward()
            optimizer.step()
        assert model["a"].weight is model["b"].weight and list(model.state_dict()) == keys
        restriction.remove()
        full = TensorMask.full((4,), True)
        check = Mask({"a.weight": weight, "b.weight": weight, "a.bias": full, "b.bias": full})
        assert assert_unmasked_unchanged(model.state_dict(), start, check) == 2 * 2 + 8  # a, b: the same 2 moved
        start = copy.deepcopy(model.state_dict())
    with pytest.raises(MismatchError, match="tied weights 'a.weight' and 'b.weight' different masks"):
        submask.restrict(model, Mask({"a.weight": weight, "b.weight": TensorMask.from_indices([2], (4, 6))}))


OPTIMIZERS = {
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "adam-amsgrad": lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True, weight_decay=0.01),
    "sgd-nesterov": lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.1),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-3, momentum=0.5, weight_decay=0.1),
    "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=1e-2, weight_decay=0.1),
}


def small_run(mode: str, make_optimizer, *, dtype=torch.float32, autocast: bool = False, micro: int = 1,
              clip: float | None = None) -> tuple[dict, dict]:
    """Train ``small_model`` restricted to ``small_mask`` (missing='train') with the given recipe; returns the
    start and end states. Each step accumulates ``micro`` backwards, clips and steps an LR schedule."""
    model = small_model().to(dtype)
    start = copy.deepcopy(model.state_dict())
    restriction = submask.restrict(model, small_mask(), mode=mode, missing="train")
    optimizer = make_optimizer(restriction.parameters())
    restriction.attach(optimizer)
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.5, total_iters=STEPS)
    generator = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        optimizer.zero_grad()
        for _ in range(micro):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model(torch.randn(5, 6, generator=generator).to(dtype)).float().square().mean()
            loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(restriction.parameters(), clip)
        optimizer.step()
        schedule.step()
    restriction.remove()
    return start, model.state_dict()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_keeps_unmasked_entries_and_modes_agree(name: str) -> None:
    ends = {}
    for mode in ("dense", "sparse"):
        start, ends[mode] = small_run(mode, OPTIMIZERS[name])
        mask = Mask({**small_mask(), "2.bias": TensorMask.full((2,), True)})
        assert assert_unmasked_unchanged(ends[mode], start, mask) == 3 + 4 + 2
    for key in ends["dense"]:
        torch.testing.assert_close(ends["sparse"][key], ends["dense"][key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("recipe", [dict(autocast=True), dict(dtype=torch.bfloat16), dict(micro=3, clip=0.05),
                                    dict(autocast=True, micro=2, clip=0.05)],
                         ids=["autocast", "bf16", "accumulate-clip", "all"])
def test_sparse_mode_with_autocast_bf16_accumulation_and_clipping(recipe: dict) -> None:
    """The values' gradients are those dense mode clips and steps with: both modes end at the same weights."""
    ends = {}
    for mode in ("dense", "sparse"):
        start, ends[mode] = small_run(mode, OPTIMIZERS["adamw"], **recipe)
        mask = Mask({**small_mask(), "2.bias": TensorMask.full((2,), True)})
        assert assert_unmasked_unchanged(ends[mode], start, mask) == 3 + 4 + 2
    for key in ends["dense"]:
        torch.testing.assert_close(ends["sparse"][key], ends["dense"][key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_torch_compile(mode: str) -> None:
    """A compiled model (dynamo + AOT autograd; the aot_eager backend keeps the test fast on CPU) trains the
    same as the eager one."""
    ends = {}
    for compiled in (False, True):
        model = small_model()
        start = copy.deepcopy(model.state_dict())
        restriction = submask.restrict(model, small_mask(), mode=mode, missing="train")
        optimizer = adamw(restriction.parameters())
        restriction.attach(optimizer)
        forward = torch.compile(model, backend="aot_eager", fullgraph=True) if compiled else model
        generator = torch.Generator().manual_seed(0)
        for _ in range(STEPS):
            optimizer.zero_grad()
            forward(torch.randn(3, 6, generator=generator)).square().sum().backward()
            optimizer.step()
        restriction.remove()
        ends[compiled] = model.state_dict()
        mask = Mask({**small_mask(), "2.bias": TensorMask.full((2,), True)})
        assert assert_unmasked_unchanged(ends[compiled], start, mask) == 3 + 4 + 2
    for key in ends[False]:
        torch.testing.assert_close(ends[True][key], ends[False][key], rtol=1e-6, atol=1e-7)


def test_sparse_mode_keeps_no_full_gradient_and_checkpoints_load_as_usual(tmp_path) -> None:
    model = small_model()
    keys = list(model.state_dict())
    restriction = submask.restrict(model, small_mask(), mode="sparse")
    optimizer = adamw(model.parameters())  # the weights never get a gradient: AdamW skips them
    model(torch.randn(3, 6)).square().sum().backward()
    assert model[0].weight.grad is None and model[0].weight_submask_values.grad.shape == (3,)
    optimizer.step()
    values = model[0].weight_submask_values  # between steps the weight holds the only copy: one element here
    assert values.shape == (3,) and values.untyped_storage().nbytes() == values.element_size()
    assert not values.detach().clone().any()  # still readable (as zeros) by whatever walks the parameters
    safetensors_torch.save_file(model.state_dict(), tmp_path / "step.safetensors")
    assert list(safetensors_torch.load_file(tmp_path / "step.safetensors")) == sorted(keys)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    moved = {k: v + 1 for k, v in saved.items()}
    model.load_state_dict(moved)  # loading while restricted: the next step starts from the loaded weights
    model(torch.randn(3, 6)).square().sum().backward()
    optimizer.step()
    step = model[0].weight.view(-1)[[0, 5, 7]] - moved["0.weight"].view(-1)[[0, 5, 7]]
    assert 0 < step.abs().max() < 0.1
    model.load_state_dict(saved)
    restriction.remove()
    assert list(model.state_dict()) == keys and torch.equal(model[0].weight, saved["0.weight"])


def classifier(minilm_bf16, update_mask) -> tuple[torch.nn.Module, Mask]:
    """MiniLM with a classification head (no dropout), and the update mask under the head model's names."""
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        minilm_bf16.base, local_files_only=True, dtype=torch.float32, num_labels=2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)
    return model, Mask({f"bert.{name}": tensor for name, tensor in update_mask.items()})


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_callback_events_in_trainer_order(minilm_bf16, update_mask, batch, mode: str) -> None:
    """The callback driven through the events a Trainer sends, in its order, with a real optimizer."""
    from submask.integrations import SubmaskCallback

    model, mask = classifier(minilm_bf16, update_mask)
    start = copy.deepcopy(model.state_dict())
    callback = SubmaskCallback(mask, mode=mode)
    callback.on_init_end(None, None, None, model=model, optimizer=None)
    optimizer = adamw([p for p in model.parameters() if p.requires_grad])  # what the Trainer creates next
    callback.on_train_begin(None, None, None, model=model, optimizer=optimizer)
    labels = torch.tensor([0, 1, 0, 1])
    for _ in range(STEPS):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        callback.on_optimizer_step(None, None, None, model=model, optimizer=optimizer)
        optimizer.zero_grad()
    callback.on_train_end(None, None, None, model=model, optimizer=optimizer)
    assert list(model.state_dict()) == list(start)
    assert assert_unmasked_unchanged(model.state_dict(), start, mask) > 0.5 * mask.count
    late = SubmaskCallback(mask, mode="sparse")
    with pytest.raises(SubmaskError, match="before the Trainer creates its optimizer"):
        late.on_train_begin(None, None, None, model=model, optimizer=optimizer)


@pytest.fixture(scope="module")
def trainer_runs(minilm_bf16, update_mask, tmp_path_factory) -> dict:
    """The Trainer with the callback, in each mode, clipping hard and with an epsilon far above the gradients
    (so that AdamW's update scales with the clipped gradient, and a wrong clipping norm shows) and saving a
    checkpoint mid-run: mode -> (start state, end state, mask, checkpoint dir)."""
    pytest.importorskip("accelerate")  # the Trainer needs it
    from submask.integrations import SubmaskCallback

    runs = {}
    for mode in ("dense", "sparse"):
        torch.manual_seed(0)  # the same new classification head in both runs
        model, mask = classifier(minilm_bf16, update_mask)
        start = copy.deepcopy(model.state_dict())
        tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_bf16.base, local_files_only=True)
        encoded = tokenizer(SENTENCES, padding="max_length", max_length=16, return_tensors="pt")
        data = [{"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i],
                 "labels": torch.tensor(i % 2)} for i in range(len(SENTENCES))]
        out = tmp_path_factory.mktemp(f"trainer-{mode}")
        args = transformers.TrainingArguments(
            output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=4, learning_rate=1e-3,
            weight_decay=0.1, max_grad_norm=0.01, adam_epsilon=1e-3, report_to="none", save_strategy="steps",
            save_steps=2, save_only_model=True, logging_strategy="no", use_cpu=True, disable_tqdm=True)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                       callbacks=[SubmaskCallback(mask, mode=mode)])
        trainer.train()
        runs[mode] = (start, model.state_dict(), mask, out / "checkpoint-2")
    return runs


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_trainer_callback(trainer_runs, mode: str) -> None:
    start, end, mask, checkpoint = trainer_runs[mode]
    assert list(end) == list(start)  # the restriction was removed at the end
    moved = assert_unmasked_unchanged(end, start, mask)
    assert moved > 0.5 * mask.count
    saved = safetensors_torch.load_file(checkpoint / "model.safetensors")  # written while restricted
    assert sorted(saved) == sorted(start)


def test_trainer_clips_the_same_gradients_in_both_modes(trainer_runs) -> None:
    """The Trainer clips over model.parameters(): in sparse mode those hold the values' gradients."""
    dense, sparse = trainer_runs["dense"][1], trainer_runs["sparse"][1]
    for name in dense:
        torch.testing.assert_close(sparse[name], dense[name], rtol=1e-5, atol=1e-6)


def small_steps(model, restriction, device: str = "cpu", dtype=torch.float32, lr: float = 1e-3) -> None:
    optimizer = torch.optim.AdamW(restriction.parameters(), lr=lr, weight_decay=0.1)
    restriction.attach(optimizer)
    for _ in range(STEPS):
        optimizer.zero_grad()
        model(torch.randn(3, 6, device=device, dtype=dtype)).square().sum().backward()
        optimizer.step()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_converting_the_model_after_restrict_keeps_the_guarantee(mode: str, dtype) -> None:
    """``model.to(dtype)`` (like ``model.to("cuda")``, or a Trainer moving the model to its device) after
    ``restrict`` gives each parameter new storage: the restriction follows it there."""
    model = small_model()
    restriction = submask.restrict(model, small_mask(), mode=mode)
    model.to(dtype)
    start = {name: value.clone() for name, value in model.state_dict().items()}
    small_steps(model, restriction, dtype=dtype, lr=0.1)  # weight decay that moves bf16 values too
    if mode == "sparse":  # released values stay released: not the full-size zeros .to() made of them
        values = model[0].weight_submask_values
        assert values.dtype == dtype and values.stride() == (0,) and values.untyped_storage().nbytes() == dtype.itemsize
    restriction.remove()
    assert all(value.dtype == dtype for value in model.state_dict().values())
    assert assert_unmasked_unchanged(model.state_dict(), start, small_mask()) == 7


@contextlib.contextmanager
def dense_kernels(path: str):
    """Dense mode's compiled kernels (skipped without numba) or its torch operations, for the block."""
    from submask.accel import numba_disabled, numba_enabled

    if path == "torch":
        with numba_disabled():
            yield
        return
    if not numba_enabled():
        pytest.skip("numba is not installed: dense mode's compiled path cannot run")
    yield


@pytest.mark.parametrize("path", ["compiled", "torch"])
def test_dense_mode_clears_gradients_and_restores_starting_bits_whatever_the_values(path: str) -> None:
    """Outside the mask a gradient is cleared to +0.0 even where it is NaN, and a step restores each starting
    value bit for bit: -0.0, infinities, a NaN payload and a subnormal too; on both of dense mode's paths."""
    with dense_kernels(path):
        clear_and_restore_nan_inf_and_signed_zeros()


def clear_and_restore_nan_inf_and_signed_zeros() -> None:
    model = small_model()
    nan = torch.tensor([0x7FC00123], dtype=torch.int32).view(torch.float32)  # a NaN with a payload
    with torch.no_grad():
        model[0].weight.view(-1)[[1, 2, 3, 4, 6]] = torch.cat([torch.tensor([-0.0, float("inf"), -float("inf"),
                                                                            1e-45]), nan])
    start = {name: value.clone() for name, value in model.state_dict().items()}
    restriction = submask.restrict(model, small_mask(), mode="dense")
    optimizer = torch.optim.AdamW(restriction.parameters(), lr=0.1, weight_decay=0.1)
    model(torch.randn(3, 6)).square().sum().backward()  # NaN everywhere: the weights hold inf and NaN
    grad, outside = model[0].weight.grad, ~small_mask()["0.weight"].to_torch()
    assert bool(grad[~outside].isnan().all()) and bool((bits_of(grad)[outside] == 0).all())
    optimizer.step()
    restriction.remove()
    assert assert_unmasked_unchanged(model.state_dict(), start, small_mask()) == 7  # the masked ones: NaN now


@pytest.mark.parametrize("path", ["compiled", "torch"])
@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64])
def test_keeping_and_resetting_bits_match_plain_operations(dtype, path: str) -> None:
    """Dense mode's AND and AND-OR, compiled (one pass) or through torch (a reused buffer on the CPU: more than
    one chunk, a partial last one), are the plain operations on every integer width."""
    from submask.train.dense import CHUNK, keep_only, reset_outside

    generator = torch.Generator().manual_seed(0)
    keep = (torch.rand(2 * CHUNK + 5, generator=generator) < 0.3).to(torch.int8).neg_()
    low, high = torch.iinfo(dtype).min, torch.iinfo(dtype).max
    bits = torch.randint(low, high, (2 * CHUNK + 5,), generator=generator, dtype=dtype)
    frozen = torch.randint(low, high, (2 * CHUNK + 5,), generator=generator, dtype=dtype) & ~keep.to(dtype)
    with dense_kernels(path):
        kept, reset = bits.clone(), bits.clone()
        keep_only(kept, keep)
        reset_outside(reset, keep, frozen)
    assert torch.equal(kept, bits & keep.to(dtype)) and bool((kept[keep == 0] == 0).all())
    assert torch.equal(reset, (bits & keep.to(dtype)) | frozen) and torch.equal(reset[keep == 0], frozen[keep == 0])
    assert bool((kept != 0).any()) and torch.equal(reset[keep != 0], bits[keep != 0])


@pytest.mark.filterwarnings("ignore:Complex modules:UserWarning")
def test_dense_mode_refuses_entries_wider_than_8_bytes() -> None:
    """Dense mode clears and restores entries as integers of their size: complex128 is refused, with the way out."""
    model = torch.nn.Linear(2, 2).to(torch.complex128)
    mask = Mask({"weight": TensorMask.from_indices([0], (2, 2)), "bias": TensorMask.full((2,), True)})
    with pytest.raises(submask.UsageError, match=r"complex128: use restrict\(\.\.\., mode='sparse'\)"):
        submask.restrict(model, mask, mode="dense")
    assert submask.train.restriction_of(model) is None and model.weight.requires_grad
    submask.restrict(model, mask, mode="sparse").remove()


@pytest.mark.parametrize("change", ["swap", "assign"])
@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_a_parameter_swapped_or_replaced_after_restrict_is_refused(mode: str, change: str) -> None:
    """Hooks do not survive ``swap_tensors`` (which ``model.to`` uses when asked to, and for DTensors), and a
    new parameter object is not restricted at all: the next step refuses, and nothing outside the mask moves."""
    model = small_model()
    restriction = submask.restrict(model, small_mask(), mode=mode)
    if change == "swap":
        torch.__future__.set_swap_module_params_on_conversion(True)
        try:
            model.double()
        finally:
            torch.__future__.set_swap_module_params_on_conversion(False)
        expected = "swapped its tensor"
    else:
        model.load_state_dict({name: value.clone() for name, value in model.state_dict().items()}, assign=True)
        expected = "replaced by another parameter"
    start = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(submask.UsageError, match=rf"'weight' of Linear .*{expected}.*unrestrict"):
        small_steps(model, restriction, dtype=start["0.weight"].dtype)
    assert assert_unmasked_unchanged(model.state_dict(), start, small_mask()) == 0  # refused before the step
    restriction.remove()  # still lifts what it can
    if change == "swap":
        assert all(p.requires_grad for p in model.parameters())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("moved", ["before", "after"])
@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_restrict_on_cuda(mode: str, moved: str) -> None:
    """On the GPU, with the model moved there before ``restrict`` or after it."""
    model = small_model()
    start = {name: value.clone() for name, value in model.state_dict().items()}
    if moved == "before":
        model.cuda()
    restriction = submask.restrict(model, small_mask(), mode=mode)
    if moved == "after":
        model.cuda()
    small_steps(model, restriction, device="cuda")
    restriction.remove()
    state = {name: value.cpu() for name, value in model.state_dict().items()}
    assert assert_unmasked_unchanged(state, start, small_mask()) == 7


def test_a_shard_unpacks_only_its_slice_of_the_mask() -> None:
    """FSDP2 ranks hold rows [start, start + count) of a tensor; their mask bits (and, for sparse mode, the
    indexes of their masked entries) start at any bit offset."""
    import numpy as np

    from submask.train.entry import indices_in_range, packed_range

    bits = TensorMask.from_numpy(np.random.default_rng(0).random((7, 11)) < 0.4)
    flat = bits.to_numpy().reshape(-1)
    for start, count in [(0, 77), (0, 33), (11, 22), (33, 44), (66, 11), (77, 0), (5, 3)]:
        got = np.unpackbits(packed_range(bits, start, count))[:count].astype(bool)
        assert np.array_equal(got, flat[start:start + count]), (start, count)
        assert np.array_equal(indices_in_range(bits, start, count), np.flatnonzero(flat[start:start + count]))
