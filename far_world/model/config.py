"""The FAR transformer's configuration: one typed dataclass, carried inside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


PREDICTIONS = ("velocity", "clean")


@dataclass
class FARConfig:
    # Latent geometry, fixed by the autoencoder: each frame is (latent_channels, latent_size, latent_size).
    latent_channels: int = 16
    latent_size: int = 8
    # Short-term frames are patchified with patch_size (1 -> 64 tokens on an 8x8 latent);
    # long-term frames with long_patch_size (4 -> 4 tokens), through their own projections.
    patch_size: int = 1
    long_patch_size: int = 4

    depth: int = 12
    width: int = 768
    heads: int = 12
    mlp_ratio: float = 4.0

    # Classes per action component: Discrete(n) is (n,), MultiDiscrete(nvec) is nvec.
    # Each component's embedding table has one extra row, the null action used for guidance.
    action_nvec: tuple[int, ...] = (6,)
    action_dropout: float = 0.1
    # Also add a projection of each frame's conditioning vector (action, flow time, kind) to its
    # input tokens. adaLN alone modulates every token of a frame alike, and a small model trained
    # briefly learnt to ignore the action that way (docs/decisions.md).
    token_conditioning: bool = False

    # Long short-term context: the last `short_window` frames (the generated one included)
    # at full tokens, older ones compressed; inference keeps at most `max_long_frames` of them.
    short_window: int = 16
    max_long_frames: int = 256
    # Flow times of training frames are logit-normal: sigmoid(N(flow_time_mean, 1)). A positive
    # mean trains more at high noise, where the frame is still undecided and the action matters most.
    flow_time_mean: float = 0.0
    # What the network outputs: "velocity" (eps - x0, trained with the velocity MSE) or "clean"
    # (the clean frame x0, trained with an MSE on x0 weighted 0.9 (1 - s) + 0.1, Dreamer 4's
    # choice: a small model need not pull the noise back out of its input, and the low-noise
    # steps that carry detail weigh more). Sampling turns either into a velocity.
    prediction: str = "velocity"
    # Detail-weighted frame loss (0 = a plain mean): each latent position of a denoised frame's
    # error weighs 1 + detail_loss_weight * its contrast with its neighbours, relative to the
    # frame's mean contrast, then scaled to a mean of 1 (far_world/model/edges.py: detail_weights),
    # so that small things unlike their surroundings, such as doom's medkits, count for more than
    # their area.
    detail_loss_weight: float = 0.0
    # Stochastic clean context: a short-window frame is given clean (timestep -1) with this probability.
    clean_context_prob: float = 0.1
    # Context-noise augmentation (0 = off): clean context frames get noise up to this flow time.
    context_noise: float = 0.0
    # Warm-start paths (1 = off): a frame after another is trained on the straight path from
    # (1 - S) * the frame before + S * noise, at flow time S, to itself, the path that sampling
    # with start_time S walks; sampling then starts there by default. Sampling from such an
    # anchor with a model trained only from noise holds the view still; trained, the view moves
    # but the sharpness of the still view is gone (docs/RESULTS.md), so it stays off.
    warm_start_time: float = 1.0
    # Change prediction (0 = off): a frame after another is generated as its change from the frame
    # before, divided by this scale (about the changes' std in the data, so that the flow sees
    # unit variance), and sampling adds the change to the last context frame. On Minecraft its
    # frames blurred as much and gathered grain in free play (docs/RESULTS.md), so it stays off.
    change_scale: float = 0.0
    # Tell the model which context frames it generated itself (their own marker, GENERATED)
    # from the frames it was given (CONTEXT). Trained on its own rollouts, a model learns that
    # context frames can be wrong and stops carrying their detail over, even from the real frames
    # a world starts from; told which are which, it need not. On Minecraft it won the first frame
    # back, and free play held only with short rollouts (rollout_frames=2; docs/RESULTS.md, "The
    # first frame, by action"). Off: every context frame is CONTEXT.
    mark_generated: bool = False

    rope_theta: float = 10000.0
    # FlexRoPE test-time temporal decay: logit bias -slope * (query frame - key frame); 0 = plain RoPE.
    flex_rope_slope: float = 0.0

    # Reward and termination heads read the transformer's features of each frame.
    reward_loss_weight: float = 0.1
    termination_loss_weight: float = 0.1
    # Episode ends are rare (one in hundreds of frames): their BCE term is weighted this much more.
    termination_pos_weight: float = 1.0

    # Game variables the world carries from frame to frame beside its frames (doom's health). A
    # drawn frame need not show such a value (doom's health digits stop counting down in free
    # play), so the world keeps it: a head reads a frame's features with the values before it and
    # predicts the values after, and the termination head reads those. Fitted on a trained world
    # by train/tune_carried.py; () = none.
    carried: tuple[str, ...] = ()
    # Per carried variable: the scale the heads read it at (value / scale), and the value a world
    # starts from when its context brings none (the median first value of the training episodes).
    carried_scale: tuple[float, ...] = ()
    carried_start: tuple[float, ...] = ()

    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.action_nvec = tuple(int(n) for n in self.action_nvec)
        self.carried = tuple(str(n) for n in self.carried)
        self.carried_scale = tuple(float(v) for v in self.carried_scale)
        self.carried_start = tuple(float(v) for v in self.carried_start)
        if not len(self.carried) == len(self.carried_scale) == len(self.carried_start):
            raise ValueError("carried, carried_scale and carried_start need one entry per carried variable")
        if any(v <= 0 for v in self.carried_scale):
            raise ValueError(f"carried_scale must be positive, got {self.carried_scale}")
        if self.width % self.heads or self.head_dim % 4:
            raise ValueError(f"width {self.width} / heads {self.heads} must give a head dim divisible by 4")
        for p in (self.patch_size, self.long_patch_size):
            if self.latent_size % p:
                raise ValueError(f"patch size {p} does not divide latent_size {self.latent_size}")
        # The short window holds the frame being generated and at least one context frame.
        if self.short_window < 2 or self.max_long_frames < 1:
            raise ValueError("short_window must be >= 2 and max_long_frames >= 1")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.detail_loss_weight < 0:
            raise ValueError(f"detail_loss_weight must be >= 0 (0 = off), got {self.detail_loss_weight!r}")
        if not 0.0 < self.warm_start_time <= 1.0:
            raise ValueError(f"warm_start_time must be in (0, 1], got {self.warm_start_time!r}")
        if self.change_scale < 0:
            raise ValueError(f"change_scale must be >= 0 (0 = off), got {self.change_scale!r}")
        if self.change_scale > 0 and self.warm_start_time < 1.0:
            raise ValueError("change prediction and warm-start paths do not combine: set change_scale or warm_start_time")
        if not self.action_nvec or min(self.action_nvec) < 1:
            raise ValueError(f"action_nvec must list positive class counts, got {self.action_nvec}")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def short_tokens(self) -> int:
        """Tokens of a short-term frame."""
        return (self.latent_size // self.patch_size) ** 2

    @property
    def long_tokens(self) -> int:
        """Tokens of a long-term frame."""
        return (self.latent_size // self.long_patch_size) ** 2

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("action_nvec", "carried", "carried_scale", "carried_start"):
            d[name] = list(getattr(self, name))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FARConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown FARConfig fields {sorted(unknown)}")
        return cls(**d)  # __post_init__ turns the lists back into tuples
