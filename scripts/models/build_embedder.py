#!/usr/bin/env python3
"""Rebuilds dlib's face recognition ResNet (dlib_face_recognition_resnet_model_v1, 128-d) as
an ONNX graph from the weights that npm @vladmandic/face-api ships for it.

face-api ships the network's weights only (a tfjs weights manifest + one .bin, most tensors
uint8-quantised); the architecture is the one of face-api's FaceRecognitionNet
(src/faceRecognitionNet/*.ts), itself a port of dlib's dnn_face_recognition network. Every
conv + bias + scale triple is folded into one Conv. Input: `input` [1,3,150,150] float RGB
0..255 (an aligned 150x150 face chip); output: `descriptor` [1,128] (not normalised).

usage: build_embedder.py MANIFEST.json WEIGHTS.bin OUT.onnx
"""
import json
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MEAN_RGB = [122.782, 117.001, 104.298]


def load_weights(manifest_path, bin_path):
    with open(manifest_path) as f:
        manifest = json.load(f)
    data = open(bin_path, "rb").read()
    tensors, offset = {}, 0
    for group in manifest:
        for w in group["weights"]:
            n = int(np.prod(w["shape"]))
            q = w.get("quantization")
            if q:
                if q["dtype"] != "uint8":
                    raise SystemExit(f"{w['name']}: unsupported quantisation {q['dtype']}")
                raw = np.frombuffer(data, dtype=np.uint8, count=n, offset=offset).astype(np.float32)
                # tfjs dequantises exactly like this (io_utils.ts: v * scale + min, in float32).
                values = raw * np.float32(q["scale"]) + np.float32(q["min"])
                offset += n
            else:
                values = np.frombuffer(data, dtype=np.float32, count=n, offset=offset).copy()
                offset += 4 * n
            tensors[w["name"]] = values.reshape(w["shape"]).astype(np.float32)
    if offset != len(data):
        raise SystemExit(f"weights file has {len(data)} bytes, manifest describes {offset}")
    return tensors


class Graph:
    def __init__(self, weights):
        self.w = weights
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, prefix, array):
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def op(self, op_type, inputs, **attrs):
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def conv(self, x, prefix, stride, relu, valid):
        """conv2d + bias, then scale (x * weights + biases), folded into one Conv."""
        f = self.w[f"{prefix}/conv/filters"]  # HWIO
        b = self.w[f"{prefix}/conv/bias"]
        s = self.w[f"{prefix}/scale/weights"]
        t = self.w[f"{prefix}/scale/biases"]
        kernel = (f * s).transpose(3, 2, 0, 1)  # -> OIHW
        bias = b * s + t
        k = f.shape[0]
        pad = 0 if valid else k // 2
        y = self.op("Conv", [x, self.const("w", kernel), self.const("b", bias)],
                    kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        return self.op("Relu", [y]) if relu else y

    def residual(self, x, prefix):
        out = self.conv(x, f"{prefix}/conv1", 1, True, False)
        out = self.conv(out, f"{prefix}/conv2", 1, False, False)
        return self.op("Relu", [self.op("Add", [out, x])])

    def residual_down(self, x, prefix, channels_in, pad_spatial):
        out = self.conv(x, f"{prefix}/conv1", 2, True, True)
        out = self.conv(out, f"{prefix}/conv2", 1, False, False)
        pooled = self.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
        if pad_spatial:
            # face-api appends one zero row and column to the conv branch when its size
            # (valid 3x3 stride 2) is one short of the pooled branch.
            out = self.op("Pad", [out, self.const_i64("padi", [0, 0, 0, 0, 0, 0, 1, 1])])
        channels_out = self.w[f"{prefix}/conv1/conv/filters"].shape[3]
        if channels_out != channels_in:
            pooled = self.op("Pad", [pooled, self.const_i64("padc", [0, 0, 0, 0, 0, channels_out - channels_in, 0, 0])])
        return self.op("Relu", [self.op("Add", [pooled, out])])

    def const_i64(self, prefix, values):
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name


def build(weights):
    g = Graph(weights)
    x = g.op("Sub", ["input", g.const("mean", np.array(MEAN_RGB).reshape(1, 3, 1, 1))])
    x = g.op("Div", [x, g.const("div", np.array(255.0))])
    x = g.conv(x, "conv32_down", 2, True, True)  # 150 -> 72
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2])  # 72 -> 35
    for p in ("conv32_1", "conv32_2", "conv32_3"):
        x = g.residual(x, p)
    x = g.residual_down(x, "conv64_down", 32, False)  # 35 -> 17
    for p in ("conv64_1", "conv64_2", "conv64_3"):
        x = g.residual(x, p)
    x = g.residual_down(x, "conv128_down", 64, False)  # 17 -> 8
    for p in ("conv128_1", "conv128_2"):
        x = g.residual(x, p)
    x = g.residual_down(x, "conv256_down", 128, True)  # 8 -> 4 (conv branch 3, padded)
    for p in ("conv256_1", "conv256_2"):
        x = g.residual(x, p)
    x = g.residual_down(x, "conv256_down_out", 256, True)  # 4 -> 2 (conv branch 1, padded)
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x], axis=1)
    fc = weights["fc"]  # [256, 128]
    g.nodes.append(helper.make_node("MatMul", [x, g.const("fc", fc)], ["descriptor"]))
    graph = helper.make_graph(
        g.nodes,
        "dlib_face_recognition_resnet_v1",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 150, 150])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, [1, 128])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="doorbell-agent")
    model.ir_version = 8
    model.doc_string = ("dlib face recognition ResNet v1 (weights CC0, Davis King) from npm "
                        "@vladmandic/face-api@1.7.15 (MIT); rebuilt by scripts/models/build_embedder.py")
    onnx.checker.check_model(model)
    return model


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    model = build(load_weights(sys.argv[1], sys.argv[2]))
    onnx.save(model, sys.argv[3])
    print(f"embedder: wrote {sys.argv[3]} ({len(model.graph.node)} nodes)")


if __name__ == "__main__":
    main()
