"""Prompt-to-prompt attention injection (Hertz et al. 2022, word swap) through diffusers' attention processors.

Two branches are sampled as one batch: the source branch (source prompt) and the edited branch
(target prompt), B images each, rows ordered [source_0..source_{B-1}, edited_0..edited_{B-1}]
inside each classifier-free-guidance half. During the first `cross_fraction` of the sampler's steps
the edited branch's cross-attention maps are replaced by the source branch's (each target token
attends where its aligned source token did); during the first `self_fraction` its self-attention
maps are replaced too, for maps of at most 16x16 queries as in the paper's code. Only the
conditional half is edited, as in the paper. Nothing is pasted: what the edited image keeps of the
input is what the shared noise and the injected maps carry.

`token_alignment` aligns the two prompts' tokens: the common prefix and suffix map to each other
(so a one-word swap maps every position to itself, the paper's word swap); tokens in between map
to their own position when both prompts have the same length and to nothing (keeping the target's
own attention) otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F

#: Self-attention maps with more queries than this keep their own values (the paper's 16 ** 2).
SELF_ATTENTION_MAX_QUERIES = 16**2


def common_ends(source: Sequence[int], target: Sequence[int]) -> tuple[int, int]:
    """Lengths of the common prefix and the (non-overlapping) common suffix of two token sequences."""
    prefix = 0
    while prefix < min(len(source), len(target)) and source[prefix] == target[prefix]:
        prefix += 1
    suffix = 0
    while (suffix < min(len(source), len(target)) - prefix
           and source[len(source) - 1 - suffix] == target[len(target) - 1 - suffix]):
        suffix += 1
    return prefix, suffix


def token_alignment(source: Sequence[int], target: Sequence[int], length: int) -> torch.Tensor:
    """For each of the `length` target token positions, the source position it copies attention from (-1: none).

    `source` and `target` are the prompts' token ids without padding (start and end tokens included);
    positions after the prompts (padding) follow the end token's offset.
    """
    prefix, suffix = common_ends(source, target)
    offset = len(source) - len(target)
    mapping = torch.full((length,), -1, dtype=torch.long)
    for position in range(length):
        if position < prefix:
            mapping[position] = position
        elif position >= len(target) - suffix:
            mapping[position] = min(max(position + offset, 0), length - 1)
        elif offset == 0:
            mapping[position] = position
    return mapping


def changed_tokens(source: Sequence[int], target: Sequence[int], length: int) -> torch.Tensor:
    """[2, length] indicators of the tokens between the prompts' common prefix and suffix (the swapped words):
    row 0 over the source's positions, row 1 over the target's. Identical prompts change nothing."""
    prefix, suffix = common_ends(source, target)
    words = torch.zeros(2, length)
    words[0, prefix: max(len(source) - suffix, prefix)] = 1
    words[1, prefix: max(len(target) - suffix, prefix)] = 1
    return words[:, :length]


class AttentionInjection:
    """The controller the processors consult: which maps to replace, at which timesteps, for which rows."""

    def __init__(self, alignments: torch.Tensor, guided: bool, cross_timesteps: set[float], self_timesteps: set[float],
                 blend_words: torch.Tensor | None = None):
        self.alignments = alignments  # [B, tokens]: source position per target position, -1 = keep own
        self.blend_words = blend_words  # [2B, tokens]: the changed words of each source, then each target row
        self.word_maps: dict[int, torch.Tensor] = {}  # queries -> [2B, queries], summed attention to those words
        self.guided = guided
        self.cross_timesteps = {float(t) for t in cross_timesteps}
        self.self_timesteps = {float(t) for t in self_timesteps}
        self.timestep: float | None = None
        self.injected = 0  # maps replaced so far (tests and reports)

    @property
    def images(self) -> int:
        return self.alignments.shape[0]

    def edit(self, probabilities: torch.Tensor, heads: int, cross: bool) -> torch.Tensor:
        """Attention probabilities [rows * heads, queries, keys] with the edited branch's maps replaced."""
        first = probabilities.shape[0] // heads // 2 if self.guided else 0  # the conditional half
        if cross and self.blend_words is not None:
            self._record(probabilities, heads, first)
        active = self.cross_timesteps if cross else self.self_timesteps
        if self.timestep not in active or (not cross and probabilities.shape[1] > SELF_ATTENTION_MAX_QUERIES):
            return probabilities
        rows = probabilities.shape[0] // heads
        maps = probabilities.view(rows, heads, *probabilities.shape[1:]).clone()
        count = self.images
        source, edited = maps[first: first + count], maps[first + count: first + 2 * count]
        if cross:
            keys = maps.shape[-1]
            alignment = self.alignments[:, :keys].to(maps.device)
            gathered = torch.gather(source, -1, alignment.clamp(min=0)[:, None, None, :].expand_as(source))
            keep = (alignment < 0)[:, None, None, :]
            maps[first + count: first + 2 * count] = torch.where(keep, edited, gathered)
        else:
            maps[first + count: first + 2 * count] = source
        self.injected += 1
        return maps.view_as(probabilities)

    def _record(self, probabilities: torch.Tensor, heads: int, first: int) -> None:
        rows, queries, keys = probabilities.shape[0] // heads, probabilities.shape[1], probabilities.shape[2]
        branches = probabilities.view(rows, heads, queries, keys)[first: first + 2 * self.images].float().mean(1)
        weights = self.blend_words[:, :keys].to(branches.device, branches.dtype)
        attention = torch.einsum("bqk,bk->bq", branches, weights).detach()
        self.word_maps[queries] = self.word_maps[queries] + attention if queries in self.word_maps else attention

    def blend_mask(self, latent_size: tuple[int, int], threshold: float) -> torch.Tensor:
        """[B, 1, h, w] in {0, 1}: where either branch attends to its changed words (local blending's edit region)."""
        if not self.word_maps:
            raise RuntimeError("no cross-attention maps were recorded: local blending needs a cross-attention UNet")
        queries = max(self.word_maps)
        height, width = latent_size
        factor = round((height * width / queries) ** 0.5)
        maps = self.word_maps[queries].view(-1, 1, height // factor, width // factor)
        maps = F.max_pool2d(maps, 3, stride=1, padding=1)
        maps = F.interpolate(maps, size=latent_size, mode="nearest")
        maps = maps / maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        region = maps > threshold
        return (region[: self.images] | region[self.images:]).float()


class InjectingProcessor:
    """diffusers' plain attention computation with the probabilities passed through the controller."""

    def __init__(self, controller: AttentionInjection, cross: bool) -> None:
        self.controller, self.cross = controller, cross

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.ndim == 4
        if spatial:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], context.shape[0])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            context = hidden_states
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.head_to_batch_dim(attn.to_k(context)), attn.head_to_batch_dim(attn.to_v(context))
        probabilities = attn.get_attention_scores(attn.head_to_batch_dim(query), key, attention_mask)
        probabilities = self.controller.edit(probabilities, attn.heads, self.cross)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probabilities, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if spatial:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def injected(unet, controller: AttentionInjection) -> Iterator[AttentionInjection]:
    """Install the injecting processors on every attention layer of `unet` (cross-attention is `attn2`)
    and record each call's timestep for the controller; the original processors come back afterwards."""
    original = unet.attn_processors
    unet.set_attn_processor({name: InjectingProcessor(controller, cross=name.endswith("attn2.processor"))
                             for name in original})

    def record_timestep(module, args, kwargs):
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        controller.timestep = float(timestep.flatten()[0]) if isinstance(timestep, torch.Tensor) else float(timestep)

    hook = unet.register_forward_pre_hook(record_timestep, with_kwargs=True)
    try:
        yield controller
    finally:
        hook.remove()
        unet.set_attn_processor(original)
