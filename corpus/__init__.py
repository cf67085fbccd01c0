"""The real-model corpus: models nobody on this project trained or designed, regenerated into a cache.

Sources (never a model hub at run time): ONNX files shipped inside PyPI wheels (rapidocr_onnxruntime's
PP-OCRv4 detector, recogniser and direction classifier), networks a library builds itself from its own
configuration (ultralytics' YOLOv8n from its yaml), and standard architectures written here in torch with
seeded weights. ``python -m corpus.build`` writes every model, its calibration set and its test inputs
into the cache (``~/.cache/rknnlink/corpus`` or ``$RKNNLINK_CORPUS_DIR``); heavy files never enter git.
"""
