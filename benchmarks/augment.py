"""Time openpi's training image augmentation: core's numpy version against a torch one.

The torch version exists only here, to measure what moving the augmentation onto the
training device would buy; core keeps the numpy version. Both use the same
distributions (see ``openpi_core.data.augment``): crop 95% + resize + rotate ±5° in one
bilinear pass (``grid_sample``, zeros outside) for non-wrist cameras, HSV colour jitter
with probability 0.5 for every camera.

    python benchmarks/augment.py --batch 32 --repeats 5 [--device cuda]
"""

import argparse
import math
import time

import numpy as np

from openpi_core.data.augment import (
    BRIGHTNESS,
    CONTRAST,
    CROP_FRACTION,
    HUE,
    JITTER_PROBABILITY,
    MAX_ROTATION_DEGREES,
    augment_images,
)


def torch_augment(images, generator, *, geometric):
    """float images ``[B, H, W, 3]`` in [0, 1] on any device -> augmented, same layout."""
    import torch
    import torch.nn.functional as F

    batch, height, width, _ = images.shape
    device = images.device

    def uniform(low, high):
        return torch.empty(batch, device=device).uniform_(low, high, generator=generator)

    if geometric:
        crop_h, crop_w = int(height * CROP_FRACTION), int(width * CROP_FRACTION)
        shift_y, shift_x = (
            uniform(-(height - crop_h) / 2, (height - crop_h) / 2),
            uniform(-(width - crop_w) / 2, (width - crop_w) / 2),
        )
        angle = uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES) * (math.pi / 180)
        rows = torch.arange(height, device=device) - (height / 2 - 0.5)
        cols = torch.arange(width, device=device) - (width / 2 - 0.5)
        y, x = rows[None, :, None], cols[None, None, :]
        cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
        source_y = crop_h / height * (cos * y + sin * x) + shift_y[:, None, None] + (height / 2 - 0.5)
        source_x = crop_w / width * (cos * x - sin * y) + shift_x[:, None, None] + (width / 2 - 0.5)
        grid = torch.stack([(2 * source_x + 1) / width - 1, (2 * source_y + 1) / height - 1], dim=-1)
        images = F.grid_sample(
            images.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        images = images.permute(0, 2, 3, 1)

    brightness, contrast, hue_shift = uniform(-BRIGHTNESS, BRIGHTNESS), uniform(-CONTRAST, CONTRAST), uniform(-HUE, HUE)
    apply = uniform(0, 1) < JITTER_PROBABILITY
    red, green, blue = images.unbind(-1)
    value, _ = images.max(-1)
    spread = value - images.min(-1).values
    safe = torch.where(spread == 0, torch.ones_like(spread), spread)
    is_red = red == value
    is_green = ~is_red & (green == value)
    hue = torch.where(
        is_red, (green - blue) / safe, torch.where(is_green, 2 + (blue - red) / safe, 4 + (red - green) / safe)
    )
    hue = torch.where(spread == 0, torch.zeros_like(hue), hue / 6)
    saturation = torch.where(
        value == 0, torch.zeros_like(value), spread / torch.where(value == 0, torch.ones_like(value), value)
    )
    b = brightness[:, None, None]
    value = torch.where(b < 0, value * (1 + b), value * (1 - b) + b)
    slant = torch.tan((contrast[:, None, None] + 1) * (math.pi / 4))
    low = (slant - slant**2) / (2 * (1 - slant**2))
    value = torch.where(
        value < low,
        value / slant,
        torch.where(value > 1 - low, value / slant + 1 - 1 / slant, slant * (value - 0.5) + 0.5),
    )
    hue = hue + hue_shift[:, None, None]
    chroma = value * saturation
    channels = [
        value - chroma * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
        for k in (torch.remainder(o + hue * 6, 6) for o in (5, 3, 1))
    ]
    jittered = torch.stack(channels, dim=-1)
    return torch.where(apply[:, None, None, None], jittered, images)


def time_it(function, repeats):
    function()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8)
    frames = args.batch
    print(f"batch {args.batch} x {args.size}x{args.size}, min of {args.repeats}; ms per frame:")
    for camera in ("base_0_rgb", "left_wrist_0_rgb"):
        seconds = time_it(
            lambda camera=camera: augment_images({camera: images}, np.random.default_rng(1)), args.repeats
        )
        print(f"  numpy  {camera:18s} {seconds / frames * 1e3:8.2f}")
    try:
        import torch
    except ImportError:
        print("  torch not installed")
        return
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    unit = torch.from_numpy(images).to(device).float() / 255
    generator = torch.Generator(device=device).manual_seed(1)
    for camera, geometric in (("base_0_rgb", True), ("left_wrist_0_rgb", False)):

        def run(geometric=geometric):
            torch_augment(unit, generator, geometric=geometric)
            if device.type == "cuda":
                torch.cuda.synchronize()

        seconds = time_it(run, args.repeats)
        print(f"  torch/{device.type:4s} {camera:18s} {seconds / frames * 1e3:8.2f}")


if __name__ == "__main__":
    main()
