#!/usr/bin/env python3
"""Rewrites an ONNX file with its initializers and value infos sorted by name, so the same
conversion always produces the same bytes (tflite2onnx emits them in set order), and the
agent can pin the model's sha256.

usage: canonicalize.py MODEL.onnx   (in place)
"""
import sys

import onnx


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    model = onnx.load(sys.argv[1])
    g = model.graph
    inits = sorted(g.initializer, key=lambda t: t.name)
    infos = sorted(g.value_info, key=lambda v: v.name)
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.value_info[:]
    g.value_info.extend(infos)
    onnx.checker.check_model(model)
    onnx.save(model, sys.argv[1])


if __name__ == "__main__":
    main()
