"""BERT fine-tuning with Lightning: datamodule (feature rows -> padded batches), module (the
classifier), train (Trainer from params, save_pretrained), predict (BertPredictor for serving)."""
