"""Per-step weight sync (``submask.WeightSync``) on a tiny Llama trained with AdamW in bf16, side by side with
the patch RL frameworks ship (int32 indices + bf16 values in safetensors, made by safetensors' own ``save``).

Every step: train (forward, backward, AdamW step), ``sync.diff()`` + ``patch.to_bytes()`` on the sender, then
``Patch.from_bytes`` + ``apply_to`` on a receiver copy and, on a third copy, the plain in-place copy of the
same changed values (``flat[indices] = values``); the receiver is compared with the trainer bit for bit after
every step. At ``--restart`` the receiver is replaced by a model of other random weights that resumes from a
snapshot; at ``--refuse`` the next step's patch is offered before this one's and must be refused with nothing
written. Times are per step, so every ratio pairs figures of the same step (medians over the steps after
``--warmup``).

    .venv/bin/python -m tools.bench.bench_sync [--steps 100 --lr 1e-6]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from typing import Any

import submask

from .report import markdown_table, write_section

NOTES = """
Reading it: a patch codes its values against the receiver's previous ones (`diff-planes`, FORMAT.md §12.4).
`Patch.from_bytes` decompresses and checks the differences once (CRC-32); `apply_to` then checks the parent,
decodes each changed tensor in one compiled pass over the receiver's memory (the previous values gathered at the
changed positions, the exponent order and the differences undone block by block), hashes the decoded values into
the patch's fingerprint (FORMAT.md §13: before anything is written) and scatters them in place. Over the plain
copy, which writes values it is handed, it pays the decode and that hash (about as long as the copy itself: the
positions are hashed as 8-byte integers). The full-check steps (every `--check-every` steps) hash the whole state
on both sides, which is what the fingerprint chain saves on every other step. The first steps change the most
entries (AdamW's first updates are its largest).
"""


def tiny_llama(seed: int, args: argparse.Namespace) -> Any:
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                                      intermediate_size=args.hidden * 11 // 4, num_hidden_layers=args.layers,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return transformers.LlamaForCausalLM(config).to(torch.bfloat16)


def differing_bits(a: Any, b: Any) -> int:
    """How many entries of two models' state dicts differ in their bits."""
    import torch

    return sum(int((x.view(torch.int16) != y.view(torch.int16)).sum())
               for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def peer_patch(patch: submask.Patch) -> bytes:
    """The frameworks' patch of the same step: per tensor, int32 flat indices and the values, safetensors."""
    import torch
    from safetensors.torch import save

    tensors = {}
    for name, part in patch.tensors.items():
        tensors[f"{name}.indices"] = torch.from_numpy(part.positions).to(torch.int32)
        tensors[f"{name}.values"] = torch.from_numpy(part.values).view(torch.bfloat16)
    return save(tensors)


def plain_copy(model: Any, patch: submask.Patch) -> None:
    """The baseline receiver: write the changed values in place, no checks."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, part in patch.tensors.items():
            params[name].view(-1)[torch.from_numpy(part.positions)] = torch.from_numpy(part.values).view(torch.bfloat16)


def timed(run: Any, *args: Any) -> tuple[Any, float]:
    """``run(*args)`` and the seconds it took."""
    start = time.perf_counter()
    result = run(*args)
    return result, time.perf_counter() - start


def train_step(model: Any, optimizer: Any, ids: Any) -> None:
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def load_average() -> list[str]:
    with open("/proc/loadavg") as handle:
        return handle.read().split()[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--restart", type=int, default=40, help="step after which the receiver restarts")
    parser.add_argument("--refuse", type=int, default=70, help="step whose patch is offered late")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check-every", type=int, default=50, help="WeightSync's full check")
    parser.add_argument("--repeats", type=int, default=5, help="receivers timed side by side (best of)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args()

    import torch
    from safetensors.torch import load, save

    torch.set_num_threads(args.threads)
    load_before = load_average()
    model = tiny_llama(0, args)
    receivers = [tiny_llama(0, args) for _ in range(args.repeats)]  # [0] restarts and refuses; all are timed
    plains = [tiny_llama(0, args) for _ in range(args.repeats)]
    numel = sum(p.numel() for p in model.parameters())
    full_bytes = len(save(model.state_dict()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(1)
    sync = submask.WeightSync(model, check_every=args.check_every)
    rows: list[dict[str, float]] = []
    worst, refused, restarted, held = 0, False, False, None
    for step in range(1, args.steps + 1):
        ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=generator)
        _, train = timed(train_step, model, optimizer, ids)
        patch, diff = timed(sync.diff)
        data, encode = timed(patch.to_bytes)
        peer, peer_time = timed(peer_patch, patch)
        _, peer_load = timed(load, peer)
        received, decode = timed(submask.Patch.from_bytes, data)
        if step == args.refuse:  # hold this step's patch back: the next one comes first
            held = (received, patch)  # as received, and as sent (whose values the plain copy writes)
            continue
        if held is not None:
            try:
                received.apply_to(receivers[0])
            except submask.MismatchError:
                refused = differing_bits(receivers[0], plains[0]) == 0  # nothing was written
            for receiver, plain in zip(receivers, plains):
                held[0].apply_to(receiver)
                plain_copy(plain, held[1])
            held = None
        applies, copies = [], []
        for receiver, plain in zip(receivers, plains):  # interleaved, best of the repeats
            applies.append(timed(received.apply_to, receiver)[1])
            copies.append(timed(plain_copy, plain, patch)[1])
        apply, copy = min(applies), min(copies)
        worst = max([worst, *(differing_bits(model, other) for other in (*receivers, *plains))])
        if step == args.restart:  # a new receiver process: other weights, resumed from a snapshot
            receivers[0] = tiny_llama(1, args)
            restarted = differing_bits(model, receivers[0]) > 0
            submask.WeightSync.resume(receivers[0], submask.Patch.from_bytes(sync.snapshot().to_bytes()))
            worst = max(worst, differing_bits(model, receivers[0]))
        rows.append({"step": step, "density": patch.count / numel, "bytes": len(data), "peer": len(peer),
                     "train": train, "diff": diff, "encode": encode, "peer_time": peer_time, "peer_load": peer_load,
                     "decode": decode, "apply": apply, "copy": copy, "checked": float(patch.state is not None)})
    load_after = load_average()
    print(report(rows[args.warmup:], args, numel, full_bytes, worst, refused, restarted, load_before, load_after))
    if not args.no_write:
        write_section("sync", "Per-step weight sync (WeightSync) on a tiny Llama",
                      report(rows[args.warmup:], args, numel, full_bytes, worst, refused, restarted, load_before,
                             load_after))


def report(rows: list[dict[str, float]], args: argparse.Namespace, numel: int, full_bytes: int, worst: int,
           refused: bool, restarted: bool, load_before: list[str], load_after: list[str]) -> str:
    regular = [row for row in rows if not row["checked"]]
    checked = [row for row in rows if row["checked"]]

    def median(key: str) -> float:  # times: over the steps without the full check
        among = rows if key in ("density", "bytes", "peer") else regular
        return statistics.median(row[key] for row in among)

    def ratio(top: str | tuple[str, ...], bottom: str | tuple[str, ...],
              among: list[dict[str, float]] = rows) -> tuple[float, float]:
        tops = (top,) if isinstance(top, str) else top
        bottoms = (bottom,) if isinstance(bottom, str) else bottom
        values = [sum(row[t] for t in tops) / sum(row[b] for b in bottoms) for row in among] or [math.nan]
        return statistics.median(values), max(values)

    size, full = ratio("bytes", "peer"), [row["bytes"] / full_bytes for row in rows]
    cost, apply = ratio(("diff", "encode"), "train", regular), ratio("apply", "copy", regular)
    receive = ratio(("decode", "apply"), ("peer_load", "copy"), regular)
    checked_cost, checked_apply = ratio(("diff", "encode"), "train", checked), ratio("apply", "copy", checked)
    table = markdown_table(["figure", "median per step", "worst step", "goal"], [
        ["entries changed per step (update density)", f"{median('density'):.2%}",
         f"{max(row['density'] for row in rows):.2%}", "1-3%"],
        ["patch bytes (.smask delta)", f"{median('bytes'):,.0f}", f"{max(row['bytes'] for row in rows):,.0f}", ""],
        ["peer patch bytes (int32 indices + bf16 values, safetensors)", f"{median('peer'):,.0f}",
         f"{max(row['peer'] for row in rows):,.0f}", ""],
        ["patch / peer patch", f"{size[0]:.3f}x", f"{size[1]:.3f}x", "<= 0.5x"],
        ["patch / full state dict (safetensors, " + f"{full_bytes:,} bytes)", f"{statistics.median(full):.4f}x",
         f"{max(full):.4f}x", "<= 0.05x"],
        ["training step (ms)", f"{median('train') * 1e3:.1f}", "", ""],
        ["diff() + to_bytes() (ms)", f"{(median('diff') + median('encode')) * 1e3:.2f}", "", ""],
        ["(diff() + to_bytes()) / training step", f"{cost[0]:.3f}x", f"{cost[1]:.3f}x", "<= 0.05x"],
        ["peer patch save (ms)", f"{median('peer_time') * 1e3:.2f}", "", ""],
        ["Patch.from_bytes (ms)", f"{median('decode') * 1e3:.2f}", "", ""],
        ["apply_to (ms)", f"{median('apply') * 1e3:.3f}", "", ""],
        ["plain in-place copy of the changed values (ms)", f"{median('copy') * 1e3:.3f}", "", ""],
        [f"apply_to / plain copy (best of {args.repeats} each)", f"{apply[0]:.2f}x", f"{apply[1]:.2f}x", "<= 2x"],
        ["peer patch load (safetensors.torch.load, ms)", f"{median('peer_load') * 1e3:.3f}", "", ""],
        ["receiving whole: (Patch.from_bytes + apply_to) / (peer patch load + plain copy)", f"{receive[0]:.2f}x",
         f"{receive[1]:.2f}x", ""],
        [f"steps with the full check ({len(checked)}, every {args.check_every}: the weights hashed on both sides): "
         "(diff() + to_bytes()) / training step; apply_to / plain copy",
         f"{checked_cost[0]:.3f}x; {checked_apply[0]:.1f}x", "", ""],
        ["entries differing, receiver vs trainer, after any step", "", str(worst), "0"],
    ])
    return (f"{len(rows)} steps (after {args.warmup} warm-up steps; time ratios over the steps without the full "
            f"check, which has a row of its own) of a tiny Llama ({numel:,} bf16 parameters: "
            f"hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}), AdamW lr {args.lr:g}, batch "
            f"{args.batch}x{args.seq}, torch threads {args.threads}. The receiver restarted after step "
            f"{args.restart} (other random weights, resumed from a snapshot: {'yes' if restarted else 'NO'}) and "
            f"refused the patch of step {args.refuse + 1} offered before step {args.refuse}'s with nothing "
            f"written: {'yes' if refused else 'NO'}. Load average {' '.join(load_before)} before, "
            f"{' '.join(load_after)} after ({os.cpu_count()} cores).\n\n{table}\n{NOTES}")


if __name__ == "__main__":
    main()
