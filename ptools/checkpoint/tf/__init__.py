"""TensorFlow TensorBundle checkpoints: reader (`bundle`), SSTable (`table`), protobuf, snappy, CRC32C, writer."""
