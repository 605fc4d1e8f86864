"""The user tower's serving form (:class:`~stream_rec.model.net.UserEncoder`) written as an ONNX
graph for ONNX Runtime, op by op from the tower's weights.

The tracing exporter spells every block out of ~40 generic operators (reshapes, transposes,
a split, the causal mask built at run time, ...); on the CPU most of them cost more in memory
traffic than in arithmetic. Written by hand, each full block is ORT's fused ``Attention``
(QKV projection, causal and padding masks, softmax and the weighted sum in one kernel), the
output projection, and the feed-forward with ORT's ``BiasGelu`` (the exact, erf form of GELU);
the final block is computed for the newest position alone without keys or values
(:meth:`~stream_rec.model.net.Block.last_position`). Same inputs and output as the traced
export: ``item_vectors`` [B, T, D], ``mask`` [B, T] → ``user_vector`` [B, D]. The export's
parity check against torch guards every version written this way.

Padding positions: ORT's ``Attention`` masks a key that is both in the future and padding
twice, where torch masks it once, so the outputs *at* padding positions differ; no real
position ever attends to a padding position, so the user vector (at the newest, real
position) does not.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import nn

from stream_rec.model.net import MASK_VALUE, Block, UserTower
from stream_rec.model.ort_graph import ITEM_INPUTS

OPSET = 17  # LayerNormalization
IR_VERSION = 8  # what opset 17 needs; newer onnx packages default higher than ORT reads
MS_DOMAIN = "com.microsoft"


class _Graph:
    """Nodes and initialisers of a graph being written; every name is unique."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, hint: str, value: Any) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def weight(self, hint: str, tensor: Any) -> str:
        return self.const(hint, tensor.detach().cpu().numpy().astype(np.float32))

    def op(
        self, op_type: str, inputs: list[str], hint: str = "", out: str = "", **attrs: Any
    ) -> str:
        """One node; its output is ``out`` when given (a name others rely on), else unique."""
        from onnx import helper

        out = out or self.name(hint or op_type)
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def layer_norm(self, x: str, ln: nn.LayerNorm, hint: str, out: str = "") -> str:
        w, b = self.weight(f"{hint}.w", ln.weight), self.weight(f"{hint}.b", ln.bias)
        return self.op("LayerNormalization", [x, w, b], hint, out, axis=-1, epsilon=float(ln.eps))

    def linear(self, x: str, lin: nn.Linear, hint: str) -> str:
        y = self.op("MatMul", [x, self.weight(f"{hint}.wT", lin.weight.T)], hint)
        return self.op("Add", [y, self.weight(f"{hint}.b", lin.bias)], hint)

    def feed_forward(self, x: str, blk: Block, hint: str) -> str:
        """``x + ff2(gelu(ff1(ln2(x))))``."""
        h = self.op("MatMul", [self.layer_norm(x, blk.ln2, f"{hint}.ln2"),
                               self.weight(f"{hint}.ff1.wT", blk.ff1.weight.T)])  # fmt: skip
        h = self.op("BiasGelu", [h, self.weight(f"{hint}.ff1.b", blk.ff1.bias)], domain=MS_DOMAIN)
        return self.op("Add", [x, self.linear(h, blk.ff2, f"{hint}.ff2")])


def _full_block(g: _Graph, x: str, mask_index: str, blk: Block, hint: str) -> str:
    """Every position: causal self-attention over the real positions, then the feed-forward."""
    h = g.layer_norm(x, blk.ln1, f"{hint}.ln1")
    att = g.op(
        "Attention",
        [h, g.weight(f"{hint}.qkv.wT", blk.qkv.weight.T), g.weight(f"{hint}.qkv.b", blk.qkv.bias),
         mask_index],
        f"{hint}.attn", domain=MS_DOMAIN, num_heads=blk.heads, unidirectional=1,
        mask_filter_value=MASK_VALUE,
    )  # fmt: skip
    x = g.op("Add", [x, g.linear(att, blk.out, f"{hint}.out")])
    return g.feed_forward(x, blk, hint)


