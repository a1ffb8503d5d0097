"""`glyphs`: an offline Omniglot-like benchmark rendered from the TrueType fonts that ship inside matplotlib.

A class is one character, its alphabet is its Unicode block, its examples are that character in different font
files and styles with small seeded affine distortions. Characters that render alike (Latin A, Greek Alpha,
Cyrillic A, ...) are merged: only the first is kept. Whole alphabets go to meta-test, as Omniglot's evaluation
alphabets do; meta-train and meta-val share the background alphabets but no class.
"""
from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

from bench.core.seeding import Seed
from meta_bench.datasets.base import ClassImages, ImageDataset
from meta_bench.datasets.cache import cached_class_images
from meta_bench.datasets.content import generated, of_files as content_of
from meta_bench.datasets.registry import register_dataset

VERSION = 3  # bump whenever rendering, selection or splitting changes: the cache is keyed by it

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
# DejaVu and STIX text faces; STIX "Siz*" files hold only big delimiters and are left out.
FONT_FILES = tuple(sorted(p.name for p in FONT_DIR.glob("*.ttf")
                          if p.name.startswith(("DejaVu", "STIXGeneral", "STIXNonUni"))))
# The face a character is first rendered in when deciding whether two characters look the same.
REFERENCE_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "STIXGeneral.ttf", "DejaVuSansMono.ttf", "STIXNonUni.ttf")

# Alphabets: Unicode blocks (name, first, last). Blocks of accented Latin/Greek variants and of styled
# mathematical letters are left out: they would add classes that differ from others only by a diacritic or a style.
BLOCKS = (
    ("Basic Latin", 0x0020, 0x007F), ("Latin-1 Supplement", 0x00A0, 0x00FF),
    ("Latin Extended-B", 0x0180, 0x024F), ("IPA Extensions", 0x0250, 0x02AF),
    ("Greek and Coptic", 0x0370, 0x03FF), ("Cyrillic", 0x0400, 0x04FF), ("Cyrillic Supplement", 0x0500, 0x052F),
    ("Armenian", 0x0530, 0x058F), ("Hebrew", 0x0590, 0x05FF), ("Georgian", 0x10A0, 0x10FF),
    ("Canadian Syllabics", 0x1400, 0x167F), ("Phonetic Extensions", 0x1D00, 0x1D7F),
    ("Letterlike Symbols", 0x2100, 0x214F), ("Number Forms", 0x2150, 0x218F), ("Arrows", 0x2190, 0x21FF),
    ("Mathematical Operators", 0x2200, 0x22FF), ("Miscellaneous Technical", 0x2300, 0x23FF),
    ("Enclosed Alphanumerics", 0x2460, 0x24FF), ("Geometric Shapes", 0x25A0, 0x25FF),
    ("Miscellaneous Symbols", 0x2600, 0x26FF), ("Dingbats", 0x2700, 0x27BF), ("Braille Patterns", 0x2800, 0x28FF),
    ("Supplemental Arrows-B", 0x2900, 0x297F), ("Tifinagh", 0x2D30, 0x2D7F),
    ("Yijing Hexagram Symbols", 0x4DC0, 0x4DFF), ("Latin Extended-D", 0xA720, 0xA7FF),
)


@dataclass(frozen=True)
class GlyphsOptions:
    image_size: int = 28
    examples_per_class: int = 20
    min_fonts: int = 4
    test_fraction: float = 0.3  # share of classes (whole alphabets) held out for meta-test
    val_fraction: float = 0.15  # share of background classes held out for meta-val
    max_rotation_deg: float = 12.0
    max_shear: float = 0.15
    scale_range: tuple[float, float] = (0.8, 1.05)
    max_translation: float = 0.08  # of the image side
    seed: Seed = 0

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"glyphs.image_size must be at least 8, got {self.image_size}")
        if self.examples_per_class < 2:
            raise ValueError(f"glyphs.examples_per_class must be at least 2, got {self.examples_per_class}")
        if self.min_fonts < 1:
            raise ValueError(f"glyphs.min_fonts must be at least 1, got {self.min_fonts}")
        for name in ("test_fraction", "val_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"glyphs.{name} must lie strictly between 0 and 1, got {getattr(self, name)}")


_CANVAS = 96


def _font(name: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / name), 56)


def _glyph_crop(font: ImageFont.FreeTypeFont, char: str) -> Image.Image | None:
    """The character's ink, cropped to its bounding box (None where the font draws nothing)."""
    canvas = Image.new("L", (_CANVAS * 2, _CANVAS * 2), 0)
    ImageDraw.Draw(canvas).text((_CANVAS, _CANVAS), char, fill=255, font=font, anchor="mm")
    box = canvas.getbbox()
    return None if box is None else canvas.crop(box)


