#!/usr/bin/env python3
"""Builds the labelled face test set from photos that registry packages ship.

usage: prepare_testset.py FACE_RECOGNITION_TEST_IMAGES FACE_API_DEMO OUT_DIR

- person/obama/{1,2,3}.jpg, person/biden/1.jpg: White House photos (U.S. federal government
  works, public domain) from PyPI face_recognition 1.3.0's tests/test_images. obama 1-3 are
  three different photos (2012 portrait, 2009 Congress address, 2010 Blue Room).
- stranger/*.jpg: head-and-shoulders crops of the people in npm @vladmandic/face-api
  1.7.15's demo/sample{1..6}.jpg (MIT package), one person each, none of them enrolled.
- noface/*.jpg: crops of the same photos with no face in them (walls, stairs, hands).
- big/50mp.jpg: a real photo scaled to 50 megapixels (the size gate must refuse it).
"""
import os
import sys

from PIL import Image

# Head-and-shoulders boxes (left, top, right, bottom) measured on a 900-pixel-wide view.
STRANGERS = {
    "sample1.jpg": [(140, 100, 340, 360), (330, 140, 550, 400), (620, 60, 860, 320)],
    "sample2.jpg": [(110, 20, 330, 280), (370, 0, 590, 230), (620, 30, 840, 280)],
    "sample3.jpg": [(210, 100, 430, 360), (450, 60, 670, 300), (650, 90, 850, 330)],
    "sample4.jpg": [(60, 40, 270, 300), (260, 0, 460, 230), (420, 20, 600, 260), (560, 20, 760, 270)],
    "sample5.jpg": [(120, 380, 350, 620), (230, 170, 420, 380), (320, 0, 500, 200), (460, 40, 650, 260), (610, 130, 820, 370)],
    "sample6.jpg": [(70, 170, 280, 420), (260, 110, 450, 360), (500, 90, 700, 330), (650, 60, 850, 300)],
}
NO_FACE = {
    "sample2.jpg": [(0, 380, 230, 640)],
    "sample4.jpg": [(0, 440, 150, 679), (760, 330, 900, 600)],
    "sample5.jpg": [(0, 0, 160, 360)],
    "sample6.jpg": [(0, 0, 220, 170), (760, 300, 900, 560)],
}


def crop(src, box, out):
    im = Image.open(src).convert("RGB")
    k = im.width / 900.0
    im.crop(tuple(round(v * k) for v in box)).save(out, quality=92)


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    fr, fa, out = sys.argv[1:]
    for d in ("person/obama", "person/biden", "stranger", "noface", "big"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    for i, name in enumerate(("obama.jpg", "obama2.jpg", "obama3.jpg"), 1):
        Image.open(os.path.join(fr, name)).convert("RGB").save(os.path.join(out, f"person/obama/{i}.jpg"), quality=92)
    Image.open(os.path.join(fr, "biden.jpg")).convert("RGB").save(os.path.join(out, "person/biden/1.jpg"), quality=92)
    for name, boxes in STRANGERS.items():
        for j, box in enumerate(boxes, 1):
            crop(os.path.join(fa, name), box, os.path.join(out, f"stranger/{name[:-4]}-{j}.jpg"))
    for name, boxes in NO_FACE.items():
        for j, box in enumerate(boxes, 1):
            crop(os.path.join(fa, name), box, os.path.join(out, f"noface/{name[:-4]}-{j}.jpg"))
    big = Image.open(os.path.join(fa, "sample1.jpg")).convert("RGB").resize((8660, 5774), Image.BILINEAR)
    big.save(os.path.join(out, "big/50mp.jpg"), quality=60)
    print(f"test set: {sum(len(f) for _, _, f in os.walk(out))} images in {out}")


if __name__ == "__main__":
    main()
