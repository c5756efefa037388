"""A published data set on disk, as its writer (``qidlab.store.publish``) and its reader
(``qidlab.data``) agree on it: the format tag, the manifest's file name, and the names taken by
the tables bundled with qidlab (a data set of such a name could never be loaded).

Ground level: nothing of qidlab imported, so the store can name these without importing the
reader (``qidlab.data`` reads tables through ``qidlab.tables``, which reads stores).
"""

from __future__ import annotations

FORMAT = "qidlab-dataset/1"
MANIFEST = "manifest.json"
#: The bundled tables: name -> CSV file in the ``qidlab.data`` package folder.
BUNDLED = {
    "ouyang2024-table1": "ouyang2024_table1.csv",
    "chinchilla-epoch": "chinchilla_epoch.csv",
}
