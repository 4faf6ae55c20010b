"""Deterministic synthetic pet-park CCTV frames: the project's embedded default dataset.

Cats and dogs share one colour palette, so only shape tells them apart: cats have
pointed upright ears, whiskers, short legs and a long raised tail; dogs have floppy
hanging ears, a snout, longer legs and a short tail. Each camera has its own scene;
pose, scale, position, noise and day/night lighting vary per frame. Night frames are
dark grayscale, as from an infrared CCTV camera.
"""
import csv
import datetime
import os
from typing import Dict, List

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from petpark.modules import features

CAMERAS = ('cam-01', 'cam-02', 'cam-03', 'cam-04')
METADATA_FILE = 'metadata.csv'
METADATA_COLUMNS = ('image', features.LABEL_KEY, features.CAMERA_KEY, features.CAPTURED_AT_KEY)
IMAGE_SIZE = 96
_SUPERSAMPLE = 2

# Ground colour, horizon colour and clutter colour for each camera's scene.
_SCENES = {
    'cam-01': ((86, 140, 60), (150, 190, 220), (50, 100, 40)),    # lawn
    'cam-02': ((160, 150, 130), (190, 200, 210), (120, 110, 95)),  # gravel path
    'cam-03': ((110, 110, 115), (170, 175, 185), (80, 80, 85)),    # paved plaza
    'cam-04': ((200, 180, 130), (160, 200, 230), (170, 150, 100)),  # sand pit
}
_COATS = ((30, 30, 30), (235, 235, 230), (210, 120, 40), (120, 75, 40),
          (140, 140, 145), (225, 200, 160))
_START = datetime.datetime(2026, 6, 1)


def _background(rng: np.random.RandomState, camera: str, size: int) -> Image.Image:
    ground, sky, clutter = (np.array(c, dtype=np.float32) for c in _SCENES[camera])
    horizon = rng.uniform(0.15, 0.4)
    rows = np.linspace(0.0, 1.0, size)[:, None, None]
    mix = np.clip((rows - horizon) * 6.0, 0.0, 1.0)
    pixels = np.broadcast_to(sky * (1 - mix) + ground * mix, (size, size, 3)).copy()
    pixels += rng.normal(0, 10, (size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 7)):
        x, y = rng.uniform(0, size, 2)
        r = rng.uniform(0.03, 0.12) * size
        shade = tuple(int(v) for v in np.clip(clutter + rng.normal(0, 20, 3), 0, 255))
        draw.ellipse([x - r, y - r * 0.6, x + r, y + r * 0.6], fill=shade)
    return image


