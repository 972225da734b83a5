"""SCVAR: next-scale transformer with ECFM / inject / LoRA conditioning (seed §3.6.3-3.6.4, §3.8.5)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..tokenizer.config import TokenizerConfig
from ..tokenizer.quant import MultiScaleQuantizer
from .blocks import (
    AdaLNBeforeHead,
    AdaLNSelfAttnBlock,
    SelfAttention,
    block_causal_mask,
    block_diagonal_mask,
    local_window,
    scale_ids,
)
from .config import SCVARConfig
from .ecfm import ECFM, ConditionPyramid
from .fast_sampling import check_step, compiled_step, prepare_kv, recompile_limit, scale_step
from .flex import FlexMasks
from .lora import apply_lora
from .sampling import sample_top_k_top_p

__all__ = ["SCVAR", "LORA_TARGETS"]

LORA_TARGETS = ("qkv", "proj", "fc1", "fc2")  # attention qkv/proj and MLP linears of the backbone blocks


class SCVAR(nn.Module):
    """p(x | c) = p(x^1 | c) prod_s p(x^s | x^{<s}, c) over the tokenizer's scales, one transformer pass per
    scale at sampling time and one block-causal pass over all L tokens in training."""

    def __init__(
        self, cfg: SCVARConfig, tok_cfg: TokenizerConfig, quantizer: MultiScaleQuantizer | None = None
    ):
        super().__init__()
        self.cfg, self.tok_cfg = cfg, tok_cfg
        self.scales = tuple(tok_cfg.scales)
        self.L, self.first_l = tok_cfg.num_tokens, self.scales[0] ** 2
        C, V, Cvae = cfg.width, tok_cfg.codebook_size, tok_cfg.latent_channels

        # 1. input embedding: start token (class-free: one learned start embedding, which is also the AdaLN
        #    conditioning vector), teacher-forcing latents, absolute position + per-scale level embedding
        self.start_emb = nn.Parameter(torch.zeros(1, C))
        self.pos_start = nn.Parameter(torch.zeros(1, self.first_l, C))
        self.word_embed = nn.Linear(Cvae, C)
        self.pos_1LC = nn.Parameter(torch.zeros(1, self.L, C))
        self.lvl_embed = nn.Embedding(len(self.scales), C)

        # 2. backbone blocks l = 1..L and 3. head to codebook logits
        self.blocks = nn.ModuleList(
            [AdaLNSelfAttnBlock(C, cfg.heads, cfg.mlp_ratio, C, cfg.dropout) for _ in range(cfg.depth)]
        )
        self.head_norm = AdaLNBeforeHead(C, C)
        self.head = nn.Linear(C, V)
        self._init_base_weights()

        # 4. conditioning, built after the base so that one seed gives the same base init in every variant
        if cfg.uses_condition:
            self.cond_encoder = ConditionPyramid(
                cfg.cond_channels,
                cfg.cond_hidden,
                C,
                tok_cfg.image_size,
                tok_cfg.latent_size,
                self.scales,
                zero_init_out=cfg.variant in ("inject", "lora"),
                init_std=cfg.init_std,
            )
            # learned null condition for CFG dropout: zero for the additive variants (a no-op at init);
            # random for ECFM, where LayerNorm of an all-zero token would scale its gradient by ~1/sqrt(eps)
            self.null_cond = nn.Parameter(torch.zeros(1, 1, C))
            if cfg.variant == "ecfm":
                nn.init.trunc_normal_(self.null_cond, std=cfg.init_std)
        self.ecfm = nn.ModuleDict(
            {str(layer): ECFM(C, cfg.heads, cfg.dropout, cfg.ecfm_locality) for layer in cfg.ecfm_blocks}
        )
        if cfg.variant == "lora":
            apply_lora(self.blocks, LORA_TARGETS, cfg.lora_rank, cfg.lora_alpha)
            for name, p in self.named_parameters():  # only adapters and the condition path train
                p.requires_grad_(self._is_new(name))

        # 5. attention masks over the L tokens (not saved: rebuilt from the scales)
        self.register_buffer("attn_mask_LL", block_causal_mask(self.scales), persistent=False)
        self.register_buffer("cross_mask_LL", block_diagonal_mask(self.scales), persistent=False)
        self.register_buffer("cross_local_LL", local_window(self.scales, cfg.ecfm_radius), persistent=False)
        self.register_buffer("lvl_1L", scale_ids(self.scales)[None], persistent=False)
        # attention: flex: BlockMasks built per (token count, device) on first use, a plain attribute (flex.py)
        self._flex = FlexMasks(self.scales, cfg.ecfm_radius) if cfg.attention == "flex" else None
        self._quantizer: tuple[MultiScaleQuantizer, ...] = (quantizer,) if quantizer is not None else ()
        self._compiled_step: tuple = ()  # (device type, compiled per-scale step), made on first use (fast_sampling.py)

    def _init_base_weights(self) -> None:
        std = self.cfg.init_std
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
        for p in (self.start_emb, self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(p, std=std)
        for block in self.blocks:  # GPT-2: residual-branch outputs scaled by 1/sqrt(2 * depth)
            block.attn.proj.weight.data.div_((2 * self.cfg.depth) ** 0.5)
            block.ffn.fc2.weight.data.div_((2 * self.cfg.depth) ** 0.5)

    # -- helpers -----------------------------------------------------------------------------------
    def set_quantizer(self, quantizer: MultiScaleQuantizer) -> None:
        """Attach the tokenizer's quantizer used by `generate` (kept out of this module's state dict)."""
        self._quantizer = (quantizer,)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters an optimizer should update: all, except for `lora` (adapters + condition path)."""
        return [p for p in self.parameters() if p.requires_grad]

    def param_groups(self, new_lr_scale: float = 1.0) -> list[dict]:
        """AdamW groups of the trainable parameters: the base model's (``lr_scale`` 1) and the parts new to
        the variant, which a loaded base lacks (condition path, ECFM modules, LoRA adapters; ``lr_scale``
        ``new_lr_scale``)."""
        old, new = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (new if self._is_new(name) else old).append(p)
        return [{"params": old, "lr_scale": 1.0}, {"params": new, "lr_scale": float(new_lr_scale)}]

    @staticmethod
    def _is_new(name: str) -> bool:
        return name.startswith(("cond_encoder.", "null_cond", "ecfm.")) or name.rsplit(".", 1)[-1] in (
            "lora_A", "lora_B")

    def kv_caching(self, enable: bool, keep: bool = False) -> None:
        """KV caches of every self-attention on (for the L tokens) or off; ``keep``: hold on to their buffers."""
        for m in self.modules():
            if isinstance(m, SelfAttention):
                m.kv_caching(enable, self.L, keep)

    @property
    def ecfm_block_indices(self) -> list[int]:
        return sorted(int(k) for k in self.ecfm)

    def _lvl_pos_1LC(self) -> torch.Tensor:
        return self.lvl_embed(self.lvl_1L) + self.pos_1LC

    def _check_cond(self, cond_BCHW: torch.Tensor, B: int) -> None:
        s, cc = self.tok_cfg.image_size, self.cfg.cond_channels
        if cond_BCHW.dim() != 4 or tuple(cond_BCHW.shape[-2:]) != (s, s):
            raise ValueError(
                f"condition spatial size {tuple(cond_BCHW.shape[-2:])} does not match the "
                f"configured image size ({s}, {s}); condition shape {tuple(cond_BCHW.shape)}"
            )
        if cond_BCHW.shape[1] != cc or cond_BCHW.shape[0] != B:
            raise ValueError(f"condition must be (B={B}, {cc}, {s}, {s}), got {tuple(cond_BCHW.shape)}")

    def condition_tokens(
        self, cond_BCHW: torch.Tensor | None, B: int, drop_B: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Condition pyramid tokens (B, L, C); rows with drop_B True (or all, when cond is None) get the null
        condition. None for the unconditional variant."""
        if not self.cfg.uses_condition:
            return None
        # repeat (a copy), not expand: a view of a parameter made under no_grad has requires_grad but no
        # grad_fn, which breaks torch's module tracker (FlopCounterMode) when passed into a submodule
        null_BLC = self.null_cond.repeat(B, self.L, 1)
        if cond_BCHW is None:
            return null_BLC
        self._check_cond(cond_BCHW, B)
        c_BLC = self.cond_encoder(cond_BCHW)
        if drop_B is None and self.training and self.cfg.cond_dropout > 0:
            drop_B = torch.rand(B, device=c_BLC.device) < self.cfg.cond_dropout
        if drop_B is not None:
            c_BLC = torch.where(drop_B[:, None, None], null_BLC, c_BLC)
        return c_BLC

    def _backbone(
        self,
        x_BlC: torch.Tensor,
        cond_BD: torch.Tensor,
        c_BlC: torch.Tensor | None,
        self_mask: torch.Tensor | None,
        cross_mask: torch.Tensor | None,
        cross_local: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Blocks (with ECFM before block l iff l % k == 0) over the tokens x and their condition tokens c."""
        if self.cfg.variant in ("inject", "lora"):
            x_BlC = x_BlC + c_BlC
        for layer, block in enumerate(self.blocks, start=1):
            if str(layer) in self.ecfm:
                x_BlC = self.ecfm[str(layer)](x_BlC, c_BlC, cross_mask, self_mask, cross_local)
            x_BlC = block(x_BlC, cond_BD, self_mask)
        return x_BlC

    def _masks(self, n: int) -> tuple:
        """(self, cross, locality) masks of the first n tokens: slices of the boolean / float buffers for
        ``attention: sdpa``, cached BlockMasks and a flex.LocalPrior for ``flex``."""
        if self._flex is not None:
            return self._flex.get(n, self.attn_mask_LL.device)
        return self.attn_mask_LL[:n, :n], self.cross_mask_LL[:n, :n], self.cross_local_LL[:n, :n]

    def _logits(self, h_BlC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_norm(h_BlC, cond_BD))

    # -- training ----------------------------------------------------------------------------------
    def forward(
        self,
        x_BLCvae: torch.Tensor,
        cond_BCHW: torch.Tensor | None = None,
        drop_B: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced logits (B, L, V). x_BLCvae: quantizer.idx_to_var_input(idx), (B, L - pn_1^2, Cvae).
        drop_B (bool, B) forces condition dropout per sample; by default it is drawn with cond_dropout in
        training mode and off in eval mode."""
        B = x_BLCvae.shape[0]
        if x_BLCvae.shape[1] != self.L - self.first_l:
            raise ValueError(
                f"expected {self.L - self.first_l} teacher-forcing tokens, got {x_BLCvae.shape[1]}"
            )
        cond_BD = self.start_emb.repeat(B, 1)  # a copy, see condition_tokens
        sos_BlC = (cond_BD[:, None, :] + self.pos_start).expand(B, self.first_l, -1)
        x_BLC = torch.cat([sos_BlC, self.word_embed(x_BLCvae)], dim=1) + self._lvl_pos_1LC()
        c_BLC = self.condition_tokens(cond_BCHW, B, drop_B)
        if self._flex is None:
            h_BLC = self._backbone(x_BLC, cond_BD, c_BLC, self.attn_mask_LL, self.cross_mask_LL, self.cross_local_LL)
        else:
            h_BLC = self._backbone(x_BLC, cond_BD, c_BLC, *self._masks(self.L))
        return self._logits(h_BLC, cond_BD)

    def loss(self, logits_BLV: torch.Tensor, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over all L tokens of all scales (negative log-likelihood, seed §3.8.5)."""
        target_BL = torch.cat(idx_list, dim=1)
        return F.cross_entropy(rearrange(logits_BLV, "b l v -> (b l) v").float(), target_BL.reshape(-1))

    # -- sampling ----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        B: int,
        cond: torch.Tensor | None = None,
        cfg_scale: float = 0.0,
        top_k: int = 0,
        top_p: float = 0.0,
        generator: torch.Generator | None = None,
        use_kv_cache: bool = True,
        quantizer: MultiScaleQuantizer | None = None,
        amp_dtype: torch.dtype | None = None,
        step: str = "eager",
    ) -> list[torch.Tensor]:
        """Sample B images scale by scale; returns per-scale indices [(B, pn*pn)].

        With a condition and cfg_scale w != 0, logits = (1 + w) * logits(c) - w * logits(null).
        Without the KV cache every scale reruns the whole prefix with the masks (the reference path).
        ``amp_dtype`` (bf16/fp16; ``None``: fp32) autocasts the transformer's forward passes (condition encoder,
        input embedding, blocks, head); the logits are cast back to fp32 before guidance and sampling, and the
        tokenizer's accumulated f̂ stays fp32 (README "Scaling out").
        ``step`` (``scvar.sample.step``): ``eager``, or ``compiled`` to run each scale's backbone + head through
        torch.compile (CUDA graphs on CUDA; KV cache required; fast_sampling.py). Sampling stays eager."""
        check_step(step)
        if step == "compiled" and not use_kv_cache:
            raise ValueError("scvar.sample.step: compiled runs the KV-cached per-scale step; use_kv_cache=False "
                             "(the uncached reference path) has only step eager")
        quant = quantizer if quantizer is not None else (self._quantizer[0] if self._quantizer else None)
        if quant is None:
            raise RuntimeError(
                "generate needs the tokenizer's quantizer: pass quantizer= or call set_quantizer"
            )
        was_training = self.training
        self.eval()
        try:
            with recompile_limit(self) if step == "compiled" else contextlib.nullcontext():
                return self._generate(quant, B, cond, cfg_scale, top_k, top_p, generator, use_kv_cache, amp_dtype,
                                      step)
        finally:
            self.kv_caching(False, keep=step == "compiled")  # a compiled step keeps its static buffers
            self.train(was_training)

    def _generate(
        self,
        quant: MultiScaleQuantizer,
        B: int,
        cond: torch.Tensor | None,
        cfg_scale: float,
        top_k: int,
        top_p: float,
        generator: torch.Generator | None,
        use_kv_cache: bool,
        amp_dtype: torch.dtype | None = None,
        step: str = "eager",
    ) -> list[torch.Tensor]:
        use_cfg = self.cfg.uses_condition and cond is not None and cfg_scale != 0.0
        device_type = self.start_emb.device.type

        def amp():  # a fresh context per use: the model's forward passes only
            return contextlib.nullcontext() if amp_dtype is None else torch.autocast(device_type, dtype=amp_dtype)

        with amp():
            c_NLC = self.condition_tokens(cond, B)
            if use_cfg:  # batch rows [0, B) conditional, [B, 2B) null condition
                c_NLC = torch.cat([c_NLC, self.null_cond.expand(B, self.L, -1)], dim=0)
        N = 2 * B if use_cfg else B
        cond_ND = self.start_emb.repeat(N, 1)
        lvl_pos_1LC = self._lvl_pos_1LC()
        H = self.scales[-1]
        f_hat = quant.embedding.weight.new_zeros(B, quant.channels, H, H)
        sos_NlC = (cond_ND[:, None, :] + self.pos_start).expand(N, self.first_l, -1)
        next_NlC = sos_NlC + lvl_pos_1LC[:, : self.first_l]  # embedded input of the current scale
        seen: list[torch.Tensor] = []  # embedded inputs of all scales so far (uncached path)
        idx_list: list[torch.Tensor] = []
        if use_kv_cache:  # static K/V buffers of (N, L) tokens, allocated once before the first scale
            prepare_kv(self, N, amp_dtype, keep=step == "compiled")
        else:
            self.kv_caching(False)
        step_fn = compiled_step(self) if step == "compiled" else scale_step
        cur = 0
        for si, pn in enumerate(self.scales):
            end = cur + pn * pn
            if use_kv_cache:  # only this scale's tokens; earlier scales come from the caches
                c_NlC = None if c_NLC is None else c_NLC[:, cur:end]
                logits_NlV = step_fn(self, next_NlC, cond_ND, c_NlC, cur, end, amp_dtype)
                if step == "compiled":  # a CUDA graph's output is overwritten by its next replay
                    logits_NlV = logits_NlV.clone()
            else:
                with amp():
                    seen.append(next_NlC)
                    c_NlC = None if c_NLC is None else c_NLC[:, :end]
                    h_NlC = self._backbone(torch.cat(seen, dim=1), cond_ND, c_NlC, *self._masks(end))[:, cur:end]
                    logits_NlV = self._logits(h_NlC, cond_ND)
            logits_NlV = logits_NlV.float()  # guidance and sampling in fp32 (the same tensor when it is fp32)
            if use_cfg:
                logits_NlV = (1 + cfg_scale) * logits_NlV[:B] - cfg_scale * logits_NlV[B:]
            idx_Bl = sample_top_k_top_p(logits_NlV, top_k, top_p, generator)
            idx_list.append(idx_Bl)
            f_hat, next_BCpp = quant.get_next_autoregressive_input(si, f_hat, quant.idx_to_h(idx_Bl, pn))
            if si < len(self.scales) - 1:
                nxt = self.scales[si + 1]
                with amp():
                    next_NlC = self.word_embed(rearrange(next_BCpp, "b c h w -> b (h w) c").to(cond_ND.dtype))
                next_NlC = next_NlC.repeat(2, 1, 1) if use_cfg else next_NlC
                next_NlC = next_NlC + lvl_pos_1LC[:, end : end + nxt * nxt]
            cur = end
        return idx_list

    @torch.no_grad()
    def generate_images(
        self, vqvae: nn.Module, B: int, cond: torch.Tensor | None = None, **kwargs: object
    ) -> torch.Tensor:
        """generate() then decode with the tokenizer: images (B, 3, H, W) in [-1, 1]."""
        idx_list = self.generate(B, cond, quantizer=vqvae.quantize, **kwargs)
        return vqvae.idx_to_img(idx_list)
