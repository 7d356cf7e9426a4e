"""Evaluation of a trained checkpoint (``wit eval``): zero-shot classification, image-text retrieval, linear probes.

    command.py       ``wit eval``: options, load the checkpoint, run the asked tasks, CLIP_benchmark-style JSON
    image_folder.py  labelled ``DIR/<class>/*.jpg`` folders -> image features (unreadable images skipped, listed)
    zeroshot.py      class names x prompt templates (``templates/*.txt``: CLIP's 80 = ``en``, ``ja`` and ``zh`` written
                     for the project) -> ensembled classifier; acc1/acc5/recall; one classifier per language
    retrieval.py     held-out shards -> (image, captions) features -> chunked recall@K both ways
    linear_probe.py  frozen image features -> L-BFGS logistic regression, C searched as in the paper; k-shot
"""
