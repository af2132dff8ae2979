"""A bank of LoRA adapters that can train and generate several at once, row by row.

The inner loop of SEAL fits one small adapter per self-edit, hundreds of times per round. Instead
of wrapping the model with PEFT again for every self-edit (and re-creating optimizer, trainer and
files each time), the model is wrapped once with :class:`AdapterBank`: every targeted ``nn.Linear``
gets ``slots`` independent LoRA adapters. Each row of a batch carries the slot it belongs to, so K
self-edits train (and answer questions) in a single forward/backward pass; with one slot this is
plain LoRA.

Every slot starts from the same initial weights: ``A`` drawn once from a seeded generator (the same
Kaiming-uniform init as PEFT) and ``B`` zero, so the adapter's output is exactly zero before
training. :meth:`AdapterBank.reset` restores those tensors exactly, which makes every adaptation
start from the same point and makes slot choice irrelevant to the result. The base weights are
frozen and never written, except by the explicit :meth:`AdapterBank.merge_into_base`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import nn

from seal_pl.errors import check_choice

LoRAKernel = Literal["auto", "grouped", "batched"]


@dataclass
class LoRASpec:
    """Shape of the LoRA adapters.

    Args:
        r: rank of each adapter.
        alpha: scaling numerator; the update is scaled by ``alpha / r``.
        dropout: dropout on the adapter's input (0 keeps batched and one-by-one training identical).
        target_modules: names of the ``nn.Linear`` modules to adapt (matched on the last name part).
            Llama-style names: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
        init_seed: seed of the shared initial ``A`` matrices.
        layers: indices of the transformer blocks to adapt (null = all; negative counts from the
            top). Adapting only upper blocks also shortens the backward pass, which stops at the
            lowest adapted block (PEFT's ``layers_to_transform``).
        kernel: how an adapter bank applies rows routed to several slots: ``grouped`` (one low-rank
            product per slot in use: few FLOPs, two small kernels per slot and layer), ``batched``
            (every slot at once: two matmuls over the concatenated adapters and a slot mask, a
            constant number of kernels whatever the number of slots, at ``slots`` times the
            adapter FLOPs and two [tokens, slots x r] activations per layer kept for the backward
            pass) or ``auto`` (batched on CUDA, where the per-slot kernels are launch-bound;
            grouped elsewhere). Both give the same result within rounding. Used by
            the adapter bank only (the policy SFT's PEFT adapter ignores it).
    """

    r: int = 32
    alpha: float = 64.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    init_seed: int = 0
    layers: list[int] | None = None
    kernel: LoRAKernel = "auto"

    def __post_init__(self) -> None:
        check_choice(self.kernel, "LoRA kernel", get_args(LoRAKernel))
        if self.r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.r}")
        if not self.target_modules:
            raise ValueError("LoRA target_modules must name at least one module")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


class _Routing:
    """Shared state telling every adapted layer which slot each batch row (or token) uses.

    ``row_slots`` is a LongTensor of shape [batch] (``-1`` = no adapter for that row) or, with
    ``per_token``, of shape [batch, seq] (one slot per token: packed rows hold several self-edits);
    or ``None`` with ``single_slot`` set (every row uses that slot), or both ``None`` (adapters off).
    ``groups`` holds, with ``row_slots``, each used slot and how many rows (flat tokens when
    ``per_token``) it has, and ``order`` those rows' indices grouped by slot (stable), so a layer
    gathers its routed inputs once and scatters all updates back once; ``contiguous`` says ``order``
    is every row in place (each slot's rows already a run, none unrouted): no gather or scatter at
    all. For the ``batched`` kernel, ``slot_mask`` holds instead the one-hot slot of every row,
    [batch, 1, slots] (or every token, [batch, seq, slots]).
    """

    def __init__(self) -> None:
        self.row_slots: torch.Tensor | None = None
        self.single_slot: int | None = None
        self.per_token = False
        self.groups: list[tuple[int, int]] = []
        self.order: torch.Tensor | None = None
        self.contiguous = False
        self.slot_mask: torch.Tensor | None = None

    def state(self) -> dict:
        return dict(vars(self))

    def restore(self, state: dict) -> None:
        vars(self).update(state)

    def clear(self) -> None:
        """Adapters off."""
        self.__init__()


class LoRALinear(nn.Module):
    """``base(x) + scaling * B_s (A_s dropout(x))`` with the slot ``s`` chosen per batch row (or token)."""

    def __init__(self, base: nn.Linear, slots: int, spec: LoRASpec, routing: _Routing, init_a: torch.Tensor):
        super().__init__()
        self.base = base
        self.routing = routing
        self.scaling = spec.scaling
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.lora_A = nn.ParameterList(
            [nn.Parameter(init_a.clone().to(torch.float32)) for _ in range(slots)]
        )  # each [r, in_features]
        self.lora_B = nn.ParameterList(
            [nn.Parameter(torch.zeros(base.out_features, spec.r, dtype=torch.float32)) for _ in range(slots)]
        )  # each [out_features, r]
        self.register_buffer("initial_A", init_a.clone().to(torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        routing = self.routing
        if routing.single_slot is not None:
            a, b = self.lora_A[routing.single_slot], self.lora_B[routing.single_slot]
            return result + self._low_rank(self.dropout(x), a, b)
        if routing.row_slots is None:
            return result
        if routing.slot_mask is not None:
            return result + self._all_slots(x, routing.slot_mask) * self.scaling
        # Rows (or tokens) grouped by slot: one dense low-rank product per used slot. This touches
        # only the adapters in use (no per-row copies of A and B, which made batched generation
        # memory-bound). The routed rows are gathered once and all updates scattered back once: a
        # gather and an out-of-place add per slot cost a full-size zero fill (backward) and copy
        # (forward) each, 4% of a packed E-step's training time with 9 slots. The default off CUDA.
        shape = result.shape
        if routing.per_token:
            x, result = x.reshape(-1, x.shape[-1]), result.reshape(-1, shape[-1])  # [batch*seq, features]
        routed = x if routing.contiguous else x.index_select(0, routing.order)  # [routed rows, in], by slot
        counts = [count for _, count in routing.groups]
        pieces = self.dropout(routed).split(counts)
        if routing.contiguous and not torch.is_grad_enabled():
            # Generation: each slot's update added into its own run of rows, no concatenated copy.
            for (slot, _), piece, out in zip(routing.groups, pieces, result.split(counts)):
                out.add_(self._low_rank(piece, self.lora_A[slot], self.lora_B[slot]))
            return result.reshape(shape)
        update = torch.cat(
            [
                self._low_rank(piece, self.lora_A[slot], self.lora_B[slot])
                for (slot, _), piece in zip(routing.groups, pieces)
            ]
        )  # [routed rows, out]
        if routing.contiguous:
            return (result + update).reshape(shape)
        return result.index_add(0, routing.order, update).reshape(shape)

    def _low_rank(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``scaling * B A x``: the scale goes on the rank-r hidden state [..., r], the smallest
        tensor of the product (not on every token's [..., out] update)."""
        return ((x @ a.t().to(x.dtype)) * self.scaling) @ b.t().to(x.dtype)

    def _all_slots(self, x: torch.Tensor, slot_mask: torch.Tensor) -> torch.Tensor:
        """Every slot's update at once, each row (token) keeping its own slot's: x [batch, seq, in],
        slot_mask [batch, 1 or seq, slots] -> [batch, seq, out]."""
        a = torch.cat(list(self.lora_A), 0).to(x.dtype)  # [slots*r, in]
        b = torch.cat(list(self.lora_B), 1).to(x.dtype)  # [out, slots*r]
        hidden = self.dropout(x) @ a.t()  # [batch, seq, slots*r]
        slots, rank = slot_mask.shape[-1], a.shape[0] // slot_mask.shape[-1]
        masked = hidden.unflatten(-1, (slots, rank)) * slot_mask.to(x.dtype).unsqueeze(-1)
        return masked.flatten(-2) @ b.t()


class AdapterBank:
    """Attach ``slots`` LoRA adapters to a model once and manage them.

    Args:
        model: a causal LM (its parameters are frozen here).
        spec: adapter shape and targets.
        slots: how many adapters live side by side (K self-edits trained at once).
    """

    def __init__(self, model: nn.Module, spec: LoRASpec, slots: int = 1):
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.model = model
        self.spec = spec
        self.slots = slots
        self.routing = _Routing()
        self.layers: dict[str, LoRALinear] = {}
        self.versions = [0] * slots
        """Per slot, a counter raised whenever its weights may have changed (reset, load, training):
        a server of exported adapters re-exports a slot only when its version moved."""
        model.requires_grad_(False)
        generator = torch.Generator().manual_seed(spec.init_seed)
        targets = set(spec.target_modules)
        replaced: list[tuple[nn.Module, str, str, nn.Linear]] = []
        for name, module in model.named_modules():
            for child_name, child in module.named_children():
                if isinstance(child, nn.Linear) and child_name in targets:
                    full = f"{name}.{child_name}" if name else child_name
                    replaced.append((module, child_name, full, child))
        if spec.layers is not None:
            replaced = _select_layers(replaced, spec.layers)
        found = {child_name for _, child_name, _, _ in replaced}
        missing = targets - found
        if missing:
            raise ValueError(
                f"LoRA target modules {sorted(missing)} not found in the model; linear layers present: "
                f"{sorted({n.rsplit('.', 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})}"
            )
        for parent, child_name, full, child in replaced:
            init_a = torch.empty(spec.r, child.in_features)
            # Same distribution as PEFT's default LoRA init (kaiming uniform, a=sqrt(5)), seeded.
            bound = 1.0 / math.sqrt(child.in_features)
            init_a.uniform_(-bound, bound, generator=generator)
            layer = LoRALinear(child, slots, spec, self.routing, init_a).to(child.weight.device)
            setattr(parent, child_name, layer)
            self.layers[full] = layer

    # ----------------------------------------------------------------------------------- state
    def parameters(self, slot: int) -> list[nn.Parameter]:
        """The trainable tensors of one slot (A then B for every adapted layer)."""
        self._check_slot(slot)
        params: list[nn.Parameter] = []
        for layer in self.layers.values():
            params.extend([layer.lora_A[slot], layer.lora_B[slot]])
        return params

    @torch.no_grad()
    def reset(self, slots: Sequence[int] | None = None) -> None:
        """Restore the exact initial tensors (A = shared init, B = 0) of the given slots (default all)."""
        for slot in range(self.slots) if slots is None else slots:
            self._check_slot(slot)
            for layer in self.layers.values():
                layer.lora_A[slot].copy_(layer.initial_A)
                layer.lora_B[slot].zero_()
                layer.lora_A[slot].grad = None
                layer.lora_B[slot].grad = None
            self.versions[slot] += 1

    def touch(self, slots: Sequence[int]) -> None:
        """Mark the weights of ``slots`` as changed (their :attr:`versions` move on)."""
        for slot in slots:
            self._check_slot(slot)
            self.versions[slot] += 1

    def train_mode(self, enabled: bool) -> None:
        """Turn gradients for every slot on or off (the base model stays frozen)."""
        for layer in self.layers.values():
            for p in list(layer.lora_A) + list(layer.lora_B):
                p.requires_grad_(enabled)

    def state_dict(self, slot: int) -> dict[str, torch.Tensor]:
        """One slot's weights with PEFT-compatible key names (``...q_proj.lora_A.weight``)."""
        self._check_slot(slot)
        out: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.items():
            out[f"base_model.model.{name}.lora_A.weight"] = layer.lora_A[slot].detach().clone()
            out[f"base_model.model.{name}.lora_B.weight"] = layer.lora_B[slot].detach().clone()
        return out

    @torch.no_grad()
    def load_state_dict(self, slot: int, state: dict[str, torch.Tensor]) -> None:
        for name, layer in self.layers.items():
            layer.lora_A[slot].copy_(state[f"base_model.model.{name}.lora_A.weight"])
            layer.lora_B[slot].copy_(state[f"base_model.model.{name}.lora_B.weight"])
        self.touch([slot])

    def save_peft(
        self, slot: int, directory: str | Path, base_model_name_or_path: str = "", dtype: torch.dtype | None = None
    ) -> Path:
        """Write one slot as a PEFT LoRA adapter folder (loadable by PEFT and by vLLM's LoRARequest),
        in ``dtype`` (default: as trained)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model_name_or_path,
            "r": self.spec.r,
            "lora_alpha": self.spec.alpha,
            "lora_dropout": self.spec.dropout,
            "target_modules": sorted(set(self.spec.target_modules)),
            "layers_to_transform": sorted({_block_index(name) for name in self.layers}) if self.spec.layers else None,
            "bias": "none",
            "fan_in_fan_out": False,
            "inference_mode": True,
        }
        (directory / "adapter_config.json").write_text(json.dumps(config, indent=2))
        tensors = {
            key: (value if dtype is None else value.to(dtype)).contiguous()
            for key, value in self.state_dict(slot).items()
        }
        save_file(tensors, str(directory / "adapter_model.safetensors"))
        return directory

    @torch.no_grad()
    def merge_into_base(self, slot: int) -> None:
        """Add one slot's update into the base weights (W += scaling * B A), then reset that slot."""
        for layer in self.layers.values():
            delta = (layer.lora_B[slot] @ layer.lora_A[slot]) * layer.scaling
            layer.base.weight.add_(delta.to(layer.base.weight.dtype))
        self.reset([slot])

    # --------------------------------------------------------------------------------- routing
    def route(self, row_slots: torch.Tensor | Sequence[int] | int | None) -> _RouteContext:
        """Context manager selecting adapters: an int (all rows), one slot per row ([batch]), one slot
        per token ([batch, seq], for packed rows), or None (base model). Slot -1 means no adapter."""
        return _RouteContext(self, row_slots)

    def batched_on(self, device: torch.device) -> bool:
        """Whether rows routed to several slots use the batched kernel (see ``LoRASpec.kernel``)."""
        return self.spec.kernel == "batched" or (self.spec.kernel == "auto" and device.type == "cuda")

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.slots:
            raise IndexError(f"adapter slot {slot} out of range 0..{self.slots - 1}")

    def remove(self) -> nn.Module:
        """Put the original linear layers back and return the model (adapters are discarded)."""
        for full in list(self.layers):
            parent_name, _, child_name = full.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            setattr(parent, child_name, self.layers.pop(full).base)
        return self.model

    def iter_layers(self) -> Iterator[tuple[str, LoRALinear]]:
        return iter(self.layers.items())


def _block_index(full_name: str) -> int:
    """The transformer-block index of a module name (its first numeric part, ``model.layers.12.mlp``)."""
    for part in full_name.split("."):
        if part.isdigit():
            return int(part)
    raise ValueError(f"module {full_name!r} is not inside a numbered block; LoRA layers cannot select it")


def _select_layers(replaced: list, layers: Sequence[int]) -> list:
    """Keep the target linears whose block index is in ``layers`` (negative indices count from the top)."""
    blocks = sorted({_block_index(full) for _, _, full, _ in replaced})
    wanted = set()
    for index in layers:
        resolved = index + len(blocks) if index < 0 else index
        if not 0 <= resolved < len(blocks):
            raise ValueError(f"LoRA layers: block {index} out of range for a model with {len(blocks)} blocks")
        wanted.add(blocks[resolved])
    return [entry for entry in replaced if _block_index(entry[2]) in wanted]


class _RouteContext:
    def __init__(self, bank: AdapterBank, row_slots) -> None:
        self.bank = bank
        self.row_slots = row_slots
        self.saved: tuple | None = None

    def __enter__(self) -> AdapterBank:
        routing = self.bank.routing
        self.saved = routing.state()
        routing.clear()
        slots = self.row_slots
        if isinstance(slots, int):
            self.bank._check_slot(slots)
            routing.single_slot = slots
        elif slots is not None:
            tensor = torch.as_tensor(slots, dtype=torch.long)
            distinct = torch.unique(tensor).tolist()
            if len(distinct) == 1 and distinct[0] >= 0:
                routing.single_slot = int(distinct[0])
            elif any(s >= 0 for s in distinct):
                if tensor.dim() not in (1, 2):
                    raise ValueError(f"slot routing must be [batch] or [batch, seq], got shape {tuple(tensor.shape)}")
                device = next(iter(self.bank.layers.values())).base.weight.device
                routing.row_slots = tensor.to(device)
                routing.per_token = tensor.dim() == 2
                if self.bank.batched_on(device):
                    # one-hot over the slots; rows routed to -1 get an all-zero row (no adapter)
                    one_hot = torch.nn.functional.one_hot(routing.row_slots.clamp(min=0), self.bank.slots)
                    one_hot = one_hot * (routing.row_slots >= 0).unsqueeze(-1)
                    routing.slot_mask = one_hot if routing.per_token else one_hot.unsqueeze(1)
                else:
                    flat = tensor.flatten()
                    used = [int(slot) for slot in distinct if slot >= 0]
                    rows = [torch.nonzero(flat == slot).flatten() for slot in used]
                    order = torch.cat(rows)
                    routing.groups = [(slot, len(r)) for slot, r in zip(used, rows)]
                    routing.contiguous = len(order) == len(flat) and bool((order == torch.arange(len(flat))).all())
                    routing.order = order.to(device)
        return self.bank

    def __exit__(self, *exc) -> None:
        self.bank.routing.restore(self.saved)
