"""The published laws, one module per paper. Importing this package registers them."""

from . import chen, chinchilla, frantar, kumar, ouyang, sun  # noqa: F401
