"""Front ends: TFLite, Caffe, Darknet and TensorFlow models translated into ONNX for the shared build path.

One module per framework; :mod:`.common` holds the graph writer and the one unsupported-layers error.
"""
