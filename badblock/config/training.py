"""Sections of the training stage: data, augmentation, model, loss, optimiser, trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class DataConfig:
    store: str = "store"  # training store folder (relative paths: under run.output)
    target_store: str | None = None  # paired task: the store holding the targets
    # inpaint: dead blocks; denoise: a global keep rate (keep_rate); paired: input and target
    # from two stores (target_store) or a store of kind paired.
    task: Literal["inpaint", "denoise", "paired"] = "inpaint"
    context: int = 2  # k: the input holds 2k+1 neighbouring planes
    mask_channel: bool = False  # add the mask as an extra input channel
    # With mask_channel: pass the mask of every one of the 2k+1 planes (how much each
    # neighbouring plane lost), not only the centre plane's.
    mask_stack: bool = False
    # Dead-block positions drawn per sample for the inpaint task ("T:A"); empty = all blocks.
    train_blocks: list[str] = field(default_factory=list)
    # How many of them are dead in one sample, (min, max); each one after the first is a
    # neighbour of one already drawn (around the ring or axially) with probability `adjacent`.
    blocks_per_sample: list[int] = field(default_factory=lambda: [1, 1])
    adjacent: float = 0.7  # chance that each further dead block neighbours one already drawn
    keep_rate: float = 0.25  # denoise task: share of counts kept in the low-count input
    target: Literal["measured", "truth"] = "measured"  # simulated stores can train on truth
    # Scale of the network input per sample: the damaged stack's max or mean (or none).
    normalise: Literal["max", "mean", "none"] = "max"
    epoch_size: int = 2048  # samples per epoch (all ranks together)
    batch_size: int = 16  # per process (per GPU)
    workers: int = 0  # DataLoader worker processes (0 = load in the training process)
    views_to: int = 0  # pad the view axis to this many views; 0 = next multiple of 2**depth
    # Where binomial thinning runs: device (= auto) thins whole batches with torch.binomial on
    # the training device; loader thins each sample with numpy in the DataLoader (workers).
    # bench/loader.py measures both: batched torch won on this project's CPU machine too.
    thin_on: Literal["auto", "device", "loader"] = "auto"
    # Folder of precomputed damage draws with their model-based fills
    # (badblock.data.fills.make_fills; relative paths: under run.output). Validation scores
    # its validation draws; with model.fill_prior training takes its damage from its draws too
    # instead of thinning on the fly (a fill is one OSEM of a whole damaged scan: too slow to
    # make per sample). Empty: none.
    fills: str = ""


@dataclass
class FillsConfig:
    # badblock fills: the damage draws with their model-based fills (baselines.model_fill)
    # that model.fill_prior trains on, written to data.fills. Attenuation comes from each
    # scan's <id>.mu.npy beside its source file (badblock simulate writes them).
    draws: int = 4  # damage draws per training scan (a validation scan: one, scanner.dead_blocks)
    iterations: int = 2  # TOF OSEM iterations of each fill
    subsets: int = 6  # ... and its ordered subsets of views
    # the fast projector's model (physics.fastproj): mean ray per view and mean tilt per plane
    subviews: Literal["mean", "all"] = "mean"
    tilts: Literal["plane", "ring"] = "plane"
    step_mm: float = 0.0  # sample spacing along each ray; 0: the projector's own (the bin size)


@dataclass
class AugmentConfig:
    enabled: bool = True  # false: no augmentation at all
    view_roll: float = 0.5  # probability of a view roll with radial flip (object rotation)
    radial_flip: float = 0.5  # probability of a mirror
    dose: float = 0.0  # probability of extra count-level thinning (lower dose)
    dose_min: float = 0.5  # smallest keep rate of that thinning, drawn log-uniformly in [min, 1]
    augmentor: bool = False  # image-domain data: Augmentor pipeline (zoom, flips, rotation)
    augmentor_zoom: tuple[float, float] = (1.0, 1.2)  # zoom factor range (size kept)
    augmentor_zoom_p: float = 0.5  # Augmentor rounds probabilities to 0.1
    augmentor_flip_lr: float = 0.5  # probability of a left-right flip
    augmentor_flip_tb: float = 0.0  # probability of a top-bottom flip
    augmentor_rotate: float = 10.0  # max degrees either way (rotate_without_crop)
    augmentor_rotate_p: float = 0.5  # probability of a rotation


@dataclass
class ModelConfig:
    in_planes: int = 5  # derived from data.context at build time; kept for checkpoints
    width: int = 64  # channels of the first level, doubling per level
    depth: int = 2  # number of downsamplings (the original network: 2 stride-2 convs, 3 levels)
    bottom_convs: int = 5  # convolutions at the lowest level
    kernel_size: int = 3  # odd
    # Normalisation layer after the convolutions of the down blocks and the bottom.
    norm: Literal["batch", "instance", "none"] = "batch"
    upsample: Literal[1, 2, 3] = 1  # 1 transposed conv, 2 nearest, 3 area (the original's modes)
    refine_blocks: int = 0  # residual refinement blocks at the end
    softplus_beta: float = 5.0  # of the final softplus that keeps counts >= 0
    out_channels: int = 1  # output channels of the last convolution
    up_norm: bool = False  # norms in the up blocks (the original's forward has none there)
    # Sinogram repair (inpaint task): work per real LOR, as the classical baselines do -- the
    # count planes divided by each plane's real LORs per bin (0 in gap-crystal bins), the centre
    # plane's sensitivity pattern as one more channel, the output multiplied back.
    per_lor: bool = False
    # Sigmas (planes, views, bins) of the normalised-convolution prior channel: the estimate of
    # the normconv baseline, computed by the same function; empty = no prior channel. Needs
    # per_lor and data.mask_stack.
    prior_widths: list[float] = field(default_factory=list)
    # The network corrects the prior instead of replacing it, starting from it exactly.
    prior_residual: bool = False
    # Weight of the network's correction on fully dead bins (f = 1) at repair: there the output
    # is prior + dead_weight x (network - prior); 1 = the network's own, 0 = the prior itself
    # (the model-based fill with fill_prior). Training and the checkpoint choice see the
    # network's own output; the checkpoint records the weight. Needs prior_residual and
    # data.mask_channel.
    dead_weight: float = 1.0
    # The model-based fill (baselines.model_fill: TOF OSEM with the gaps modelled, projected)
    # of the centre plane as one more input channel and, with prior_residual, the estimate the
    # network corrects instead of the normconv prior. Needs per_lor and data.fills.
    fill_prior: bool = False
    # ln of the input's normaliser (the stack's mean counts per LOR with data.normalise mean) as
    # one more, constant, input channel: the count level the normalisation takes away, which
    # sets how much of the input is Poisson noise.
    count_channel: bool = False


@dataclass
class LossConfig:
    # Weighted sum of terms: l1, mse, poisson, ssim, msssim.
    terms: dict = field(default_factory=lambda: {"mse": 1.0})
    damaged_weight: float = 1.0  # extra weight of damaged bins (1 = none)
    # Pixel-wise terms over the damaged bins (f > 0) only: the bins repair takes from the network.
    damaged_only: bool = False
    # What the pixel terms compare on the damaged bins: the complete plane (prediction against
    # the target), or the lost counts scaled to a whole bin, (target - surviving input) / f,
    # which hold none of the surviving counts' noise and have expectation the truth (inpaint
    # task, pixel terms over the damaged bins only: elsewhere nothing was lost).
    target: Literal["complete", "lost"] = "complete"
    # With target "lost": bin errors weighted by f^lost_power (0 = alike, as the damaged-bin
    # NRMSE weighs them; 1 = inverse variance of the scaled lost counts; 2 = lost-count error).
    lost_power: float = 0.0
    ssim_win: int = 3  # odd Gaussian window (sigma 1.5) of the SSIM and MS-SSIM terms


@dataclass
class OptimConfig:
    lr: float = 1.0e-3  # Adam's learning rate
    betas: tuple[float, float] = (0.5, 0.999)  # Adam's betas (the 2019 UNet's)
    weight_decay: float = 0.0  # Adam's L2 penalty
    schedule: Literal["none", "step", "warm_restart", "cosine"] = "step"  # learning-rate schedule
    step_size: int = 10  # StepLR epochs
    gamma: float = 0.5  # StepLR decay
    warm_reset_length: int = 10  # warm_restart: epochs between resets of Adam and the decay
    warm_reset_increment: int = 0  # warm_restart: growth of that period after each reset
    cosine_t0: int = 10  # cosine: epochs of the first cycle
    cosine_mult: int = 2  # cosine: growth factor of each next cycle
    lr_min: float = 1.0e-5  # cosine: the lowest learning rate


@dataclass
class TrainConfig:
    run: str = "train"  # run folder, relative to run.output
    epochs: int = 20  # epochs of data.epoch_size samples
    val_batches: int = 8  # validation samples: this many batches, drawn once with their own seed
    # bf16 autocast; auto: on CUDA and on CPUs with bf16 units (AMX, AVX512-BF16), where it is
    # fast (elsewhere emulated bf16 is ~100x slower than float32)
    amp: Literal["auto", "bf16", "off"] = "auto"
    # channels-last tensors; auto: on CUDA and on CPUs with bf16 units. On other CPUs it is
    # faster for some networks and plane sizes and slower for others (badblock.train.setup)
    channels_last: Literal["auto", True, False] = "auto"
    compile: bool = False  # torch.compile the model
    grad_clip: float = 0.0  # clip the gradient norm to this; 0 = off
    visdom: bool = False  # live plots on a visdom server (none running: one warning)
    visdom_server: str = "http://localhost"  # address of that server
    visdom_port: int = 8097  # its port
    tensorboard: bool = True  # event files under the run folder's tensorboard/
    requeue: bool = True  # under Slurm: scontrol requeue on SIGUSR2/SIGTERM
    max_steps: int = 0  # stop after this many optimiser steps (0 = no limit)
    # Decay per optimiser step of an exponential moving average of the weights, which is then
    # validated and checkpointed (what repair uses); 0 = off. The decay used at step s is
    # min(ema, (1 + s) / (10 + s)) (the usual warm-up): short runs average over fewer steps.
    ema: float = 0.0
    collapse_warmup: int = 2  # epochs before "network worse than the baseline" is flagged
