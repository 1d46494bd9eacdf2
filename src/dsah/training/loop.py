"""The alternating optimization (METHOD.md §4): one loop for every deep method (dsah.methods).

Each outer iteration samples m database points (never from the validation slice), trains the network
on them for E epochs by back-propagation, then lets the method update the database codes B (asymmetric
methods; the others keep none and the database is encoded with the network at the end). State is
checkpointed atomically after every outer iteration; a rerun with the same configuration resumes from
it and, on CPU with a fixed seed, ends with exactly the codes an uninterrupted run would have.

Under torchrun the same loop runs data-parallel (dsah.training.distributed): each process trains on its share of
every batch, and all of them update the codes from the gathered outputs; only rank 0 validates, logs and
checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from dsah.device import select_device
from dsah.training.distributed import World, current_world
from dsah.training.encode import encode, to_float
from dsah.errors import ConfigError
from dsah.methods import build_network, deep_method
from dsah.methods.base import Batch, DeepMethod, Resources
from dsah.nets.backbones import IMAGENET_SIZE, is_pretrained, trunk_and_head
from dsah.nets.spec import NetworkSpec
from dsah.evaluation.metrics import validation_scores
from dsah.similarity import LabelPatterns
from dsah.settings import TrainConfig
from dsah.training.augment import augment
from dsah.training.checkpoint import fingerprint, save_checkpoint, why_not_resume
from dsah.training.placement import no_host_sync, on_device, read_block


@dataclass
class TrainData:
    """Database images and labels, indices into them, and the LAE's outputs (DSAH only)."""

    images: Any                 # (n, 3, H, W) uint8: every database image; a tensor, or rows of the
                                # memory-mapped store (dsah.data.loading.ImageRows) read on demand
    labels: Tensor              # (n, C) float 0/1
    pool: Tensor                # (p,) int64: database rows that may be sampled for training
    validation: Tensor          # (v,) int64: the validation slice (held out of sampling)
    label_codes: Tensor | None = None  # (n, c) H_Y from the LAE
    decoder: nn.Module | None = None   # the LAE decoder, frozen
    selection: str = "mAP"             # the protocol's validation metric: "mAP" or "mAP@K" (protocols.SELECTION)


@dataclass
class TrainResult:
    model: nn.Module            # ImgNet, or TwinNet (DAPH)
    codes: Tensor               # (n, c) +-1 database codes B, in database row order
    config: TrainConfig         # the configuration it trained with (samples bounded by the data: within_data)
    history: list[dict[str, float]]
    metrics: dict[str, Any]


def learning_rate(step: int, total: int, config: TrainConfig) -> float:
    warm = max(1, int(config.warmup * total))
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def validation_map(model: nn.Module, data: TrainData, codes: Tensor, rows: Tensor, device: torch.device,
                   images: Any = None) -> dict[str, float]:
    """The validation slice (as queries) against the database rows `rows` with their codes: val_mAP, and
    the protocol's own metric where it is another (dsah.evaluation.metrics.validation_scores)."""
    images = data.images if images is None else images
    queries = encode(model, images[data.validation], device).cpu().numpy()
    return validation_scores(queries, codes.cpu().numpy(), data.labels[data.validation].cpu().numpy(),
                             data.labels.cpu()[rows.cpu()].numpy(), data.selection)


# Methods without learned codes must encode the database to be validated: between iterations a fixed
# sample of this many pool images stands in for it (the last validation uses the whole database).
INTERIM_REFERENCE = 5000


def within_data(config: TrainConfig, trainable: int, log: Callable[[str], None] = print) -> TrainConfig:
    """train_imgnet.samples is an upper bound: a collection with fewer trainable database images (outside
    the validation slice) samples all of them each outer iteration, and says so."""
    if trainable >= config.samples:
        return config
    if current_world().is_main:
        log(f"train_imgnet.samples: {config.samples} > {trainable} trainable database images: sampling all "
            f"{trainable} each outer iteration")
    return dataclasses.replace(config, samples=trainable)


@dataclass
class Run:
    """One training run: its parts (built by set_up from the configuration) and its progress (saved in
    every checkpoint, restored by resume)."""

    data: TrainData
    config: TrainConfig
    bits: int
    hashing: DeepMethod
    world: World
    device: torch.device
    images: Any                  # the database images: on the GPU when they fit, else rows of the store
    labels: Tensor               # data.labels on the device
    model: nn.Module
    trained: nn.Module           # the model, or its data-parallel wrapper
    optimizer: torch.optim.Optimizer
    sampler: torch.Generator     # which points each outer iteration samples: the same in every process
    augmenter: torch.Generator
    B: Tensor | None             # the learned database codes (None for methods that keep none)
    log: Callable[[str], None]
    iteration: int = 0           # outer iterations done
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    resyncs: int = 0
    codes: Tensor | None = None  # the final database codes, once final_codes has decided them

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.config.samples / self.config.batch)

    @property
    def total_steps(self) -> int:
        return self.config.outer_iters * self.config.epochs * self.steps_per_epoch