def _last_block(g: _Graph, x: str, key_bias: str, blk: Block, hint: str) -> str:
    """The newest position alone ([B, D]), as :meth:`Block.last_position` computes it."""
    d = int(blk.qkv.weight.shape[1])
    h, dh = blk.heads, d // blk.heads
    w_q, w_k, w_v = (w.detach().cpu().numpy() for w in blk.qkv.weight.split(d))
    b_q, _, b_v = blk.qkv.bias.split(d)
    # the query of head i, taken back into the input space: q @ q_in[:, i, :] (block diagonal)
    q_in = np.zeros((d, h, d), np.float32)
    for i in range(h):
        q_in[i * dh : (i + 1) * dh, i, :] = w_k[i * dh : (i + 1) * dh] / math.sqrt(dh)
    newest = g.const("newest", np.array(-1, np.int64))
    hn = g.layer_norm(x, blk.ln1, f"{hint}.ln1")  # [B, T, D]
    q = g.op("MatMul", [g.op("Gather", [hn, newest], axis=1), g.const(f"{hint}.wqT", w_q.T)])
    q = g.op("Add", [q, g.weight(f"{hint}.bq", b_q)])  # [B, D]
    q = g.op("MatMul", [q, g.const(f"{hint}.q_in", q_in.reshape(d, h * d))])
    q = g.op("Reshape", [q, g.const("heads_shape", np.array([0, h, d], np.int64))])  # [B, H, D]
    scores = g.op("MatMul", [q, g.op("Transpose", [hn], perm=[0, 2, 1])])  # [B, H, T]
    att = g.op("Softmax", [g.op("Add", [scores, key_bias])], axis=-1)
    ctx = g.op("Unsqueeze", [g.op("MatMul", [att, hn]), g.const("ax2", np.array([2], np.int64))])
    w_v_heads = np.stack([w_v[i * dh : (i + 1) * dh].T for i in range(h)])  # [H, D, dh]
    y = g.op("MatMul", [ctx, g.const(f"{hint}.wv", w_v_heads)])  # [B, H, 1, dh]
    y = g.op("Reshape", [y, g.const("flat_shape", np.array([0, d], np.int64))])
    y = g.op("Add", [y, g.weight(f"{hint}.bv", b_v)])
    x = g.op("Add", [g.op("Gather", [x, newest], axis=1), g.linear(y, blk.out, f"{hint}.out")])
    return g.feed_forward(x, blk, hint)


def user_tower_graph(tower: UserTower) -> Any:
    """The ONNX model (``onnx.ModelProto``) of ``tower.last`` for ONNX Runtime."""
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT
    d, max_len = tower.cfg.dim, tower.cfg.max_len
    g = _Graph()
    # positions counted back from the newest item, clamped to the table: back = T-1 ... 0
    t = g.op("Gather", [g.op("Shape", ["mask"]), g.const("one", np.array(1, np.int64))])
    start = g.op("Sub", [t, g.const("one", np.array(1, np.int64))])
    minus_one = g.const("minus_one", np.array(-1, np.int64))
    back = g.op("Range", [start, minus_one, minus_one])
    back = g.op("Min", [back, g.const("max_pos", np.array(max_len - 1, np.int64))])
    pos = g.op("Gather", [g.weight("pos", tower.pos.weight), back], axis=0)  # [T, D]
    x = g.op("Add", [g.layer_norm("item_vectors", tower.in_ln, "in_ln", out=ITEM_INPUTS), pos])
    x = g.op("Mul", [x, g.op("Unsqueeze", ["mask", g.const("ax_last", np.array([-1], np.int64))])])
    key_bias = g.op(
        "Mul",
        [
            g.op("Sub", ["mask", g.const("one_f", np.array(1.0, np.float32))]),
            g.const("mask_value", np.array(-MASK_VALUE, np.float32)),
        ],
    )
    key_bias = g.op("Unsqueeze", [key_bias, g.const("ax1", np.array([1], np.int64))])  # [B, 1, T]
    *full, final = (blk for blk in tower.blocks if isinstance(blk, Block))
    mask_index = g.op("Cast", ["mask"], to=TensorProto.INT32) if full else ""
    for i, blk in enumerate(full):
        x = _full_block(g, x, mask_index, blk, f"blocks.{i}")
    x = _last_block(g, x, key_bias, final, f"blocks.{len(full)}")
    g.layer_norm(x, tower.ln, "ln", out="user_vector")
    rows: list[str | int] = ["batch", "seq", d]
    graph = helper.make_graph(
        g.nodes,
        "user_tower",
        [
            helper.make_tensor_value_info("item_vectors", f32, rows),
            helper.make_tensor_value_info("mask", f32, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("user_vector", f32, ["batch", d])],
        g.inits,
        # declared, so the runtime can cut the graph there (split_tower)
        value_info=[helper.make_tensor_value_info(ITEM_INPUTS, f32, rows)],
    )
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION,
                             producer_name="stream_rec")  # fmt: skip
