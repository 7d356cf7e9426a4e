"""Stage 5: CLIP model, tokenizer, WebDataset loading, contrastive training and evaluation. No Beam here."""
