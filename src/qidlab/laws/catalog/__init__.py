"""The published laws, one module per paper, and qidlab's own variants (variants.py, not published).
Importing this package registers them."""

from . import chen, chinchilla, frantar, kumar, ouyang, sun, variants  # noqa: F401
