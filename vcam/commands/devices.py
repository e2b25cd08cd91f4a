"""`vcam devices`: the cameras and virtual-camera devices found, with their modes, and the network's runtimes.

    vcam devices
    vcam devices --max-index 4      # non-Linux: probe camera indices 0..4

Linux: /dev/video* via sysfs (name, and whether it is a v4l2loopback device, which lives under
/sys/devices/virtual), modes from `v4l2-ctl --list-formats-ext` when installed, else what OpenCV opens
at. Elsewhere: camera indices probed with OpenCV, and pyvirtualcam's registered backends. Then the
harmonization backends: ONNX Runtime's providers, whether torch (and CUDA) and TensorRT are there, and
what `--backend auto` tries first (engine.backends.inventory; nothing is started).
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import cv2

HELP = "list cameras, virtual-camera devices and the harmonization backends available here"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-index", type=int, default=4, help="non-Linux: probe camera indices 0..N")


def _sysfs_name(device: str) -> str:
    try:
        return Path(f"/sys/class/video4linux/{Path(device).name}/name").read_text().strip()
    except OSError:
        return "?"


def _is_loopback(device: str) -> bool:
    link = Path(f"/sys/class/video4linux/{Path(device).name}")
    try:
        return "/virtual/" in str(link.resolve())
    except OSError:
        return False


def _v4l2_modes(device: str) -> list[str]:
    """Modes as "FOURCC WxH@fps,fps" from v4l2-ctl, or [] when it is not installed."""
    if not shutil.which("v4l2-ctl"):
        return []
    try:
        text = subprocess.run(["v4l2-ctl", "-d", device, "--list-formats-ext"], capture_output=True,
                              text=True, timeout=3).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    modes, fourcc, size = {}, "?", None
    for line in text.splitlines():
        if match := re.search(r"'(\w{4})'", line):
            fourcc = match.group(1)
        elif match := re.search(r"Size: Discrete (\d+x\d+)", line):
            size = match.group(1)
            modes.setdefault((fourcc, size), [])
        elif (match := re.search(r"\(([\d.]+) fps\)", line)) and size:
            modes[(fourcc, size)].append(f"{float(match.group(1)):g}")
    return [f"{f} {s}@{','.join(r) or '?'}" for (f, s), r in modes.items()]


def _opencv_mode(target) -> str | None:
    """What OpenCV opens the camera at ("WxH @ fps FOURCC"), or None if it does not open."""
    cap = cv2.VideoCapture(target)
    try:
        if not cap.isOpened():
            return None
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace")
        return (f"{int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))} @ "
                f"{cap.get(cv2.CAP_PROP_FPS):g} fps {fourcc.strip()}")
    finally:
        cap.release()


def run(args: argparse.Namespace) -> int:
    from pyvirtualcam.camera import BACKENDS

    from vcam.output import virtual_camera_help

    cameras, loopbacks = [], []
    if platform.system() == "Linux":
        devices = sorted(glob.glob("/dev/video*"), key=lambda d: int(re.sub(r"\D", "", d) or 0))
        for device in devices:
            name = _sysfs_name(device)
            if _is_loopback(device):
                loopbacks.append(f"{device}  \"{name}\" (v4l2loopback)")
                continue
            if not os.access(device, os.R_OK):
                cameras.append(f"{device}  \"{name}\"  (no permission: add yourself to the 'video' group)")
                continue
            modes = _v4l2_modes(device)
            mode = ", ".join(modes) if modes else (_opencv_mode(device) or "does not open (metadata node?)")
            cameras.append(f"{device}  \"{name}\"  {mode}")
    else:
        for index in range(args.max_index + 1):
            mode = _opencv_mode(index)
            if mode:
                cameras.append(f"{index}  {mode}")
    print("cameras:")
    print("\n".join(f"  {line}" for line in cameras) if cameras else "  none found")
    backends = ", ".join(sorted(BACKENDS)) or "none"
    print(f"virtual cameras (pyvirtualcam backends: {backends}):")
    if loopbacks:
        print("\n".join(f"  {line}" for line in loopbacks))
    elif platform.system() == "Linux":
        print(f"  none found; {virtual_camera_help()}")
    else:
        print("  listed by the backend when opened (--output virtualcam); " + virtual_camera_help())
    _print_backends()
    return 0


def _print_backends() -> None:
    from engine.backends import inventory

    lines, first = inventory()
    print("harmonization backends:")
    print("\n".join(f"  {line}" for line in lines))
    pick = f"{first[0]} ({first[1]})" if first else "none: install onnxruntime"
    print(f"  --backend auto tries first: {pick}")