def _square(crop: Image.Image, margin: float = 1.3) -> Image.Image:
    side = int(max(crop.size) * margin) + 2
    square = Image.new("L", (side, side), 0)
    square.paste(crop, ((side - crop.size[0]) // 2, (side - crop.size[1]) // 2))
    return square


def _distort(square: Image.Image, rng: np.random.Generator, o: GlyphsOptions) -> Image.Image:
    side = square.size[0]
    angle = math.radians(rng.uniform(-o.max_rotation_deg, o.max_rotation_deg))
    shear = rng.uniform(-o.max_shear, o.max_shear)
    scale = rng.uniform(*o.scale_range)
    tx, ty = rng.uniform(-o.max_translation, o.max_translation, size=2) * side
    # forward map: scale * rotate * shear about the centre, then translate; PIL wants the inverse.
    forward = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) @ \
        np.array([[1.0, shear], [0.0, 1.0]])
    inverse = np.linalg.inv(forward)
    centre = np.array([side / 2, side / 2])
    offset = centre - inverse @ (centre + np.array([tx, ty]))
    coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    return square.transform(square.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)


def _to_array(image: Image.Image, size: int) -> np.ndarray:
    return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def _coverage() -> dict[int, list[str]]:
    fonts_of: dict[int, list[str]] = {}
    for name in FONT_FILES:
        for cp in TTFont(str(FONT_DIR / name), lazy=True).getBestCmap():
            fonts_of.setdefault(cp, []).append(name)
    return fonts_of


def _candidates(o: GlyphsOptions) -> list[tuple[str, str, list[str]]]:
    """(character, alphabet, font files) for every drawable letter, digit or symbol in enough fonts."""
    fonts_of = _coverage()
    found = []
    for block, first, last in BLOCKS:
        for cp in range(first, last + 1):
            char = chr(cp)
            if unicodedata.category(char)[0] not in "LNS" or len(fonts_of.get(cp, ())) < o.min_fonts:
                continue
            found.append((char, block, fonts_of[cp]))
    return found


def _distinct(candidates: list[tuple[str, str, list[str]]], fonts: dict[str, ImageFont.FreeTypeFont]):
    """Drop characters that draw nothing, and every character that looks like one kept before it."""
    kept, signatures = [], {}
    for char, block, font_names in candidates:
        reference = next((f for f in REFERENCE_FONTS if f in font_names), font_names[0])
        crop = _glyph_crop(fonts[reference], char)
        if crop is None or min(crop.size) < 2 and max(crop.size) < 6:
            continue
        # Signature: the reference rendering at 24x24, binarised, with the aspect ratio kept.
        signature = _to_array(_square(crop, margin=1.0), 24) > 96
        if signature.sum() < 4:
            continue
        flat = signature.reshape(-1).astype(np.float32)
        seen = signatures.setdefault(reference, [])
        if seen:
            stacked = np.stack(seen)
            intersection = stacked @ flat
            union = stacked.sum(axis=1) + flat.sum() - intersection
            if (intersection / union).max() > 0.9:
                continue
        seen.append(flat)
        kept.append((char, block, font_names))
    return kept


def _split_ids(groups: list[str], o: GlyphsOptions) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng([o.seed, VERSION])
    alphabets = sorted(set(groups))
    rng.shuffle(alphabets)
    size = {a: groups.count(a) for a in alphabets}
    test_alphabets, held = set(), 0
    for alphabet in alphabets:
        if held >= o.test_fraction * len(groups):
            break
        test_alphabets.add(alphabet)
        held += size[alphabet]
    background = np.array([i for i, g in enumerate(groups) if g not in test_alphabets])
    test = np.array([i for i, g in enumerate(groups) if g in test_alphabets])
    background = rng.permutation(background)
    n_val = int(round(o.val_fraction * len(background)))
    return {"train": torch.from_numpy(np.sort(background[n_val:])), "val": torch.from_numpy(np.sort(background[:n_val])),
            "test": torch.from_numpy(np.sort(test))}


def render(o: GlyphsOptions) -> ClassImages:
    fonts = {name: _font(name) for name in FONT_FILES}
    classes = _distinct(_candidates(o), fonts)
    images = np.zeros((len(classes) * o.examples_per_class, 1, o.image_size, o.image_size), dtype=np.uint8)
    for c, (char, _, font_names) in enumerate(classes):
        rng = np.random.default_rng([o.seed, VERSION, ord(char)])
        order = rng.permutation(font_names)  # which faces come first differs per class
        for e in range(o.examples_per_class):
            crop = _glyph_crop(fonts[order[e % len(order)]], char)
            if crop is None:  # a face that maps the code point but draws nothing: use the reference face
                crop = _glyph_crop(fonts[font_names[0]], char)
            images[c * o.examples_per_class + e, 0] = _to_array(_distort(_square(crop), rng, o), o.image_size)
    groups = [block for _, block, _ in classes]
    offsets = torch.arange(len(classes) + 1, dtype=torch.int64) * o.examples_per_class
    names = [f"U+{ord(char):04X} {unicodedata.name(char, '?')}" for char, _, _ in classes]
    return ClassImages(torch.from_numpy(images), offsets, _split_ids(groups, o), names, groups)


@register_dataset("glyphs", GlyphsOptions, backbone="conv4", version=VERSION)
def load_glyphs(o: GlyphsOptions) -> ImageDataset:
    # rendered from the fonts with the options: both are what the images are made from
    content = generated({"fonts": content_of("glyphs-fonts", FONT_DIR, [FONT_DIR / f for f in FONT_FILES]),
                         "options": o.__dict__})
    key = {"version": VERSION, "content": content, "options": o.__dict__}
    return ImageDataset("glyphs", cached_class_images("glyphs", key, lambda: render(o)), content)
