"""Real photos for decoder training and UFOGen: scikit-image's bundled samples, with captions.

Random square crops (side 60-100% of the short edge, random position), resized with antialiasing
to the training resolution, randomly flipped left-right. Images are (N,3,R,R) float32 in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# The bundled colour photos (no download) and what they show, for text conditioning.
CAPTIONS = {
    "astronaut": "a photo of an astronaut in a spacesuit",
    "chelsea": "a photo of a tabby cat",
    "coffee": "a photo of a cup of coffee on a saucer",
    "rocket": "a photo of a rocket on the launch pad",
}


def load_photos(names: tuple[str, ...] = tuple(CAPTIONS)) -> list[torch.Tensor]:
    """Each photo as a (3,H,W) float32 tensor in [-1, 1]."""
    from skimage import data

    photos = []
    for name in names:
        image = np.asarray(getattr(data, name)())[..., :3]
        photos.append(torch.from_numpy(image.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0))
    return photos


def _resize(crop: torch.Tensor, resolution: int) -> torch.Tensor:
    return F.interpolate(crop[None], size=(resolution, resolution), mode="bilinear", antialias=True,
                         align_corners=False)[0].clamp(-1.0, 1.0)


def random_crops(photos: list[torch.Tensor], resolution: int, count: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, list[int]]:
    """`count` augmented crops and the index of the photo each came from."""
    images, sources = [], []
    for _ in range(count):
        index = int(torch.randint(0, len(photos), (1,), generator=generator))
        photo = photos[index]
        short = min(photo.shape[1:])
        side = int(short * (0.6 + 0.4 * float(torch.rand((), generator=generator))))
        top = int(torch.randint(0, photo.shape[1] - side + 1, (1,), generator=generator))
        left = int(torch.randint(0, photo.shape[2] - side + 1, (1,), generator=generator))
        crop = _resize(photo[:, top:top + side, left:left + side], resolution)
        if float(torch.rand((), generator=generator)) < 0.5:
            crop = crop.flip(-1)
        images.append(crop)
        sources.append(index)
    return torch.stack(images), sources


def center_crops(photos: list[torch.Tensor], resolution: int) -> torch.Tensor:
    """The fixed evaluation set: the largest centred square of each photo."""
    out = []
    for photo in photos:
        short = min(photo.shape[1:])
        top, left = (photo.shape[1] - short) // 2, (photo.shape[2] - short) // 2
        out.append(_resize(photo[:, top:top + short, left:left + short], resolution))
    return torch.stack(out)
