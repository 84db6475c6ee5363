#!/usr/bin/env python3
"""The established peer on our labelled set: Python `face_recognition` (dlib HOG detector,
5-point alignment, the original dlib ResNet), same protocol as tests/vision.rs.

usage: peer.py TESTSET_DIR
Prints per-image time and the true/false-accept counts at its default tolerance (0.6,
Euclidean), plus what our cosine threshold corresponds to.
"""
import glob
import os
import sys
import time

import face_recognition
import numpy as np


def main():
    testset = sys.argv[1]
    def load(pattern):
        return sorted(glob.glob(os.path.join(testset, pattern)))
    files = {"obama": load("person/obama/*.jpg"), "biden": load("person/biden/*.jpg"), "stranger": load("stranger/*.jpg"), "noface": load("noface/*.jpg")}
    enc, times, found = {}, [], {}
    for group, paths in files.items():
        for p in paths:
            img = face_recognition.load_image_file(p)
            t = time.perf_counter()
            boxes = face_recognition.face_locations(img)  # HOG, upsample 1 (its default)
            encs = face_recognition.face_encodings(img, boxes)
            times.append(time.perf_counter() - t)
            found[p] = len(boxes)
            if encs:
                areas = [(b[2] - b[0]) * (b[1] - b[3]) for b in boxes]
                enc[p] = encs[int(np.argmax(areas))]
    missed = [p for g in ("obama", "biden", "stranger") for p in files[g] if found[p] == 0]
    false_faces = sum(found[p] for p in files["noface"])
    ob = [enc[p] for p in files["obama"] if p in enc]
    bi = [enc[p] for p in files["biden"] if p in enc]
    st = [enc[p] for p in files["stranger"] if p in enc]
    dist = lambda a, b: float(np.linalg.norm(a - b))
    genuine = [dist(ob[i], ob[j]) for i in range(len(ob)) for j in range(i + 1, len(ob))]
    impostor = [dist(o, b) for o in ob for b in bi] + [dist(s, e) for s in st for e in ob + bi]
    ta = sum(d <= 0.6 for d in genuine)
    fa = sum(d <= 0.6 for d in impostor)
    t = np.array(times) * 1000
    print(f"peer face_recognition 1.3.0 (dlib HOG + ResNet), {len(times)} images: per image p50 {np.percentile(t, 50):.0f} ms, p90 {np.percentile(t, 90):.0f} ms")
    print(f"  faces missed in labelled photos: {len(missed)} {[os.path.basename(m) for m in missed]}; faces found in no-face images: {false_faces}")
    print(f"  at tolerance 0.6: true accepts {ta}/{len(genuine)}, false accepts {fa}/{len(impostor)}; genuine distances {[round(g, 3) for g in genuine]}, closest impostor {min(impostor):.3f}")


if __name__ == "__main__":
    main()
