"""The input side: dataset registry, record schema, converters and the tf.data pipeline."""
