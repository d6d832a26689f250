"""K :class:`~gpc_ros.policies.unet1d.ConditionalUnet1D` heads of one shape evaluated in ONE forward pass (a bench
prototype for ``bench/bench_fused_step.py``; not used by the package: docs/graph.md, session 10).

For small heads a forward is dozens of tiny ops whose dispatch costs more than their arithmetic, so two forwards
cost two forwards (docs/graph.md). :class:`GroupedUnet1D` runs the K heads side by side in the same number of ops
as one head: the K chunks are laid out as ``(B, K * C, H)`` (head k owns channels ``[k C, (k + 1) C)``), and

* every convolution is a grouped convolution (``groups=K``, the heads' weights stacked along the output channels;
  a transposed convolution stacks them along its input channels), or with ``conv="bmm"`` and one row (``B = 1``)
  an unfold + batched matrix product over the K heads (a transposed one: batched product + ``fold``);
* every GroupNorm has ``K * n_groups`` groups over the ``K * C`` channels (the groups of head k are exactly its own,
  so the statistics never mix heads); Mish is element-wise;
* the time MLP's Linears are matrix products with a block-diagonal weight (head k's in block k); the FiLM
  projections of all residual blocks of all heads are ONE batched matrix product per step;
* the skip concatenations interleave per head (``[h_k, skip_k]`` for every k), as each head concatenates its own.

Heads may differ in the width of the global conditioning (``cond_dim``): the narrower ones are zero-padded, and
their FiLM weights get zero columns for the padding, which leaves every product unchanged.

The result equals the K separate forwards up to float rounding (a grouped kernel may sum in another order).
The stacked weights are a copy; they are rebuilt when a head's parameter is changed in place (its version counter,
e.g. by ``load_state_dict``); a parameter replaced by another object is not noticed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as fn

from gpc_ros.policies.unet1d import ConditionalUnet1D, FiLMResidualBlock


def head_signature(unet: ConditionalUnet1D) -> tuple:
    """What two heads must share to be fused: config, action width, layer types; the cond width may differ."""
    first = unet.down[0][0].block1[0]
    return ("ConditionalUnet1D", type(unet), unet.config, first.in_channels, _norm_eps(unet))


def _norm_eps(unet: ConditionalUnet1D) -> float:
    return next(m.eps for m in unet.modules() if isinstance(m, nn.GroupNorm))


def _block_diag(weights: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """``K`` Linear weights ``(out, in_k)`` -> ``(K * width, K * out)`` for ``x @ W`` (``in_k`` zero-padded to
    ``width``)."""
    k, out = len(weights), weights[0].shape[0]
    big = weights[0].new_zeros(k * width, k * out)
    for i, w in enumerate(weights):
        big[i * width:i * width + w.shape[1], i * out:(i + 1) * out] = w.t()
    return big


class GroupedUnet1D:
    """``K`` heads of one :func:`head_signature` as one callable (see the module docstring).

    Not an ``nn.Module``: it holds a stacked copy of the heads' weights, no parameters of its own. ``conv``:
    ``"grouped"`` (``fn.conv1d(groups=K)``) or ``"bmm"`` (unfold + ``baddbmm`` when ``B = 1``, grouped otherwise).
    """

    def __init__(self, unets: Sequence[ConditionalUnet1D], conv: str = "bmm") -> None:
        unets = list(unets)
        if len(unets) < 1:
            raise ValueError("GroupedUnet1D needs at least one head")
        if conv not in ("grouped", "bmm"):
            raise ValueError(f"GroupedUnet1D.conv must be 'grouped' or 'bmm'; got {conv!r}")
        signature = head_signature(unets[0])
        for i, u in enumerate(unets[1:], 1):
            if head_signature(u) != signature:
                raise ValueError(f"GroupedUnet1D: head {i} has the shape {head_signature(u)}, head 0 has "
                                 f"{signature}; only heads of one shape can be fused")
        self.unets, self.k, self.conv = unets, len(unets), conv
        config = unets[0].config
        self.time_dim, self.n_groups, self.eps = config.time_embed_dim, config.n_groups, _norm_eps(unets[0])
        self.cond_dims = [u.down[0][0].film[1].in_features - self.time_dim for u in unets]
        self.cond_width = max(self.cond_dims)
        self._sources = [p for u in unets for p in u.parameters()]  # walking the modules per call costs ~0.5 ms
        self._versions: list[int] | None = None
        self._build()

    # ------------------------------------------------------------------ stacking
    def _current(self) -> list[int]:
        return [p._version for p in self._sources]

    def _conv(self, convs: Sequence[nn.Module]) -> dict:
        c, k = convs[0], self.k
        transposed = isinstance(c, nn.ConvTranspose1d)
        weight = torch.cat([m.weight.detach() for m in convs], dim=0)
        bias = torch.cat([m.bias.detach() for m in convs], dim=0)
        out = c.out_channels
        if transposed:  # (in, out, ks) per head -> (K, out * ks, in) for cols = W x, then fold
            mat = torch.stack([m.weight.detach().permute(1, 2, 0).reshape(out * c.kernel_size[0], c.in_channels)
                               for m in convs])
        else:  # (out, in, ks) -> (K, out, in * ks) against unfolded (K, in * ks, L)
            mat = torch.stack([m.weight.detach().reshape(out, -1) for m in convs])
        return {"transposed": transposed, "weight": weight, "bias": bias, "mat": mat,
                "bias3": bias.view(k, out, 1), "stride": c.stride[0], "padding": c.padding[0],
                "ks": c.kernel_size[0], "out": out}

    def _norm(self, norms: Sequence[nn.GroupNorm]) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.cat([m.weight.detach() for m in norms]), torch.cat([m.bias.detach() for m in norms]))

    def _res(self, blocks: Sequence[FiLMResidualBlock], offset: int) -> dict:
        b = blocks[0]
        out = b.block1[0].out_channels
        return {"conv1": self._conv([x.block1[0] for x in blocks]), "norm1": self._norm([x.block1[1] for x in blocks]),
                "conv2": self._conv([x.block2[0] for x in blocks]), "norm2": self._norm([x.block2[1] for x in blocks]),
                "residual": None if isinstance(b.residual, nn.Identity) else self._conv([x.residual for x in blocks]),
                "out": out, "film": (offset, offset + out, offset + 2 * out)}

    def _build(self) -> None:
        """Stack the heads' current weights (called again when a head's weights changed)."""
        us, t = self.unets, self.time_dim
        with torch.no_grad():
            half = t // 2
            device = us[0].time_embedding[1].weight.device
            self.freqs = torch.exp(torch.arange(half, device=device, dtype=torch.float32)
                                   * (-math.log(10000.0) / (half - 1 or 1)))  # as SinusoidalTimeEmbedding
            self.time1 = (_block_diag([u.time_embedding[1].weight.detach() for u in us], t),
                          torch.cat([u.time_embedding[1].bias.detach() for u in us]))
            self.time2 = (_block_diag([u.time_embedding[3].weight.detach() for u in us], 4 * t),
                          torch.cat([u.time_embedding[3].bias.detach() for u in us]))
            blocks = [[*(b for level in u.down for b in level[:2]), *u.mid, *(b for level in u.up for b in level[:2])]
                      for u in us]
            # FiLM: (K, t + cond_width, total) with head k's blocks' weights side by side (zero rows for padding)
            width = t + self.cond_width
            mats, biases = [], []
            for i in range(self.k):
                cols = []
                for blk in blocks[i]:
                    w = blk.film[1].weight.detach()  # (2 out, t + cond_i)
                    cols.append(fn.pad(w.t(), (0, 0, 0, width - w.shape[1])))
                mats.append(torch.cat(cols, dim=1))
                biases.append(torch.cat([blk.film[1].bias.detach() for blk in blocks[i]]))
            self.film = (torch.stack(mats), torch.stack(biases).unsqueeze(1))  # (K, W, total), (K, 1, total)
            offsets = [0]
            for blk in blocks[0]:
                offsets.append(offsets[-1] + blk.film[1].out_features)
            slots = iter(offsets)
            n_levels = len(us[0].down)
            self.down = []
            for lv in range(n_levels):
                r1 = self._res([u.down[lv][0] for u in us], next(slots))
                r2 = self._res([u.down[lv][1] for u in us], next(slots))
                self.down.append((r1, r2, None if lv == n_levels - 1 else self._conv([u.down[lv][2] for u in us])))
            self.mid = [self._res([u.mid[j] for u in us], next(slots)) for j in range(len(us[0].mid))]
            self.up = []
            for lv in range(len(us[0].up)):
                r1 = self._res([u.up[lv][0] for u in us], next(slots))
                r2 = self._res([u.up[lv][1] for u in us], next(slots))
                self.up.append((r1, r2, self._conv([u.up[lv][2] for u in us])))
            self.final = (self._conv([u.final[0][0] for u in us]), self._norm([u.final[0][1] for u in us]),
                          self._conv([u.final[1] for u in us]))
        self._versions = self._current()

    # ------------------------------------------------------------------ forward
    def _apply_conv(self, h: torch.Tensor, c: dict) -> torch.Tensor:
        """``(B, K * in, L)`` -> ``(B, K * out, L')``."""
        k = self.k
        if self.conv == "bmm" and h.shape[0] == 1:
            x = h.view(k, -1, h.shape[-1])  # (K, in, L): free for one row
            if c["transposed"]:
                length = (h.shape[-1] - 1) * c["stride"] - 2 * c["padding"] + c["ks"]
                cols = torch.bmm(c["mat"], x)  # (K, out * ks, L)
                y = fn.fold(cols, (1, length), (1, c["ks"]), padding=(0, c["padding"]), stride=(1, c["stride"]))
                return (y.view(k, c["out"], length) + c["bias3"]).view(1, -1, length)
            if c["ks"] > 1 or c["padding"]:  # im2col: (K, in * ks, L'), rows in * ks as the weight's
                x = fn.unfold(x.unsqueeze(2), (1, c["ks"]), padding=(0, c["padding"]), stride=(1, c["stride"]))
            return torch.baddbmm(c["bias3"], c["mat"], x).view(1, -1, x.shape[-1])
        if c["transposed"]:
            return fn.conv_transpose1d(h, c["weight"], c["bias"], c["stride"], c["padding"], groups=k)
        return fn.conv1d(h, c["weight"], c["bias"], c["stride"], c["padding"], groups=k)

    def _block(self, h: torch.Tensor, conv: dict, norm: tuple) -> torch.Tensor:
        return fn.mish(fn.group_norm(self._apply_conv(h, conv), self.k * self.n_groups, norm[0], norm[1], self.eps))

    def _res_block(self, h: torch.Tensor, res: dict, film: torch.Tensor) -> torch.Tensor:
        b, k = h.shape[0], self.k
        lo, mid, hi = res["film"]
        scale, bias = film[..., lo:mid, None], film[..., mid:hi, None]  # (B, K, out, 1)
        out = self._block(h, res["conv1"], res["norm1"])
        out = torch.addcmul(bias, out.view(b, k, res["out"], -1), scale).reshape(b, k * res["out"], -1)
        skip = h if res["residual"] is None else self._apply_conv(h, res["residual"])
        return self._block(out, res["conv2"], res["norm2"]) + skip

    def __call__(self, x: Sequence[torch.Tensor], time: Sequence[torch.Tensor], cond: Sequence[torch.Tensor]
                 ) -> list[torch.Tensor]:
        """Head k's ``(B, H, D)`` prediction from ``x[k]`` ``(B, H, D)``, ``time[k]`` ``(B,)``, ``cond[k]``
        ``(B, cond_dim_k)``, for every k (the same as ``unets[k](x[k], time[k], cond[k])`` up to rounding)."""
        if len(x) != self.k or len(time) != self.k or len(cond) != self.k:
            raise ValueError(f"GroupedUnet1D of {self.k} heads got {len(x)} chunks, {len(time)} times and "
                             f"{len(cond)} conditionings")
        if self._current() != self._versions:
            self._build()
        k, b = self.k, x[0].shape[0]
        angles = torch.stack(time, dim=0).float().reshape(k * b, 1) * self.freqs  # (K B, half)
        emb = torch.cat([angles.sin(), angles.cos()], dim=-1).view(k, b, -1).transpose(0, 1).reshape(b, -1)
        emb = torch.addmm(self.time1[1], emb, self.time1[0])  # (B, K * 4t)
        emb = torch.addmm(self.time2[1], fn.mish(emb), self.time2[0]).view(b, k, self.time_dim).transpose(0, 1)
        pad = [c if c.shape[1] == self.cond_width else fn.pad(c, (0, self.cond_width - c.shape[1])) for c in cond]
        film_in = fn.mish(torch.cat([emb, torch.stack(pad)], dim=-1))  # (K, B, t + cond_width)
        film = torch.baddbmm(self.film[1], film_in, self.film[0]).transpose(0, 1)  # (B, K, total)
        h = torch.stack(x, dim=1).transpose(2, 3).reshape(b, -1, x[0].shape[1])  # (B, K D, H)
        skips = []
        for res1, res2, down in self.down:
            h = self._res_block(self._res_block(h, res1, film), res2, film)
            skips.append(h)
            if down is not None:
                h = self._apply_conv(h, down)
        for res in self.mid:
            h = self._res_block(h, res, film)
        for res1, res2, up in self.up:
            skip = skips.pop()
            h = torch.cat([h.view(b, k, -1, h.shape[-1]), skip.view(b, k, -1, h.shape[-1])], dim=2)
            h = self._res_block(self._res_block(h.view(b, -1, h.shape[-1]), res1, film), res2, film)
            h = self._apply_conv(h, up)
        conv, norm, last = self.final
        h = self._apply_conv(self._block(h, conv, norm), last)
        return list(h.view(b, k, -1, h.shape[-1]).transpose(2, 3).unbind(1))


__all__ = ["GroupedUnet1D", "head_signature"]