def train(data: TrainData, bits: int, config: TrainConfig, method: str, seed: int, settings: Any,
          checkpoint: Path | None = None, data_signature: str = "", code: dict[str, str] | None = None,
          progress: bool = True, log: Callable[[str], None] = print, sync_check: bool = False,
          resident_budget: float = 0.25, on_iteration: Callable[[dict[str, float]], None] | None = None
          ) -> TrainResult:
    """Run (or resume) the alternating optimization and return the network and database codes.
    settings: the method's settings (dsah.methods.settings_type(method)). code: digests of the files
    that run this training (dsah.provenance.code_digests): a checkpoint written by other code is not
    resumed. In a torchrun process group every process calls this; rank 0's result is the one to write
    (on the others, codes are B, or empty for methods that keep none). sync_check: on a GPU, any operation
    of the training steps that makes the host wait for the device raises (benchmarks prove there is none).
    resident_budget: the share of free GPU memory the database images may take to live there (0: every
    outer iteration reads its block from the store). on_iteration: called on rank 0 with each outer
    iteration's row of the history (loss terms, validation scores, seconds), a resumed checkpoint's rows
    first, so a logger that starts empty (DVCLive) replays them."""
    code = code or {}
    config = within_data(config, len(data.pool), log)
    run = set_up(data, bits, config, method, seed, settings, log, resident_budget)
    state_id = fingerprint(config, bits, method, settings, seed, data_signature, run.world.size)
    resume(run, checkpoint, state_id, code)
    resumed_seconds = run.train_seconds if run.iteration else 0.0  # the loop's seconds in earlier sittings
    main = run.world.is_main  # validation, progress, checkpoints and logging are rank 0's
    for row in run.history if main and on_iteration else ():
        on_iteration(row)
    # Methods without learned codes are validated between iterations against a fixed sample of the pool.
    interim = data.pool[torch.randperm(len(data.pool), generator=torch.Generator().manual_seed(seed))
                        [:INTERIM_REFERENCE]]
    bar = tqdm(range(run.iteration, config.outer_iters), desc=f"train {method} {bits} bits", unit="iter",
               disable=not (progress and main), initial=run.iteration, total=config.outer_iters)
    for _ in bar:
        row = outer_iteration(run, sync_check and run.device.type == "cuda")
        if main:
            row.update(validate(run, interim), train_seconds=run.train_seconds)
        run.history.append(row)
        if not main:
            continue
        bar.set_postfix(loss=f"{row['loss']:.3f}", **({"val_mAP": f"{row['val_mAP']:.3f}"} if "val_mAP" in row else {}))
        if on_iteration:  # first: a checkpoint's rows have all reached the logger
            on_iteration(row)
        if checkpoint is not None:
            save_checkpoint(checkpoint, snapshot(run, state_id, code))
    return TrainResult(run.model, final_codes(run), config, run.history,
                       {**summary(run, method), "resumed_seconds": resumed_seconds})


def set_up(data: TrainData, bits: int, config: TrainConfig, method: str, seed: int, settings: Any,
           log: Callable[[str], None], resident_budget: float) -> Run:
    """A fresh run: the device, the network and its optimizer, the method bound to the data, the
    initial codes and the random generators, all from the configuration and the seed."""
    hashing = deep_method(method, settings, bits)
    world = current_world()
    device = select_device(config.device, log if world.is_main else lambda _: None, key="train_imgnet.device")
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    smallest_batch = config.samples % config.batch or config.batch
    if smallest_batch < world.size:
        raise ConfigError(f"train_imgnet: a batch of {smallest_batch} (samples {config.samples}, batch "
                          f"{config.batch}) cannot be shared by {world.size} processes")
    images = on_device(data.images, device, resident_budget)  # the store stays on disk unless it fits on the GPU
    torch.manual_seed(seed)
    sampler = torch.Generator().manual_seed(seed)
    augmenter = torch.Generator().manual_seed(seed + 1)
    model = build_network(hashing, NetworkSpec.from_config(config), bits).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    statistics_seconds = fit_input_statistics(model, images, data.pool, seed, device)
    if world.distributed and device.type == "cuda":  # batch statistics of the whole batch, as in one process
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    trained = model if not world.distributed else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    # The trunk learns at trunk_lr of the head's rate (a pretrained trunk needs less); each group keeps its
    # share in the optimizer's state, so a resumed run goes on with the same rates.
    trunk, head = trunk_and_head(model)
    groups = [{"params": trunk, "lr_scale": config.trunk_lr}, {"params": head, "lr_scale": 1.0}]
    optimizer = (torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay) if config.optimizer == "adam"
                 else torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True,
                                      weight_decay=config.weight_decay))
    labels = data.labels.to(device)
    hashing.bind(Resources(
        labels=labels, patterns=LabelPatterns.from_labels(data.labels.cpu()).to(device),
        label_codes=data.label_codes.to(device=device, dtype=torch.float32) if data.label_codes is not None else None,
        decoder=data.decoder.to(device).eval().requires_grad_(False) if data.decoder is not None else None))
    try:
        B = hashing.initial_codes(len(data.labels), sampler)
    except ValueError as error:
        raise ConfigError(f"method {method}: {error}") from None
    return Run(data, config, bits, hashing, world, device, images, labels, model, trained, optimizer, sampler,
               augmenter, B, log, train_seconds=statistics_seconds)


