"""Training data: record schema and TFDS/ArrayRecord writer (records), slamkit readers and validation (slamkit,
prepare), docs/reference.md §4 interleaving (interleave), tokenisation (tokenise), the grain pipeline (pipeline, packing)."""
