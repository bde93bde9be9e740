"""Weights to and from diffusers' ``UNet2DModel`` in the DDPM configuration.

This covers the layout of google/ddpm-cifar10-32, -celebahq-256, -church-256, -bedroom-256 and
-cat-256: one attention head of full width, ``downsample_padding`` 0, sine-first sinusoidal
embedding with ``freq_shift`` 1 fed the zero-based timestep; a class-conditional network's
class embedding is diffusers' ``num_class_embeds`` (our classes plus the "no class" id, added
to the time embedding as diffusers does). Only tensors are moved; diffusers itself is not
needed for the conversion.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from ..errors import CheckpointError
from .unet import UNetConfig

# The keys of a UNet2DModel config.json that must hold these values for the mapping to be exact.
_FIXED = {
    "act_fn": "silu",
    "center_input_sample": False,
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "norm_eps": 1e-6,
    "time_embedding_type": "positional",
    "resnet_time_scale_shift": "default",
    "mid_block_scale_factor": 1,
    "add_attention": True,
    "class_embed_type": None,
}


def _level_has_attention(c: UNetConfig, level: int) -> bool:
    return c.image_size // 2**level in c.attn_resolutions


def diffusers_config_from_unet(c: UNetConfig) -> dict[str, Any]:
    """The ``config.json`` of the equivalent UNet2DModel."""
    levels = range(len(c.ch_mult))
    down = ["AttnDownBlock2D" if _level_has_attention(c, i) else "DownBlock2D" for i in levels]
    up = ["AttnUpBlock2D" if _level_has_attention(c, i) else "UpBlock2D" for i in reversed(levels)]
    return {
        "_class_name": "UNet2DModel",
        **_FIXED,
        "sample_size": c.image_size,
        "in_channels": c.in_channels,
        "out_channels": c.out_channels,
        "block_out_channels": [c.ch * m for m in c.ch_mult],
        "layers_per_block": c.num_res_blocks,
        "down_block_types": down,
        "up_block_types": up,
        "attention_head_dim": None,
        "norm_num_groups": c.num_groups,
        "dropout": c.dropout,
        "num_class_embeds": c.num_classes + 1 if c.num_classes else None,  # the last id is "no class"
    }


def unet_config_from_diffusers(cfg: dict[str, Any], where: str = "config.json") -> UNetConfig:
    """Our UNetConfig for a UNet2DModel config, or a CheckpointError naming the key that differs."""
    for key, value in _FIXED.items():
        if key in cfg and cfg[key] != value and not (key == "mid_block_scale_factor" and cfg[key] == 1.0):
            raise CheckpointError(f"{where}: {key} = {cfg[key]!r}; only the DDPM configuration ({value!r}) is supported")
    try:
        channels = list(cfg["block_out_channels"])
        ch = channels[0]
        if any(c % ch for c in channels):
            raise CheckpointError(f"{where}: block_out_channels {channels} are not multiples of the first")
        size = int(cfg["sample_size"])
        embeds = cfg.get("num_class_embeds")
        if embeds is not None and int(embeds) < 2:
            raise CheckpointError(f"{where}: num_class_embeds = {embeds!r}; a class-conditional network needs at least "
                                  "one class and the 'no class' id")
        heads = cfg.get("attention_head_dim")
        attn = tuple(size // 2**i for i, name in enumerate(cfg["down_block_types"]) if name.startswith("Attn"))
        config = UNetConfig(
            image_size=size, in_channels=int(cfg["in_channels"]), out_channels=int(cfg["out_channels"]), ch=ch,
            ch_mult=tuple(c // ch for c in channels), num_res_blocks=int(cfg["layers_per_block"]),
            attn_resolutions=attn, dropout=float(cfg.get("dropout", 0.0)), num_groups=int(cfg.get("norm_num_groups", 32)),
            num_classes=int(embeds) - 1 if embeds is not None else 0,
        )
    except KeyError as exc:
        raise CheckpointError(f"{where}: missing key {exc.args[0]!r}") from None
    attn_widths = {ch * m for i, m in enumerate(config.ch_mult) if _level_has_attention(config, i)}
    if heads is not None and any(heads != w for w in attn_widths | {channels[-1]}):
        raise CheckpointError(f"{where}: attention_head_dim {heads!r}; only single-head attention is supported")
    if diffusers_config_from_unet(config)["up_block_types"] != list(cfg["up_block_types"]):
        raise CheckpointError(f"{where}: up_block_types {cfg['up_block_types']} do not mirror the down blocks")
    return config


def _pairs(c: UNetConfig) -> Iterator[tuple[str, str, str]]:
    """(our prefix, diffusers prefix, kind) for every layer, kind in res/attn/plain."""
    yield "temb.0", "time_embedding.linear_1", "plain"
    yield "temb.2", "time_embedding.linear_2", "plain"
    if c.num_classes:
        yield "class_emb", "class_embedding", "embedding"
    yield "conv_in", "conv_in", "plain"
    idx, last = 0, len(c.ch_mult) - 1
    for level in range(len(c.ch_mult)):
        for j in range(c.num_res_blocks):
            yield f"down.{idx}.0", f"down_blocks.{level}.resnets.{j}", "res"
            if _level_has_attention(c, level):
                yield f"down.{idx}.1", f"down_blocks.{level}.attentions.{j}", "attn"
            idx += 1
        if level != last:
            yield f"down.{idx}.conv", f"down_blocks.{level}.downsamplers.0.conv", "plain"
            idx += 1
    yield "mid.0", "mid_block.resnets.0", "res"
    yield "mid.1", "mid_block.attentions.0", "attn"
    yield "mid.2", "mid_block.resnets.1", "res"
    idx = 0
    for k, level in enumerate(reversed(range(len(c.ch_mult)))):
        for j in range(c.num_res_blocks + 1):
            yield f"up.{idx}.0", f"up_blocks.{k}.resnets.{j}", "res"
            if _level_has_attention(c, level):
                yield f"up.{idx}.1", f"up_blocks.{k}.attentions.{j}", "attn"
            idx += 1
        if level != 0:
            yield f"up.{idx}.conv", f"up_blocks.{k}.upsamplers.0.conv", "plain"
            idx += 1
    yield "norm_out", "conv_norm_out", "plain"
    yield "conv_out", "conv_out", "plain"


_RES = (("norm1", "norm1"), ("conv1", "conv1"), ("temb_proj", "time_emb_proj"), ("norm2", "norm2"),
        ("conv2", "conv2"), ("skip", "conv_shortcut"))


def _take(sd: dict[str, torch.Tensor], key: str, where: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"{where}: missing tensor {key!r}")
    return sd.pop(key)


def state_dict_from_diffusers(sd: dict[str, torch.Tensor], c: UNetConfig, where: str = "weights") -> dict[str, torch.Tensor]:
    """Our UNet state dict from a UNet2DModel one; every tensor must be used exactly once."""
    theirs, ours = dict(sd), {}
    for mine, other, kind in _pairs(c):
        for p in ("weight", "bias"):
            if kind == "embedding":  # a table: weight only
                if p == "weight":
                    ours[f"{mine}.weight"] = _take(theirs, f"{other}.weight", where)
            elif kind == "plain":
                ours[f"{mine}.{p}"] = _take(theirs, f"{other}.{p}", where)
            elif kind == "res":
                for a, b in _RES:
                    if f"{other}.{b}.{p}" in theirs or b != "conv_shortcut":
                        ours[f"{mine}.{a}.{p}"] = _take(theirs, f"{other}.{b}.{p}", where)
            else:
                ours[f"{mine}.norm.{p}"] = _take(theirs, f"{other}.group_norm.{p}", where)
                qkv = torch.cat([_take(theirs, f"{other}.to_{n}.{p}", where) for n in "qkv"])  # (3C, C) or (3C,)
                ours[f"{mine}.qkv.{p}"] = qkv[..., None, None] if p == "weight" else qkv
                out = _take(theirs, f"{other}.to_out.0.{p}", where)
                ours[f"{mine}.proj_out.{p}"] = out[..., None, None] if p == "weight" else out
    if theirs:
        raise CheckpointError(f"{where}: {len(theirs)} tensor(s) have no place in the DDPM U-Net, e.g. {next(iter(theirs))!r}")
    return ours


def state_dict_to_diffusers(sd: dict[str, torch.Tensor], c: UNetConfig) -> dict[str, torch.Tensor]:
    """The UNet2DModel state dict of our UNet weights (the inverse of :func:`state_dict_from_diffusers`)."""
    out = {}
    for mine, other, kind in _pairs(c):
        for p in ("weight", "bias"):
            if kind == "embedding":
                if p == "weight":
                    out[f"{other}.weight"] = sd[f"{mine}.weight"]
            elif kind == "plain":
                out[f"{other}.{p}"] = sd[f"{mine}.{p}"]
            elif kind == "res":
                for a, b in _RES:
                    if f"{mine}.{a}.{p}" in sd:
                        out[f"{other}.{b}.{p}"] = sd[f"{mine}.{a}.{p}"]
            else:
                out[f"{other}.group_norm.{p}"] = sd[f"{mine}.norm.{p}"]
                qkv = sd[f"{mine}.qkv.{p}"]
                qkv = qkv[..., 0, 0] if p == "weight" else qkv
                for name, part in zip("qkv", qkv.chunk(3)):
                    out[f"{other}.to_{name}.{p}"] = part.contiguous()
                proj = sd[f"{mine}.proj_out.{p}"]
                out[f"{other}.to_out.0.{p}"] = proj[..., 0, 0] if p == "weight" else proj
    return out
