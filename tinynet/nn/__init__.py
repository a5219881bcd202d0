"""tinynet.nn: layers, models and training on top of tinynet.ops."""
