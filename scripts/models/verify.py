#!/usr/bin/env python3
"""Checks the converted ONNX models against the runtimes they came from, on real photos.

usage: verify.py DETECTOR.tflite DETECTOR.onnx FACE_API_MODEL_DIR EMBEDDER.onnx TESTSET_DIR
(NODE_PATH must reach @vladmandic/face-api and @tensorflow/tfjs.)

- detector: LiteRT (the TFLite runtime) vs onnxruntime, both outputs;
- embedder: face-api's FaceRecognitionNet on tfjs (Node) vs onnxruntime.
Prints the max abs difference of each and fails above the tolerance.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from PIL import Image

DETECTOR_TOL = 1e-3  # outputs reach ~150 (logits, pixel offsets)
EMBEDDER_TOL = 1e-4  # descriptor values are ~0.3 at most


def images(testset):
    return sorted(glob.glob(os.path.join(testset, "person/*/*.jpg")) + glob.glob(os.path.join(testset, "stranger/*.jpg")))[:12]


def check_detector(tflite, onnx_path, files):
    # Reference kernels, not the XNNPACK delegate (which reorders float sums).
    interp = Interpreter(model_path=tflite, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    outs = {o["name"]: o["index"] for o in interp.get_output_details()}
    sess = ort.InferenceSession(onnx_path)
    onnx_outs = [o.name for o in sess.get_outputs()]
    worst, peak = 0.0, 0.0
    for f in files:
        x = np.asarray(Image.open(f).convert("RGB").resize((128, 128)), dtype=np.float32)[None] / 127.5 - 1.0
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        got = dict(zip(onnx_outs, sess.run(None, {sess.get_inputs()[0].name: x.transpose(0, 3, 1, 2)})))
        for name in ("regressors", "classificators"):
            ref = interp.get_tensor(outs[name])
            worst = max(worst, float(np.abs(ref - got[name].reshape(ref.shape)).max()))
            peak = max(peak, float(np.abs(ref).max()))
    print(f"detector: onnxruntime vs LiteRT on {len(files)} photos: max abs diff {worst:.2e} (outputs up to {peak:.0f}; tolerance {DETECTOR_TOL})")
    return worst <= DETECTOR_TOL


def check_embedder(model_dir, onnx_path, files):
    chips = []
    for f in files:
        im = Image.open(f).convert("RGB")
        side = min(im.size)
        left, top = (im.width - side) // 2, (im.height - side) // 4
        chips.append(np.asarray(im.crop((left, top, left + side, top + side)).resize((150, 150)), dtype=np.float32))
    chips = np.stack(chips)
    with tempfile.NamedTemporaryFile(suffix=".f32") as t:
        chips.tofile(t.name)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "verify_embedder.cjs")
        out = subprocess.run(["node", script, model_dir, t.name, str(len(chips))], check=True, capture_output=True, text=True)
    ref = np.array(json.loads(out.stdout), dtype=np.float32)
    sess = ort.InferenceSession(onnx_path)
    got = np.concatenate([sess.run(None, {"input": c[None].transpose(0, 3, 1, 2)})[0] for c in chips])
    worst = float(np.abs(ref - got).max())
    print(f"embedder: onnxruntime vs face-api (tfjs) on {len(chips)} photos: max abs diff {worst:.2e} (tolerance {EMBEDDER_TOL})")
    return worst <= EMBEDDER_TOL


def main():
    if len(sys.argv) != 6:
        raise SystemExit(__doc__)
    tflite, det, model_dir, emb, testset = sys.argv[1:]
    files = images(testset)
    ok = check_detector(tflite, det, files) & check_embedder(model_dir, emb, files)
    if not ok:
        raise SystemExit("verification failed: the converted model does not match its original")


if __name__ == "__main__":
    main()