STATISTICS_SAMPLE = 5000  # training images a backbone measures its input statistics on


def fit_input_statistics(model: nn.Module, images: Any, pool: Tensor, seed: int, device: torch.device) -> float:
    """Let backbones that learn from input statistics (a whitening first layer) measure them on a seeded
    sample of the training pool, never the validation slice; the same rows in every process. Returns
    the seconds it took: part of the training time."""
    layers = [m for m in model.modules() if hasattr(m, "fit_statistics")]
    if not layers:
        return 0.0
    tick = time.perf_counter()
    chosen = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:STATISTICS_SAMPLE]
    x = to_float(read_block(images, pool[chosen.sort().values], device))
    for layer in layers:
        layer.fit_statistics(x)
    return time.perf_counter() - tick


def resume(run: Run, checkpoint: Path | None, state_id: str, code: dict[str, str]) -> None:
    """Continue from the checkpoint when it is this run's: the same configuration, data and code."""
    world = run.world
    # Rank 0 reads the checkpoint (the other nodes may not see its file) and hands it to the others.
    saved = world.broadcast(torch.load(checkpoint, map_location="cpu", weights_only=True)
                            if world.is_main and checkpoint is not None and checkpoint.is_file() else None)
    if saved is None:
        return
    refusal = why_not_resume(saved, state_id, code)
    if refusal is not None:
        if world.is_main:
            run.log(f"checkpoint {checkpoint} {refusal}: starting afresh")
        return
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.B = saved["codes"].to(run.device) if saved["codes"] is not None else None
    run.sampler.set_state(saved["sampler"])
    run.augmenter.set_state(saved["augmenter"])
    torch.set_rng_state(saved["torch_rng"])
    run.iteration, run.history, run.train_seconds = saved["iteration"], saved["history"], saved["train_seconds"]
    run.resyncs = saved.get("resyncs", 0)
    run.hashing.load_state(saved.get("method", {}))
    if world.is_main:
        run.log(f"resuming from {checkpoint} after outer iteration {run.iteration}/{run.config.outer_iters}")


def snapshot(run: Run, state_id: str, code: dict[str, str]) -> dict[str, Any]:
    """What a checkpoint holds: everything resume needs to go on exactly as an uninterrupted run."""
    return {"fingerprint": state_id, "code": code, "iteration": run.iteration, "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(), "codes": None if run.B is None else run.B.cpu(),
            "sampler": run.sampler.get_state(), "augmenter": run.augmenter.get_state(),
            "torch_rng": torch.get_rng_state(), "history": run.history, "train_seconds": run.train_seconds,
            "resyncs": run.resyncs, "method": run.hashing.state()}


def outer_iteration(run: Run, sync_check: bool) -> dict[str, float]:
    """Sample m database points, train on them for E epochs, let the method update the codes; returns the
    iteration's loss terms (means over its samples)."""
    config, world, device = run.config, run.world, run.device
    tick = time.perf_counter()
    sampled = run.data.pool[torch.randperm(len(run.data.pool), generator=run.sampler)[:config.samples]]
    block = read_block(run.images, sampled, device)  # only the m sampled images are read
    omega = sampled.to(device, non_blocking=True)
    state = run.hashing.begin_iteration(run.B, omega)
    # The block's outputs of the last epoch; each process fills its own rows, the sum gathers them.
    U = torch.zeros(config.samples, run.bits * (2 if run.hashing.twin else 1), device=device)
    sums: dict[str, Tensor] = {}
    run.trained.train()
    with no_host_sync(sync_check):  # the steps never wait for the GPU
        for epoch in range(config.epochs):
            order = torch.randperm(config.samples, generator=run.sampler).to(device, non_blocking=True)
            for k, batch in enumerate(order.split(config.batch)):
                step = (run.iteration * config.epochs + epoch) * run.steps_per_epoch + k
                u, terms, mine = train_step(run, state, step, omega, block, batch)
                if epoch == config.epochs - 1:
                    U[mine] = u.detach().float()
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + value.detach().double() * len(mine)
    world.sum(U)
    run.B = run.hashing.update_codes(run.B, U, omega, state, world.share(len(run.labels)))  # this process's rows
    if run.B is not None:  # join the shares, check all processes agree (both no-ops in one process)
        run.B, resynced = world.same_codes(world.gather_rows(run.B), run.log)
        run.resyncs += resynced
    if device.type == "cuda":
        torch.cuda.synchronize()
    run.train_seconds += time.perf_counter() - tick
    run.iteration += 1
    totals = world.sum(torch.stack(list(sums.values()))).tolist() if sums else []
    share = {"similar_share": state.targets.similar_share} if hasattr(state, "targets") else {}
    row: dict[str, float] = {"iteration": run.iteration, **share,
                             **{name: total / (config.samples * config.epochs) for name, total in zip(sums, totals)}}
    row["loss"] = sum(v for k, v in row.items() if k not in ("iteration", "similar_share"))
    return row


