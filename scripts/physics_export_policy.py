#!/usr/bin/env python3
"""Exports the Go2 walking policy's MLP weights from policy.onnx to safetensors.

Usage: physics_export_policy.py POLICY.onnx OUT.safetensors

The ONNX (rl_sar robot_lab, exported from TorchScript) must be exactly the graph moe_vla runs in
candle (src/sim/physics/policy.rs): obs (1, 45) -> Gemm(transB) -> Elu -> ... -> actions (1, 12),
four Gemm layers 45-512-256-128-12 with ELU (alpha 1) between them. Anything else is refused,
so a different policy cannot be silently mis-run. The output holds f32 tensors
`layers.{0..3}.weight` ([out, in], as in the ONNX) and `layers.{0..3}.bias`, written
deterministically (sorted keys, no metadata) so its checksum can be pinned.
"""

import json
import struct
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

SIZES = [45, 512, 256, 128, 12]


def fail(message):
    sys.exit(f"physics_export_policy: {message}")


def main():
    if len(sys.argv) != 3:
        fail("usage: physics_export_policy.py POLICY.onnx OUT.safetensors")
    model = onnx.load(sys.argv[1])
    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    ops = [n.op_type for n in graph.node]
    expected = ["Gemm", "Elu"] * (len(SIZES) - 2) + ["Gemm"]
    if ops != expected:
        fail(f"unexpected graph {ops}, expected {expected}")
    tensors = {}
    previous = graph.input[0].name
    for i, node in enumerate(n for n in graph.node if n.op_type == "Gemm"):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transB") != 1 or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            fail(f"layer {i}: unexpected Gemm attributes {attrs}")
        if attrs.get("transA", 0) != 0:
            fail(f"layer {i}: transposed input")
        w, b = (weights[name] for name in node.input[1:3])
        if w.shape != (SIZES[i + 1], SIZES[i]) or b.shape != (SIZES[i + 1],):
            fail(f"layer {i}: weight {w.shape}, bias {b.shape}, expected ({SIZES[i + 1]}, {SIZES[i]})")
        tensors[f"layers.{i}.weight"] = np.ascontiguousarray(w, dtype="<f4")
        tensors[f"layers.{i}.bias"] = np.ascontiguousarray(b, dtype="<f4")
    # The layers must be chained: each Gemm reads the previous Elu (or the input).
    for node in graph.node:
        if node.input[0] != previous:
            fail(f"{node.name} reads {node.input[0]}, expected {previous}")
        if node.op_type == "Elu":
            alpha = {a.name: helper.get_attribute_value(a) for a in node.attribute}.get("alpha", 1.0)
            if alpha != 1.0:
                fail(f"{node.name}: ELU alpha {alpha}, expected 1")
        previous = node.output[0]
    if previous != graph.output[0].name:
        fail("the last layer is not the graph's output")

    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        data = tensors[name].tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(sys.argv[2], "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for data in blobs:
            out.write(data)


if __name__ == "__main__":
    main()
