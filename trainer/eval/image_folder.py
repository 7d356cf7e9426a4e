"""Labelled image folders (``DIR/<class>/*.jpg``) for zero-shot and linear-probe evaluation, and their
encoding into image features. Unreadable images are skipped and reported by path, never fatal."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass
class ImageFolder:
    """A scanned ``DIR/<class>/*`` tree (``scan_image_folder``): labels, names and the images to encode."""

    root: Path
    classnames: list[str]  # label -> human-readable class name (the text the prompts are built from)
    folders: list[str]  # label -> folder name ("" for a class listed in --classnames without a folder)
    samples: list[tuple[Path, int]]  # (image path, label), sorted by label then path
    ignored: list[Path] = field(default_factory=list)  # files that are not images by their suffix


def folder_to_classname(folder: str) -> str:
    """A folder name as a class name for the prompts ("golden_retriever" -> "golden retriever")."""
    return folder.replace("_", " ").strip()


def read_classnames(path: Path, folders: Sequence[str]) -> tuple[list[str], list[str]]:
    """(classnames, folders) from a class-name file, label order = file order.

    Either one name per line, matched to the class folders in sorted order (CLIP_benchmark's classnames
    lists), or ``folder<TAB>class name`` lines; classes listed there without a folder still compete in
    zero-shot classification, and every folder must be listed.
    """
    try:
        # utf-8-sig: a byte-order mark (Windows editors) would otherwise become part of the first class name
        lines = [line.strip("\r\n") for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--classnames {path}: cannot read ({e})") from None
    entries = [(n, line) for n, line in enumerate(lines, 1) if line.strip() and not line.startswith("#")]
    if not entries:
        raise ValueError(f"--classnames {path}: no class names")
    if any("\t" in line for _, line in entries):
        names, mapped = [], []
        for n, line in entries:
            folder, sep, name = line.partition("\t")
            if not sep or not folder.strip() or not name.strip():
                raise ValueError(f"{path}:{n}: expected 'folder<TAB>class name', got {line!r}")
            mapped.append(folder.strip())
            names.append(name.strip())
        missing = sorted(set(folders) - set(mapped))
        if missing:
            raise ValueError(f"--classnames {path} does not list the class folder(s) {missing[:5]}")
        first_line: dict[str, int] = {}
        for (n, _), folder in zip(entries, mapped, strict=True):
            if folder in first_line:  # named at the repeat, the line a user has to delete or fix
                raise ValueError(f"{path}:{n}: folder {folder!r} is listed twice (first on line {first_line[folder]})")
            first_line[folder] = n
        return names, mapped
    names = [line.strip() for _, line in entries]
    hint = "give one name per class folder, in sorted folder order, or 'folder<TAB>class name' lines"
    if len(names) > len(folders):
        n, extra = entries[len(folders)]
        raise ValueError(f"{path}:{n}: class name {extra.strip()!r} has no image folder ({len(names)} names, "
                         f"{len(folders)} class folders); {hint}")
    if len(names) < len(folders):
        raise ValueError(f"{path}:{entries[-1][0] + 1}: no class name for folder {folders[len(names)]!r} "
                         f"({len(names)} names, {len(folders)} class folders); {hint}")
    return names, list(folders)


def class_folders(root: Path) -> list[str]:
    """The sorted class-folder names under ``root`` (hidden folders left out)."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_classnames(root: str | Path, classnames_file: str | Path | None) -> tuple[list[str], list[str]]:
    """(class names, folders) of ``root``'s class folders from a class-name file (``read_classnames``), or the
    folder names when None: another language's names for a folder already scanned."""
    present = class_folders(Path(root))
    if classnames_file is None:
        return [folder_to_classname(f) for f in present], present
    return read_classnames(Path(classnames_file), present)


def scan_image_folder(root: str | Path, classnames_file: str | Path | None = None,
                      folders: Sequence[str] | None = None) -> ImageFolder:
    """The labelled images under ``root``. ``folders`` fixes the label order (a linear probe's test set takes
    its training set's classes); otherwise labels follow the sorted class-folder names."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a directory")
    present = class_folders(root)
    if not present:
        raise ValueError(f"{root} holds no class folders; expected {root}/<class name>/*.jpg")
    if folders is not None:
        unknown = sorted(set(present) - set(folders))
        if unknown:
            raise ValueError(f"{root}: class folder(s) {unknown[:5]} do not occur in the training folder")
        names, order = [folder_to_classname(f) for f in folders], list(folders)
    elif classnames_file is not None:
        names, order = read_classnames(Path(classnames_file), present)
    else:
        names, order = [folder_to_classname(f) for f in present], present
    samples, ignored = [], []
    for label, folder in enumerate(order):
        class_dir = root / folder
        if not folder or not class_dir.is_dir():
            continue
        for path in sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append((path, label))
            else:
                ignored.append(path)
    if not samples:
        raise ValueError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class folders")
    return ImageFolder(root, names, order, samples, ignored)


class _LabelledImages(Dataset):
    def __init__(self, samples: Sequence[tuple[Path, int]], transform: Callable[[Image.Image], torch.Tensor]):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str | None]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                return self.transform(image), label, None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            return None, label, f"{path}: {type(e).__name__}: {e}"


def _collate(batch: list[tuple[torch.Tensor | None, int, str | None]]):
    good = [(x, y) for x, y, _ in batch if x is not None]
    errors = [err for _, _, err in batch if err is not None]
    if not good:
        return None, None, errors
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good]), errors


@torch.inference_mode()
def encode_image_folder(
    folder: ImageFolder,
    encode_image: Callable[[torch.Tensor], torch.Tensor],
    transform: Callable[[Image.Image], torch.Tensor],
    *,
    batch_size: int = 256,
    workers: int = 0,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Image features (N, D) and labels (N,) of every readable image; the unreadable ones as "path: error"."""
    loader = DataLoader(_LabelledImages(folder.samples, transform), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=_collate, pin_memory=torch.device(device).type == "cuda")
    features, labels, errors = [], [], []
    seen = 0
    for images, targets, batch_errors in loader:
        for err in batch_errors:
            log.warning("skipped unreadable image %s", err)
        errors.extend(batch_errors)
        if images is not None:
            features.append(encode_image(images.to(device)).float().cpu())  # (b, D)
            labels.append(targets)
        seen += len(batch_errors) + (0 if targets is None else len(targets))
        if progress:
            progress(seen, len(folder.samples))
    if not features:
        raise ValueError(f"none of the {len(folder.samples)} images under {folder.root} could be read")
    return torch.cat(features), torch.cat(labels), errors
