"""The demo dataset's builder (data/demo): public-domain text, flite TTS with exact word times, look-alike
evaluation items. Used by tools/make_demo_data.py; nothing in training or evaluation imports it."""
