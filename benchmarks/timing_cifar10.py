"""Side by side, one run, 2 torch threads: frozen extraction img/s at 96/128/160/224 px (TorchScript), and seconds per
image per epoch of DPSH fine-tuning the last 4 blocks on cached block-10 maps vs end to end on pixels.

Run under the lock: `flock /work/bench.lock python benchmarks/timing_cifar10.py --out benchmarks/results/cifar10_timing.json`.
"""
import argparse
import json
import os
import statistics as st
import time
from pathlib import Path

import numpy as np
import torch

from hashsearch.datasets.cifar10 import Cifar10Archive, cifar10_split
from hashsearch.features import inference_module, backbone_features, cifar10_maps
from hashsearch.models.backbones import make_image_net
from hashsearch.models.dpsh import DPSH

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, required=True)
parser.add_argument("--resolutions", default="96,128,160,224", type=lambda s: [int(r) for r in s.split(",")])
args = parser.parse_args()
torch.set_num_threads(2)
a = Cifar10Archive(); s = cifar10_split(a.label, a.is_test, "a", seed=0)
out = {"load_start": os.getloadavg()}
rows = s.train[np.random.default_rng(0).permutation(len(s.train))[:256]]
px = a.decode_rows(rows)
for res in args.resolutions:
    net = inference_module(make_image_net("mobilenet_v1", resolution=res), (3, 32, 32)); backbone_features(net, px[:32])
    r = []
    for _ in range(3):
        t = time.perf_counter(); backbone_features(net, px); r.append(len(px) / (time.perf_counter() - t))
    out[f"frozen_{res}px_img_s"] = round(st.median(r), 1)
y = a.label[rows]
maps = cifar10_maps(rows, depth=10, progress=False)
opt = {"resolution": 96, "trainable_blocks": 4, "input_block": 10}
DPSH(32, epochs=1, verbose=False, image_net="mobilenet_v1", image_net_options=opt).fit(maps[:16], y[:16])
t = time.perf_counter(); DPSH(32, epochs=1, verbose=False, image_net="mobilenet_v1", image_net_options=opt).fit(maps, y)
out["ft4_on_maps_s_per_img_epoch"] = round((time.perf_counter() - t) / 256, 4)
xp = px[:64].astype(np.float32) / 255
full = {"resolution": 96, "trainable_blocks": None}
DPSH(32, epochs=1, verbose=False, image_net="mobilenet_v1", image_net_options=full).fit(xp[:8], y[:8])
t = time.perf_counter(); DPSH(32, epochs=1, verbose=False, image_net="mobilenet_v1", image_net_options=full).fit(xp, y[:64])
out["ft_all_on_pixels_s_per_img_epoch"] = round((time.perf_counter() - t) / 64, 4)
out["load_end"] = os.getloadavg()
print(json.dumps(out))
args.out.write_text(json.dumps(out, indent=1) + "\n")
