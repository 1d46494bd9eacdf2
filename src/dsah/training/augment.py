"""Training-time augmentation, fit to the resolution, drawn reproducibly for a whole batch (so a
data-parallel or resumed run augments exactly as one uninterrupted process would)."""

from __future__ import annotations

import math

import torch
from torch import Tensor



def augment(images: Tensor, generator: torch.Generator, pad: int = 4, share: tuple[int, int, int] | None = None
            ) -> Tensor:
    """A batch's augmentation, fit to its resolution: below 64 px the CIFAR recipe (random crop after
    reflect padding, random horizontal flip), from 64 px a random resized crop with a flip. Float pixels
    in 0..255 out. The random draws come from `generator` on the CPU, for the whole batch: share (start,
    stop, total) says these images are rows start:stop of a batch of `total`, so a process of a
    data-parallel run augments its rows exactly as one process would, and a resumed run as an
    uninterrupted one."""
    if images.shape[-1] >= 64:
        return random_resized_crop(images, generator, share)
    b, _, h, w = images.shape
    start, stop, total = share or (0, b, b)
    offsets = torch.randint(0, 2 * pad + 1, (2, total), generator=generator)[:, start:stop].to(images.device,
                                                                                                non_blocking=True)
    flips = (torch.rand(total, generator=generator) < 0.5)[start:stop].to(images.device, non_blocking=True)
    padded = torch.nn.functional.pad(images.float(), (pad, pad, pad, pad), mode="reflect")
    rows = (offsets[0][:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (offsets[1][:, None] + torch.arange(w, device=images.device))
    cols = torch.where(flips[:, None], cols.flip(1), cols)[:, None, None, :]
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(3, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


CROP_AREA, CROP_RATIO = (0.25, 1.0), (3 / 4, 4 / 3)  # of the image's area; width / height


def random_resized_crop(images: Tensor, generator: torch.Generator, share: tuple[int, int, int] | None = None
                        ) -> Tensor:
    """Each image: a random crop of 25-100% of its area and aspect 3:4 to 4:3, flipped half the time,
    resized back to the image's size (bilinear), all in one batched grid_sample on the images' device."""
    b, _, h, w = images.shape
    start, stop, total = share or (0, b, b)
    area = torch.empty(total).uniform_(*CROP_AREA, generator=generator)
    ratio = torch.exp(torch.empty(total).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]),
                                                  generator=generator))
    width, height = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
    centre_x = (torch.rand(total, generator=generator) * 2 - 1) * (1 - width)  # the crop stays inside
    centre_y = (torch.rand(total, generator=generator) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(total, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(total, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width * flip, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    theta = theta[start:stop].to(images.device, non_blocking=True)
    grid = torch.nn.functional.affine_grid(theta, [b, 3, h, w], align_corners=False)
    return torch.nn.functional.grid_sample(images.float(), grid, mode="bilinear", padding_mode="reflection",
                                           align_corners=False)
