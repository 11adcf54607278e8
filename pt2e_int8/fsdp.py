"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for QAT-prepared graphs, and the way back to convert.

What works, measured on 2 CPU ranks (gloo) with torch 2.13 (tests/distributed/test_fsdp.py):
- `fully_shard(pm)` on the prepared GraphModule as one unit trains: FSDP all-gathers the
  weights before the graph's forward and reduce-scatters gradients. Observer buffers are
  not sharded and not broadcast, so `sync_observers` and `QATSchedule` work as under DDP.

What does not:
- sharding submodules (`fully_shard(pm.fc1)`): an exported graph reads weights with
  `get_attr` and never calls `pm.fc1.forward`, so FSDP never unshards them and the first
  fake-quant fails with "aten._fused_moving_avg_obs_fq_helper.default got mixed
  torch.Tensor and DTensor". One unit means every rank holds the full weights during
  forward/backward: FSDP saves gradient and optimizer-state memory, not weight memory.
- `convert` on the sharded model: the weights are DTensor shards ("quantized_decomposed.
  quantize_per_channel.default got mixed torch.Tensor and DTensor"); `unshard_for_convert`
  gives a plain prepared graph to convert.
- FSDP1 (`FullyShardedDataParallel`) on CPU: "FSDP needs a non-CPU accelerator device".
- `save_qat_checkpoint` (full replicated tensors): use torch.distributed.checkpoint instead.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.fx import GraphModule

from pt2e_int8.distributed import mark_synced, sync_observers
from pt2e_int8.qat import bn_stats_frozen, enable_train_eval, freeze_bn_stats, move_to_eval


def unshard_for_convert(model: nn.Module) -> GraphModule:
    """A plain prepared GraphModule with full weights and synced observers, from an FSDP2 model.

    A collective: every rank calls it and gets the same module; convert it (on rank 0
    only, if you export once). The FSDP model itself is left as it was.

    Example:
        fully_shard(pm); train(...)
        plain = q.unshard_for_convert(pm)
        if dist.get_rank() == 0: export_pte(q.convert(plain), example_inputs, "model.pte")
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sync_observers(model)
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    parameters = {name for name, _ in model.named_parameters()}
    attrs, buffers = {}, []
    for node in model.graph.nodes:
        if node.op == "get_attr" and node.target not in attrs:
            value = full[node.target].detach().clone() if node.target in full else getattr_path(model, node.target)
            if node.target in parameters:
                value = nn.Parameter(value)
            elif isinstance(value, torch.Tensor):
                buffers.append(node.target)
            attrs[node.target] = value
        elif node.op == "call_module" and node.target not in attrs:
            attrs[node.target] = copy.deepcopy(model.get_submodule(node.target))
    plain = GraphModule(attrs, copy.deepcopy(model.graph))
    plain.meta.update(model.meta)  # convert_pt2e reads prepare's records from it
    for target in buffers:  # GraphModule made them plain attributes; batch-norm stats are buffers
        owner, _, name = target.rpartition(".")
        module = plain.get_submodule(owner) if owner else plain
        value = getattr(module, name)
        delattr(module, name)
        module.register_buffer(name, value)
    enable_train_eval(plain)
    freeze_bn_stats(plain, bn_stats_frozen(model))
    if not model.training:
        move_to_eval(plain)
    mark_synced(plain)
    return plain


def getattr_path(root: nn.Module, target: str):
    for part in target.split("."):
        root = getattr(root, part)
    return root
