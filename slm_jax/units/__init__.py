"""Speech -> units (docs/reference.md §1): audio loading, the Flax HuBERT encoder (HF weights), the mfcc stand-in encoder,
k-means, deduplication, the extraction driver; plus the TTS and text helpers that build data/demo."""