def train_step(run: Run, state: Any, step: int, omega: Tensor, block: Tensor, batch: Tensor
               ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """One batch (positions in the block): this process's share of it forward and backward, and an
    optimizer step. Returns the share's outputs, its loss terms and its positions."""
    config, world = run.config, run.world
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate(step, run.total_steps, config) * group["lr_scale"]
    run.hashing.before_step(run.model, step, run.total_steps)
    first, last = world.share(len(batch))
    positions = batch[first:last]
    rows = omega[positions]
    x = block[positions]
    x = augment(x, run.augmenter, share=(first, last, len(batch))) / 255.0 if config.augment else to_float(x)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=run.device.type == "cuda"):
        u = run.trained(x)
    terms = run.hashing.terms(u, Batch(rows, positions, run.labels[rows], None if run.B is None else run.B[rows]),
                              state)
    # Terms are means over this process's rows; DDP averages gradients over processes, so weighting by
    # the share of the batch gives the gradient of the whole batch's mean.
    loss = sum(terms.values()) * (world.size * len(positions) / len(batch))
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    return u, terms, positions


def validate(run: Run, interim: Tensor) -> dict[str, float]:
    """The validation slice's scores when due: after the last outer iteration against the final codes,
    every eval_every iterations against the codes so far (B, or the network's codes of `interim`)."""
    config, reference = run.config, run.data.pool  # every database image outside the validation slice
    if run.iteration == config.outer_iters:
        return validation_map(run.model, run.data, final_codes(run)[reference], reference, run.device, run.images)
    if not config.eval_every or run.iteration % config.eval_every:
        return {}
    if run.B is not None:
        return validation_map(run.model, run.data, run.B[reference], reference, run.device, run.images)
    codes = encode(run.model, run.images[interim], run.device, side="database")
    return validation_map(run.model, run.data, codes, interim, run.device, run.images)


def final_codes(run: Run) -> Tensor:
    """The database codes training ends with, decided here only: the learned B, or (methods that keep
    none) the database network's codes of every database image, encoded in streamed batches once, on
    rank 0 (the other processes return none)."""
    if run.codes is None:
        if run.B is not None:
            run.codes = run.B
        elif run.world.is_main:
            run.codes = encode(run.model, run.images, run.device, side="database")
        else:
            run.codes = torch.empty(0, run.bits)
    return run.codes


def input_px(config: TrainConfig, image_side: int) -> int:
    """The side in px of what the backbone sees: input_size, else an ImageNet backbone's own (224), else
    the images' own (the from-scratch CIFAR networks take them as stored)."""
    if config.input_size:
        return config.input_size
    return image_side if config.backbone.startswith("cifar_") else IMAGENET_SIZE


def summary(run: Run, method: str) -> dict[str, Any]:
    """The run's metrics (train.json): the last validation, time, throughput and what was trained."""
    config, data, final = run.config, run.data, run.history[-1]
    seen = config.outer_iters * config.epochs * config.samples
    network = f"images ({config.backbone}" + (f" width {config.width}" if config.backbone.startswith("cifar_") else "")
    network += ", pretrained)" if is_pretrained(config.backbone, config.weights) else ", from scratch)"
    return {**{k: v for k, v in final.items() if k.startswith("val_")}, "val_metric": data.selection,
            "val_score": final.get(f"val_{data.selection}"), "train_seconds": run.train_seconds,
            "device": str(run.device), "processes": run.world.size, "code_resyncs": run.resyncs,
            "images_per_second": seen / max(run.train_seconds, 1e-9), "outer_iters": config.outer_iters,
            "samples": config.samples, "validation_size": len(data.validation),
            "bits": run.bits, "method": method, "features": network, "backbone": config.backbone,
            "input_px": input_px(config, data.images.shape[-1]),
            "train_size": min(len(data.pool), config.outer_iters * config.samples), "train_images_seen": seen,
            **run.hashing.summary()}
