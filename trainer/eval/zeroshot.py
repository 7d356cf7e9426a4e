"""Zero-shot classification as in the CLIP paper: class names x prompt templates -> a linear classifier.

Prompt ensembling (paper, section 3.1.4): every class name is written into every template, the text
embeddings are L2-normalised, averaged over the templates and normalised again. An image is assigned the
class whose ensembled embedding has the highest cosine similarity with the image embedding.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

TEMPLATE_DIR = Path(__file__).parent / "templates"
DEFAULT_TEMPLATES = "imagenet"  # CLIP's 80 ImageNet prompts; "simple" is the single "a photo of a {}."
# A language's own set is templates/<language>.txt (ja, zh: written for this project); English keeps CLIP's 80.
LANGUAGE_ALIASES = {"en": DEFAULT_TEMPLATES}


def shipped_template_sets() -> list[str]:
    """Names of the template sets in ``trainer/eval/templates`` (``imagenet``: CLIP's 80 prompts, ``simple``, one
    per language such as ``ja``) and the language aliases (``en``: ``imagenet``)."""
    return sorted({p.stem for p in TEMPLATE_DIR.glob("*.txt")} | set(LANGUAGE_ALIASES))


def language_template_set(lang: str) -> str:
    """The shipped template set of a language (``en``: CLIP's 80; otherwise ``templates/<lang>.txt``). Raises
    ValueError when the project ships none for it."""
    if lang in LANGUAGE_ALIASES or (TEMPLATE_DIR / f"{lang}.txt").exists():
        return lang
    languages = sorted({*LANGUAGE_ALIASES, *(p.stem for p in TEMPLATE_DIR.glob("*.txt") if len(p.stem) <= 3)})
    raise ValueError(f"no prompt template set for language {lang!r} (shipped: {', '.join(languages)}); write one "
                     f"'{{}}' template per line in a file and pass --templates {lang}=FILE")


def _read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """Non-empty, non-comment lines of a UTF-8 text file with their 1-based line numbers."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not part of line 1
    except OSError as e:  # a directory, no permission...
        raise ValueError(f"cannot read {what} file {str(path)!r} ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} file {str(path)!r} is not UTF-8 text ({e})") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    return [(n, line) for n, line in lines if line and not line.startswith("#")]


def load_templates(name_or_path: str | Path = DEFAULT_TEMPLATES) -> list[str]:
    """Prompt templates from a shipped set ("imagenet", "simple", "ja", "zh"; "en" is "imagenet") or a file with
    one template per line.

    Each template holds exactly one ``{}`` where the class name goes; blank lines and ``#`` comments are
    ignored. Raises ValueError naming the file and line of a template that cannot take a class name.
    """
    path = Path(name_or_path)
    if not path.exists() and str(name_or_path) in shipped_template_sets():
        path = TEMPLATE_DIR / f"{LANGUAGE_ALIASES.get(str(name_or_path), str(name_or_path))}.txt"
    elif not path.exists():
        shipped = ", ".join(shipped_template_sets())
        raise FileNotFoundError(f"templates {str(name_or_path)!r}: no such file and not a shipped set ({shipped})")
    templates = []
    for lineno, line in _read_lines(path, "templates"):
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(line) if field is not None]
        except ValueError as e:  # unbalanced braces
            raise ValueError(f"{path}:{lineno}: template {line!r} is not a format string ({e})") from None
        if fields != [""]:
            raise ValueError(f"{path}:{lineno}: template {line!r} must contain '{{}}' exactly once and no other field")
        templates.append(line)
    if not templates:
        raise ValueError(f"templates file {str(path)!r} holds no templates")
    return templates


def ensemble_classifier(text_features: torch.Tensor) -> torch.Tensor:
    """Zero-shot classifier weights from per-template text embeddings.

    ``text_features`` is (C classes, T templates, D); returns (D, C): for each class the mean of the
    L2-normalised template embeddings, normalised again.
    """
    if text_features.ndim != 3:
        raise ValueError(f"expected (classes, templates, dim) text features, got shape {tuple(text_features.shape)}")
    per_template = F.normalize(text_features.float(), dim=-1)  # (C, T, D)
    return F.normalize(per_template.mean(dim=1), dim=-1).T.contiguous()  # (D, C)


@torch.inference_mode()
def build_classifier(
    encode_text: Callable[[torch.Tensor], torch.Tensor],
    tokenize: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Classifier weights (D, C) for ``classnames``: every class in every template, encoded in batches."""
    if not classnames or not templates:
        raise ValueError("need at least one class name and one template")
    prompts = [template.format(name) for name in classnames for template in templates]  # class-major
    chunks = []
    for start in range(0, len(prompts), batch_size):
        tokens = tokenize(prompts[start : start + batch_size]).to(device)  # (b, L)
        chunks.append(encode_text(tokens).float().cpu())  # (b, D)
    features = torch.cat(chunks).view(len(classnames), len(templates), -1)  # (C, T, D)
    return ensemble_classifier(features)


def zeroshot_logits(image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (N, C) between images (N, D) and classes (classifier (D, C), unit columns)."""
    return F.normalize(image_features.float(), dim=-1) @ classifier


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """Share of rows whose target is among the k highest logits (k capped at the number of classes)."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices  # (N, k)
    return (top == targets[:, None]).any(dim=1).double().mean().item()


def mean_per_class_recall(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """Recall averaged over the classes present in ``targets`` (scikit-learn's balanced accuracy)."""
    classes = targets.unique()
    recalls = [(predictions[targets == c] == c).double().mean() for c in classes]
    return torch.stack(recalls).mean().item()


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """acc1, acc5 and mean per-class recall of ``logits`` (N, C) against integer ``targets`` (N,)."""
    if len(targets) == 0:
        raise ValueError("no samples to score")
    return {
        "acc1": topk_accuracy(logits, targets, 1),
        "acc5": topk_accuracy(logits, targets, 5),
        "mean_per_class_recall": mean_per_class_recall(logits.argmax(dim=1), targets),
    }