def _draw_animal(rng: np.random.RandomState, label: str, size: int) -> Image.Image:
    """Draws one animal facing right on a transparent square layer."""
    layer = Image.new('RGBA', (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    coat = np.array(_COATS[rng.randint(len(_COATS))], dtype=np.float32)
    fill = tuple(int(v) for v in np.clip(coat + rng.normal(0, 12, 3), 0, 255)) + (255,)
    dark = tuple(int(v * 0.6) for v in fill[:3]) + (255,)
    s = size / 100.0
    if label == 'cat':  # compact round body, short legs, tall pointed ears, long raised tail
        for x in (32, 42, 56, 64):
            draw.rectangle([x * s, 60 * s, (x + 5) * s, 72 * s], fill=fill)
        draw.ellipse([28 * s, 44 * s, 72 * s, 68 * s], fill=fill)
        draw.line([(30 * s, 56 * s), (16 * s, 44 * s), (14 * s, 18 * s)], fill=fill, width=int(6 * s))
        draw.ellipse([58 * s, 20 * s, 86 * s, 48 * s], fill=fill)
        draw.polygon([(59 * s, 30 * s), (62 * s, 4 * s), (72 * s, 22 * s)], fill=fill)
        draw.polygon([(72 * s, 22 * s), (82 * s, 4 * s), (86 * s, 30 * s)], fill=fill)
        for dy in (-4, 0, 4):
            draw.line([(80 * s, 40 * s), (98 * s, (40 + dy * 1.5) * s)], fill=dark, width=max(1, int(1.5 * s)))
    else:  # long body on long legs, long snout, big floppy ears hanging down
        for x in (14, 24, 60, 70):
            draw.rectangle([x * s, 54 * s, (x + 6) * s, 84 * s], fill=fill)
        draw.rectangle([10 * s, 40 * s, 80 * s, 60 * s], fill=fill)
        draw.line([(12 * s, 44 * s), (2 * s, 34 * s)], fill=fill, width=int(6 * s))
        draw.ellipse([62 * s, 22 * s, 86 * s, 46 * s], fill=fill)
        draw.rectangle([78 * s, 32 * s, 99 * s, 44 * s], fill=fill)
        draw.ellipse([93 * s, 31 * s, 99 * s, 37 * s], fill=dark)
        draw.ellipse([58 * s, 22 * s, 68 * s, 54 * s], fill=dark)
    draw.ellipse([74 * s, 28 * s, 79 * s, 33 * s], fill=(20, 20, 20, 255))
    return layer


def render_frame(rng: np.random.RandomState, label: str, camera: str, night: bool) -> Image.Image:
    """Renders one RGB frame of `label` seen by `camera`."""
    big = IMAGE_SIZE * _SUPERSAMPLE
    frame = _background(rng, camera, big)
    animal_size = int(big * rng.uniform(0.6, 1.0))
    animal = _draw_animal(rng, label, animal_size)
    if rng.rand() < 0.5:
        animal = animal.transpose(Image.FLIP_LEFT_RIGHT)
    animal = animal.rotate(rng.uniform(-25, 25), resample=Image.BILINEAR, expand=False)
    x = rng.randint(-animal_size // 8, big - animal_size + animal_size // 8 + 1)
    y = rng.randint(big // 8, big - animal_size + animal_size // 8 + 1)
    frame.paste(animal, (x, y), animal)
    frame = frame.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
    if rng.rand() < 0.3:
        frame = frame.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    pixels = np.asarray(frame, dtype=np.float32)
    noise = rng.uniform(2, 8)
    if night:  # infrared: one channel, so the noise is the same on all three
        luma = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        pixels = (luma * rng.uniform(0.45, 0.65) + 10)[..., None]
        pixels = np.repeat(pixels + rng.normal(0, noise, pixels.shape), 3, axis=2)
    else:
        pixels = pixels * rng.uniform(0.8, 1.15) + rng.normal(0, noise, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def generate(out_dir: str, count: int, seed: int = 0) -> List[Dict[str, str]]:
    """Writes `count` frames to `out_dir/<label>/` plus `metadata.csv`; returns the rows.

    Frame i depends only on (seed, i), so the same arguments give identical files.
    """
    if count < 2:
        raise ValueError(f'--count must be at least 2 (one cat and one dog), got {count}')
    rows = []
    for label in features.LABELS:
        os.makedirs(os.path.join(out_dir, label), exist_ok=True)
    for index in range(count):
        rng = np.random.RandomState([seed, index])
        label = features.LABELS[index % len(features.LABELS)]
        camera = CAMERAS[rng.randint(len(CAMERAS))]
        captured_at = _START + datetime.timedelta(seconds=int(rng.randint(0, 14 * 24 * 3600)))
        night = captured_at.hour in features.NIGHT_HOURS
        image = render_frame(rng, label, camera, night)
        relative = f'{label}/{label}_{index:05d}.jpg'
        image.save(os.path.join(out_dir, relative), format='JPEG', quality=90)
        rows.append({'image': relative, features.LABEL_KEY: label, features.CAMERA_KEY: camera,
                     features.CAPTURED_AT_KEY: captured_at.isoformat()})
    with open(os.path.join(out_dir, METADATA_FILE), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=METADATA_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def exists(out_dir: str) -> bool:
    """Whether a generated dataset (its metadata CSV, written last) is in `out_dir`."""
    return os.path.isfile(os.path.join(out_dir, METADATA_FILE))
